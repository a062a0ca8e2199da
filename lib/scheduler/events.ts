/**
 * The scheduler's event log: every event gets the next `seq`; the kept events are replayed for
 * `since=SEQ`, and subscribers receive the events of each tick as one {@linkcode EventBatch}.
 *
 * What is kept is bounded per topic class, so that one class cannot push out another:
 * `transition` events (the scheduler's hot path, one fixed shape) sit in a ring of columns
 * (seq, time, key, start, finish, stimulus, worker) bounded by count — no object per transition
 * unless someone listens; every other event (`log`, `plugin`, `worker`, posted topics) sits in a
 * second ring bounded by count and by the bytes of its JSON text. Events posted from outside
 * (`post`) are checked against the event limits (lib/limits.ts) before they are numbered or
 * reach anyone.
 *
 * Fan-out is per tick, not per event per subscriber: a tick's batch refers to its transitions by
 * their slots in the columns (no object per transition when it is appended); its CBOR is written
 * from the columns and its JSON made from them, each at most once (lazily) and shared by every
 * subscriber and plugin (`jsonl`) that wants them (event-batch.ts). Objects are kept only for
 * plugins' `logEvent` hooks.
 *
 * @module
 */
import { checkEvent, defaultLimits, type Limits } from "../limits.ts";
import { EventBatch, Tick, transitionEvent } from "./event-batch.ts";
import { ComputeSpan, type ClusterEvent, spansAt, type TickBuffer, type TransitionColumns } from "./event-types.ts";

export { EventBatch };
export type { ClusterEvent };

/** A live subscriber; `deliver` receives the events of one tick, in order. */
export interface Subscriber {
  topics: ReadonlySet<string> | null;
  /**
   * `false`: no transition events wanted, even with `topics: null` (such a subscriber reads them
   * from the columns with `forEachTransition`, so none is made into an object for it; a batch
   * may still carry some when another subscriber wants them). @default true
   */
  transitions?: boolean;
  deliver(batch: EventBatch): void;
}

/** Receives one kept transition, read from the columns (no object is made). */
export type TransitionVisitor = (
  key: string,
  start: string,
  finish: string,
  worker: string | undefined,
  time: number,
  seq: number,
  startstops: unknown[] | undefined,
) => void;

/** Options of `EventLog` beyond the transitions kept. */
export interface EventLogOptions {
  /** Events other than transitions kept, at most. @default 20000 */
  otherKept?: number;
  /** Bytes (of JSON text) of the events other than transitions kept, at most. @default 67108864 (64 MiB) */
  otherBytes?: number;
  /** The size and depth limits of posted events. @default defaultLimits */
  limits?: Limits;
}

/**
 * A bounded event log with replay and batched fan-out.
 *
 * @example
 * ```ts
 * const log = new EventLog(10_000);
 * log.append("log", { message: "hello" });
 * ```
 */
export class EventLog {
  // Transitions, as columns: slot = (n-th transition) % capacity.
  #tSeq: Float64Array;
  #tTime: Float64Array;
  #tKey: string[];
  #tStart: string[];
  #tFinish: string[];
  #tStimulus: string[];
  #tWorker: (string | undefined)[];
  /** A lone compute span (`startstops` of nearly every transition into memory), by slot: NaN for none. */
  #tSpanStart: Float64Array;
  #tSpanStop: Float64Array;
  /** The `startstops` of any other shape, by slot (sparse). */
  #tStartstops = new Map<number, unknown[]>();
  /** The same columns, as batches read them. */
  #columns: TransitionColumns;
  #transitionCapacity: number;
  #transitionCount = 0;
  /** Column readers, called each half ring so that they read every transition before it is pushed out. */
  #readers = new Set<() => void>();
  /** The `#transitionCount` at which the readers are called next (never while there are none). */
  #readAt = Infinity;
  // Other events: kept from absolute index #otherHead to #otherCount (exclusive), slot = index % capacity.
  #others: (ClusterEvent | undefined)[];
  #otherJson: (string | undefined)[];
  #otherCapacity: number;
  #otherHead = 0;
  #otherCount = 0;
  #otherBytes = 0;
  #otherBudget: number;
  #limits: Limits;
  #seq = 0;
  #subscribers = new Set<SubscriberEntry>();
  /**
   * The events since the last flush (kept only while someone subscribes): a transition's slot,
   * or `-1 - k` for `#pendingOthers[k]` (with its JSON text).
   */
  #pending: number[] = [];
  #pendingOthers: ClusterEvent[] = [];
  #pendingOtherJson: string[] = [];
  /** Transition slots in `#pending`: past half the ring, the tick is delivered at once. */
  #pendingTransitions = 0;
  #flushScheduled = false;
  /** Whether a flush is delivering now (one started from a subscriber writes its own CBOR). */
  #flushing = false;
  /** Where each flushed tick writes its CBOR (valid while it is delivered). */
  #tickBuffer: TickBuffer = { bytes: new Uint8Array(0) };
  #onEvent: ((event: ClusterEvent) => void) | null = null;
  /** Whether anyone takes events as they come (subscribers or `onEvent`). */
  #listening = false;
  /** Whether some subscriber takes transition events as they come (by slot: no object). */
  #pendingTransitionsWanted = false;

