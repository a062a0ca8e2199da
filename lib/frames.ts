/**
 * Frames of any size on the CBOR WebSockets. A WebSocket message is read whole into memory by
 * both runtimes and capped at `maxFrameBytes`, so a frame larger than `splitFrameBytes` (a
 * 200 MB result in a `reply`, a large argument in `compute`) never travels as one message: it
 * is cut into `chunk` messages of at most `chunkBytes` each, sent one by one while the socket's
 * send buffer stays under `highWaterBytes` (backpressure), and put back together on the other
 * side into one buffer of the announced size before it is decoded as an ordinary frame.
 *
 * Frames queued behind a split one wait for it, so the order of messages on a link never changes
 * (a `gather` sent after a large `graph` still finds the graph applied).
 *
 * @module
 */
import { errorMessage } from "./errors.ts";
import { type Encoder, Tag } from "cbor-x";
import type { WSContext } from "hono/ws";
import { connectionDecoder, decodeFrame, encodeFrame, type Message, ownBufferBytes, recordsEncoder } from "./protocol.ts";

/** Frames larger than this are split into chunks. */
export const splitFrameBytes = 8 * 1024 * 1024;
/** The payload of one chunk message. */
export const chunkBytes = 1024 * 1024;
/** A sender waits while more than this is queued on its socket. */
export const highWaterBytes = 4 * 1024 * 1024;

/**
 * One piece of a split frame: `size` is the whole frame's (or part's), `offset` where `bytes`
 * go. Pieces with `part` carry a large binary value of the frame that follows (see below).
 */
export interface ChunkMessage {
  op: "chunk";
  id: number;
  offset: number;
  size: number;
  bytes: Uint8Array;
  part?: number;
}

/** Bytes of data moved in chunks between two forced collections (see `transferred`). */
export const gcEveryBytes = 32 * 1024 * 1024;
const bunGc = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc;
/** V8's collector, where the process was started with `--v8-flags=--expose-gc`. */
const v8Gc = (globalThis as { gc?: () => void }).gc;

/**
 * Every received chunk is a message the runtime allocated and we copied out of, every sent one a
 * frame encoded for it: garbage the size of the data. Neither collector counts it soon enough
 * (the peak memory of a 200 MB transfer doubled), so a large transfer asks for a collection
 * every 32 MiB: always under Bun, under Deno when started with `--v8-flags=--expose-gc`.
 */
export function collectGarbage(): void {
  if (bunGc) bunGc(true);
  else v8Gc?.();
}

/** Bytes moved in chunks since the last collection, by every transfer of the process. */
let transferredBytes = 0;

/** Counts bytes of data received or sent in chunks, and collects garbage every `gcEveryBytes`. */
export function transferred(bytes: number): void {
  if ((transferredBytes += bytes) < gcEveryBytes) return;
  transferredBytes = 0;
  collectGarbage();
}

/** Binary values at least this large travel as parts (see `eachSlot`). */
export const partBytes = 1024 * 1024;
/** The CBOR tag that stands for part N in a frame whose parts came first. */
const partTag = 40_001;

/** A place in a message that may hold a large value: a record or an array, and the name in it. */
type Slot = (holder: Record<string, unknown> | unknown[], key: string | number) => void;

/**
 * Calls `slot` for each place of a message where large binary values travel: the results in a
 * reply's `data` or `values`, the arguments of a `compute`, the arguments of a graph's tasks.
 * Only these (not every nested value): a frame of 100,000 tasks is walked at little cost.
 */
function eachSlot(msg: Record<string, unknown>, slot: Slot): void {
  switch (msg?.op) {
    case "reply":
      for (const field of ["data", "values"]) {
        const values = msg[field] as Record<string, unknown> | unknown[] | undefined;
        // A gather's values come as a list (by index: `for…in` would make 10,000 index strings).
        if (Array.isArray(values)) for (let i = 0; i < values.length; i++) slot(values, i);
        else if (values !== null && typeof values === "object") for (const key in values) slot(values, key);
      }
      break;
    case "compute":
      if (Array.isArray(msg.args)) for (let i = 0; i < msg.args.length; i++) slot(msg.args, i);
      break;
    case "graph": {
      const tasks = (msg.graph as { tasks?: unknown } | undefined)?.tasks;
      if (!Array.isArray(tasks)) break;
      for (const task of tasks) {
        const args = (task as { args?: unknown } | null)?.args;
        if (Array.isArray(args)) for (let i = 0; i < args.length; i++) slot(args, i);
      }
      break;
    }
  }
}

