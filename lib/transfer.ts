/**
 * Values of any size over HTTP, streamed: the body of a worker's `POST /api/v1/data` answer and
 * of `GET /api/v1/results/KEY` with `Accept: application/cbor`.
 *
 * A data answer is a CBOR sequence (RFC 8742) of pairs: the key (a text string), then its value
 * as a byte string — the raw bytes when the value is a `Uint8Array`, else the value's CBOR
 * wrapped in tag 24 ("encoded CBOR data item"). Every item announces its length up front, so
 * the reader allocates each value once at its final size and fills it as bytes arrive; the
 * writer sends a `Uint8Array` value as views on its own memory, chunk by chunk, as fast as the
 * reader takes them (a pull stream: the runtime asks for the next chunk when the socket drains).
 * So neither side ever holds more than the value and one chunk, whatever the size.
 *
 * @module
 */
import { Encoder } from "cbor-x";
import { decodeCbor } from "./protocol.ts";
import { transferred } from "./frames.ts";

/** The media type of a data answer. */
export const valueSequenceType = "application/cbor-seq";
/** Bytes per chunk handed to the runtime. */
export const streamChunkBytes = 1024 * 1024;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** The head of a CBOR item: major type and length (or tag number). */
export function cborHead(major: number, n: number): Uint8Array {
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  if (n < 0x100000000) return Uint8Array.of(m | 26, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  const out = new Uint8Array(9);
  out[0] = m | 27;
  new DataView(out.buffer).setBigUint64(1, BigInt(n));
  return out;
}

/** The encoding of one value: raw bytes, or its CBOR in tag 24. */
function encodeValue(value: unknown): { head: Uint8Array; body: Uint8Array } {
  if (value instanceof Uint8Array && value.constructor === Uint8Array) {
    return { head: cborHead(2, value.byteLength), body: value };
  }
  // An encoder of its own: the shared one would keep a large buffer for good.
  const body = new Encoder({ useRecords: false, mapsAsObjects: true, largeBigIntToFloat: false }).encode(value ?? null);
  const tag = cborHead(6, 24);
  const len = cborHead(2, body.byteLength);
  const head = new Uint8Array(tag.byteLength + len.byteLength);
  head.set(tag);
  head.set(len, tag.byteLength);
  return { head, body };
}

/** Yields `bytes` in views of at most `streamChunkBytes`. */
function* chunksOf(bytes: Uint8Array): Generator<Uint8Array> {
  for (let at = 0; at < bytes.byteLength; at += streamChunkBytes) {
    yield bytes.subarray(at, Math.min(bytes.byteLength, at + streamChunkBytes));
  }
}

/** A pull stream of the chunks a generator makes, one per pull. */
function pullStream(chunks: Iterator<Uint8Array>): ReadableStream<Uint8Array<ArrayBuffer>> {
  return new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull(controller) {
      const next = chunks.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value as Uint8Array<ArrayBuffer>);
    },
  }, { highWaterMark: 0 });
}

/**
 * The data answer for these keys: each key `get` finds, then its value. A value is encoded only
 * when its turn comes.
 *
 * @example
 * ```ts
 * return new Response(valueSequence(keys, (k) => data.has(k) ? { value: data.get(k) } : undefined));
 * ```
 */
export function valueSequence(keys: readonly string[], get: (key: string) => { value: unknown } | undefined): ReadableStream<Uint8Array<ArrayBuffer>> {
  return pullStream((function* () {
    for (const key of keys) {
      const found = get(key);
      if (!found) continue;
      const name = textEncoder.encode(key);
      const { head, body } = encodeValue(found.value);
      const first = new Uint8Array(cborHead(3, name.byteLength).byteLength + name.byteLength + head.byteLength);
      const keyHead = cborHead(3, name.byteLength);
      first.set(keyHead);
      first.set(name, keyHead.byteLength);
      first.set(head, keyHead.byteLength + name.byteLength);
      yield first;
      yield* chunksOf(body);
    }
  })());
}

/**
 * A result as the CBOR body `{"key": KEY, "value": VALUE}` (`GET /api/v1/results/KEY` with
 * `Accept: application/cbor`): a `Uint8Array` value is a byte string sent from its own memory,
 * anything else is encoded once.
 */
