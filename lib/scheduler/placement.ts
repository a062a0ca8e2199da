/**
 * Where tasks run: the running workers, how many tasks each may have in flight, the scheduler's
 * queue of root tasks waiting for a free slot, the tasks no worker can take, and Dask's
 * `decide_worker` (most bytes of the dependencies, else the least busy).
 *
 * The least busy worker is found without a pass over every worker per task: a full pass finds
 * the lowest load (tasks per thread), and the next decisions take the workers at that load in
 * turn from where the last one stopped; a task leaving a worker can only lower the mark. A burst
 * of root tasks on W workers costs O(1) per task, not O(W).
 *
 * @module
 */
import { ShardedSet } from "./sharded.ts";
import type { TaskState, WorkerState } from "./task-state.ts";

/** The workers that take tasks and the tasks waiting for them. */
export class Placement {
  /** Running workers, in the order they became ready. */
  readonly running: WorkerState[] = [];
  /** Tasks in `no-worker`: no running worker (or none their `workers=` allow). */
  readonly noWorker = new ShardedSet<TaskState>();
  /** Extra work queued per worker, in seconds of average task duration (keeps workers fed). */
  pipelineSeconds = 0.002;
  /** The largest number of tasks in flight on one worker thread (near workers). */
  maxPipeline = 256;
  /** The largest number of tasks in flight on one worker thread behind a slow link. */
  maxFarPipeline = 4096;
  /** Queued tasks taken for a worker by `reserve` (fillWorkers): decideWorker gives them that one. */
  #reserved = new Map<TaskState, WorkerState>();
  #queue: TaskState[] = [];
  #queueHead = 0;
  /** Exponentially weighted average task duration (seconds); Dask's default guess at first. */
  #avgDuration = 0.5;
  #durationSamples = 0;
  /**
   * At most the lowest load (tasks per thread) of the workers that may take a task: a worker at
   * or below it is a least busy one. Found by a full pass, lowered by `freed`.
   */
  #level = 0;
  /** Where the next search for the least busy worker starts in `running`. */
  #cursor = 0;

  /** Whether any task waits in the scheduler's queue. */
  get hasQueued(): boolean {
    return this.#queueHead < this.#queue.length;
  }

  /** Puts a task at the end of the queue. */
  enqueue(ts: TaskState): void {
    this.#queue.push(ts);
  }

  /** Takes the next queued entry (it may be stale: callers check its state). */
  nextQueued(): TaskState | undefined {
    return this.#queueHead < this.#queue.length ? this.#queue[this.#queueHead++] : undefined;
  }

