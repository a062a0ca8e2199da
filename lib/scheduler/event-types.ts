/**
 * The shapes the event log, its batches and their encoders share.
 *
 * @module
 */

/** One event: `{seq, topic, time, ...fields}`. */
export interface ClusterEvent {
  seq: number;
  topic: string;
  time: number;
  [field: string]: unknown;
}

/** The event log's transition columns, by slot (the log writes them, batches read them). */
export interface TransitionColumns {
  readonly seq: Float64Array;
  readonly time: Float64Array;
  readonly key: string[];
  readonly start: string[];
  readonly finish: string[];
  readonly stimulus: string[];
  readonly worker: (string | undefined)[];
  /** The start of a transition's lone compute span (its `startstops`), by slot; NaN for none. */
  readonly spanStart: Float64Array;
  /** The stop of that span, by slot. */
  readonly spanStop: Float64Array;
  /** The `startstops` of any other shape, by slot (sparse: rare). */
  readonly startstops: ReadonlyMap<number, unknown[]>;
}

/**
 * A lone compute span as the scheduler makes it: `{action: "compute", start, stop}`, those keys
 * in that order and no other. Nearly every task that reaches memory carries one; the event log
 * keeps it as two numbers in its columns instead of an object in a map, and the encoders write
 * it from them.
 */
export class ComputeSpan {
  readonly action = "compute" as const;
  readonly start: number;
  readonly stop: number;
  constructor(start: number, stop: number) {
    this.start = start;
    this.stop = stop;
  }
}

/** The `startstops` of the transition in a slot, as an event carries them (or undefined). */
export function spansAt(c: TransitionColumns, slot: number): unknown[] | undefined {
  const start = c.spanStart[slot];
  if (start === start) return [new ComputeSpan(start, c.spanStop[slot])];
  return c.startstops.size > 0 ? c.startstops.get(slot) : undefined;
}

/**
 * Events in seq order: each item is a transition's slot in `columns` (≥ 0) or `-1 - k` for
 * `others[k]`, an event object with, where known, its JSON text `otherJson[k]`.
 */
export interface EventItems {
  readonly columns: TransitionColumns | null;
  readonly items: ArrayLike<number>;
  readonly others: readonly ClusterEvent[];
  readonly otherJson: readonly (string | undefined)[];
}

/**
 * A buffer the ticks of one event log write their CBOR into, one tick after the other: a tick's
 * bytes are valid while it is delivered, and a fresh buffer a tick (a megabyte for a busy one)
 * would be garbage for the collector and pages to zero.
 */
export interface TickBuffer {
  bytes: Uint8Array;
}

/** Free bytes before the first encoded item, for the head of an array of them all. */
export const arrayHeadRoom = 5;

/**
 * Items encoded one after the other: item i is `bytes[offsets[i]..offsets[i + 1])`, and
 * `offsets[0]` is `arrayHeadRoom`.
 */
export interface EncodedItems {
  readonly bytes: Uint8Array;
  readonly offsets: Uint32Array;
}