/**
 * Encodes a frame with its large `Uint8Array` values (see `eachSlot`) taken out: encoding them
 * would copy them, so they are sent from their own memory as parts and the frame holds a tag in
 * their place. The messages are changed only while they are encoded, then put back as they were.
 */
function encodeWithParts(messages: unknown[], encode: (messages: unknown[]) => Uint8Array): { frame: Uint8Array; parts: Uint8Array[] } {
  const parts: Uint8Array[] = [];
  const taken: Array<[Record<string, unknown> | unknown[], string | number, Uint8Array]> = [];
  const take: Slot = (holder, key) => {
    const value = (holder as Record<string | number, unknown>)[key];
    if (!(value instanceof Uint8Array) || value.byteLength < partBytes) return;
    taken.push([holder, key, value]);
    (holder as Record<string | number, unknown>)[key] = new Tag(parts.length, partTag);
    parts.push(value);
  };
  for (const msg of messages) eachSlot(msg as Record<string, unknown>, take);
  if (taken.length === 0) return { frame: encode(messages), parts };
  try {
    return { frame: encode(messages), parts };
  } finally {
    for (const [holder, key, value] of taken) (holder as Record<string | number, unknown>)[key] = value;
  }
}

/** Puts the parts back where `encodeWithParts` left their tags. */
function putParts(messages: Message[], parts: Uint8Array[]): void {
  const put: Slot = (holder, key) => {
    const value = (holder as Record<string | number, unknown>)[key];
    if (!(value instanceof Tag) || value.tag !== partTag) return;
    const part = parts[value.value as number];
    if (!part) throw new RangeError(`Missing part ${value.value}`);
    (holder as Record<string | number, unknown>)[key] = part;
  };
  for (const msg of messages) eachSlot(msg, put);
}

/** What to send instead of a message that cannot be encoded (null: nothing). */
export type Undeliverable = (msg: never, reason: string) => unknown | null;

/** The messages that encode, each one that does not replaced by what `undeliverable` gives. */
function encodable(messages: unknown[], undeliverable: Undeliverable): unknown[] {
  const out: unknown[] = [];
  const fits = (msg: unknown): string | null => {
    try {
      // With the shared plain encoder: a trial must not change a connection's record definitions.
      encodeWithParts([msg], encodeFrame);
      return null;
    } catch (err) {
      return `cannot be encoded: ${errorMessage(err)}`;
    }
  };
  for (const msg of messages) {
    const reason = fits(msg);
    if (reason === null) {
      out.push(msg);
      continue;
    }
    const instead = undeliverable(msg as never, reason);
    if (instead != null && fits(instead) === null) out.push(instead);
  }
  return out;
}

/** What a sender needs of its socket. */
export interface FrameSocket {
  /** Sends one binary WebSocket message. */
  send(bytes: Uint8Array): void;
  /** Bytes queued and not yet written. */
  buffered(): number;
  /** Whether the socket can still send. */
  open(): boolean;
}

/** The chunk messages of one buffer, each encoded as a frame. */
function* chunkFrames(id: number, bytes: Uint8Array, part?: number): Generator<Uint8Array> {
  const size = bytes.byteLength;
  let offset = 0;
  do {
    const end = Math.min(size, offset + chunkBytes);
    const chunk: ChunkMessage = { op: "chunk", id, offset, size, bytes: bytes.subarray(offset, end) };
    if (part !== undefined) chunk.part = part;
    yield encodeFrame([chunk]);
    offset = end;
  } while (offset < size);
}

/**
 * Sends frames on one socket, splitting the large ones, in order.
 *
 * @example
 * ```ts
 * const sender = new FrameSender({ send: (b) => ws.send(b), buffered: () => ws.bufferedAmount, open: () => ws.readyState === 1 });
 * sender.send([{ op: "reply", id: 1, data }]);
 * ```
 */
