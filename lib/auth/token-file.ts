/**
 * Where the cluster's admin token lives when nobody gave one: a file `token` in the state
 * directory (`$XDG_STATE_HOME/cluster`, else `~/.local/state/cluster`), mode 0600 in a 0700
 * directory. A scheduler with no token makes one there at start and reuses it after a restart (so
 * workers reconnect); workers, nannies, `cluster local` and the CLI on the same host read it there.
 * k3s does the same with its server token.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { ConfigError } from "../errors.ts";
import type { TokenSet } from "./tokens.ts";

/**
 * The state directory: `$XDG_STATE_HOME/cluster`, else `~/.local/state/cluster`.
 *
 * @example
 * ```ts
 * defaultStateDir(); // "/home/me/.local/state/cluster"
 * ```
 */
export function defaultStateDir(): string {
  const xdg = process.env.XDG_STATE_HOME;
  return join(xdg && xdg.startsWith("/") ? xdg : join(homedir(), ".local", "state"), "cluster");
}

/** The token file in a state directory (the default one when not given). */
export function defaultTokenPath(stateDir?: string): string {
  return join(stateDir ?? defaultStateDir(), "token");
}

/** A fresh token: 32 random bytes, base64url. */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/** Reads a token file (trimmed); a ConfigError naming the file when it cannot be read or is empty. */
export function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`Cannot read token file "${path}": ${(err as Error).message}`, { cause: err });
  }
  const token = text.trim();
  if (token === "") throw new ConfigError(`Token file "${path}" is empty`);
  return token;
}

/**
 * The scheduler's admin token from `path`: reused when the file exists, else made and written
 * with mode 0600 (its directory created 0700). Creation is exclusive, so two schedulers starting
 * at once on one state directory end up with the same token.
 *
 * @example
 * ```ts
 * const { token, created } = ensureTokenFile(defaultTokenPath());
 * ```
 */
export function ensureTokenFile(path: string): { token: string; created: boolean } {
  for (;;) {
    try {
      return { token: readTokenFile(path), created: false };
    } catch (err) {
      const code = ((err as Error).cause as { code?: string } | undefined)?.code;
      if (code !== "ENOENT") throw err;
    }
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new ConfigError(`Cannot create the state directory "${dirname(path)}": ${(err as Error).message}`, { cause: err });
    }
    const token = newToken();
    let fd: number;
    try {
      fd = openSync(path, "wx", 0o600);
    } catch (err) {
      if ((err as { code?: string }).code === "EEXIST") continue; // another scheduler was quicker: use its token
      throw new ConfigError(`Cannot write token file "${path}": ${(err as Error).message}`, { cause: err });
    }
    try {
      writeSync(fd, token + "\n");
    } finally {
      closeSync(fd);
    }
    // The umask may have narrowed the mode, never widened it; make it exact anyway.
    chmodSync(path, 0o600);
    return { token, created: true };
  }
}

/**
 * The admin token a worker, nanny or CLI command uses: the `--token-file` given, else
 * `CLUSTER_TOKEN`, else the token file in the default state directory when it is there and readable (a
 * scheduler on this host wrote it), else undefined.
 *
 * @example
 * ```ts
 * const token = findToken({ tokenFile: args["token-file"] });
 * ```
 */
export function findToken(options: { tokenFile?: string } = {}): string | undefined {
  if (options.tokenFile) return readTokenFile(options.tokenFile);
  const env = process.env.CLUSTER_TOKEN?.trim();
  if (env) return env;
  try {
    return readTokenFile(defaultTokenPath());
  } catch {
    return undefined;
  }
}

/** Where a scheduler's tokens come from: flags, else the environment, else the state directory. */
export interface SchedulerTokenOptions {
  /** `--token-file`: the admin token, made there when missing. */
  tokenFile?: string;
  /** `--submit-token-file` (else `CLUSTER_SUBMIT_TOKEN`). */
  submitTokenFile?: string;
  /** `--join-token-file` (else `CLUSTER_JOIN_TOKEN`). */
  joinTokenFile?: string;
  /** `--state-dir`. @default defaultStateDir() */
  stateDir?: string;
}

/**
 * A scheduler's tokens. The admin token: `--token-file` (made there when missing), else
 * `CLUSTER_TOKEN`, else `token` in the state directory (made there when missing). `file` is the
 * admin token's file, if any, and `created` whether it was made now; the caller logs the path,
 * never the token.
 *
 * @example
 * ```ts
 * const { tokens, file } = schedulerTokens({ stateDir: "/var/lib/cluster" });
 * ```
 */
export function schedulerTokens(options: SchedulerTokenOptions = {}): { tokens: TokenSet; file?: string; created: boolean } {
  const optional = (path: string | undefined, env: string) => path ? readTokenFile(path) : process.env[env]?.trim() || undefined;
  const submit = optional(options.submitTokenFile, "CLUSTER_SUBMIT_TOKEN");
  const join = optional(options.joinTokenFile, "CLUSTER_JOIN_TOKEN");
  const env = process.env.CLUSTER_TOKEN?.trim();
  if (!options.tokenFile && env) return { tokens: { admin: env, submit, join }, created: false };
  const file = options.tokenFile ?? defaultTokenPath(options.stateDir);
  const { token, created } = ensureTokenFile(file);
  return { tokens: { admin: token, submit, join }, file, created };
}

/** Whether `host` is a loopback address or `localhost` (where `--no-auth` is allowed). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::ffff:127.0.0.1";
}
