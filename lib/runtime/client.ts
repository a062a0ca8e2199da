/**
 * The client half of the runtime split: outgoing HTTPS requests and WebSockets that trust a
 * private CA. Kept apart from `mod.ts` so that the client library does not load Hono's server
 * adapters.
 *
 * Bun takes `tls: { ca }` on both `fetch` and `WebSocket`. Deno takes an `HttpClient` made by
 * `Deno.createHttpClient({ caCerts })`, on `fetch` (`client`) and, since Deno 2.x, on
 * `new WebSocket(url, { client })` too; so neither runtime needs `DENO_CERT`, `--cert` or a
 * restart to trust a CA given at run time, and the CA applies only to the cluster's own
 * connections, not to every request a plugin makes.
 *
 * @module
 */

/** TLS settings of one outgoing connection. */
export interface ClientTlsOptions {
  /**
   * PEM certificate(s) of the CA to trust. Bun trusts only these; Deno trusts these besides its
   * usual roots. @default the CA given to {@linkcode trustCa}, else the system's roots
   */
  ca?: string;
}

interface DenoClientApi {
  createHttpClient(options: { caCerts: string[] }): { close(): void };
}

const deno = (globalThis as { Deno?: DenoClientApi }).Deno;
/** The CA this process trusts for the cluster's connections (`--tls-ca`). */
let processCa: string | undefined;
/** One Deno HttpClient per CA: each holds its own connection pool. */
const denoClients = new Map<string, unknown>();

/**
 * Trusts a CA for every cluster connection of this process that gives no `ca` of its own
 * (the command line's `--tls-ca`); `undefined` goes back to the system's roots.
 *
 * @example
 * ```ts
 * trustCa(readFileSync("ca.pem", "utf8"));
 * const res = await clientFetch("https://127.0.0.1:8786/health");
 * ```
 */
export function trustCa(pem: string | undefined): void {
  processCa = pem;
}

/** The CA this process trusts for cluster connections, if one was given. */
export function trustedCa(): string | undefined {
  return processCa;
}

function isSecure(url: string | URL): boolean {
  const protocol = typeof url === "string" ? url.slice(0, url.indexOf(":") + 1) : url.protocol;
  return protocol === "https:" || protocol === "wss:";
}

function denoClient(ca: string): unknown {
  let client = denoClients.get(ca);
  if (!client) denoClients.set(ca, client = deno!.createHttpClient({ caCerts: [ca] }));
  return client;
}

/** The runtime-specific part of `fetch` init or `WebSocket` options that trusts `ca`. */
function tlsInit(url: string | URL, options: ClientTlsOptions): Record<string, unknown> {
  const ca = options.ca ?? processCa;
  if (ca === undefined || !isSecure(url)) return {};
  return deno ? { client: denoClient(ca) } : { tls: { ca } };
}

/**
 * `fetch` for the cluster's own requests: an `https:` URL trusts the given (or the process's) CA.
 *
 * @example
 * ```ts
 * const res = await clientFetch("https://127.0.0.1:8786/api/v1/info", {}, { ca });
 * ```
 */
export async function clientFetch(url: string | URL, init: RequestInit = {}, options: ClientTlsOptions = {}): Promise<Response> {
  try {
    return await fetch(url, { ...init, ...tlsInit(url, options) } as RequestInit);
  } catch (err) {
    // Deno says only "fetch failed"; the reason (e.g. "invalid peer certificate") is the cause.
    const cause = (err as { cause?: unknown }).cause;
    const message = err instanceof Error ? err.message + (cause instanceof Error ? `: ${cause.message}` : "") : String(err);
    if (!isCertificateError(message) && message === (err as Error).message) throw err;
    throw new TypeError(message, { cause: err });
  }
}

/**
 * `new WebSocket(url)` for the cluster's own sockets: a `wss:` URL trusts the given (or the
 * process's) CA.
 *
 * @example
 * ```ts
 * const socket = clientWebSocket("wss://127.0.0.1:8786/api/v1/client", { ca });
 * ```
 */
export function clientWebSocket(url: string | URL, options: ClientTlsOptions = {}): WebSocket {
  const init = tlsInit(url, options);
  if (!("client" in init) && !("tls" in init)) return new WebSocket(url);
  return new WebSocket(url, init as unknown as WebSocketInit);
}

/** The non-standard second argument both runtimes accept. */
type WebSocketInit = ConstructorParameters<typeof WebSocket>[1];

/** Messages of both runtimes for a certificate that does not verify. */
const certificateFailure = /certificate|UnknownIssuer|self[- ]signed|unable to verify|CERT_|NotValidForName/i;

/**
 * Whether a connection error is a TLS verification failure: it will not pass on a retry, and
 * the fix is `--tls-ca` (or a certificate for the right name).
 */
export function isCertificateError(message: string): boolean {
  return certificateFailure.test(message);
}

/** A connection error's message, with the likely fix when it is a TLS verification failure. */
export function describeConnectError(message: string): string {
  return isCertificateError(message) ? `${message} (is --tls-ca set to the cluster's CA, and is the host in its certificate?)` : message;
}
