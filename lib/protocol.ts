/**
 * The wire format: every WebSocket frame between scheduler, workers, nannies and clients is one
 * CBOR-encoded array of messages `{op, ...}`, so that many tasks travel in one frame.
 * The message shapes are documented in docs/protocol.md.
 *
 * @module
 */
import { createHash, timingSafeEqual as nodeTimingSafeEqual } from "node:crypto";
import { Encoder } from "cbor-x";

/** The largest frame a server accepts (bytes). */
export const maxFrameBytes = 64 * 1024 * 1024;

/** Results at most this many bytes travel inline with messages and are kept by the scheduler. */
export const inlineLimitBytes = 64 * 1024;

/** The version of this program, reported by /health and --version. */
export const version = "0.2.0";

/**
 * Plain CBOR maps (what every client and CBOR library reads), or cbor-x's record extension
 * (tags 105 and 57344–57599: an object's keys written once per frame for all objects of that
 * shape, then only their values), used between the scheduler and its own workers and nannies:
 * half the bytes, and decoded in half the time (the plain decoder reads both). With
 * `mapsAsObjects`, both write a `Map` with tag 259, so that it comes back a `Map`.
 */
const newEncoder = (records: boolean) =>
  new Encoder(
    records
      ? { useRecords: true, mapsAsObjects: true, largeBigIntToFloat: false }
      : { useRecords: false, mapsAsObjects: true, largeBigIntToFloat: false },
  );
let encoder = newEncoder(false);
let recordsEncoder = newEncoder(true);
/** Past this size an encoding keeps the encoder's buffer for itself (see `encodeShared`). */
const ownBufferBytes = 8 * 1024 * 1024;

/**
 * Encodes with a shared encoder. cbor-x keeps its grown buffer for later calls, so after a
 * large value (a 200 MB result) the encoder is replaced: its buffer then belongs to the result
 * alone (no copy needed, `owned`) and is freed with it instead of staying for good.
 */
function encodeShared(value: unknown, records = false): { bytes: Uint8Array<ArrayBuffer>; owned: boolean } {
  const bytes = (records ? recordsEncoder : encoder).encode(value) as Uint8Array<ArrayBuffer>;
  if (bytes.byteLength <= ownBufferBytes) return { bytes, owned: false };
  if (records) recordsEncoder = newEncoder(true);
  else encoder = newEncoder(false);
  return { bytes, owned: true };
}

/** One protocol message. */
export interface Message {
  op: string;
  [field: string]: unknown;
}

/**
 * Encodes a value as CBOR. The result is a view on a shared buffer: send it as it is.
 *
 * @example
 * ```ts
 * socket.send(encodeCbor([{ op: "heartbeat" }]));
 * ```
 */
export function encodeCbor(value: unknown): Uint8Array<ArrayBuffer> {
  return encodeShared(value).bytes;
}

/**
 * Encodes the messages of one WebSocket frame, with `records` in cbor-x's record extension (for
 * the scheduler's own workers and nannies only). The bytes are copied out of cbor-x's shared
 * buffer: a runtime may keep (or take over) a sent buffer while the next frame is encoded.
 */
export function encodeFrame(messages: unknown[], records = false): Uint8Array<ArrayBuffer> {
  const { bytes, owned } = encodeShared(messages, records);
  return owned ? bytes : bytes.slice();
}

/** Decodes one CBOR value; throws a `SyntaxError` on malformed input. */
export function decodeCbor(data: Uint8Array | ArrayBuffer): unknown {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  try {
    return encoder.decode(bytes);
  } catch (err) {
    throw new SyntaxError(`Malformed CBOR: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Decodes a CBOR sequence (items one after the other, RFC 8742) into an array of its items. */
export function decodeCborSequence(bytes: Uint8Array): unknown[] {
  try {
    return encoder.decodeMultiple(bytes) as unknown[];
  } catch (err) {
    throw new SyntaxError(`Malformed CBOR: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Decodes a frame into its messages; throws a `TypeError` when it is not an array of `{op}`, a
 * `RangeError` past `maxBytes` (a frame put together from chunks has its own cap, lib/frames.ts).
 */
export function decodeFrame(data: unknown, maxBytes = maxFrameBytes): Message[] {
  let bytes: Uint8Array;
  if (data instanceof Uint8Array) bytes = data;
  else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else throw new TypeError("Expected a binary CBOR frame");
  if (bytes.byteLength > maxBytes) throw new RangeError(`Frame of ${bytes.byteLength} bytes is too large`);
  // Bun's WebSocket client sometimes delivers an empty message after a large fragmented one.
  if (bytes.byteLength === 0) return [];
  const value = decodeCbor(bytes);
  const messages = Array.isArray(value) ? value : [value];
  for (const msg of messages) {
    if (msg === null || typeof msg !== "object" || typeof (msg as Message).op !== "string") {
      throw new TypeError("Expected messages of the form {op: string, ...}");
    }
  }
  return messages as Message[];
}

/** Estimates the encoded size of a value in bytes: cheaply for primitives, else by encoding it. */
export function sizeOf(value: unknown): number {
  switch (typeof value) {
    case "number":
    case "boolean":
    case "undefined":
      return 8;
    case "string":
      return value.length + 1;
    case "bigint":
      return 16;
    default:
      if (value === null) return 1;
      if (value instanceof Uint8Array) return value.byteLength;
      try {
        return encodeShared(value).bytes.byteLength;
      } catch {
        return 0;
      }
  }
}

/** Compares two strings in constant time (for tokens). */
export function timingSafeEqual(a: string, b: string): boolean {
  // Hashing first gives equal lengths, so the comparison time says nothing about the token.
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return nodeTimingSafeEqual(digest(a), digest(b));
}

/** Reads the cluster token from `CLUSTER_TOKEN` (already resolved from `--token-file`). */
export function clusterToken(): string | undefined {
  const token = process.env.CLUSTER_TOKEN;
  return token ? token.trim() : undefined;
}

/**
 * The WebSocket URL of a scheduler path. It carries no token: every link authenticates in-band
 * by challenge–response (lib/auth/handshake.ts).
 *
 * @example
 * ```ts
 * socketUrl("http://127.0.0.1:8786", "/api/v1/events"); // ws://127.0.0.1:8786/api/v1/events
 * ```
 */
export function socketUrl(scheduler: string, path: string): URL {
  const url = new URL(path, scheduler);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}