export class FrameSender {
  #socket: FrameSocket;
  /** The connection's records encoder, once the peer said it reads records (`useRecords`). */
  #encoder: Encoder | null = null;
  /** What waits behind a split frame: each entry makes the WebSocket messages of one frame. */
  #queue: Array<Iterator<Uint8Array>> = [];
  #ids = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(socket: FrameSocket) {
    this.#socket = socket;
  }

  /**
   * Encodes the frames from now on in cbor-x's record extension (`recordsEncoder`): for a peer
   * that reads them with its connection's decoder (it said so in `register` or `welcome`).
   */
  useRecords(): void {
    this.#encoder ??= recordsEncoder();
  }

  #encode(messages: unknown[]): Uint8Array {
    const encoder = this.#encoder;
    if (encoder === null) return encodeFrame(messages);
    let bytes: Uint8Array;
    try {
      bytes = encoder.encode(messages);
    } catch (err) {
      // It may have defined shapes in a frame that is not sent: a new encoder defines them again.
      this.#encoder = recordsEncoder();
      throw err;
    }
    // cbor-x writes every encoder's output on into one module-wide buffer, never over what it
    // returned: a large frame is sent from there as `encodeFrame` does, the others are copied.
    return bytes.byteLength <= ownBufferBytes ? bytes.slice() : bytes;
  }

  /** Whether frames wait to be sent. */
  get busy(): boolean {
    return this.#queue.length > 0;
  }

  /**
   * Sends one frame: at once when small and nothing waits, else in turn, split. A message that
   * cannot be encoded goes to `undeliverable(msg, reason)`, whose answer (an error reply, say)
   * goes in its place; without it the error is thrown.
   */
  send(messages: unknown[], undeliverable?: Undeliverable): void {
    let encoded: { frame: Uint8Array; parts: Uint8Array[] };
    const encode = (m: unknown[]) => this.#encode(m);
    try {
      encoded = encodeWithParts(messages, encode);
    } catch (err) {
      if (!undeliverable) throw err;
      // Rare: find the messages that cannot be encoded, one by one, and send the others.
      messages = encodable(messages, undeliverable);
      if (messages.length === 0) return;
      encoded = encodeWithParts(messages, encode);
    }
    const { frame, parts } = encoded;
    if (parts.length === 0) return this.sendEncoded(frame);
    const id = ++this.#ids;
    this.#enqueue((function* () {
      for (let p = 0; p < parts.length; p++) yield* chunkFrames(id, parts[p], p);
      yield* chunkFrames(id, frame);
    })());
  }

  /** Sends an encoded frame (see {@linkcode send}). */
  sendEncoded(frame: Uint8Array): void {
    if (this.#queue.length === 0 && frame.byteLength <= splitFrameBytes) {
      this.#socket.send(frame);
      return;
    }
    if (frame.byteLength <= splitFrameBytes) this.#enqueue([frame][Symbol.iterator]());
    else this.#enqueue(chunkFrames(++this.#ids, frame));
  }

  /** Drops what waits (the socket closed). */
  clear(): void {
    this.#queue = [];
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #enqueue(frames: Iterator<Uint8Array>): void {
    this.#queue.push(frames);
    if (this.#queue.length === 1) this.#pump();
  }

  #pump(): void {
    this.#timer = null;
    const socket = this.#socket;
    while (this.#queue.length > 0) {
      if (!socket.open()) return this.clear();
      if (socket.buffered() > highWaterBytes) {
        // The socket reports no drain event in every runtime: look again shortly.
        this.#timer = setTimeout(() => this.#pump(), 2);
        return;
      }
      const next = this.#queue[0].next();
      if (next.done) {
        this.#queue.shift();
        continue;
      }
      socket.send(next.value);
      // Each chunk was encoded into a frame of its own, garbage once sent (see collectGarbage).
      transferred(next.value.byteLength);
    }
  }
}

/**
 * Decodes the frames of one socket, putting split ones (and their parts) back together.
 *
 * @example
 * ```ts
 * const frames = new FrameAssembler();
 * socket.onmessage = (e) => { for (const msg of frames.decode(e.data)) handle(msg); };
 * ```
 */
export class FrameAssembler {
  #maxBytes: number;
  /** The connection's decoder: plain CBOR, and record definitions kept from frame to frame. */
  #decoder = connectionDecoder();
  #id = 0;
  /** The frame being filled (`null` between frames), then its parts. */
  #buffer: Uint8Array | null = null;
  #parts: Uint8Array[] = [];
  #filled = 0;
  /** Bytes of the current frame and its parts so far, against the cap. */
  #total = 0;

  /** Split frames at least this big (without parts) are given back undecoded (`takeAbove`). */
  #takeAbove: number;

  /**
   * `maxBytes` caps a frame with its parts (a `RangeError` past it). With `takeAbove`, a split
   * frame of at least that many bytes and without parts comes back from `decode` as its bytes,
   * undecoded, for the caller to decode in slices (a client's graph of a million tasks is 50 MB
   * of CBOR: decoding it in one piece blocks the event loop for a second).
   */
  constructor(options: { maxBytes?: number; takeAbove?: number } = {}) {
    this.#maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
    this.#takeAbove = options.takeAbove ?? Number.MAX_SAFE_INTEGER;
  }

