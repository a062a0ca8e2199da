/**
 * Events as CBOR, one after the other in one buffer: the scheduler's transition events written
 * by hand straight from the event log's columns (`{seq, topic, time, key, start, finish,
 * stimulusId, worker?, startstops?}`, the workers' `{action, start, stop}` spans included),
 * every other event (and spans of another shape) through cbor-x. cbor-x walks each small map
 * generically (`for…in`, a type switch per value); here the field names and the state names are
 * copied as prepared bytes and only the key, stimulus, worker and action texts are written out. The bytes are
 * standard CBOR (RFC 8949): any decoder reads them as the objects cbor-x would give.
 *
 * @module
 */
import { encodeCbor } from "../protocol.ts";
import { arrayHeadRoom, type EncodedItems, type EventItems, type TickBuffer } from "./event-types.ts";

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
const seqField = textBytes("seq");
const topicTime = concat(textBytes("topic"), textBytes("transition"), textBytes("time"));
const keyField = textBytes("key");
const stimulusField = textBytes("stimulusId");
const workerField = textBytes("worker");
const startstopsField = textBytes("startstops");
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
 * Copies `out[from..to)` (bytes written earlier in the same buffer) to `p`; returns the position
 * after. A loop, not `copyWithin`: for the few dozen bytes of an id, the call costs more than
 * the copy.
 */
