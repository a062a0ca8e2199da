/**
 * Command-line helpers shared by the subcommands: strict flag checking (a bad flag is a usage
 * error, exit code 2), repeatable flags, typed values, the token file and signal handling.
 *
 * @module
 */
import type { ArgsDef } from "citty";
import { findToken } from "../lib/auth/token-file.ts";

/** A usage error: exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly code = "E_USAGE";
}

/** Flags every command accepts. */
export const commonArgs = {
  debug: { type: "boolean", description: "Print stack traces and debug logs" },
  "token-file": { type: "string", description: "Read the API token from this file (else CLUSTER_TOKEN, else the local scheduler's token file)" },
} as const satisfies ArgsDef;

const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Throws a UsageError for a flag the command does not define. */
export function checkFlags(rawArgs: string[], def: ArgsDef): void {
  const known = new Set<string>();
  for (const [name, arg] of Object.entries(def)) {
    if ((arg as { type?: string }).type === "positional") continue;
    known.add(name);
    known.add(camel(name));
    if ((arg as { type?: string }).type === "boolean") known.add(`no-${name}`);
    const alias = (arg as { alias?: string | string[] }).alias;
    for (const a of alias === undefined ? [] : Array.isArray(alias) ? alias : [alias]) known.add(a);
  }
  for (const raw of rawArgs) {
    if (raw === "--") break;
    if (!raw.startsWith("-") || raw === "-" || /^-\d/.test(raw)) continue;
    const name = raw.replace(/^-{1,2}/, "").split("=")[0];
    if (!known.has(name)) throw new UsageError(`Unknown flag "${raw.split("=")[0]}" (see --help)`);
  }
}

/** All values of a repeatable flag (`--preload a --preload b`). */
export function collect(rawArgs: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const raw = rawArgs[i];
    if (raw === `--${name}`) {
      const value = rawArgs[i + 1];
      if (value === undefined || value.startsWith("--")) throw new UsageError(`Flag "--${name}" needs a value`);
      out.push(value);
      i++;
    } else if (raw.startsWith(`--${name}=`)) out.push(raw.slice(name.length + 3));
  }
  return out;
}

/** Parses an integer flag, or throws a UsageError naming it. */
export function intFlag(value: unknown, name: string, options: { min?: number; fallback: number }): number {
  if (value === undefined || value === "") return options.fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < (options.min ?? 0) || n > 65535 * 1000) {
    throw new UsageError(`Invalid value for "--${name}": "${value}" (expected an integer${options.min !== undefined ? ` >= ${options.min}` : ""})`);
  }
  return n;
}

/** Checks a scheduler URL argument. */
export function schedulerUrl(value: unknown): string {
  if (typeof value !== "string" || value === "") throw new UsageError("Missing SCHEDULER_URL");
  let url: URL;
  try {
    url = new URL(value.includes("://") ? value : `http://${value}`);
  } catch {
    throw new UsageError(`Invalid scheduler URL "${value}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`Invalid scheduler URL "${value}": use http://HOST:PORT`);
  return url.origin;
}

/**
 * Puts the token this command uses in CLUSTER_TOKEN, where the links and the client read it:
 * `--token-file`, else CLUSTER_TOKEN, else the token file a scheduler on this host wrote in the
 * default state directory (see lib/auth/token-file.ts). An unreadable `--token-file` is a
 * ConfigError naming it.
 */
export function applyTokenFile(path: unknown): void {
  const token = findToken({ tokenFile: typeof path === "string" && path !== "" ? path : undefined });
  if (token !== undefined) process.env.CLUSTER_TOKEN = token;
}

/** Runs `close` once on SIGINT/SIGTERM, then exits with code 0 (1 when close throws). */
export function onShutdown(close: (signal: string) => Promise<void>): void {
  let closing = false;
  const handler = (signal: string) => {
    if (closing) return;
    closing = true;
    close(signal).then(() => process.exit(0), (err) => {
      process.stderr.write(`cluster: error while closing: ${(err as Error).message}\n`);
      process.exit(1);
    });
  };
  process.on("SIGINT", () => handler("SIGINT"));
  process.on("SIGTERM", () => handler("SIGTERM"));
}
