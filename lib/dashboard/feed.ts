/**
 * The dashboard's feed: the scheduler's event log folded in-process into what the page draws
 * (counts per task prefix, one segment per finished task, the non-transition events), sent to
 * every open page as one CBOR frame every `intervalMs`.
 *
 * Why not the raw event stream: a 100,000-task map makes about 600,000 transition events, and
 * encoding and sending them cost the scheduler about a quarter of its CPU (and the browser as
 * much again to decode them), where folding them here costs a few percent and the page gets a
 * few kilobytes a frame. The feed subscribes to the event log only while a page is open.
 *
 * @module
 */
import type { ClusterEvent, Subscriber, TransitionVisitor } from "../scheduler/events.ts";
import { encodeFrame } from "../protocol.ts";
import { keyPrefix, packSegments, type PrefixCounts } from "./ui/model.ts";

/**
 * What the feed needs of the event log. With `forEachTransition` (the scheduler's log), the feed
 * reads the transitions from the log's columns once an interval and subscribes for the other
 * events only; without it, it folds every event as delivered.
 */
export interface FeedSource {
  subscribe(sub: Subscriber, since?: number): () => void;
  forEachTransition?(since: number, fn: TransitionVisitor): number;
  readonly transitionCount?: number;
  readonly kept?: { transitions: number };
  watchTransitions?(read: () => void): () => void;
}

/** Counts of one prefix as the page receives them (the page's own type), while folded here. */
export interface PrefixRow extends PrefixCounts {
  /** Changed since the last frame (not sent: removed when the row is). */
  dirty?: boolean;
  /** Its index in the segments' prefix names, once it has a segment (not sent). */
  index?: number;
}

/** Waiting for dependencies, a worker or a slot: one bar segment. */
function isWaiting(state: string): boolean {
  return state === "waiting" || state === "queued" || state === "no-worker";
}

/** Prefixes kept apart; past this many (keys without a shared prefix), the rest are lumped. */
const maxPrefixes = 5_000;
/** Segments kept for a page that opens later. */
const keptSegments = 50_000;
/** Events kept for a page that opens later, transitions and others apart. */
const keptEvents = 300;
/** Transitions sent per frame at most: the log shows the newest, and they are a flood. */
const transitionsPerFrame = 100;

/**
 * Folds events into dashboard state and fans frames out to pages.
 *
 * @example
 * ```ts
 * const feed = new DashboardFeed(scheduler.events);
 * const detach = feed.attach((frame) => socket.send(frame));
 * ```
 */
export class DashboardFeed {
  #source: FeedSource;
  #intervalMs: number;
  #pages = new Set<(frame: Uint8Array) => void>();
  #unsubscribe: (() => void) | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;

  #prefixes = new Map<string, PrefixRow>();
  #changed: PrefixRow[] = [];
  /** The row of the last key's prefix, and that prefix as the key has it (not "(other)"). */
  #lastRow: { source: string; row: PrefixRow } | null = null;
  #workers: string[] = [];
  #workerIndex = new Map<string, number>();
  #lastWorker: string | undefined = undefined;
  #lastWorkerIndex = 0;
  #prefixNames: string[] = [];
  #prefixIndex = new Map<string, number>();
  /**
   * Segments as flat `[worker, prefix, start, stop, erred]` quintuples of float64: the kept ones
   * in a ring (a page that opens later gets them), the new ones since the last frame. Sent packed
   * (`packSegments`: 16 bytes each, float32 times), not as a CBOR number each.
   */
  #kept = new Float64Array(keptSegments * 5);
  #keptCount = 0;
  #new = new Float64Array(4096 * 5);
  #newCount = 0;
  #events: ClusterEvent[] = [];
  #transitions: ClusterEvent[] = [];
  #newEvents: ClusterEvent[] = [];
  /** The newest transitions, a ring of `transitionsPerFrame`: the log shows only the newest. */
  #newTransitions: ClusterEvent[] = [];
  #transitionCount = 0;
  #transitionsAtFlush = 0;
  #finished = 0;
  /** Column reading: the seq and the log's transition count read up to, and what was pushed out unread. */
  #readSeq = 0;
  #readCount = -1;
  #missed = 0;
  #visit: TransitionVisitor;
  /** While reading: the index of the first transition to make into an event for the log. */
  #visitIndex = 0;
  #visitKeep = 0;
  #topics = new Map<string, number>();
  /** Names already sent to the open pages: deltas carry only new ones. */
  #sentWorkers = 0;
  #sentPrefixNames = 0;

