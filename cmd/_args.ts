/**
 * Command-line helpers shared by the subcommands: strict flag checking (a bad flag is a usage
 * error, exit code 2), flags from `CLUSTER_…` environment variables, repeatable flags, typed
 * values, the token file and signal handling.
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

/** Parses a flag holding a JSON object (`--preload-options`); anything else is a UsageError naming the flag. */
export function jsonObjectFlag(value: unknown, name: string): Record<string, unknown> | undefined {
  if (value === undefined || value === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(String(value));
  } catch (err) {
    throw new UsageError(`Invalid value for "--${name}": ${(err as Error).message} (expected a JSON object)`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new UsageError(`Invalid value for "--${name}": expected a JSON object, got ${Array.isArray(parsed) ? "an array" : JSON.stringify(parsed)}`);
  }
  return parsed as Record<string, unknown>;
}

/**
 * Parses an integer flag, or throws a UsageError naming it (and the environment variable it came
 * from) and the range. A flag named `port` or `…-port` is a TCP port: at most 65535.
 */
export function intFlag(value: unknown, name: string, options: { min?: number; max?: number; fallback: number }): number {
  if (value === undefined || value === "") return options.fallback;
  const n = Number(value);
  const min = options.min ?? 0;
  const max = options.max ?? (name === "port" || name.endsWith("-port") ? 65535 : undefined);
  if (!Number.isInteger(n) || n < min || n > (max ?? 65535 * 1000)) {
    const range = max === undefined ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
    const from = fromEnv.has(name) ? ` from ${fromEnv.get(name)}` : "";
    throw new UsageError(`Invalid value for "--${name}"${from}: "${value}" (expected ${range})`);
  }
  return n;
}

/**
 * Variables the programs set for each other (a nanny for its worker, a process pool for its
 * children) or that carry a secret rather than a flag: never read as flags.
 */
const reservedEnv = new Set(["CLUSTER_NANNY", "CLUSTER_WORKER_RESTARTS", "CLUSTER_TASK_PATHS", "CLUSTER_EXECUTOR_CHILD", "CLUSTER_TOKEN"]);

/** Flags whose value came from the environment, with the variable's name (for messages). */
const fromEnv = new Map<string, string>();

/**
 * The environment variable of a flag or positional argument: `--worker-ttl` ↔ `CLUSTER_WORKER_TTL`,
 * `SCHEDULER_URL` ↔ `CLUSTER_SCHEDULER`. `undefined` for a flag that cannot come from the
 * environment (`--nanny`: `CLUSTER_NANNY` marks a nanny's worker; use `cluster nanny`).
 */
export function envName(flag: string): string | undefined {
  const name = `CLUSTER_${flag.replace(/-/g, "_").toUpperCase()}`;
  return reservedEnv.has(name) ? undefined : name;
}

/** Whether a flag may be given more than once (its description says "repeatable"). */
export function isRepeatable(arg: unknown): boolean {
  return /\brepeatable\b/.test((arg as { description?: string }).description ?? "");
}

const truthy = new Set(["1", "true", "yes", "on"]);
const falsy = new Set(["0", "false", "no", "off"]);

/** Maps every spelling of a flag (camelCase, alias, `no-`) to its name in the definition. */
function flagNames(def: ArgsDef): Map<string, string> {
  const names = new Map<string, string>();
  for (const [name, arg] of Object.entries(def)) {
    const a = arg as { type?: string; alias?: string | string[] };
    if (a.type === "positional") continue;
    names.set(name, name);
    names.set(camel(name), name);
    if (a.type === "boolean") names.set(`no-${name}`, name);
    for (const alias of a.alias === undefined ? [] : Array.isArray(a.alias) ? a.alias : [a.alias]) names.set(alias, name);
  }
  return names;
}

/**
 * Fills in flags and positional arguments from `CLUSTER_…` environment variables, so that a
 * service unit needs no long command line. A flag on the command line wins over its variable.
 * Booleans take 1/0, true/false, yes/no, on/off; a repeatable flag takes a comma-separated list.
 * Returns the arguments to parse: the environment's flags first, then `rawArgs`, then missing
 * positionals.
 *
 * @example
 * ```ts
 * argsWithEnv(["--port", "0"], schedulerArgs, { CLUSTER_PORT: "9000", CLUSTER_WORKER_TTL: "30" });
 * // ["--worker-ttl=30", "--port", "0"]
 * ```
 */
export function argsWithEnv(rawArgs: string[], def: ArgsDef, env: Record<string, string | undefined> = process.env): string[] {
  // One command line a process: what came from the environment is this call's.
  fromEnv.clear();
  const names = flagNames(def);
  const given = new Set<string>();
  let positionals = 0;
  let dashDash = false;
  for (let i = 0; i < rawArgs.length; i++) {
    const raw = rawArgs[i];
    if (raw === "--") {
      dashDash = true;
      break;
    }
    if (raw.startsWith("-") && raw !== "-" && !/^-\d/.test(raw)) {
      const spelled = raw.replace(/^-{1,2}/, "").split("=")[0];
      const name = names.get(spelled);
      if (name === undefined) continue;
      given.add(name);
      // A string flag without "=" takes the next argument as its value.
      if ((def[name] as { type?: string }).type !== "boolean" && !raw.includes("=")) i++;
    } else positionals++;
  }
  const lead: string[] = [];
  const tail: string[] = [];
  let positionalIndex = 0;
  let filled = positionals;
  for (const [name, arg] of Object.entries(def)) {
    const a = arg as { type?: string; default?: unknown };
    const variable = envName(name);
    const value = variable === undefined ? undefined : env[variable];
    if (a.type === "positional") {
      // Only the next missing positional, in order, and not after "--" (the order is the user's).
      if (positionalIndex++ === filled && value && !dashDash) {
        tail.push(value);
        filled++;
      }
      continue;
    }
    if (given.has(name) || value === undefined || value === "" || variable === undefined) continue;
    fromEnv.set(name, variable);
    if (a.type === "boolean") {
      const v = value.trim().toLowerCase();
      if (truthy.has(v)) lead.push(`--${name}`);
      else if (falsy.has(v)) {
        if (a.default === true) lead.push(`--no-${name}`);
      } else throw new UsageError(`Invalid value for ${variable}: "${value}" (expected 1, 0, true, false, yes, no, on or off)`);
    } else if (isRepeatable(arg)) {
      for (const item of value.split(",").map((s) => s.trim()).filter(Boolean)) lead.push(`--${name}=${item}`);
    } else lead.push(`--${name}=${value}`);
  }
  return [...lead, ...rawArgs, ...tail];
}

/**
 * Whether a stream may get terminal colours: a TTY, and neither `NO_COLOR` (any value, as
 * no-color.org says) nor `TERM=dumb`.
 */
export function useColour(stream: { isTTY?: boolean }): boolean {
  return !!stream.isTTY && !process.env.NO_COLOR && process.env.TERM !== "dumb";
}

/** Removes terminal colour codes. */
export function stripColour(text: string): string {
  // deno-lint-ignore no-control-regex -- matches the escape character itself
  return text.replace(/\x1b\[[0-9;]*m/g, "");
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
