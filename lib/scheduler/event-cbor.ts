/**
 * A batch of events as one CBOR array, written by hand for the scheduler's own transition events
 * (one fixed shape: `{seq, topic, time, key, start, finish, stimulusId, worker?}`) straight into
 * one buffer, and through cbor-x for every other event. cbor-x walks each small map generically
 * (`for…in`, a type switch per value); here the field names and the state names are copied as
 * prepared bytes and only the key, stimulus and worker texts are written out. The bytes are
 * standard CBOR (RFC 8949): any decoder reads them as the objects cbor-x would give.
 *
 * @module
 */
import { encodeCbor } from "../protocol.ts";

/** An event as the event log holds it (events.ts's `ClusterEvent`, not imported: no cycle). */
interface ClusterEvent {
  seq: number;
  topic: string;
  time: number;
  [field: string]: unknown;
}

const textEncoder = new TextEncoder();

function utf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

/** A text string's CBOR bytes (head and UTF-8). */
function textBytes(s: string): Uint8Array {
  const body = utf8(s);
  const n = body.length;
  const head = n < 24 ? [0x60 | n] : n < 256 ? [0x78, n] : [0x79, n >> 8, n & 0xff];
  const out = new Uint8Array(head.length + n);
  out.set(head);
  out.set(body, head.length);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// Prepared runs of bytes: everything of an event but its seq, time and three texts.
const prefix7 = concat(new Uint8Array([0xa7]), textBytes("seq"));
const prefix8 = concat(new Uint8Array([0xa8]), textBytes("seq"));
const topicTime = concat(textBytes("topic"), textBytes("transition"), textBytes("time"));
const keyField = textBytes("key");
const stimulusField = textBytes("stimulusId");
const workerField = textBytes("worker");
/** `"start": NAME` and `"finish": NAME` for each state name seen. */
const startOf = new Map<string, Uint8Array>();
const finishOf = new Map<string, Uint8Array>();

function field(cache: Map<string, Uint8Array>, name: string, value: string): Uint8Array {
  let bytes = cache.get(value);
  if (bytes === undefined) {
    bytes = concat(textBytes(name), textBytes(value));
    if (cache.size < 64) cache.set(value, bytes);
  }
  return bytes;
}

const scratch = new Float64Array(1);
const scratchBytes = new Uint8Array(scratch.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Copies `bytes` to `out` at `p`; returns the position after. */
function put(out: Uint8Array, p: number, bytes: Uint8Array): number {
  const n = bytes.length;
  for (let i = 0; i < n; i++) out[p++] = bytes[i];
  return p;
}

/**
 * Writes an ASCII text of under 256 characters with a one-byte length (0x78 nn); returns the
 * position after, or -1 when the text is not ASCII (keys, ids and names nearly always are).
 */
function asciiText(out: Uint8Array, p: number, s: string): number {
  const n = s.length;
  if (n > 255) return -1;
  out[p] = 0x78;
  out[p + 1] = n;
  p += 2;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return -1;
    out[p++] = c;
  }
  return p;
}

/** Writes a float64, big-endian, after its head byte; returns the position after. */
function float(out: Uint8Array, p: number, x: number): number {
  out[p++] = 0xfb;
  scratch[0] = x;
  if (littleEndian) for (let b = 7; b >= 0; b--) out[p++] = scratchBytes[b];
  else for (let b = 0; b < 8; b++) out[p++] = scratchBytes[b];
  return p;
}

/** Writes any text; returns the position after (`out` has room for 3 bytes a character + 3). */
function text(out: Uint8Array, p: number, s: string): number {
  const q = asciiText(out, p, s);
  if (q >= 0) return q;
  const bytes = textBytes(s);
  out.set(bytes, p);
  return p + bytes.length;
}

/**
 * The events as one CBOR array; `own(i)` says that `events[i]` is one of the scheduler's own
 * transition events (of the fixed shape), written by hand.
 */
export function encodeEventBatch(events: readonly ClusterEvent[], own: (i: number) => boolean): Uint8Array {
  let out = new Uint8Array(64 + events.length * 128);
  let p = 0;
  const n = events.length;
  out[p++] = 0x9a; // an array with a 4-byte count
  out[p++] = (n >>> 24) & 0xff;
  out[p++] = (n >>> 16) & 0xff;
  out[p++] = (n >>> 8) & 0xff;
  out[p++] = n & 0xff;
  for (let i = 0; i < n; i++) {
    const e = events[i];
    let need: number;
    let other: Uint8Array | null = null;
    const key = e.key as string;
    const stimulusId = e.stimulusId as string;
    const worker = e.worker as string | undefined;
    if (own(i)) need = 160 + 3 * (key.length + stimulusId.length + (worker === undefined ? 0 : worker.length));
    else need = (other = encodeCbor(e)).length;
    if (p + need > out.length) {
      const next = new Uint8Array(Math.max(out.length * 2, p + need));
      next.set(out.subarray(0, p));
      out = next;
    }
    if (other !== null) {
      out.set(other, p);
      p += other.length;
      continue;
    }
    p = put(out, p, worker === undefined ? prefix7 : prefix8);
    // seq: an unsigned integer of 4 bytes, past 2^32 a float64 (as cbor-x does: decoders give a
    // number, not a BigInt).
    const seq = e.seq;
    if (seq < 0x100000000) {
      out[p++] = 0x1a;
      out[p++] = (seq >>> 24) & 0xff;
      out[p++] = (seq >>> 16) & 0xff;
      out[p++] = (seq >>> 8) & 0xff;
      out[p++] = seq & 0xff;
    } else {
      p = float(out, p, seq);
    }
    p = put(out, p, topicTime);
    p = float(out, p, e.time);
    p = put(out, p, keyField);
    p = text(out, p, key);
    p = put(out, p, field(startOf, "start", e.start as string));
    p = put(out, p, field(finishOf, "finish", e.finish as string));
    p = put(out, p, stimulusField);
    p = text(out, p, stimulusId);
    if (worker !== undefined) {
      p = put(out, p, workerField);
      p = text(out, p, worker);
    }
  }
  return out.slice(0, p);
}