function again(out: Uint8Array, p: number, from: number, to: number): number {
  for (let i = from; i < to; i++) out[p++] = out[i];
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
 * Writes `[{action, start, stop}, …]` spans (what workers measure) by hand; returns the position
 * after, or -1 when a span has another shape (cbor-x writes those). `out` has room for
 * `spansRoom(spans)` bytes.
 */
function spansCbor(out: Uint8Array, p: number, spans: unknown[]): number {
  const n = spans.length;
  if (n > 23) return -1;
  out[p++] = 0x80 | n;
  for (let i = 0; i < n; i++) {
    const span = spans[i] as { action?: unknown; start?: unknown; stop?: unknown } | null;
    if (typeof span !== "object" || span === null || !isSpan(span)) return -1;
    const { action, start, stop } = span as { action: string; start: number; stop: number };
    p = put(out, p, spanHead);
    p = text(out, p, action);
    p = put(out, p, startField);
    p = float(out, p, start);
    p = put(out, p, stopField);
    p = float(out, p, stop);
  }
  return p;
}

/** Whether a span has exactly `action` (text), `start` and `stop` (numbers), in that order. */
function isSpan(span: object): boolean {
  let i = 0;
  for (const name in span) {
    if (name !== spanFields[i++]) return false;
  }
  const s = span as { action: unknown; start: unknown; stop: unknown };
  return i === 3 && typeof s.action === "string" && typeof s.start === "number" && typeof s.stop === "number";
}

const spanFields = ["action", "start", "stop"];
const spanHead = concat(new Uint8Array([0xa3]), textBytes("action"));
const startField = textBytes("start");
const stopField = textBytes("stop");
/** `startstops: [{action: "compute", start:` — a lone compute span up to its start's value. */
const computeSpanHead = concat(startstopsField, new Uint8Array([0x81]), spanHead, textBytes("compute"), startField);

/** Room for `spansCbor` to write these spans. */
function spansRoom(spans: unknown[]): number {
  let room = 1;
  for (const span of spans) {
    const action = (span as { action?: unknown } | null)?.action;
    room += 40 + (typeof action === "string" ? 3 * action.length + 3 : 0);
  }
  return room;
}

/**
 * The items' CBOR, one after the other, with where each one starts. The first `arrayHeadRoom`
 * bytes are left free for the head of a CBOR array of all the items (`EventBatch.cbor`).
 */
export function encodeEventItems(t: EventItems, buffer: TickBuffer | null = null): EncodedItems {
  const n = t.items.length;
  const c = t.columns;
  // About 150 bytes a transition, 210 with its spans: room for 192 a transition seldom grows.
  const room = 64 + n * 192;
  let out: Uint8Array = buffer !== null && buffer.bytes.length >= room ? buffer.bytes : new Uint8Array(room);
  const offsets = new Uint32Array(n + 1);
  let p = arrayHeadRoom;
  // Workers and stimulus ids repeat from event to event: the last one's bytes are copied again.
  let lastWorker: string | undefined;
  let lastWorkerFrom = 0;
  let lastWorkerTo = 0;
  let lastStimulus: string | undefined;
  let lastStimulusFrom = 0;
  let lastStimulusTo = 0;
  for (let i = 0; i < n; i++) {
    offsets[i] = p;
    const item = t.items[i];
    let need: number;
    let other: Uint8Array | null = null;
    let startstops: unknown[] | undefined;
    let spanStart = NaN;
    if (item < 0 || c === null) need = (other = encodeCbor(t.others[-1 - item])).length;
    else {
      spanStart = c.spanStart[item];
      startstops = spanStart === spanStart || c.startstops.size === 0 ? undefined : c.startstops.get(item);
      const worker = c.worker[item];
      need = 200 + 3 * (c.key[item].length + c.stimulus[item].length + (worker === undefined ? 0 : worker.length)) + (startstops === undefined ? 0 : spansRoom(startstops));
    }
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
    const worker = c!.worker[item];
    const hasSpans = spanStart === spanStart || startstops !== undefined;
    out[p++] = 0xa0 | (7 + (worker === undefined ? 0 : 1) + (hasSpans ? 1 : 0)); // a map of 7 to 9 fields
    p = put(out, p, seqField);
    // seq: an unsigned integer of 4 bytes, past 2^32 a float64 (as cbor-x does: decoders give a
    // number, not a BigInt).
    const seq = c!.seq[item];
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
    p = float(out, p, c!.time[item]);
    p = put(out, p, keyField);
    p = text(out, p, c!.key[item]);
    p = put(out, p, field(startOf, "start", c!.start[item]));
    p = put(out, p, field(finishOf, "finish", c!.finish[item]));
    p = put(out, p, stimulusField);
    const stimulus = c!.stimulus[item];
    if (stimulus === lastStimulus) p = again(out, p, lastStimulusFrom, lastStimulusTo);
    else {
      lastStimulus = stimulus;
      lastStimulusFrom = p;
      p = lastStimulusTo = text(out, p, stimulus);
    }
    if (worker !== undefined) {
      p = put(out, p, workerField);
      if (worker === lastWorker) p = again(out, p, lastWorkerFrom, lastWorkerTo);
      else {
        lastWorker = worker;
        lastWorkerFrom = p;
        p = lastWorkerTo = text(out, p, worker);
      }
    }
    if (spanStart === spanStart) {
      // The lone compute span, from its two numbers.
      p = put(out, p, computeSpanHead);
      p = float(out, p, spanStart);
      p = put(out, p, stopField);
      p = float(out, p, c!.spanStop[item]);
    } else if (startstops !== undefined) {
      p = put(out, p, startstopsField);
      const q = spansCbor(out, p, startstops);
      if (q >= 0) p = q;
      else {
        // Another shape: cbor-x's bytes (a view on its shared buffer, copied at once).
        const spans = encodeCbor(startstops);
        if (p + spans.length > out.length) {
          const next = new Uint8Array(Math.max(out.length * 2, p + spans.length + 64));
          next.set(out.subarray(0, p));
          out = next;
        }
        out.set(spans, p);
        p += spans.length;
      }
    }
  }
  offsets[n] = p;
  if (buffer !== null && out.length > buffer.bytes.length && out.length <= tickBufferLimit) buffer.bytes = out;
  return { bytes: out, offsets };
}

/** The largest buffer kept for the next tick (a bigger tick writes into one of its own). */
const tickBufferLimit = 16 * 1024 * 1024;
