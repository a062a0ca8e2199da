/**
 * Event batches of the event stream (`format=cbor&batch=1`) read fast. A batch is a CBOR array
 * of event maps, and nearly every event is a transition whose fields come in one order (`seq,
 * topic, time, key, start, finish, stimulusId`, then `worker` and `startstops` where it has
 * them: how the scheduler writes them). Such a map is read here field by field — each field's
 * name compared as bytes with the one expected next, each value read in place — with no name
 * decoded and no generic walk; a batch holding anything else (another topic, other spans, other
 * fields or order, another head) is decoded by cbor-x whole. Either way the result is what
 * cbor-x gives: the same objects, keys in the same order.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { decodeCbor } from "../protocol.ts";

/** No frame: what `frame` is between reads. */
const noFrame: Buffer = Buffer.alloc(0);
/** The frame being read, as a `Buffer` (for its Latin-1 texts). */
let frame: Buffer = noFrame;

const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** A text's CBOR bytes (head and ASCII). */
function nameBytes(name: string): Uint8Array {
  return Uint8Array.from([0x60 | name.length, ...Array.from(name, (c) => c.charCodeAt(0))]);
}

const seqName = nameBytes("seq");
const topicName = nameBytes("topic");
const transitionText = nameBytes("transition");
const timeName = nameBytes("time");
const keyName = nameBytes("key");
const startName = nameBytes("start");
const finishName = nameBytes("finish");
const stimulusName = nameBytes("stimulusId");
const workerName = nameBytes("worker");
const startstopsName = nameBytes("startstops");
const actionName = nameBytes("action");
const stopName = nameBytes("stop");

/** Where the last read ended (the readers return their value and leave the position here). */
let at = 0;

/** Whether `bytes` hold `expected` at `p`. */
function matches(bytes: Uint8Array, p: number, expected: Uint8Array): boolean {
  const n = expected.length;
  if (p + n > bytes.length) return false;
  for (let i = 0; i < n; i++) if (bytes[p + i] !== expected[i]) return false;
  return true;
}

/** Slots of a `Texts` (a power of two), and the longest text a slot keeps (bytes). */
const slots = 64;
const slotBytes = 64;

/**
 * Texts of one field read lately (states, ids, worker names repeat from event to event), a slot
 * each by their length and last bytes: their bytes and the strings made of them, so that a
 * repeated one is compared, not made again. One look a text (no scan of every slot), and the
 * bytes are copied into the slot (no view, which would keep its frame).
 */
class Texts {
  /** Each slot's bytes (up to `slotBytes`), its length (-1: empty) and its string. */
  readonly #bytes = new Uint8Array(slots * slotBytes);
  readonly #length = new Int32Array(slots).fill(-1);
  readonly #texts: string[] = new Array(slots).fill("");

  /**
   * The string of `bytes[p, end)`: the one kept in its slot (chosen by its length and last
   * bytes, where ids differ) when the bytes are the same, else made and kept there. `undefined`
   * when the bytes are not UTF-8.
   */
  text(bytes: Uint8Array, p: number, end: number): string | undefined {
    const n = end - p;
    if (n > slotBytes) return makeText(bytes, p, end);
    const k = n === 0 ? 0 : (n * 7 + bytes[p] * 3 + bytes[end - 1] * 31 + bytes[end - 2 >= p ? end - 2 : p] * 5) & (slots - 1);
    const known = this.#bytes;
    const from = k * slotBytes;
    if (this.#length[k] === n) {
      let i = n - 1;
      while (i >= 0 && known[from + i] === bytes[p + i]) i--;
      if (i < 0) return this.#texts[k];
    }
    const text = makeText(bytes, p, end);
    if (text === undefined) return undefined;
    for (let i = 0; i < n; i++) known[from + i] = bytes[p + i];
    this.#length[k] = n;
    this.#texts[k] = text;
    return text;
  }
}

const starts = new Texts();
const finishes = new Texts();
const stimuli = new Texts();
const workers = new Texts();
const actions = new Texts();

/**
 * A text at `p`, or `undefined` when there is none (`at` is after it); looked up in `known`
 * first, where given.
 */
function readText(bytes: Uint8Array, p: number, known?: Texts): string | undefined {
  const head = bytes[p];
  let n: number;
  if (head >= 0x60 && head < 0x78) {
    n = head - 0x60;
    p += 1;
  } else if (head === 0x78) {
    n = bytes[p + 1];
    p += 2;
  } else if (head === 0x79) {
    n = (bytes[p + 1] << 8) | bytes[p + 2];
    p += 3;
  } else return undefined;
  const end = p + n;
  if (!(end <= bytes.length)) return undefined; // also a length cut off by the end of the frame
  at = end;
  return known !== undefined ? known.text(bytes, p, end) : makeText(bytes, p, end);
}

