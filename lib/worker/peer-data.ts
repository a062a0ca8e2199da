/**
 * A worker's data exchange with its peers: it serves its results at `POST /api/v1/data`
 * (streamed, any size: lib/transfer.ts) and fetches from other workers, each request signed with
 * the peer key the scheduler sealed into the welcome (lib/auth/peer-data.ts) when the cluster
 * has a token.
 *
 * @module
 */
import type { Context } from "hono";
import { peerAuthHeader, PeerRequestVerifier, signRequest, signResponse, verifyResponse } from "../auth/peer-data.ts";
import { errorMessage } from "../errors.ts";
import type { ComponentLogger } from "../log.ts";
import { decodeCbor, encodeCbor } from "../protocol.ts";
import { runtime } from "../runtime/mod.ts";
import { readValueSequence, valueSequence, valueSequenceType } from "../transfer.ts";

/**
 * What a streamed answer's signature covers instead of its body: the answer proves the peer
 * holds the key and answers this very request (its nonce); the bytes' integrity is TLS's job.
 */
const streamed = new Uint8Array(0);

/** How long a fetch may wait for its answer to start, and then for each next piece. */
const answerTimeoutMs = 10_000;

/**
 * The peer-data side of one worker.
 *
 * @example
 * ```ts
 * const peers = new PeerData({ token, data: state.data, log });
 * app.post("/api/v1/data", (c) => peers.serve(c));
 * const values = await peers.fetch("http://10.0.0.2:40123", ["x"]);
 * ```
 */
export class PeerData {
  /** The key peers sign with (from the scheduler's welcome); null before it, or without auth. */
  key: Uint8Array | null = null;
  #token: string | undefined;
  #data: ReadonlyMap<string, unknown>;
  #log: ComponentLogger;
  #verifier = new PeerRequestVerifier();

  constructor(options: { token: string | undefined; data: ReadonlyMap<string, unknown>; log: ComponentLogger }) {
    this.#token = options.token;
    this.#data = options.data;
    this.#log = options.log;
  }

  /** Fetches keys from the worker at `address`; the keys it does not hold are absent. */
  async fetch(address: string, keys: string[]): Promise<Record<string, unknown>> {
    const url = new URL("/api/v1/data", address);
    const body = encodeCbor({ keys }).slice();
    const headers: Record<string, string> = { "content-type": "application/cbor", accept: valueSequenceType };
    const key = this.key;
    let nonce = "";
    if (this.#token) {
      if (!key) throw new Error("no peer key from the scheduler yet");
      const signed = signRequest(key, { method: "POST", path: url.pathname, body });
      headers[peerAuthHeader] = signed.header;
      nonce = signed.nonce;
    }
    // The answer must start within 10 s; after that only a stall ends it (lib/transfer.ts).
    const started = new AbortController();
    const timer = setTimeout(() => started.abort(new Error(`No answer within ${answerTimeoutMs / 1000} s`)), answerTimeoutMs);
    const res = await runtime.fetch(url, { method: "POST", headers, body, signal: started.signal }).finally(() => clearTimeout(timer));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    if (key && !verifyResponse(key, nonce, streamed, res.headers.get(peerAuthHeader))) {
      await res.body?.cancel();
      throw new Error("the peer's answer is not signed with the peer key");
    }
    if (!res.headers.get("content-type")?.includes(valueSequenceType)) {
      return (decodeCbor(new Uint8Array(await res.arrayBuffer())) as { data: Record<string, unknown> }).data;
    }
    const { data, error } = await readValueSequence(res.body);
    if (error) this.#log.debug(`Transfer from ${address} broke off: ${errorMessage(error)}`);
    return data;
  }

  /** Answers `POST /api/v1/data`: a signed request (with auth) gets the values it asks for, streamed. */
  async serve(c: Context): Promise<Response> {
    const body = new Uint8Array(await c.req.arrayBuffer());
    let nonce = "";
    if (this.#token) {
      const verdict = this.#verifier.verify(this.key, { method: "POST", path: c.req.path, body, header: c.req.header(peerAuthHeader) });
      if (!verdict.ok) return c.json({ error: `Unauthorized: ${verdict.reason}` }, 401);
      nonce = verdict.nonce;
    }
    let keys: string[];
    try {
      keys = (decodeCbor(body) as { keys: string[] }).keys;
      if (!Array.isArray(keys)) throw new TypeError("keys must be an array");
    } catch (err) {
      return c.json({ error: errorMessage(err) }, 400);
    }
    // A value dropped meanwhile is left out.
    const data = this.#data;
    const stream = valueSequence(keys, (key) => data.has(key) ? { value: data.get(key) } : undefined);
    const headers: Record<string, string> = { "content-type": valueSequenceType };
    if (this.key && nonce) headers[peerAuthHeader] = signResponse(this.key, nonce, streamed);
    return new Response(stream, { headers });
  }
}
