/**
 * What the dashboard knows, folded from the event stream: progress per task prefix, the task
 * stream (when each task ran, on which worker), tasks finished per second, and a capped event
 * log. Pure and DOM-free, so it is unit-tested without a browser; every event costs O(1), and
 * nothing here grows with the number of tasks except the per-key state of unfinished prefixes.
 *
 * @module
 */

/** One event of the scheduler's stream. */
export interface StreamEvent {
  seq: number;
  topic: string;
  time: number;
  [field: string]: unknown;
}

/** The key up to its last `-`, as Dask's progress groups tasks (`inc-12` → `inc`). */
export function keyPrefix(key: string): string {
  const i = key.lastIndexOf("-");
  return i > 0 ? key.slice(0, i) : key;
}

/** Where a key is, as the progress bars count it. */
const Phase = { Waiting: 0, Processing: 1, Done: 2, Erred: 3 } as const;
type Phase = typeof Phase[keyof typeof Phase];

function phaseOf(state: string): Phase {
  switch (state) {
    case "processing":
      return Phase.Processing;
    case "memory":
      return Phase.Done;
    case "erred":
      return Phase.Erred;
    default:
      return Phase.Waiting;
  }
}

/** Counts of one task prefix. */
export interface PrefixCounts {
  name: string;
  /** Keys seen, finished or not. */
  total: number;
  waiting: number;
  processing: number;
  done: number;
  erred: number;
  /** Order of first appearance, for a stable display. */
  order: number;
  /** Scheduler time of the last change. */
  updated: number;
}

/**
 * Progress per prefix. A key that reaches memory stays counted as done when it is later released
 * or forgotten (as Dask's progress bar); a key submitted again after that starts over.
 */
export class Progress {
  readonly prefixes = new Map<string, PrefixCounts>();
  #keys = new Map<string, Phase>();
  #order = 0;
  /** Bumped on every change, so the view redraws only when something moved. */
  version = 0;

  /** Folds one transition event in. */
  transition(key: string, finish: string, time: number): void {
    const name = keyPrefix(key);
    let p = this.prefixes.get(name);
    if (!p) {
      p = { name, total: 0, waiting: 0, processing: 0, done: 0, erred: 0, order: this.#order++, updated: time };
      this.prefixes.set(name, p);
    }
    p.updated = time;
    this.version++;
    const old = this.#keys.get(key);
    const released = finish === "released" || finish === "forgotten";
    if (old === undefined) {
      if (released) return;
      p.total++;
    } else if (released) {
      // Done or erred keys keep counting; unfinished ones that are dropped leave the total.
      if (old === Phase.Done || old === Phase.Erred) {
        if (finish === "forgotten") this.#keys.delete(key);
        return;
      }
      this.#dec(p, old);
      p.total--;
      this.#keys.delete(key);
      return;
    } else {
      // Also a finished key submitted anew: it moves out of done.
      this.#dec(p, old);
    }
    const phase = phaseOf(finish);
    this.#keys.set(key, phase);
    if (phase === Phase.Waiting) p.waiting++;
    else if (phase === Phase.Processing) p.processing++;
    else if (phase === Phase.Done) p.done++;
    else p.erred++;
  }

  #dec(p: PrefixCounts, phase: Phase): void {
    if (phase === Phase.Waiting) p.waiting--;
    else if (phase === Phase.Processing) p.processing--;
    else if (phase === Phase.Done) p.done--;
    else p.erred--;
  }

  /** Forgets every prefix with nothing left to run (the "clear finished" button). */
  clearFinished(): void {
    for (const [name, p] of this.prefixes) {
      if (p.waiting === 0 && p.processing === 0) this.prefixes.delete(name);
    }
    for (const [key, phase] of this.#keys) {
      if (!this.prefixes.has(keyPrefix(key)) || phase === Phase.Done || phase === Phase.Erred) this.#keys.delete(key);
    }
    this.version++;
  }

  /** How many keys are tracked (for tests: finished and forgotten keys are not). */
  get trackedKeys(): number {
    return this.#keys.size;
  }
}

/**
 * The task stream: one segment per finished task, kept in a ring of typed arrays (no object per
 * task), laid out on lanes per worker the way its threads ran them.
 */
