/**
 * The scheduler's auth flags, shared by `cluster scheduler` and `cluster local`: where its tokens
 * come from (`--token-file`, `--submit-token-file`, `--join-token-file`, `--state-dir`),
 * `--no-auth` (loopback only) and `--allow-host`. With no token given, one is made in the state
 * directory and its path logged, never the token.
 *
 * @module
 */
import type { ArgsDef } from "citty";
import { isLoopback, schedulerTokens } from "../lib/auth/token-file.ts";
import type { TokenSet } from "../lib/auth/tokens.ts";
import type { ComponentLogger } from "../lib/log.ts";
import { collect, UsageError } from "./_args.ts";

/** The flags. */
export const authArgs = {
  "state-dir": { type: "string", description: "Where the generated token is kept (default $XDG_STATE_HOME/cluster or ~/.local/state/cluster)" },
  "submit-token-file": { type: "string", description: "A token that may submit and read, not run code (else CLUSTER_SUBMIT_TOKEN)" },
  "join-token-file": { type: "string", description: "A token that may only join as a worker or nanny (else CLUSTER_JOIN_TOKEN)" },
  auth: { type: "boolean", default: true, description: "Require tokens; --no-auth turns auth off, only when listening on loopback" },
  "allow-host": { type: "string", description: "Another name this scheduler is reached by (Host header); repeatable" },
} as const satisfies ArgsDef;

const text = (v: unknown) => typeof v === "string" && v !== "" ? v : undefined;

/**
 * The scheduler's `auth` option from the flags. `--no-auth` with `host` not on loopback is a
 * UsageError (exit 2).
 *
 * @example
 * ```ts
 * const auth = schedulerAuth(args, rawArgs, { host: "127.0.0.1", log });
 * ```
 */
export function schedulerAuth(
  a: Record<string, unknown>,
  rawArgs: string[],
  options: { host: string; log: ComponentLogger },
): { tokens: TokenSet | null; allowHosts: string[] } {
  const allowHosts = collect(rawArgs, "allow-host");
  if (a.auth === false) {
    if (!isLoopback(options.host)) {
      throw new UsageError(`Refusing --no-auth: the scheduler would listen on "${options.host}", not on loopback only`);
    }
    options.log.warn("Auth is off (--no-auth): anyone on this host may run code as this user");
    return { tokens: null, allowHosts };
  }
  const { tokens, file, created } = schedulerTokens({
    tokenFile: text(a["token-file"]),
    submitTokenFile: text(a["submit-token-file"]),
    joinTokenFile: text(a["join-token-file"]),
    stateDir: text(a["state-dir"]),
  });
  if (file !== undefined) options.log.info(created ? `Admin token written to ${file} (mode 0600)` : `Admin token read from ${file}`);
  return { tokens, allowHosts };
}