/** The string of UTF-8 `bytes[p, end)`, or `undefined` when they are not UTF-8. */
function makeText(bytes: Uint8Array, p: number, end: number): string | undefined {
  const n = end - p;
  if (n <= 64) {
    // Short ASCII (keys, states, ids, names): made by the runtime's Latin-1 slice of the frame
    // (a native call, cheaper than char codes made into a string, or a decoder's view).
    let ascii = true;
    for (let i = p; i < end; i++) {
      if (bytes[i] > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return frame.toString("latin1", p, end);
  }
  try {
    return textDecoder.decode(bytes.subarray(p, end));
  } catch {
    return undefined; // not UTF-8: cbor-x says what it makes of it
  }
}

const scratchFloat = new Float64Array(1);
const scratchBytes = new Uint8Array(scratchFloat.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A number at `p` (an unsigned integer or a float), or `undefined` (`at` is after it). */
function readNumber(bytes: Uint8Array, p: number): number | undefined {
  const head = bytes[p];
  const size = head < 0x18 ? 1 : head === 0x18 ? 2 : head === 0x19 ? 3 : head === 0x1a ? 5 : head === 0xfb ? 9 : 0;
  if (size === 0 || p + size > bytes.length) return undefined; // another kind of value, or cut off
  if (head < 0x18) {
    at = p + 1;
    return head;
  }
  if (head === 0x18) {
    at = p + 2;
    return bytes[p + 1];
  }
  if (head === 0x19) {
    at = p + 3;
    return (bytes[p + 1] << 8) | bytes[p + 2];
  }
  if (head === 0x1a) {
    at = p + 5;
    return ((bytes[p + 1] << 24) >>> 0) + ((bytes[p + 2] << 16) | (bytes[p + 3] << 8) | bytes[p + 4]);
  }
  // Big-endian on the wire, the machine's order in the scratch float.
  if (littleEndian) for (let i = 0; i < 8; i++) scratchBytes[i] = bytes[p + 8 - i];
  else for (let i = 0; i < 8; i++) scratchBytes[i] = bytes[p + 1 + i];
  at = p + 9;
  return scratchFloat[0];
}

/**
 * One transition event at `p` in the scheduler's field order, or `undefined` when the bytes hold
 * anything else (`at` is after it).
 */
function readTransition(bytes: Uint8Array, p: number): Record<string, unknown> | undefined {
  const head = bytes[p];
  if (head < 0xa7 || head > 0xa9 || !matches(bytes, p + 1, seqName)) return undefined;
  const seq = readNumber(bytes, p + 1 + seqName.length);
  if (seq === undefined || !matches(bytes, at, topicName) || !matches(bytes, at + topicName.length, transitionText)) return undefined;
  p = at + topicName.length + transitionText.length;
  if (!matches(bytes, p, timeName)) return undefined;
  const time = readNumber(bytes, p + timeName.length);
  if (time === undefined || !matches(bytes, at, keyName)) return undefined;
  const key = readText(bytes, at + keyName.length);
  if (key === undefined || !matches(bytes, at, startName)) return undefined;
  const start = readText(bytes, at + startName.length, starts);
  if (start === undefined || !matches(bytes, at, finishName)) return undefined;
  const finish = readText(bytes, at + finishName.length, finishes);
  if (finish === undefined || !matches(bytes, at, stimulusName)) return undefined;
  const stimulusId = readText(bytes, at + stimulusName.length, stimuli);
  if (stimulusId === undefined) return undefined;
  const event: Record<string, unknown> = { seq, topic: "transition", time, key, start, finish, stimulusId };
  let more = head - 0xa7;
  if (more > 0 && matches(bytes, at, workerName)) {
    const worker = readText(bytes, at + workerName.length, workers);
    if (worker === undefined) return undefined;
    event.worker = worker;
    more--;
  }
  if (more > 0) {
    const spans = readSpans(bytes, at);
    if (spans === undefined) return undefined;
    event.startstops = spans;
    more--;
  }
  return more === 0 ? event : undefined;
}

/** `startstops: [{action, start, stop}, …]` at `p` (up to 23 spans), or `undefined`. */
function readSpans(bytes: Uint8Array, p: number): unknown[] | undefined {
  if (!matches(bytes, p, startstopsName)) return undefined;
  p += startstopsName.length;
  const head = bytes[p];
  if (head < 0x80 || head > 0x97) return undefined;
  const spans: unknown[] = [];
  at = p + 1;
  for (let i = 0; i < head - 0x80; i++) {
    p = at;
    if (bytes[p] !== 0xa3 || !matches(bytes, p + 1, actionName)) return undefined;
    const action = readText(bytes, p + 1 + actionName.length, actions);
    if (action === undefined || !matches(bytes, at, startName)) return undefined;
    const start = readNumber(bytes, at + startName.length);
    if (start === undefined || !matches(bytes, at, stopName)) return undefined;
    const stop = readNumber(bytes, at + stopName.length);
    if (stop === undefined) return undefined;
    spans.push({ action, start, stop });
  }
  return spans;
}

/**
 * The events of one event-stream frame (`format=cbor&batch=1`): an array of events, each as
 * cbor-x would decode it. Throws a `SyntaxError` for malformed CBOR.
 *
 * @example
 * ```ts
 * socket.onmessage = (e) => { for (const event of decodeEventBatch(new Uint8Array(e.data))) handle(event); };
 * ```
 */
export function decodeEventBatch(bytes: Uint8Array): unknown[] {
  frame = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    return readBatch(bytes);
  } finally {
    frame = noFrame;
  }
}

/** The events of a frame, `frame` being set to it. */
function readBatch(bytes: Uint8Array): unknown[] {
  // The head of an array: the scheduler writes a 4-byte count; any count is read.
  const head = bytes[0];
  let n: number;
  let p: number;
  if (head >= 0x80 && head < 0x98) {
    n = head - 0x80;
    p = 1;
  } else if (head === 0x98) {
    n = bytes[1];
    p = 2;
  } else if (head === 0x99) {
    n = (bytes[1] << 8) | bytes[2];
    p = 3;
  } else if (head === 0x9a) {
    n = ((bytes[1] << 24) >>> 0) + ((bytes[2] << 16) | (bytes[3] << 8) | bytes[4]);
    p = 5;
  } else return decodeCbor(bytes) as unknown[];
  const events = new Array<unknown>(n);
  for (let i = 0; i < n; i++) {
    const event = readTransition(bytes, p);
    if (event === undefined) return decodeCbor(bytes) as unknown[];
    events[i] = event;
    p = at;
  }
  return p === bytes.length ? events : decodeCbor(bytes) as unknown[];
}
