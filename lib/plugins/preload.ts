/**
 * `--preload` (and `--preload-nanny`) values made into plugin specs: a module path, or, as in
 * Dask, an `http://`/`https://` URL whose module is fetched once, when the process starts (an
 * `https:` URL trusts the process's `--tls-ca`), and is then loaded like a file preload from
 * its text. `--preload-options` (JSON) is handed to every preload's `clusterSetup(server,
 * options)`.
 *
 * @module
 */
import { basename, extname, resolve } from "node:path";
import { errorMessage } from "../errors.ts";
import { clientFetch } from "../runtime/client.ts";
import type { WirePluginSpec } from "./load.ts";
import type { PluginRole } from "./types.ts";

/** Whether a `--preload` value is a URL to fetch rather than a path. */
export function isPreloadUrl(value: string): boolean {
  return /^https?:\/\//i.test(value);
}

/** How long a URL preload may take to arrive. */
const fetchTimeoutMs = 30_000;

/**
 * The spec of one preload. A URL is fetched here; a failure is an Error naming the URL (a
 * runtime failure: exit code 1), not a configuration error.
 *
 * @example
 * ```ts
 * const spec = await preloadSpec("https://example.org/setup.ts", "worker", { level: 2 });
 * ```
 */
export async function preloadSpec(value: string, role: PluginRole, options: Record<string, unknown> = {}): Promise<WirePluginSpec> {
  if (!isPreloadUrl(value)) return { role, use: resolve(value), options };
  const url = new URL(value);
  let source: string;
  try {
    const res = await clientFetch(url, { signal: AbortSignal.timeout(fetchTimeoutMs) });
    if (!res.ok) throw new Error(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`);
    source = await res.text();
  } catch (err) {
    throw new Error(`Cannot fetch preload "${value}": ${errorMessage(err)}`, { cause: err });
  }
  // Loaded from its text like a shipped module: the file name comes from the URL's path.
  const file = basename(decodeURIComponent(url.pathname)) || "preload";
  const ext = /^\.(m?[jt]s|tsx?)$/.test(extname(file)) ? "" : ".ts";
  return { role, use: `./${file}${ext}`, options, source };
}

/** The specs of several preloads, in order (URLs fetched one after the other). */
export async function preloadSpecs(values: string[], role: PluginRole, options: Record<string, unknown> = {}): Promise<WirePluginSpec[]> {
  const out: WirePluginSpec[] = [];
  for (const value of values) out.push(await preloadSpec(value, role, options));
  return out;
}