  /**
   * The messages of one received WebSocket message: none while a split frame is incomplete,
   * the whole frame's once its last chunk came. Throws as `decodeFrame` does, and a `RangeError`
   * for chunks out of order or a frame over the cap.
   */
  decode(data: unknown): Message[] {
    const out = this.receive(data);
    return out instanceof Uint8Array ? decodeFrame(out, Number.MAX_SAFE_INTEGER, this.#decoder) : out;
  }

  /** As `decode`, but a split frame of `takeAbove` bytes or more comes back as its bytes. */
  receive(data: unknown): Message[] | Uint8Array {
    const messages = decodeFrame(data, undefined, this.#decoder);
    if (messages.length !== 1 || messages[0].op !== "chunk") return messages;
    const { id, offset, size, bytes, part } = messages[0] as unknown as ChunkMessage;
    if (!(bytes instanceof Uint8Array) || !Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || size < 0) {
      throw new TypeError("Malformed chunk message");
    }
    if (id !== this.#id) {
      // A new frame: whatever was left of another one is dropped.
      this.#id = id;
      this.#parts = [];
      this.#total = 0;
      this.#buffer = null;
    }
    if (offset === 0) {
      this.#total += size;
      if (this.#total > this.#maxBytes) throw new RangeError(`Frame of ${this.#total} bytes is too large (at most ${this.#maxBytes})`);
      this.#buffer = new Uint8Array(size);
      this.#filled = 0;
      if (part !== undefined) {
        if (part !== this.#parts.length) throw new RangeError(`Part ${part} of frame ${id} out of order`);
        this.#parts.push(this.#buffer);
      }
    } else if (!this.#buffer || offset !== this.#filled || size !== this.#buffer.byteLength) {
      this.#buffer = null;
      throw new RangeError(`Chunk ${id}@${offset} out of order`);
    }
    if (offset + bytes.byteLength > size) throw new RangeError(`Chunk ${id}@${offset} overruns its frame`);
    this.#buffer!.set(bytes, offset);
    this.#filled = offset + bytes.byteLength;
    // Only a frame's parts (large binary values) count: the chunks of a frame's own body (a
    // client's graph of a million tasks is 50 MB) are not worth a full collection, which costs
    // what the heap holds (half a second or more with a million tasks held), not the garbage.
    if (part !== undefined) transferred(bytes.byteLength);
    if (this.#filled < size || part !== undefined) return [];
    const whole = this.#buffer!;
    const parts = this.#parts;
    this.#buffer = null;
    this.#parts = [];
    this.#id = 0;
    if (parts.length === 0 && whole.byteLength >= this.#takeAbove) return whole;
    const out = decodeFrame(whole, Number.MAX_SAFE_INTEGER, this.#decoder);
    if (parts.length > 0) putParts(out, parts);
    return out;
  }
}

/** Senders of server-side sockets, by the runtime's socket (Hono may make a context per event). */
const serverSenders = new WeakMap<object, FrameSender>();

/**
 * Sends a frame on a server-side socket through that socket's {@linkcode FrameSender}.
 * `buffered` reads the socket's send buffer (the runtime's `bufferedAmount`); with `records`
 * (a worker that reads them), this frame and the socket's later ones are records.
 */
export function sendFrame(
  ws: WSContext,
  messages: unknown[],
  buffered: (ws: WSContext) => number,
  undeliverable?: Undeliverable,
  records = false,
): void {
  const raw = (ws.raw ?? ws) as object;
  let sender = serverSenders.get(raw);
  if (!sender) {
    serverSenders.set(raw, sender = new FrameSender({
      send: (b) => ws.send(b as Uint8Array<ArrayBuffer>),
      buffered: () => buffered(ws),
      // Bun's context holds the state it was made with; the socket itself has the current one.
      open: () => ((raw as { readyState?: number }).readyState ?? ws.readyState) === 1,
    }));
  }
  if (records) sender.useRecords();
  sender.send(messages, undeliverable);
}

/** A sender for a client-side `WebSocket`. */
export function socketSender(socket: WebSocket): FrameSender {
  return new FrameSender({
    send: (b) => socket.send(b as Uint8Array<ArrayBuffer>),
    buffered: () => socket.bufferedAmount,
    open: () => socket.readyState === WebSocket.OPEN,
  });
}
