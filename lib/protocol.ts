/**
 * The wire format: every WebSocket frame between scheduler, workers, nannies and clients is one
 * CBOR-encoded array of messages `{op, ...}`, so that many tasks travel in one frame.
 * The message shapes are documented in docs/protocol.md.
 *
 * @module
 */
import { createHash, timingSafeEqual as nodeTimingSafeEqual } from "node:crypto";
import { Decoder, Encoder } from "cbor-x";

/** The largest frame a server accepts (bytes). */
export const maxFrameBytes = 64 * 1024 * 1024;

/** Results at most this many bytes travel inline with messages and are kept by the scheduler. */
export const inlineLimitBytes = 64 * 1024;

/** The version of this program, reported by /health and --version. */
export const version = "0.2.0";

const newEncoder = () => new Encoder({ useRecords: false, mapsAsObjects: true, largeBigIntToFloat: false });
let encoder = newEncoder();
/** Past this size an encoding keeps the encoder's buffer for itself (see `encodeShared`). */
export const ownBufferBytes = 8 * 1024 * 1024;

/**
 * Encodes with the shared encoder. cbor-x keeps its grown buffer for later calls, so after a
 * large value (a 200 MB result) the encoder is replaced: its buffer then belongs to the result
 * alone (no copy needed, `owned`) and is freed with it instead of staying for good.
 */
function encodeShared(value: unknown): { bytes: Uint8Array<ArrayBuffer>; owned: boolean } {
  const bytes = encoder.encode(value) as Uint8Array<ArrayBuffer>;
  if (bytes.byteLength <= ownBufferBytes) return { bytes, owned: false };
  encoder = newEncoder();
  return { bytes, owned: true };
}

/**
 * The encoder of one connection's frames in cbor-x's record extension, sequential: the keys of
 * each shape of object (a worker's `done`, a `compute`) are defined once per connection (tags
 * 105 and 57344–57599), then every object of that shape is its values alone. Only the peer's own
 * {@linkcode connectionDecoder} reads such frames (it keeps the definitions), so it is used on a
 * link only once the peer said it reads them (`records: true` in `register` or `welcome`).
 */
export function recordsEncoder(): Encoder {
  return new Encoder({ useRecords: true, mapsAsObjects: true, largeBigIntToFloat: false, sequential: true } as ConstructorParameters<typeof Encoder>[0]);
}

/**
 * The decoder of one connection's frames: reads plain CBOR as the shared decoder does, and the
 * record definitions of a {@linkcode recordsEncoder} as they come, kept for the frames after
 * (each shape's reader is compiled once per connection: a third of a plain map's time to decode).
 */
export function connectionDecoder(): Decoder {
  return new Decoder({ mapsAsObjects: true, structures: [] } as ConstructorParameters<typeof Decoder>[0]);
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
 * Encodes the messages of one WebSocket frame. The bytes are copied out of cbor-x's shared
 * buffer: a runtime may keep (or take over) a sent buffer while the next frame is encoded.
 */
export function encodeFrame(messages: unknown[]): Uint8Array<ArrayBuffer> {
  const { bytes, owned } = encodeShared(messages);
  return owned ? bytes : bytes.slice();
}

/** Decodes one CBOR value (with a connection's own decoder if given); throws a `SyntaxError` on malformed input. */
export function decodeCbor(data: Uint8Array | ArrayBuffer, decoder?: Decoder): unknown {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  try {
    return (decoder ?? encoder).decode(bytes);
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
export function decodeFrame(data: unknown, maxBytes = maxFrameBytes, decoder?: Decoder): Message[] {
  let bytes: Uint8Array;
  if (data instanceof Uint8Array) bytes = data;
  else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else throw new TypeError("Expected a binary CBOR frame");
  if (bytes.byteLength > maxBytes) throw new RangeError(`Frame of ${bytes.byteLength} bytes is too large`);
  // Bun's WebSocket client sometimes delivers an empty message after a large fragmented one.
  if (bytes.byteLength === 0) return [];
  const value = decodeCbor(bytes, decoder);
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
