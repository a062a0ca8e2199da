/**
 * One wording for "cannot talk to the scheduler" in every client command (`submit`, `events`,
 * `info`): refused, unknown host, timed out, TLS, unauthorized or forbidden, each named as such
 * with the scheduler's URL, found with one `GET /api/v1/info` before the real work.
 *
 * @module
 */
import { errorMessage } from "../lib/errors.ts";

/** The headers that carry the token, if there is one. */
export function authHeaders(): Record<string, string> {
  return process.env.CLUSTER_TOKEN ? { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` } : {};
}

/** Why a request to the scheduler failed, in a few words. */
export function describeFailure(err: unknown, timeoutSeconds: number): string {
  const e = err as { name?: string; code?: string; cause?: { code?: string; message?: string } };
  const text = `${e.code ?? ""} ${e.cause?.code ?? ""} ${errorMessage(err)} ${e.cause?.message ?? ""}`;
  if (e.name === "TimeoutError" || /timed? ?out/i.test(text)) return `timed out after ${timeoutSeconds} s`;
  if (/ECONNREFUSED|refused/i.test(text)) return "connection refused (is the scheduler running, and on this port?)";
  if (/ENOTFOUND|EAI_AGAIN|getaddrinfo|dns|resolve/i.test(text)) return "unknown host";
  if (/certificate|CERT_|TLS|SSL|self.signed/i.test(text)) return `TLS error: ${errorMessage(err)}`;
  if (/ECONNRESET|reset|closed/i.test(text)) return "the connection was closed (plain http to a TLS port?)";
  return errorMessage(err);
}

/**
 * Checks that the scheduler answers and accepts our token; throws an Error with one specific
 * line otherwise. Returns the response of `GET /api/v1/info`.
 *
 * @example
 * ```ts
 * await reachScheduler("http://127.0.0.1:8786"); // throws 'Cannot reach scheduler at "…": connection refused …'
 * ```
 */
export async function reachScheduler(url: string, options: { timeoutSeconds?: number } = {}): Promise<Response> {
  const timeoutSeconds = options.timeoutSeconds ?? 10;
  let res: Response;
  try {
    res = await fetch(`${url}/api/v1/info`, { headers: authHeaders(), signal: AbortSignal.timeout(timeoutSeconds * 1000) });
  } catch (err) {
    throw new Error(`Cannot reach scheduler at "${url}": ${describeFailure(err, timeoutSeconds)}`);
  }
  if (res.status === 401) {
    await res.body?.cancel();
    const which = process.env.CLUSTER_TOKEN ? "refused the token" : "needs a token";
    throw new Error(`Scheduler at "${url}" ${which} (401 unauthorized): set CLUSTER_TOKEN or --token-file`);
  }
  if (res.status === 403) throw new Error(`Scheduler at "${url}" refused access (403 forbidden): ${(await res.text()).slice(0, 200)}`);
  if (!res.ok) throw new Error(`Scheduler at "${url}" answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
  return res;
}