export class TaskStream {
  readonly capacity: number;
  readonly start: Float64Array;
  readonly stop: Float64Array;
  readonly worker: Uint16Array;
  readonly lane: Uint16Array;
  readonly prefix: Uint32Array;
  readonly erred: Uint8Array;
  /** Segments ever added; the ring holds the last `capacity`. */
  count = 0;
  readonly workers: string[] = [];
  readonly prefixes: string[] = [];
  #workerIndex = new Map<string, number>();
  #prefixIndex = new Map<string, number>();
  /** Per worker, when each lane is next free. */
  #laneFree: number[][] = [];
  /** Threads per worker (from info): the lanes it gets. */
  #threads = new Map<string, number>();
  /** Keys sent to a worker and not finished yet: when and where. */
  #running = new Map<string, { time: number; worker: string }>();
  version = 0;

  constructor(capacity = 200_000) {
    this.capacity = capacity;
    this.start = new Float64Array(capacity);
    this.stop = new Float64Array(capacity);
    this.worker = new Uint16Array(capacity);
    this.lane = new Uint16Array(capacity);
    this.prefix = new Uint32Array(capacity);
    this.erred = new Uint8Array(capacity);
  }

  /** Sets a worker's thread count (its lanes). */
  setThreads(worker: string, nthreads: number): void {
    this.#threads.set(worker, Math.max(1, Math.min(64, nthreads | 0)));
  }

