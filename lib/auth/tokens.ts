/**
 * The cluster's tokens and what each may do. Three scopes, each wider one including the narrower:
 * `admin` (everything, `CLUSTER_TOKEN`), `submit` (graphs, results, tasks, info, metrics, events,
 * logs: `CLUSTER_SUBMIT_TOKEN`) and `join` (only joining as a worker or nanny:
 * `CLUSTER_JOIN_TOKEN`). Tokens are compared in constant time and never logged.
 *
 * @module
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** What a token allows. */
export type Scope = "admin" | "submit" | "join";

/** The tokens a scheduler accepts; `admin` is always set unless auth is off. */
export interface TokenSet {
  admin: string;
  submit?: string;
  join?: string;
}

const rank: Record<Scope, number> = { join: 0, submit: 1, admin: 2 };

/** Whether a holder of `have` may do what needs `need` (admin ⊇ submit; join is separate). */
export function allows(have: Scope, need: Scope): boolean {
  if (have === "admin") return true;
  if (need === "join") return have === "join";
  return rank[have] >= rank[need];
}

function digest(s: string): Buffer {
  // Hashing first gives equal lengths, so the comparison time says nothing about the token.
  return createHash("sha256").update(s).digest();
}

/** Compares two secrets in constant time. */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * The scope a presented token has, or null when it matches none. Every configured token is
 * compared, so the time taken does not say which one matched.
 *
 * @example
 * ```ts
 * scopeOf({ admin: "a", submit: "s" }, "s"); // "submit"
 * ```
 */
export function scopeOf(tokens: TokenSet, presented: string): Scope | null {
  let found: Scope | null = null;
  for (const scope of ["admin", "submit", "join"] as const) {
    const token = tokens[scope];
    if (token !== undefined && sameSecret(token, presented) && found === null) found = scope;
  }
  return found;
}

/** The tokens that may take a scope, widest first (for challenge–response, which tries each). */
export function tokensFor(tokens: TokenSet, need: Scope): Array<[Scope, string]> {
  const out: Array<[Scope, string]> = [];
  for (const scope of ["admin", "submit", "join"] as const) {
    const token = tokens[scope];
    if (token !== undefined && allows(scope, need)) out.push([scope, token]);
  }
  return out;
}

/**
 * The tokens in the environment: `CLUSTER_TOKEN` (admin), `CLUSTER_SUBMIT_TOKEN`,
 * `CLUSTER_JOIN_TOKEN`; null when none is set (an embedded scheduler with no token is open; the
 * CLI never starts one so, see token-file.ts). A submit or join token without an admin one gets
 * an unknowable admin token, so auth stays on.
 */
export function envTokens(env: Record<string, string | undefined> = process.env): TokenSet | null {
  const get = (name: string) => env[name]?.trim() || undefined;
  const admin = get("CLUSTER_TOKEN");
  const submit = get("CLUSTER_SUBMIT_TOKEN");
  const join = get("CLUSTER_JOIN_TOKEN");
  if (admin === undefined && submit === undefined && join === undefined) return null;
  return { admin: admin ?? randomBytes(32).toString("base64url"), submit, join };
}
