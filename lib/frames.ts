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
import type { WSContext } from "hono/ws";
import { decodeFrame, encodeFrame, type Message } from "./protocol.ts";

/** Frames larger than this are split into chunks. */
export const splitFrameBytes = 8 * 1024 * 1024;
/** The payload of one chunk message. */
export const chunkBytes = 1024 * 1024;
/** A sender waits while more than this is queued on its socket. */
export const highWaterBytes = 4 * 1024 * 1024;

/** One piece of a split frame: `size` is the whole frame's, `offset` where `bytes` go. */
export interface ChunkMessage {
  op: "chunk";
  id: number;
  offset: number;
  size: number;
  bytes: Uint8Array;
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
  /** Frames waiting behind a split one; the head is being sent. */
  #queue: Uint8Array[] = [];
  /** The next offset to send of the head frame, when it is split. */
  #offset = 0;
  #ids = 0;
  #id = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(socket: FrameSocket) {
    this.#socket = socket;
  }

  /** Bytes waiting in this sender (not yet handed to the socket). */
  get pending(): number {
    let n = -this.#offset;
    for (const f of this.#queue) n += f.byteLength;
    return n;
  }

  /** Encodes and sends one frame: at once when small and nothing waits, else in turn. */
  send(messages: unknown[]): void {
    this.sendEncoded(encodeFrame(messages));
  }

  /** Sends an encoded frame (see {@linkcode send}). */
  sendEncoded(frame: Uint8Array): void {
    if (this.#queue.length === 0 && frame.byteLength <= splitFrameBytes) {
      this.#socket.send(frame);
      return;
    }
    this.#queue.push(frame);
    if (this.#queue.length === 1) this.#pump();
  }

  /** Drops what waits (the socket closed). */
  clear(): void {
    this.#queue = [];
    this.#offset = 0;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
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
      const frame = this.#queue[0];
      if (frame.byteLength <= splitFrameBytes) {
        socket.send(frame);
        this.#queue.shift();
        continue;
      }
      if (this.#offset === 0) this.#id = ++this.#ids;
      const end = Math.min(frame.byteLength, this.#offset + chunkBytes);
      const chunk: ChunkMessage = { op: "chunk", id: this.#id, offset: this.#offset, size: frame.byteLength, bytes: frame.subarray(this.#offset, end) };
      socket.send(encodeFrame([chunk]));
      if (end === frame.byteLength) {
        this.#queue.shift();
        this.#offset = 0;
      } else {
        this.#offset = end;
      }
    }
  }
}

/**
 * Decodes the frames of one socket, putting split ones back together.
 *
 * @example
 * ```ts
 * const frames = new FrameAssembler();
 * socket.onmessage = (e) => { for (const msg of frames.decode(e.data)) handle(msg); };
 * ```
 */
export class FrameAssembler {
  #maxBytes: number;
  #buffer: Uint8Array | null = null;
  #id = 0;
  #filled = 0;

  /** `maxBytes` caps a reassembled frame (a `RangeError` past it). */
  constructor(options: { maxBytes?: number } = {}) {
    this.#maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
  }

  /**
   * The messages of one received WebSocket message: none while a split frame is incomplete,
   * the whole frame's once its last chunk came. Throws as `decodeFrame` does, and a `RangeError`
   * for chunks out of order or a frame over the cap.
   */
  decode(data: unknown): Message[] {
    const messages = decodeFrame(data);
    if (messages.length !== 1 || messages[0].op !== "chunk") return messages;
    const { id, offset, size, bytes } = messages[0] as unknown as ChunkMessage;
    if (!(bytes instanceof Uint8Array) || !Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || size < 0) {
      throw new TypeError("Malformed chunk message");
    }
    if (offset === 0) {
      if (size > this.#maxBytes) throw new RangeError(`Frame of ${size} bytes is too large (at most ${this.#maxBytes})`);
      this.#buffer = new Uint8Array(size);
      this.#id = id;
      this.#filled = 0;
    } else if (!this.#buffer || id !== this.#id || offset !== this.#filled || size !== this.#buffer.byteLength) {
      this.#buffer = null;
      throw new RangeError(`Chunk ${id}@${offset} out of order`);
    }
    if (offset + bytes.byteLength > size) throw new RangeError(`Chunk ${id}@${offset} overruns its frame`);
    this.#buffer!.set(bytes, offset);
    this.#filled = offset + bytes.byteLength;
    if (this.#filled < size) return [];
    const whole = this.#buffer!;
    this.#buffer = null;
    return decodeFrame(whole, Number.MAX_SAFE_INTEGER);
  }
}

/** Senders of server-side sockets, by the runtime's socket (Hono may make a context per event). */
const serverSenders = new WeakMap<object, FrameSender>();

/**
 * Sends a frame on a server-side socket through that socket's {@linkcode FrameSender}.
 * `buffered` reads the socket's send buffer (the runtime's `bufferedAmount`).
 */
export function sendFrame(ws: WSContext, messages: unknown[], buffered: (ws: WSContext) => number): void {
  const raw = (ws.raw ?? ws) as object;
  let sender = serverSenders.get(raw);
  if (!sender) {
    const frame = encodeFrame(messages);
    if (frame.byteLength <= splitFrameBytes) return ws.send(frame);
    serverSenders.set(raw, sender = new FrameSender({
      send: (b) => ws.send(b as Uint8Array<ArrayBuffer>),
      buffered: () => buffered(ws),
      // Bun's context holds the state it was made with; the socket itself has the current one.
      open: () => ((raw as { readyState?: number }).readyState ?? ws.readyState) === 1,
    }));
    return sender.sendEncoded(frame);
  }
  sender.send(messages);
}

/** A sender for a client-side `WebSocket`. */
export function socketSender(socket: WebSocket): FrameSender {
  return new FrameSender({
    send: (b) => socket.send(b as Uint8Array<ArrayBuffer>),
    buffered: () => socket.bufferedAmount,
    open: () => socket.readyState === WebSocket.OPEN,
  });
}