export function resultBody(key: string, value: unknown): ReadableStream<Uint8Array<ArrayBuffer>> {
  const name = textEncoder.encode(key);
  const parts = [cborHead(5, 2), cborHead(3, 3), textEncoder.encode("key"), cborHead(3, name.byteLength), name, cborHead(3, 5), textEncoder.encode("value")];
  const binary = value instanceof Uint8Array && value.constructor === Uint8Array;
  const body = binary ? value : encodeValue(value).body;
  if (binary) parts.push(cborHead(2, body.byteLength));
  const prefix = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    prefix.set(p, at);
    at += p.byteLength;
  }
  return pullStream((function* () {
    yield prefix;
    yield* chunksOf(body);
  })());
}

/** Reads a byte stream piece by piece, with a time limit on each wait. */
class StreamReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #at = 0;
  #idleMs: number;

  constructor(stream: ReadableStream<Uint8Array>, idleMs: number) {
    this.#reader = stream.getReader();
    this.#idleMs = idleMs;
  }

  /** Bytes left in the current chunk. */
  get #left(): number {
    return this.#chunk.byteLength - this.#at;
  }

  /** Reads the next chunk; false at the end of the stream. */
  async #next(): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`No data for ${this.#idleMs / 1000} s`)), this.#idleMs);
    });
    try {
      const { done, value } = await Promise.race([this.#reader.read(), stalled]);
      if (done) return false;
      this.#chunk = value;
      this.#at = 0;
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  /** One byte, or -1 at the end of the stream. */
  async byte(): Promise<number> {
    while (this.#left === 0) if (!(await this.#next())) return -1;
    return this.#chunk[this.#at++];
  }

  /** Fills `target` from the stream; throws when it ends first. */
  async fill(target: Uint8Array): Promise<void> {
    let filled = 0;
    while (filled < target.byteLength) {
      if (this.#left === 0 && !(await this.#next())) throw new Error("The stream ended inside a value");
      const n = Math.min(this.#left, target.byteLength - filled);
      target.set(this.#chunk.subarray(this.#at, this.#at + n), filled);
      this.#at += n;
      filled += n;
      transferred(n);
    }
  }

  /** Reads the head of the next item: `null` at a clean end of the stream. */
  async head(): Promise<{ major: number; n: number; raw: Uint8Array } | null> {
    const first = await this.byte();
    if (first < 0) return null;
    const major = first >> 5;
    const info = first & 31;
    if (info < 24) return { major, n: info, raw: Uint8Array.of(first) };
    if (info > 27) return { major, n: -1, raw: Uint8Array.of(first) };
    const raw = new Uint8Array(1 + (1 << (info - 24)));
    raw[0] = first;
    await this.fill(raw.subarray(1));
    let n = 0;
    for (let i = 1; i < raw.byteLength; i++) n = n * 256 + raw[i];
    return { major, n, raw };
  }

  cancel(): void {
    this.#reader.cancel().catch(() => {});
  }
}

/**
 * Reads a data answer into `{key: value}`. Keys whose values arrived whole are kept even when
 * the stream fails later (`error` then says why), so the caller asks again only for the rest.
 * `idleMs` bounds each wait for bytes, not the whole transfer: 200 MB may take a while.
 */
export async function readValueSequence(body: ReadableStream<Uint8Array> | null, options: { idleMs?: number } = {}): Promise<{ data: Record<string, unknown>; error?: Error }> {
  const data: Record<string, unknown> = {};
  if (!body) return { data };
  const reader = new StreamReader(body, options.idleMs ?? 10_000);
  try {
    for (;;) {
      const keyHead = await reader.head();
      if (keyHead === null) return { data };
      if (keyHead.major !== 3) throw new SyntaxError("Expected a key in a data answer");
      const name = new Uint8Array(keyHead.n);
      await reader.fill(name);
      let head = await reader.head();
      const wrapped = head?.major === 6 && head.n === 24;
      if (wrapped) head = await reader.head();
      if (head === null || head.major !== 2) throw new SyntaxError("Expected a value in a data answer");
      const bytes = new Uint8Array(head.n);
      await reader.fill(bytes);
      data[textDecoder.decode(name)] = wrapped ? decodeCbor(bytes) : bytes;
    }
  } catch (err) {
    reader.cancel();
    return { data, error: err instanceof Error ? err : new Error(String(err)) };
  }
}
