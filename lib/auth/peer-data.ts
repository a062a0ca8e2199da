/**
 * Authentication of the workers' peer-data requests (`POST /api/v1/data`). Every worker gets the
 * cluster's peer key from the scheduler, sealed in its welcome (handshake.ts). A request carries
 * `x-cluster-auth: TIMESTAMP.NONCE.MAC` with MAC = HMAC-SHA256(peerKey,
 * "METHOD|PATH|TIMESTAMP|NONCE|sha256(body)"); the server refuses a stale one (more than 60 s
 * off) or a nonce it has seen, and signs its answer with HMAC(peerKey, "NONCE|sha256(body)"), which
 * the requester checks. The peer key itself never travels in clear.
 *
 * @module
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** The header of a signed request and of its signed answer. */
export const peerAuthHeader = "x-cluster-auth";

/** How far a request's timestamp may be from the server's clock. */
export const maxSkewMs = 60_000;

/** Nonces remembered at most (a full cache refuses until old ones expire). */
const maxNonces = 100_000;

function sha256(body: Uint8Array): string {
  return createHash("sha256").update(body).digest("hex");
}

function mac(key: Uint8Array, text: string): string {
  return createHmac("sha256", key).update(text).digest("hex");
}

function sameHex(a: string, b: string): boolean {
  return a.length === b.length && /^[0-9a-f]*$/.test(a) && timingSafeEqual(Buffer.from(a, "hex"), Buffer.from(b, "hex"));
}

/**
 * Signs a request: the header value and the nonce its answer must be signed with.
 *
 * @example
 * ```ts
 * const { header, nonce } = signRequest(key, { method: "POST", path: "/api/v1/data", body });
 * ```
 */
export function signRequest(key: Uint8Array, request: { method: string; path: string; body: Uint8Array; now?: number }): { header: string; nonce: string } {
  const timestamp = String(request.now ?? Date.now());
  const nonce = randomBytes(16).toString("hex");
  const sig = mac(key, `${request.method}|${request.path}|${timestamp}|${nonce}|${sha256(request.body)}`);
  return { header: `${timestamp}.${nonce}.${sig}`, nonce };
}

/** The signature of an answer to the request with `nonce`. */
export function signResponse(key: Uint8Array, nonce: string, body: Uint8Array): string {
  return mac(key, `${nonce}|${sha256(body)}`);
}

/** Whether an answer's signature is right (the requester checks before it decodes). */
export function verifyResponse(key: Uint8Array, nonce: string, body: Uint8Array, signature: string | null): boolean {
  return signature !== null && sameHex(signature, signResponse(key, nonce, body));
}

/**
 * The server's side: checks signatures and remembers nonces (for twice the allowed skew, after
 * which a replay is stale anyway).
 */
export class PeerRequestVerifier {
  #seen = new Map<string, number>();

  /** The nonce of a valid request, or the reason it is refused. */
  verify(
    key: Uint8Array | null,
    request: { method: string; path: string; body: Uint8Array; header: string | undefined; now?: number },
  ): { ok: true; nonce: string } | { ok: false; reason: string } {
    if (!key) return { ok: false, reason: "This worker has no peer key yet" };
    const parts = (request.header ?? "").split(".");
    if (parts.length !== 3) return { ok: false, reason: `Missing or malformed ${peerAuthHeader} header` };
    const [timestamp, nonce, sig] = parts;
    const now = request.now ?? Date.now();
    const time = Number(timestamp);
    if (!/^\d+$/.test(timestamp) || Math.abs(now - time) > maxSkewMs) return { ok: false, reason: "Stale request (clock skew over 60 s)" };
    if (!/^[0-9a-f]{32}$/.test(nonce)) return { ok: false, reason: "Malformed nonce" };
    const expected = mac(key, `${request.method}|${request.path}|${timestamp}|${nonce}|${sha256(request.body)}`);
    if (!sameHex(sig, expected)) return { ok: false, reason: "Bad signature" };
    this.#prune(now);
    if (this.#seen.has(nonce)) return { ok: false, reason: "Replayed request" };
    if (this.#seen.size >= maxNonces) return { ok: false, reason: "Too many requests in the replay window" };
    this.#seen.set(nonce, now + 2 * maxSkewMs);
    return { ok: true, nonce };
  }

  #prune(now: number): void {
    // Insertion order is expiry order (every entry lives the same time).
    for (const [nonce, expires] of this.#seen) {
      if (expires > now) break;
      this.#seen.delete(nonce);
    }
  }
}
