/**
 * One check before a client command's real work (`submit`, `events`, `info`): `GET /api/v1/info`
 * with the token, so that a scheduler that is not there, refuses the token or fails TLS is named
 * as such, in the one wording of lib/connect-error.ts.
 *
 * @module
 */
import { classifyError, ConnectError } from "../lib/connect-error.ts";
import { clientFetch } from "../lib/runtime/client.ts";

/** The headers that carry the token, if there is one. */
export function authHeaders(): Record<string, string> {
  return process.env.CLUSTER_TOKEN ? { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` } : {};
}

/**
 * `GET path` at the scheduler with the token; a scheduler that is not there, refuses the token or
 * fails TLS is a ConnectError (another failing status an Error), each in one specific line.
 *
 * @example
 * ```ts
 * await fetchScheduler("http://127.0.0.1:8786", "/api/v1/logs?level=warn");
 * ```
 */
export async function fetchScheduler(url: string, path: string, options: { timeoutSeconds?: number } = {}): Promise<Response> {
  const timeoutSeconds = options.timeoutSeconds ?? 10;
  let res: Response;
  try {
    res = await clientFetch(`${url}${path}`, { headers: authHeaders(), signal: AbortSignal.timeout(timeoutSeconds * 1000) });
  } catch (err) {
    const { kind, detail } = classifyError(err);
    throw new ConnectError(url, kind, kind === "timeout" ? `no answer within ${timeoutSeconds} s` : detail);
  }
  if (res.status === 401) {
    await res.body?.cancel();
    throw new ConnectError(url, "unauthorized", process.env.CLUSTER_TOKEN ? undefined : "it needs a token: set CLUSTER_TOKEN or --token-file");
  }
  if (res.status === 403) throw new Error(`The scheduler at ${url} refused access (403): ${(await res.text()).slice(0, 200)}`);
  if (!res.ok) throw new Error(`The scheduler at ${url} answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
  return res;
}

/**
 * Checks that the scheduler answers and accepts our token before a command's real work; returns
 * the response of `GET /api/v1/info`.
 *
 * @example
 * ```ts
 * await reachScheduler("http://127.0.0.1:8786"); // Cannot reach the scheduler at http://127.0.0.1:8786: connection refused
 * ```
 */
export function reachScheduler(url: string, options: { timeoutSeconds?: number } = {}): Promise<Response> {
  return fetchScheduler(url, "/api/v1/info", options);
}
