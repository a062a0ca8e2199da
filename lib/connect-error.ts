/**
 * Why the scheduler cannot be reached, worded once for every command (worker, nanny, client,
 * submit, info, events): refused, the token was refused, timed out, TLS failure. A WebSocket
 * that fails says nothing about why (code 1006, no reason), so a failed connection is followed
 * by one plain HTTP request whose error or status does tell.
 *
 * @module
 */
import { errorMessage } from "./errors.ts";
import { clientFetch, isCertificateError } from "./runtime/client.ts";

/** What went wrong, coarsely. */
export type ConnectFailure = "refused" | "unauthorized" | "timeout" | "tls" | "unreachable";

/** WebSocket close codes a scheduler uses to refuse a token (4401: ours; 1008: policy violation). */
const authCloseCodes = new Set([4401, 1008]);

/**
 * The scheduler could not be reached.
 *
 * @example
 * ```ts
 * throw new ConnectError("http://127.0.0.1:8786", "refused");
 * // Cannot reach the scheduler at http://127.0.0.1:8786: connection refused
 * ```
 */
export class ConnectError extends Error {
  override name = "ConnectError";
  constructor(readonly url: string, readonly kind: ConnectFailure, detail?: string) {
    super(connectErrorMessage(url, kind, detail));
  }
}

/** The one wording of a connection failure. */
export function connectErrorMessage(url: string, kind: ConnectFailure, detail?: string): string {
  const what = kind === "refused"
    ? "connection refused"
    : kind === "unauthorized"
    ? detail ?? "the token was refused"
    : kind === "timeout"
    ? `timed out${detail ? ` (${detail})` : ""}`
    : kind === "tls"
    ? `TLS failure${detail ? ` (${detail})` : ""}${detail && isCertificateError(detail) ? "; is --tls-ca set to the cluster's CA, and is the host in its certificate?" : ""}`
    : detail ?? "unreachable";
  return `Cannot reach the scheduler at ${url}: ${what}`;
}

/** Classifies an error thrown by `fetch` or a socket (Bun, Deno and Node word them differently). */
export function classifyError(err: unknown): { kind: ConnectFailure; detail: string } {
  const parts: string[] = [];
  // Deno says "fetch failed" and puts the reason in `cause`: the innermost message tells most.
  let detail = errorMessage(err);
  let e: unknown = err;
  for (let depth = 0; e && depth < 4; depth++) {
    const x = e as { name?: string; code?: unknown; message?: string; cause?: unknown };
    parts.push(String(x.name ?? ""), String(x.code ?? ""), x.message ?? String(e));
    if (x.message) detail = x.message;
    e = x.cause;
  }
  const text = parts.join(" ");
  if (/ECONNREFUSED|connection refused|ConnectionRefused/i.test(text)) return { kind: "refused", detail };
  if (/TimeoutError|ETIMEDOUT|timed out/i.test(text)) return { kind: "timeout", detail: "" };
  if (/CERT|certificate|SSL|TLS|handshake|wrong version number|corrupt message|InvalidContentType/i.test(text)) return { kind: "tls", detail };
  return { kind: "unreachable", detail };
}

/** A WebSocket close code that means the token was refused, or null. */
export function closeCodeFailure(code: number): ConnectFailure | null {
  return authCloseCodes.has(code) ? "unauthorized" : null;
}

/**
 * Finds out why a WebSocket to the scheduler failed: one HTTP request to an authenticated route.
 * `fallback` is what the socket said (used when HTTP works and the token is accepted).
 */
export async function diagnose(url: string, options: { token?: string; timeoutMs?: number; fallback?: string } = {}): Promise<ConnectError> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  try {
    const res = await clientFetch(new URL("/api/v1/info", url), { headers, signal: AbortSignal.timeout(options.timeoutMs ?? 3000) });
    if (res.status === 403) {
      // A refused Host or Origin says why; a token of too narrow a scope for /info is no failure.
      const error = String((await res.json().catch(() => ({})) as { error?: unknown }).error ?? "");
      if (!error.includes("scope")) return new ConnectError(url, "unreachable", error || "HTTP 403");
      return new ConnectError(url, "unreachable", options.fallback ?? "HTTP 403");
    }
    await res.body?.cancel();
    if (res.status === 401) return new ConnectError(url, "unauthorized");
    return new ConnectError(url, "unreachable", options.fallback ?? `HTTP ${res.status}`);
  } catch (err) {
    const { kind, detail } = classifyError(err);
    return new ConnectError(url, kind, detail);
  }
}

/**
 * The exit code of a nanny's worker that gave up reaching its scheduler (sysexits'
 * EX_UNAVAILABLE; a worker run by hand exits 1). The nanny does not count it as a start-up
 * death: it waits for the scheduler and starts it again.
 */
export const unreachableExitCode = 69;
