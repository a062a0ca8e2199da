/**
 * Memory sizes and process memory: `--memory-limit` parsing (`2GiB`, `500MB`, `0.5` of the
 * machine) and a process's resident set size.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { ConfigError } from "../errors.ts";

const units: Record<string, number> = {
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4, k: 1024, m: 1024 ** 2, g: 1024 ** 3,
};

/**
 * Parses a memory limit into bytes.
 *
 * @example
 * ```ts
 * parseMemoryLimit("2GiB"); // 2147483648
 * parseMemoryLimit("0.5");  // half of the machine's memory
 * ```
 */
export function parseMemoryLimit(text: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) throw new ConfigError(`Invalid value for "--memory-limit": "${text}" (expected e.g. 2GiB, 500MB or 0.5)`);
  const n = Number(m[1]);
  const unit = m[2].toLowerCase();
  if (unit === "") {
    if (n > 0 && n <= 1) return Math.floor(n * totalmem());
    if (n > 1 && Number.isInteger(n)) return n;
    throw new ConfigError(`Invalid value for "--memory-limit": "${text}"`);
  }
  const factor = units[unit];
  if (!factor) throw new ConfigError(`Invalid value for "--memory-limit": unknown unit "${m[2]}" in "${text}"`);
  return Math.floor(n * factor);
}

/** Formats bytes for logs. */
export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(0)} KiB`;
}

/** The resident set size of a process in bytes (Linux `/proc`; 0 when unknown). */
export async function processRss(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
