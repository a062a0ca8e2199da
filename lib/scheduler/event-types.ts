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
  /** The `startstops` of transitions into memory or erred, by slot (sparse). */
  readonly startstops: ReadonlyMap<number, unknown[]>;
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