  constructor(source: FeedSource, options: { intervalMs?: number } = {}) {
    this.#source = source;
    this.#intervalMs = options.intervalMs ?? 200;
    this.#visit = (key, start, finish, worker, time, seq, startstops) => {
      this.#transition(key, start, finish, worker, time, startstops);
      // Only the newest transitions of a frame are made into events, for the page's log.
      if (this.#visitIndex++ >= this.#visitKeep) {
        const e: ClusterEvent = worker === undefined
          ? { seq, topic: "transition", time, key, start, finish }
          : { seq, topic: "transition", time, key, start, finish, worker };
        this.#newTransitions[this.#transitionCount % transitionsPerFrame] = e;
      }
      this.#transitionCount++;
    };
  }

  /** Adds a page; it gets a snapshot now and a delta every interval. Returns the detach. */
  attach(send: (frame: Uint8Array) => void): () => void {
    if (this.#pages.size === 0) this.#start();
    this.#flush();
    this.#pages.add(send);
    send(encodeFrame([this.#snapshot()]));
    this.#sentWorkers = this.#workers.length;
    this.#sentPrefixNames = this.#prefixNames.length;
    return () => {
      this.#pages.delete(send);
      if (this.#pages.size === 0) this.#stop();
    };
  }

  /** How many pages are attached. */
  get pages(): number {
    return this.#pages.size;
  }

  #start(): void {
    this.#reset();
    // Replays what the log kept, so a page opened mid-graph sees that graph. Transitions, the
    // flood, are read from the log's columns at each flush where the log allows it: no object per
    // transition and no delivery per tick on the scheduler's hot path.
    const columns = this.#source.forEachTransition !== undefined;
    this.#unsubscribe = this.#source.subscribe({
      topics: null,
      transitions: !columns,
      deliver: (batch) => this.fold(columns ? batch.nonTransitions() : batch.events),
    }, 0);
    if (columns) {
      this.#read();
      const unwatch = this.#source.watchTransitions?.(() => this.#read());
      const unsubscribe = this.#unsubscribe;
      this.#unsubscribe = () => (unwatch?.(), unsubscribe());
    }
    this.#timer = setInterval(() => this.#flush(), this.#intervalMs);
  }

  #stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#reset();
  }

  #reset(): void {
    this.#prefixes.clear();
    this.#lastRow = null;
    this.#changed = [];
    this.#workers = [];
    this.#workerIndex.clear();
    this.#lastWorker = undefined;
    this.#prefixNames = [];
    this.#prefixIndex.clear();
    this.#keptCount = 0;
    this.#newCount = 0;
    this.#events = [];
    this.#transitions = [];
    this.#newEvents = [];
    this.#newTransitions = [];
    this.#transitionCount = 0;
    this.#transitionsAtFlush = 0;
    this.#finished = 0;
    this.#readSeq = 0;
    this.#readCount = -1;
    this.#missed = 0;
    this.#topics.clear();
    this.#sentWorkers = 0;
    this.#sentPrefixNames = 0;
  }

  /** Folds events in (the event log calls this once per tick). Public for tests. */
  fold(events: readonly ClusterEvent[]): void {
    for (let i = 0; i < events.length; i++) {
      const e = events[i];
      if (e.topic === "transition") {
        this.#transition(e.key as string, e.start as string, e.finish as string, typeof e.worker === "string" ? e.worker : undefined, e.time, e.startstops);
        this.#newTransitions[this.#transitionCount++ % transitionsPerFrame] = e;
      } else {
        this.#topics.set(e.topic, (this.#topics.get(e.topic) ?? 0) + 1);
        this.#newEvents.push(e);
      }
    }
  }

  /** Folds the transitions the log kept since the last read, from its columns. */
  #read(): void {
    const source = this.#source;
    if (!source.forEachTransition) return;
    const count = source.transitionCount ?? 0;
    // The first read takes what is kept; later ones find every transition since, but those the
    // ring pushed out before this read (the scheduler outran the interval: noted as missed).
    const appended = this.#readCount < 0 ? count : count - this.#readCount;
    const visits = Math.min(appended, source.kept?.transitions ?? appended);
    const before = this.#transitionCount;
    this.#visitIndex = 0;
    this.#visitKeep = visits - transitionsPerFrame;
    this.#readSeq = source.forEachTransition(this.#readSeq, this.#visit);
    // Pushed out of the log's ring before this read (the scheduler outran the interval).
    if (this.#readCount >= 0) this.#missed += Math.max(appended - (this.#transitionCount - before), 0);
    this.#readCount = count;
  }

  /** Events per topic so far. */
  #topicCounts(): Record<string, number> {
    const out = Object.fromEntries(this.#topics);
    if (this.#transitionCount > 0) out.transition = this.#transitionCount;
    return out;
  }

  /** The transitions since the last frame, at most the newest `transitionsPerFrame`, oldest first. */
  #takeTransitions(): ClusterEvent[] {
    const n = Math.min(this.#transitionCount - this.#transitionsAtFlush, transitionsPerFrame);
    const out: ClusterEvent[] = [];
    for (let k = this.#transitionCount - n; k < this.#transitionCount; k++) out.push(this.#newTransitions[k % transitionsPerFrame]);
    this.#transitionsAtFlush = this.#transitionCount;
    return out;
  }

  #prefix(key: string): PrefixRow {
    // The keys of a graph come by prefix: the last row's name, compared in place, spares a
    // slice and a hash per transition (most of the fold's time).
    const last = this.#lastRow;
    if (last !== null) {
      const n = last.source.length;
      if (key.length > n && key.charCodeAt(n) === 45 && key.startsWith(last.source) && key.indexOf("-", n + 1) < 0) return last.row;
    }
    const prefix = keyPrefix(key);
    let name = prefix;
    let row = this.#prefixes.get(name);
    if (!row) {
      if (this.#prefixes.size >= maxPrefixes) name = "(other)";
      row = this.#prefixes.get(name);
      if (!row) {
        row = { name, dirty: false, total: 0, waiting: 0, processing: 0, done: 0, erred: 0, order: this.#prefixes.size, index: undefined };
        this.#prefixes.set(name, row);
      }
    }
    this.#lastRow = { source: prefix, row };
    return row;
  }

  /**
   * One transition, counted from its start and finish alone (no state per key): a key that
   * reaches memory stays done when it is released or forgotten, as in Dask's progress; an
   * unfinished key that is released leaves the total until it comes back.
   */
  #transition(key: string, start: string, finish: string, worker: string | undefined, time: number, startstops: unknown): void {
    const row = this.#prefix(key);
    if (!row.dirty) {
      row.dirty = true;
      this.#changed.push(row);
    }
    const fromWaiting = isWaiting(start);
    if (fromWaiting) row.waiting--;
    else if (start === "processing") row.processing--;
    if (start === "released" && finish !== "forgotten") row.total++;
    if ((fromWaiting || start === "processing") && finish === "released") row.total--;
    if (isWaiting(finish)) row.waiting++;
    else if (finish === "processing") row.processing++;
    else if (finish === "memory") row.done++;
    else if (finish === "erred") row.erred++;
    // Erred, like done, stays counted when the key is released or forgotten.

    // A task's segment comes from its end alone: the scheduler's transition into memory or
    // erred names the worker and carries the worker's measured compute span (no state per key).
    if (start !== "processing" || (finish !== "memory" && finish !== "erred")) return;
    if (worker === undefined) return;
    let begin = time;
    let end = time;
    if (Array.isArray(startstops)) {
      for (const s of startstops as Array<{ action?: string; start?: number; stop?: number }>) {
        if (s?.action === "compute" && typeof s.start === "number" && typeof s.stop === "number") {
          begin = s.start;
          end = s.stop;
        }
      }
    }
    this.#finished++;
    // The worker and the prefix are mostly those of the last segment: no lookup then.
    if (worker !== this.#lastWorker) {
      this.#lastWorker = worker;
      this.#lastWorkerIndex = this.#index(worker, this.#workers, this.#workerIndex);
    }
    row.index ??= this.#index(row.name, this.#prefixNames, this.#prefixIndex);
    let at = this.#newCount++ * 5;
    if (at + 5 > this.#new.length) {
      const grown = new Float64Array(this.#new.length * 2);
      grown.set(this.#new);
      this.#new = grown;
    }
    const segs = this.#new;
    segs[at++] = this.#lastWorkerIndex;
    segs[at++] = row.index;
    segs[at++] = begin;
    segs[at++] = end;
    segs[at] = finish === "erred" ? 1 : 0;
  }

  #index(name: string, list: string[], index: Map<string, number>): number {
    let i = index.get(name);
    if (i === undefined) {
      i = list.length;
      list.push(name);
      index.set(name, i);
    }
    return i;
  }

  /** Adds segments to the ring of kept ones (only the newest ring's worth can stay). */
  #keep(segments: Float64Array): void {
    const total = segments.length / 5;
    let from = Math.max(0, total - keptSegments);
    this.#keptCount += from;
    while (from < total) {
      const slot = this.#keptCount % keptSegments;
      const n = Math.min(total - from, keptSegments - slot);
      this.#kept.set(segments.subarray(from * 5, (from + n) * 5), slot * 5);
      from += n;
      this.#keptCount += n;
    }
  }

  /** The kept segments, oldest first. */
  #keptInOrder(): Float64Array {
    const n = Math.min(this.#keptCount, keptSegments);
    const start = (this.#keptCount - n) % keptSegments;
    const out = new Float64Array(n * 5);
    const head = this.#kept.subarray(start * 5, Math.min(start + n, keptSegments) * 5);
    out.set(head);
    if (head.length < out.length) out.set(this.#kept.subarray(0, out.length - head.length), head.length);
    return out;
  }

  #snapshot(): Record<string, unknown> {
    return {
      op: "snapshot",
      time: Date.now() / 1000,
      workers: this.#workers,
      prefixNames: this.#prefixNames,
      prefixes: [...this.#prefixes.values()].map(sendable),
      segments: packSegments(this.#keptInOrder()),
      events: [...this.#events, ...this.#transitions].sort((a, b) => a.seq - b.seq),
      topics: this.#topicCounts(),
      ...(this.#missed > 0 ? { missed: this.#missed } : {}),
    };
  }

  /** Sends what changed since the last frame to every page, as one frame made once. */
  #flush(): void {
    this.#read();
    const segments = this.#new.subarray(0, this.#newCount * 5);
    const events = this.#newEvents;
    if (this.#changed.length === 0 && segments.length === 0 && events.length === 0 && this.#transitionCount === this.#transitionsAtFlush) return;
    const transitions = this.#takeTransitions();
    const prefixes = this.#changed.map(sendable);
    for (const row of this.#changed) row.dirty = false;
    this.#changed = [];
    this.#newCount = 0;
    this.#newEvents = [];
    // Keep recent history for pages that open later.
    this.#keep(segments);
    this.#events.push(...events);
    if (this.#events.length > keptEvents) this.#events.splice(0, this.#events.length - keptEvents);
    this.#transitions.push(...transitions);
    if (this.#transitions.length > keptEvents) this.#transitions.splice(0, this.#transitions.length - keptEvents);
    if (this.#pages.size === 0) return;
    const frame = encodeFrame([{
      op: "delta",
      time: Date.now() / 1000,
      workers: this.#workers.slice(this.#sentWorkers),
      prefixNames: this.#prefixNames.slice(this.#sentPrefixNames),
      prefixes,
      segments: packSegments(segments),
      events: [...events, ...transitions].sort((a, b) => a.seq - b.seq),
      topics: this.#topicCounts(),
      finished: this.#finished,
      ...(this.#missed > 0 ? { missed: this.#missed } : {}),
    }]);
    this.#sentWorkers = this.#workers.length;
    this.#sentPrefixNames = this.#prefixNames.length;
    for (const send of this.#pages) {
      try {
        send(frame);
      } catch {
        // that page left; its close detaches it
      }
    }
  }
}

/** A row without its bookkeeping. */
function sendable(row: PrefixRow): PrefixRow {
  return { name: row.name, total: row.total, waiting: row.waiting, processing: row.processing, done: row.done, erred: row.erred, order: row.order };
}