  /** The lanes a worker gets. */
  lanes(workerIndex: number): number {
    return Math.max(this.#threads.get(this.workers[workerIndex]) ?? 1, this.#laneFree[workerIndex]?.length ?? 1);
  }

  workerIndex(name: string): number {
    let i = this.#workerIndex.get(name);
    if (i === undefined) {
      i = this.workers.length;
      this.workers.push(name);
      this.#workerIndex.set(name, i);
      this.#laneFree.push([]);
    }
    return i;
  }

  prefixIndex(name: string): number {
    let i = this.#prefixIndex.get(name);
    if (i === undefined) {
      i = this.prefixes.length;
      this.prefixes.push(name);
      this.#prefixIndex.set(name, i);
    }
    return i;
  }

  /** Folds one transition event in; `startstops` (when the scheduler sends them) wins. */
  transition(event: StreamEvent): void {
    const key = event.key as string;
    const finish = event.finish as string;
    if (finish === "processing") {
      if (typeof event.worker === "string") this.#running.set(key, { time: event.time, worker: event.worker });
      return;
    }
    const run = this.#running.get(key);
    if (run) this.#running.delete(key);
    if (event.start !== "processing" || (finish !== "memory" && finish !== "erred")) return;
    const workerName = typeof event.worker === "string" ? event.worker : run?.worker;
    if (workerName === undefined) return;
    let begin = run?.time ?? event.time;
    let end = event.time;
    let exact = false;
    if (Array.isArray(event.startstops)) {
      for (const s of event.startstops as Array<{ action?: string; start?: number; stop?: number }>) {
        if (s && s.action === "compute" && typeof s.start === "number" && typeof s.stop === "number") {
          begin = s.start;
          end = s.stop;
          exact = true;
        }
      }
    }
    this.add(workerName, keyPrefix(key), begin, end, { erred: finish === "erred", exact });
  }

  /**
   * Adds a segment. Without exact compute times, a task's start is when the scheduler sent it;
   * when every lane is still busy then, it ran after the lane freed (the worker queues it).
   */
  add(workerName: string, prefixName: string, begin: number, end: number, options: { erred?: boolean; exact?: boolean } = {}): void {
    const w = this.workerIndex(workerName);
    const free = this.#laneFree[w];
    const lanes = this.#threads.get(workerName) ?? 1;
    while (free.length < lanes) free.push(0);
    let lane = 0;
    for (let i = 1; i < free.length; i++) if (free[i] < free[lane]) lane = i;
    if (!options.exact && free[lane] > begin) begin = Math.min(free[lane], end);
    free[lane] = end;
    const slot = this.count % this.capacity;
    this.start[slot] = begin;
    this.stop[slot] = end;
    this.worker[slot] = w;
    this.lane[slot] = lane;
    this.prefix[slot] = this.prefixIndex(prefixName);
    this.erred[slot] = options.erred ? 1 : 0;
    this.count++;
    this.version++;
  }

  /** How many segments are held (at most `capacity`). */
  get size(): number {
    return Math.min(this.count, this.capacity);
  }

  /** Tasks sent to workers and not finished (for tests and the view). */
  get runningCount(): number {
    return this.#running.size;
  }
}

/** Tasks finished per second over the last `seconds`, bucketed by the scheduler's clock. */
export class Rate {
  readonly buckets: Float64Array;
  #head = 0;
  #headSecond = 0;
  constructor(readonly seconds = 120) {
    this.buckets = new Float64Array(seconds);
  }
  add(time: number, n = 1): void {
    const second = Math.floor(time);
    this.#advance(second);
    const age = this.#headSecond - second;
    if (age < 0 || age >= this.seconds) return;
    this.buckets[(this.#head - age + this.seconds) % this.seconds] += n;
  }
  #advance(second: number): void {
    if (this.#headSecond === 0) this.#headSecond = second;
    while (this.#headSecond < second) {
      this.#headSecond++;
      this.#head = (this.#head + 1) % this.seconds;
      this.buckets[this.#head] = 0;
      if (second - this.#headSecond > this.seconds) this.#headSecond = second - this.seconds;
    }
  }
  /** Oldest first, up to `now` (seconds). */
  series(now: number): number[] {
    this.#advance(Math.floor(now));
    const out: number[] = [];
    for (let i = 1; i <= this.seconds; i++) out.push(this.buckets[(this.#head + i) % this.seconds]);
    return out;
  }
}

/**
 * The event log: the last `capacity` events of every topic but `transition`, and the last
 * `capacity` transitions apart, so a flood of transitions never pushes out a worker or plugin
 * event. Counts per topic are kept for the filter.
 */
export class EventRing {
  readonly topics = new Map<string, number>();
  #other: StreamEvent[] = [];
  #transitions: StreamEvent[] = [];
  /** Bumped per event; `otherVersion` only for events that are not transitions. */
  version = 0;
  otherVersion = 0;
  constructor(readonly capacity = 500) {}

  add(event: StreamEvent): void {
    this.topics.set(event.topic, (this.topics.get(event.topic) ?? 0) + 1);
    const list = event.topic === "transition" ? this.#transitions : this.#other;
    list.push(event);
    // Trimmed in chunks: one splice per `capacity` events, not one shift per event.
    if (list.length > this.capacity * 2) list.splice(0, list.length - this.capacity);
    this.version++;
    if (event.topic !== "transition") this.otherVersion++;
  }

  /** The newest events (newest first) of the shown topics, at most `limit`. */
  newest(show: (topic: string) => boolean, limit: number): StreamEvent[] {
    const out: StreamEvent[] = [];
    let i = this.#other.length - 1;
    let j = this.#transitions.length - 1;
    const lowI = Math.max(0, this.#other.length - this.capacity);
    const lowJ = show("transition") ? Math.max(0, this.#transitions.length - this.capacity) : j + 1;
    while (out.length < limit && (i >= lowI || j >= lowJ)) {
      const a = i >= lowI ? this.#other[i] : undefined;
      const b = j >= lowJ ? this.#transitions[j] : undefined;
      if (a && (!b || a.seq > b.seq)) {
        i--;
        if (show(a.topic)) out.push(a);
      } else if (b) {
        j--;
        out.push(b);
      }
    }
    return out;
  }
}

/** Folds a batch of events into the model; returns the newest seq seen. */
export function foldEvents(
  events: StreamEvent[],
  model: { progress: Progress; stream: TaskStream; rate: Rate; log: EventRing },
): number {
  let last = 0;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (e.topic === "transition") {
      const finish = e.finish as string;
      model.progress.transition(e.key as string, finish, e.time);
      model.stream.transition(e);
      if (finish === "memory" || finish === "erred") model.rate.add(e.time);
    }
    model.log.add(e);
    if (e.seq > last) last = e.seq;
  }
  return last;
}