  /** Drops the consumed head of the queue once it is most of it. */
  compactQueue(): void {
    if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  /** Empties the queue and the no-worker set (every task was forgotten). */
  clear(): void {
    this.#queue = [];
    this.#queueHead = 0;
    this.#reserved.clear();
    this.noWorker.clear();
  }

  /** Takes a queued task for a worker with a free slot: its next decision gives it that worker. */
  reserve(ts: TaskState, ws: WorkerState): void {
    this.#reserved.set(ts, ws);
  }

  /**
   * How many tasks a worker may have in flight: its threads plus a few ms of work, plus the
   * worker's measured round trip of work, so that a worker behind a slow link is still fed while
   * its results and the next tasks are on the way.
   */
  capacity(ws: WorkerState): number {
    const avg = this.#avgDuration;
    // A sample holds the worker's time to take in a frame of tasks too: a few ms on loopback.
    // Below 10 ms the link is near and the pipeline stays as it is (no feedback of a deeper
    // pipeline making bigger frames making longer samples).
    const rtt = ws.rttSeconds > 0.01 ? ws.rttSeconds : 0;
    const cap = rtt > 0 ? this.maxFarPipeline : this.maxPipeline;
    const extra = Math.min(cap, Math.floor((this.pipelineSeconds + rtt) / avg));
    return Math.max(Math.ceil(ws.nthreads * 1.1), ws.nthreads * (1 + extra));
  }

  /**
   * Free slots a worker that still has tasks queued waits for before it is refilled: a quarter
   * of the near pipeline's few ms of work. One frame of many tasks instead of a frame per
   * finished task, for the scheduler and the worker alike; a thread is never left without a
   * next task, and a far worker's round trip of work stays in flight.
   */
  refillBatch(ws: WorkerState): number {
    const extra = Math.min(this.maxPipeline >> 2, Math.floor(this.pipelineSeconds / 4 / this.#avgDuration));
    return ws.processingTasks.size <= ws.nthreads ? 1 : Math.max(1, ws.nthreads * extra);
  }

  /** A task left a worker (finished, failed, released): the least busy mark may fall. */
  freed(ws: WorkerState): void {
    const load = ws.processingTasks.size / ws.nthreads;
    if (load < this.#level) this.#level = load;
  }

  /** A worker starts taking tasks. */
  addRunning(ws: WorkerState): void {
    this.running.push(ws);
    this.freed(ws);
  }

  /** Takes one measured task duration (seconds) into the average. */
  recordDuration(seconds: number): void {
    const s = Math.max(seconds, 1e-6);
    this.#durationSamples++;
    const alpha = this.#durationSamples < 10 ? 0.5 : 0.05;
    this.#avgDuration = this.#avgDuration * (1 - alpha) + s * alpha;
  }

  /**
   * Picks a worker for a ready task: the one holding most bytes of its dependencies, else the
   * least busy. Root tasks go to `queued` (returns "queue") when every worker is saturated;
   * `null` when no running worker may take it.
   */
  decideWorker(ts: TaskState): WorkerState | "queue" | null {
    let running = this.running;
    if (running.length === 0) return null;
    const restrict = ts.annotations.workers;
    if (restrict !== undefined) {
      // Dask's `workers=` restriction: only these worker names (or addresses).
      const allowed = new Set(Array.isArray(restrict) ? restrict.map(String) : [String(restrict)]);
      running = running.filter((ws) => allowed.has(ws.name) || allowed.has(ws.address));
      if (running.length === 0) return null;
    }
    if (ts.deps.size === 0) {
      const reserved = this.#reserved.get(ts);
      if (reserved !== undefined) {
        this.#reserved.delete(ts);
        if (reserved.status === "running" && (restrict === undefined || running.includes(reserved))) return reserved;
      }
      // Tasks wait in the queue already: every worker was full when they came, and each free
      // slot takes the next one (fillWorkers). Queue behind them, in O(1) whatever the number
      // of workers, instead of scanning every worker for each task.
      if (restrict === undefined && this.hasQueued) return "queue";
      if (restrict !== undefined) return this.#scan(running, true) ?? "queue";
      return this.#leastBusy(true) ?? "queue";
    }
    let best: WorkerState | null = null;
    let bestBytes = 0;
    if (running.length > 1) {
      const bytes = new Map<WorkerState, number>();
      for (const dep of ts.deps) {
        if (dep.hasValue) continue;
        for (const ws of dep.whoHas) {
          if (ws.status !== "running") continue;
          const b = (bytes.get(ws) ?? 0) + dep.nbytes;
          bytes.set(ws, b);
          if (b > bestBytes) {
            best = ws;
            bestBytes = b;
          }
        }
      }
    }
    if (best) return best;
    return restrict !== undefined ? this.#scan(running, false) : this.#leastBusy(false);
  }

  /**
   * A least busy running worker (with a free slot when `bounded`), in O(1) amortized: the
   * workers at the mark are taken in turn; a full pass, when none is left, raises the mark.
   */
  #leastBusy(bounded: boolean): WorkerState | null {
    const running = this.running;
    const n = running.length;
    let i = this.#cursor < n ? this.#cursor : 0;
    let best = -1;
    let bestLoad = Infinity;
    for (let step = 0; step < n; step++, i = i + 1 < n ? i + 1 : 0) {
      const ws = running[i];
      const tasks = ws.processingTasks.size;
      if (bounded && tasks >= this.capacity(ws)) continue;
      const load = tasks / ws.nthreads;
      if (load <= this.#level) {
        this.#cursor = i + 1;
        return ws;
      }
      if (load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    if (best < 0) return null;
    this.#level = bestLoad;
    this.#cursor = best + 1;
    return running[best];
  }

  /** The least busy of `workers` (a `workers=` restriction's few), by a full pass. */
  #scan(workers: WorkerState[], bounded: boolean): WorkerState | null {
    let best: WorkerState | null = null;
    let bestLoad = Infinity;
    for (const ws of workers) {
      const tasks = ws.processingTasks.size;
      if (bounded && tasks >= this.capacity(ws)) continue;
      const load = tasks / ws.nthreads;
      if (load < bestLoad) {
        best = ws;
        bestLoad = load;
      }
    }
    return best;
  }
}