  constructor(capacity = 20_000, options: EventLogOptions = {}) {
    const cap = this.#transitionCapacity = Math.max(capacity, 10_000);
    this.#tSeq = new Float64Array(cap);
    this.#tTime = new Float64Array(cap);
    this.#tKey = new Array(cap);
    this.#tStart = new Array(cap);
    this.#tFinish = new Array(cap);
    this.#tStimulus = new Array(cap);
    this.#tWorker = new Array(cap);
    this.#tSpanStart = new Float64Array(cap);
    this.#tSpanStop = new Float64Array(cap);
    this.#columns = {
      seq: this.#tSeq,
      time: this.#tTime,
      key: this.#tKey,
      start: this.#tStart,
      finish: this.#tFinish,
      stimulus: this.#tStimulus,
      worker: this.#tWorker,
      spanStart: this.#tSpanStart,
      spanStop: this.#tSpanStop,
      startstops: this.#tStartstops,
    };
    this.#otherCapacity = Math.max(options.otherKept ?? 20_000, 1);
    this.#others = new Array(this.#otherCapacity);
    this.#otherJson = new Array(this.#otherCapacity);
    this.#otherBudget = options.otherBytes ?? 64 * 1024 * 1024;
    this.#limits = options.limits ?? defaultLimits;
  }

  /** Called for every event but transitions, as it is kept (e.g. `log` events to stderr). */
  onOther: ((event: ClusterEvent) => void) | null = null;

  /** Called synchronously for every appended event (plugins' `logEvent`); `null` for none. */
  get onEvent(): ((event: ClusterEvent) => void) | null {
    return this.#onEvent;
  }
  set onEvent(fn: ((event: ClusterEvent) => void) | null) {
    this.#onEvent = fn;
    this.#listen();
  }

  #listen(): void {
    this.#listening = this.#onEvent !== null || this.#subscribers.size > 0;
    let transitions = false;
    for (const sub of this.#subscribers) transitions ||= wantsTransitions(sub);
    this.#pendingTransitionsWanted = transitions;
  }

  /** An event's JSON text (for a kept event other than a transition, the text kept with it). */
  json(event: ClusterEvent): string {
    if (event.topic !== "transition") {
      const index = findSeq(this.#others, this.#otherCapacity, this.#otherHead, this.#otherCount, event.seq);
      if (index >= 0 && this.#others[index % this.#otherCapacity] === event) return this.#otherJson[index % this.#otherCapacity]!;
    }
    return toJson(event);
  }

  /** The seq of the newest event (0 before any). */
  get lastSeq(): number {
    return this.#seq;
  }

  /** How many live subscribers there are. */
  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  /** What is kept now: transitions, other events, and the other events' bytes of JSON. */
  get kept(): { transitions: number; others: number; otherBytes: number } {
    return {
      transitions: Math.min(this.#transitionCount, this.#transitionCapacity),
      others: this.#otherCount - this.#otherHead,
      otherBytes: this.#otherBytes,
    };
  }

  /**
   * Appends an event made by the scheduler itself; returns it with its `seq` and `time`.
   * Events from outside go through `post`, which checks them first.
   */
  append(topic: string, fields: Record<string, unknown>): ClusterEvent {
    const seq = ++this.#seq;
    const time = Date.now() / 1000;
    // seq, topic and time come first and cannot be overridden by the fields.
    const event = { seq, topic, time, ...fields } as ClusterEvent;
    event.seq = seq;
    event.topic = topic;
    event.time = time;
    this.#storeOther(event);
    return event;
  }

  /**
   * Appends an event posted from outside (HTTP, a client, a worker, a plugin's `logEvent`):
   * refused with a `LimitError` (topic length, size, depth) or an `InputError` (not JSON) before
   * it is numbered or reaches anyone. A value that is not an object is kept as `{value}`.
   *
   * @example
   * ```ts
   * log.post("alerts", { level: "high" }); // throws LimitError for a 2 MiB one
   * ```
   */
  post(topic: string, fields: unknown, extra?: Record<string, unknown>): ClusterEvent {
    const object = fields !== null && typeof fields === "object" && !Array.isArray(fields) && !ArrayBuffer.isView(fields)
      ? fields as Record<string, unknown>
      : { value: fields };
    checkEvent(topic, object, this.#limits);
    return this.append(topic, extra ? { ...object, ...extra } : object);
  }

  /**
   * Appends a `transition` event: the scheduler's hot path. Kept as columns; an object is made
   * only when someone listens now. `time` (unix seconds, now by default) may be read once for
   * all the transitions of one stimulus.
   */
  appendTransition(key: string, start: string, finish: string, stimulusId: string, worker: string | undefined, startstops?: unknown[], time: number = Date.now() / 1000): void {
    const seq = ++this.#seq;
    const slot = this.#transitionCount++ % this.#transitionCapacity;
    this.#tSeq[slot] = seq;
    this.#tTime[slot] = time;
    this.#tKey[slot] = key;
    this.#tStart[slot] = start;
    this.#tFinish[slot] = finish;
    this.#tStimulus[slot] = stimulusId;
    this.#tWorker[slot] = worker;
    // Dask's transition kwargs: the measured spans of a task that reached memory or erred. The
    // scheduler's lone compute span goes into two number columns (no object kept, no hashing);
    // spans of any other shape, rare, into a sparse map.
    if (startstops !== undefined && startstops.length === 1 && startstops[0] instanceof ComputeSpan) {
      this.#tSpanStart[slot] = startstops[0].start;
      this.#tSpanStop[slot] = startstops[0].stop;
      if (this.#tStartstops.size > 0) this.#tStartstops.delete(slot);
    } else {
      this.#tSpanStart[slot] = NaN;
      if (startstops !== undefined) this.#tStartstops.set(slot, startstops);
      else if (this.#tStartstops.size > 0) this.#tStartstops.delete(slot);
    }
    if (this.#transitionCount === this.#readAt) this.#callReaders();
    if (this.#pendingTransitionsWanted) {
      this.#pending.push(slot);
      this.#scheduleFlush();
      // Delivered before the ring could overwrite a slot of this tick.
      if (++this.#pendingTransitions >= this.#transitionCapacity >> 1) this.flush();
    }
    if (this.#onEvent !== null) {
      const event = transitionEvent(seq, time, key, start, finish, stimulusId, worker);
      if (startstops !== undefined) event.startstops = startstops;
      this.#onEvent(event);
    }
  }

  #storeOther(event: ClusterEvent): void {
    let json: string;
    try {
      json = toJson(event);
    } catch (err) {
      // A scheduler-made event always encodes; should one not, it is kept as a note, not lost silently.
      json = JSON.stringify({ seq: event.seq, topic: event.topic, time: event.time, error: `Cannot encode event: ${(err as Error).message}` });
    }
    const capacity = this.#otherCapacity;
    // Evict the oldest until this one fits in count and bytes (a single event over the budget is
    // still kept, alone: only posted events are refused by size, scheduler-made ones are small).
    while (this.#otherCount - this.#otherHead >= capacity || (this.#otherCount > this.#otherHead && this.#otherBytes + json.length > this.#otherBudget)) {
      const slot = this.#otherHead++ % capacity;
      this.#otherBytes -= this.#otherJson[slot]!.length;
      this.#others[slot] = undefined;
      this.#otherJson[slot] = undefined;
    }
    const slot = this.#otherCount++ % capacity;
    this.#others[slot] = event;
    this.#otherJson[slot] = json;
    this.#otherBytes += json.length;
    this.onOther?.(event);
    if (this.#listening) {
      if (this.#subscribers.size > 0) {
        this.#pending.push(-1 - this.#pendingOthers.length);
        this.#pendingOthers.push(event);
        this.#pendingOtherJson.push(json);
        this.#scheduleFlush();
      }
      this.#onEvent?.(event);
    }
  }

  /** How many transitions were ever appended (kept or not). */
  get transitionCount(): number {
    return this.#transitionCount;
  }

  /**
   * Calls `fn` for each kept transition after seq `since`, oldest first, straight from the
   * columns: no object per transition (the dashboard's feed reads them so every interval).
   * Returns the seq of the last one visited, or `since` if none. Transitions pushed out of the
   * ring before they were read are skipped: compare `transitionCount` to see how many.
   */
  forEachTransition(since: number, fn: TransitionVisitor): number {
    const tCap = this.#transitionCapacity;
    const tEnd = this.#transitionCount;
    const tSeq = this.#tSeq;
    const lo = this.#firstTransitionAfter(since);
    let last = since;
    for (let t = lo; t < tEnd; t++) {
      const s = t % tCap;
      last = tSeq[s];
      fn(this.#tKey[s], this.#tStart[s], this.#tFinish[s], this.#tWorker[s], this.#tTime[s], last, spansAt(this.#columns, s));
    }
    return last;
  }

  /** The absolute index of the first kept transition whose seq is after `since` (binary search). */
  #firstTransitionAfter(since: number): number {
    const tCap = this.#transitionCapacity;
    const tSeq = this.#tSeq;
    let lo = Math.max(this.#transitionCount - tCap, 0);
    let hi = this.#transitionCount;
    while (lo < hi) {
      const mid = lo + ((hi - lo) >> 1);
      if (tSeq[mid % tCap] <= since) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Adds a column reader: called (synchronously, from the append) every half ring of
   * transitions, so that one that reads all since its last read with `forEachTransition` then
   * never misses any, however long the scheduler keeps the event loop. Returns the removal.
   */
  watchTransitions(read: () => void): () => void {
    this.#readers.add(read);
    this.#readAt = this.#transitionCount + (this.#transitionCapacity >> 1);
    return () => {
      this.#readers.delete(read);
      if (this.#readers.size === 0) this.#readAt = Infinity;
    };
  }

  #callReaders(): void {
    this.#readAt += this.#transitionCapacity >> 1;
    for (const read of this.#readers) {
      try {
        read();
      } catch {
        this.#readers.delete(read);
      }
    }
    if (this.#readers.size === 0) this.#readAt = Infinity;
  }

  /** The kept events after `since`, optionally of some topics only, in seq order. */
  replay(since: number, topics: ReadonlySet<string> | null, transitions = true): ClusterEvent[] {
    const tCap = this.#transitionCapacity;
    const oCap = this.#otherCapacity;
    const tEnd = this.#transitionCount;
    const oEnd = this.#otherCount;
    const tSeq = this.#tSeq;
    const lo = this.#firstTransitionAfter(since);
    let t = transitions && (topics === null || topics.has("transition")) ? lo : tEnd;
    let o = firstAfter(this.#others, oCap, this.#otherHead, oEnd, since);
    const out: ClusterEvent[] = [];
    while (t < tEnd || o < oEnd) {
      if (o >= oEnd || (t < tEnd && tSeq[t % tCap] < this.#others[o % oCap]!.seq)) {
        const s = t++ % tCap;
        const event = transitionEvent(tSeq[s], this.#tTime[s], this.#tKey[s], this.#tStart[s], this.#tFinish[s], this.#tStimulus[s], this.#tWorker[s]);
        const startstops = spansAt(this.#columns, s);
        if (startstops !== undefined) event.startstops = startstops;
        out.push(event);
      } else {
        const event = this.#others[o++ % oCap]!;
        if (topics === null || topics.has(event.topic)) out.push(event);
      }
    }
    return out;
  }

  /** Adds a subscriber; replays the kept events after `since` first. Returns an unsubscribe. */
  subscribe(sub: Subscriber, since?: number): () => void {
    const entry: SubscriberEntry = Object.assign(sub, {
      filterKey: sub.topics === null ? "*" : [...sub.topics].sort().join(","),
      fromSeq: this.#seq,
      replay: since === undefined ? [] : this.replay(since, sub.topics, sub.transitions !== false),
    });
    this.#subscribers.add(entry);
    this.#listen();
    if (entry.replay.length > 0) this.#scheduleFlush();
    return () => {
      this.#subscribers.delete(entry);
      if (this.#subscribers.size === 0) this.#takePending();
      this.#listen();
    };
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setTimeout(() => this.flush(), 0);
  }

  /**
   * Delivers pending events to every subscriber now. Subscribers with the same topics receive
   * the same batch, so that what is made of it (JSON, CBOR) is made once.
   */
  flush(): void {
    this.#flushScheduled = false;
    const nested = this.#flushing;
    this.#flushing = true;
    try {
      this.#deliver(new EventBatch(this.#takePending(nested ? null : this.#tickBuffer)));
    } finally {
      this.#flushing = nested;
    }
  }

  #deliver(tick: EventBatch): void {
    const firstSeq = tick.firstSeq;
    const byFilter = new Map<string, EventBatch>();
    for (const sub of this.#subscribers) {
      let batch: EventBatch;
      if (firstSeq > sub.fromSeq) {
        let shared = byFilter.get(sub.filterKey);
        if (!shared) {
          shared = sub.topics === null ? tick : tick.only(sub.topics);
          byFilter.set(sub.filterKey, shared);
        }
        batch = shared;
      } else {
        // Subscribed in the middle of this batch: only what came after (the rest was replayed).
        batch = sub.topics === null ? tick.after(sub.fromSeq) : tick.only(sub.topics, sub.fromSeq);
      }
      if (sub.replay.length > 0) {
        batch = EventBatch.of([...sub.replay, ...batch.events]);
        sub.replay = [];
      }
      if (batch.length === 0) continue;
      try {
        sub.deliver(batch);
      } catch {
        this.#subscribers.delete(sub);
      }
    }
  }

  /** The pending events as a tick (its CBOR written into `buffer`, where given), and nothing pending any more. */
  #takePending(buffer: TickBuffer | null = null): Tick {
    const tick = new Tick(this.#columns, this.#pending, this.#pendingOthers, this.#pendingOtherJson, buffer);
    this.#pending = [];
    this.#pendingOthers = [];
    this.#pendingOtherJson = [];
    this.#pendingTransitions = 0;
    return tick;
  }
}

interface SubscriberEntry extends Subscriber {
  filterKey: string;
  /** The last seq before it subscribed: live delivery starts after it. */
  fromSeq: number;
  replay: ClusterEvent[];
}

/** Whether a subscriber takes transition events as they come. */
function wantsTransitions(sub: Subscriber): boolean {
  return sub.transitions !== false && (sub.topics === null || sub.topics.has("transition"));
}

/** The absolute index in `[from, to)` of a ring whose events have this seq, or -1. */
function findSeq(ring: (ClusterEvent | undefined)[], capacity: number, from: number, to: number, seq: number): number {
  const index = firstAfter(ring, capacity, from, to, seq - 1);
  return index < to && ring[index % capacity]!.seq === seq ? index : -1;
}

/** The first absolute index in `[from, to)` of a ring (seqs ascending) whose seq is after `since`. */
function firstAfter(ring: (ClusterEvent | undefined)[], capacity: number, from: number, to: number, since: number): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = lo + ((hi - lo) >> 1);
    if (ring[mid % capacity]!.seq <= since) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * An event as JSON text. (Hand-written JSON for transitions was tried: it builds rope strings
 * that cost more when flattened for a send or a join than JSON.stringify's flat result.)
 */
export function toJson(event: ClusterEvent): string {
  return JSON.stringify(event);
}
