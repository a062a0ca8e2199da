/**
 * What the dashboard page knows, from the scheduler's dashboard feed: progress per task prefix,
 * the task stream (when each task ran, on which worker and thread), tasks finished per second,
 * and a capped event log. Pure and DOM-free, so it is unit-tested without a browser; nothing
 * here grows with the number of tasks (the stream is a ring of typed arrays).
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

// The key up to its last `-`, as Dask's progress groups tasks (`inc-12` → `inc`): the CLI's
// progress bar and the dashboard group by the same function.
export { keyPrefix } from "../../progress.ts";

/** Counts of one task prefix, as the scheduler's dashboard feed sends them. */
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
}

/** Progress per prefix: the feed's rows, replaced as they come. */
export class Progress {
  readonly prefixes = new Map<string, PrefixCounts>();
  /** Bumped on every change, so the view redraws only when something moved. */
  version = 0;
  /** Names the user cleared: shown again only when they change. */
  #cleared = new Map<string, number>();

  /** Applies rows from the feed (absolute counts). */
  apply(rows: PrefixCounts[]): void {
    for (const row of rows) {
      const cleared = this.#cleared.get(row.name);
      if (cleared !== undefined) {
        if (cleared === row.total + row.done * 1e6 + row.erred * 1e3) continue;
        this.#cleared.delete(row.name);
      }
      this.prefixes.set(row.name, row);
    }
    if (rows.length > 0) this.version++;
  }

  /** Forgets every prefix with nothing left to run (the "clear finished" button). */
  clearFinished(): void {
    for (const [name, p] of this.prefixes) {
      if (p.waiting <= 0 && p.processing <= 0) {
        this.prefixes.delete(name);
        this.#cleared.set(name, p.total + p.done * 1e6 + p.erred * 1e3);
      }
    }
    this.version++;
  }

  /** Starts over (a new snapshot). */
  clear(): void {
    this.prefixes.clear();
    this.version++;
  }
}

/**
 * A finished task's segment on the wire: 16 bytes, little-endian (what x64 and arm64 both are):
 * `worker << 1 | erred` and `prefix` as uint32, then `start` and `stop` as float32 seconds from
 * a base, the float64 before the first segment. A 100,000-task map is 1.6 MB of them, not the
 * 4 MB of float64 quintuples.
 */
export const segmentBytes = 16;

/**
 * Packs `[worker, prefix, start, stop, erred]` float64 quintuples into wire segments, their
 * times from the first one's start (a float32 keeps microseconds for minutes around it).
 */
export function packSegments(quintuples: Float64Array): Uint8Array {
  const n = Math.floor(quintuples.length / 5);
  const buffer = new ArrayBuffer(8 + n * segmentBytes);
  const base = n > 0 ? quintuples[2] : 0;
  new DataView(buffer).setFloat64(0, base, true);
  const words = new Uint32Array(buffer, 8);
  const times = new Float32Array(buffer, 8);
  for (let i = 0, j = 0, w = 0; i < n; i++, j += 5, w += 4) {
    words[w] = quintuples[j] * 2 + (quintuples[j + 4] === 1 ? 1 : 0);
    words[w + 1] = quintuples[j + 1];
    times[w + 2] = quintuples[j + 2] - base;
    times[w + 3] = quintuples[j + 3] - base;
  }
  return new Uint8Array(buffer);
}

/** Wire segments read back: the same bytes as words and as float32 times, and their base. */
export class PackedSegments {
  readonly words: Uint32Array;
  readonly times: Float32Array;
  readonly base: number;
  readonly length: number;

  constructor(bytes: Uint8Array) {
    // A copy when the bytes do not start on a 4-byte boundary of their buffer.
    const own = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
    this.length = own.byteLength >= 8 ? Math.floor((own.byteLength - 8) / segmentBytes) : 0;
    this.base = this.length > 0 ? new DataView(own.buffer, own.byteOffset, 8).getFloat64(0, true) : 0;
    this.words = new Uint32Array(own.buffer, own.byteOffset + 8, this.length * 4);
    this.times = new Float32Array(own.buffer, own.byteOffset + 8, this.length * 4);
  }

  worker(i: number): number {
    return this.words[i * 4] >>> 1;
  }
  erred(i: number): boolean {
    return (this.words[i * 4] & 1) === 1;
  }
  prefix(i: number): number {
    return this.words[i * 4 + 1];
  }
  start(i: number): number {
    return this.base + this.times[i * 4 + 2];
  }
  stop(i: number): number {
    return this.base + this.times[i * 4 + 3];
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

  /** Drops every segment (a new snapshot follows). */
  reset(): void {
    this.count = 0;
    this.version++;
    for (const free of this.#laneFree) free.fill(0);
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

  /**
   * Adds a segment. Without exact compute times, a task's start is when the scheduler sent it;
   * when every lane is still busy then, it ran after the lane freed (the worker queues it).
   */
  add(workerName: string, prefixName: string, begin: number, end: number, erred = false, exact = false): void {
    const w = this.workerIndex(workerName);
    const free = this.#laneFree[w];
    const lanes = this.#threads.get(workerName) ?? 1;
    while (free.length < lanes) free.push(0);
    let lane = 0;
    for (let i = 1; i < free.length; i++) if (free[i] < free[lane]) lane = i;
    if (!exact && free[lane] > begin) begin = Math.min(free[lane], end);
    free[lane] = end;
    const slot = this.count % this.capacity;
    this.start[slot] = begin;
    this.stop[slot] = end;
    this.worker[slot] = w;
    this.lane[slot] = lane;
    this.prefix[slot] = this.prefixIndex(prefixName);
    this.erred[slot] = erred ? 1 : 0;
    this.count++;
    this.version++;
  }

  /** How many segments are held (at most `capacity`). */
  get size(): number {
    return Math.min(this.count, this.capacity);
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

  /** Adds an event; `counted` when the topic counts come separately (from the feed). */
  add(event: StreamEvent, counted = false): void {
    if (!counted) this.topics.set(event.topic, (this.topics.get(event.topic) ?? 0) + 1);
    const list = event.topic === "transition" ? this.#transitions : this.#other;
    list.push(event);
    // Trimmed in chunks: one splice per `capacity` events, not one shift per event.
    if (list.length > this.capacity * 2) list.splice(0, list.length - this.capacity);
    this.version++;
    if (event.topic !== "transition") this.otherVersion++;
  }

  /** Drops every event and count (a new snapshot follows). */
  clear(): void {
    this.topics.clear();
    this.#other = [];
    this.#transitions = [];
    this.version++;
    this.otherVersion++;
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
