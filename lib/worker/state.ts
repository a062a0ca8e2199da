/**
 * The worker's state machine, as Dask's `worker_state_machine.py`: tasks move through
 * released → waiting → ready → executing → memory | error → released → forgotten, and
 * dependencies held elsewhere through released → fetch → flight → memory. It owns the ready
 * queue (by priority), the `nthreads` limit and what is executing.
 *
 * `handleStimulus(stimulus)` is its one door: a message from the scheduler, a finished execution
 * or a finished fetch goes in; instructions come out (execute, gather-dep, send, and the
 * transitions made when a plugin wants them) for worker.ts to carry out. No I/O and no clock
 * inside: ids and durations come with the stimulus, so tests feed stimuli and assert instructions.
 *
 * @module
 */
import type { SchedulerToWorker, WorkerToScheduler } from "../messages/worker.ts";
import type { Startstop, TransitionInfo, WorkerTaskStateName } from "../plugins/types.ts";

/** A task to run on this worker. */
export interface WorkerTask {
  key: string;
  state: WorkerTaskStateName;
  fn: string;
  args: unknown[];
  annotations?: Record<string, unknown>;
  /** Lower runs first; ties run in arrival order. */
  priority: number;
  /** Arrival order, the tie-breaker of `priority`. */
  seq: number;
  stimulusId: string;
  /** Dependency values captured for this task. */
  depValues: Map<string, unknown> | null;
  /** Dependencies still being fetched (null: none, most tasks). */
  missing: Set<string> | null;
  /** A `free` arrived while it was executing: drop its result. */
  cancelled: boolean;
  /** Transfers of its dependencies, then its compute (Dask's `startstops`); null until one is measured. */
  startstops: Startstop[] | null;
}

/** A dependency being fetched from peers. */
export interface FetchState {
  key: string;
  state: "fetch" | "flight";
  who: string[];
  nbytes: number;
  waiters: Set<WorkerTask>;
}

/** The scheduler's `compute` message. */
type ComputeMessage = Extract<SchedulerToWorker, { op: "compute" }>;

/** What goes in. */
export type Stimulus =
  // The scheduler's `compute` message, as a stimulus.
  | Omit<ComputeMessage, "op"> & { op: "compute-task" }
  | { op: "free-keys"; keys: string[]; stimulusId: string }
  | { op: "execute-success"; key: string; value: unknown; nbytes: number; duration: number; stimulusId: string; start?: number; stop?: number }
  | { op: "execute-failure"; key: string; exception: string; traceback: string; duration: number; stimulusId: string; start?: number; stop?: number }
  | { op: "gather-dep-success"; data: Map<string, unknown>; stimulusId: string; start?: number; stop?: number }
  | { op: "gather-dep-failure"; keys: string[]; stimulusId: string };

/** What comes out, for worker.ts to do. */
export type Instruction =
  | { op: "execute"; task: WorkerTask }
  | { op: "gather-dep"; who: string; keys: string[]; stimulusId: string }
  | { op: "send"; msg: WorkerToScheduler }
  | { op: "transition"; key: string; start: WorkerTaskStateName; finish: WorkerTaskStateName; info: TransitionInfo };

/** Options of {@linkcode WorkerState}. */
export interface WorkerStateOptions {
  /** Tasks executing at once. @default 1 */
  nthreads?: number;
  /** Results up to this size travel inline in `done`. @default 0 */
  inlineLimit?: number;
}

/**
 * Tasks, results, fetches and the ready queue of one worker.
 *
 * @example
 * ```ts
 * const state = new WorkerState({ nthreads: 2 });
 * const out = state.handleStimulus({ op: "compute-task", key: "a", fn: "builtin.inc", args: [1], deps: [], stimulusId: "s1" });
 * // out: [{ op: "execute", task }]
 * ```
 */
export class WorkerState {
  readonly nthreads: number;
  readonly tasks = new Map<string, WorkerTask>();
  /** Results held by this worker (its own results; the scheduler knows them). */
  readonly data = new Map<string, unknown>();
  readonly fetching = new Map<string, FetchState>();
  /** Report transitions as instructions (a plugin has a `transition` hook). */
  recordTransitions = false;
  #inlineLimit: number;
  #ready = new ReadyHeap();
  #executing = 0;
  #seq = 0;
  #closing = false;
  /** The instructions of the stimulus being handled. */
  #out: Instruction[] = [];

  constructor(options: WorkerStateOptions = {}) {
    this.nthreads = Math.max(1, Math.floor(options.nthreads ?? 1));
    this.#inlineLimit = options.inlineLimit ?? 0;
  }

  /** Tasks executing now. */
  get executing(): number {
    return this.#executing;
  }

  /** Tasks ready and waiting for a thread. */
  get readyCount(): number {
    return this.#ready.size;
  }

  /** Handles one stimulus and returns what follows from it, in order. */
  handleStimulus(stimulus: Stimulus): Instruction[] {
    const out: Instruction[] = this.#out = [];
    switch (stimulus.op) {
      case "compute-task":
        this.#compute(stimulus);
        break;
      case "free-keys":
        for (const key of stimulus.keys) this.#free(key, stimulus.stimulusId);
        break;
      case "execute-success":
        this.#succeeded(stimulus);
        break;
      case "execute-failure":
        this.#failed(stimulus);
        break;
      case "gather-dep-success":
        this.#fetched(stimulus.data, stimulus.stimulusId, stimulus.start, stimulus.stop);
        break;
      case "gather-dep-failure":
        this.#fetchFailed(stimulus.keys, stimulus.stimulusId);
        break;
    }
    this.#ensureComputing();
    return out;
  }

  /** The worker is closing: queued tasks are handed back (dropped), no new execution starts. */
  close(): void {
    this.#closing = true;
    this.#ready.clear();
  }

  /** Drops everything (the scheduler connection was lost: it forgets this worker's tasks). */
  reset(): void {
    for (const task of this.tasks.values()) {
      // A running task still holds a thread: it stays, cancelled, until it returns.
      if (task.state === "executing") task.cancelled = true;
      else this.tasks.delete(task.key);
    }
    this.data.clear();
    this.fetching.clear();
    this.#ready.clear();
  }

  #transition(task: WorkerTask, finish: WorkerTaskStateName, stimulusId: string, extra?: Partial<TransitionInfo>): void {
    const start = task.state;
    task.state = finish;
    if (this.recordTransitions) {
      this.#out.push({ op: "transition", key: task.key, start, finish, info: { stimulusId, ...extra } });
    }
  }

  #emit(key: string, start: WorkerTaskStateName, finish: WorkerTaskStateName, stimulusId: string, extra?: Partial<TransitionInfo>): void {
    if (this.recordTransitions) this.#out.push({ op: "transition", key, start, finish, info: { stimulusId, ...extra } });
  }

  #compute(msg: Extract<Stimulus, { op: "compute-task" }>): void {
    const existing = this.tasks.get(msg.key);
    if (existing) {
      switch (existing.state) {
        case "executing":
          // Asked again while it runs (after a cancel): keep the running attempt.
          existing.cancelled = false;
          return;
        case "waiting":
        case "ready":
          return;
        case "memory":
          // Computed again (the scheduler lost its copy): the old result goes.
          this.data.delete(msg.key);
          this.#transition(existing, "released", msg.stimulusId);
          break;
        case "error":
          // A retry on the worker where it failed.
          this.#transition(existing, "released", msg.stimulusId);
          break;
      }
    }
    const task: WorkerTask = {
      key: msg.key,
      state: "released",
      fn: msg.fn,
      args: msg.args,
      annotations: msg.annotations,
      priority: msg.priority ?? 0,
      seq: ++this.#seq,
      stimulusId: msg.stimulusId,
      depValues: null,
      missing: null,
      cancelled: false,
      startstops: null,
    };
    this.tasks.set(task.key, task);
    this.#transition(task, "waiting", msg.stimulusId);
    let toFetch: FetchState[] | null = null;
    for (const dep of msg.deps) {
      task.depValues ??= new Map();
      if ("value" in dep) {
        task.depValues.set(dep.key, dep.value);
      } else if (this.data.has(dep.key)) {
        // Held here: the scheduler lists it without a value or holders.
        task.depValues.set(dep.key, this.data.get(dep.key));
      } else {
        (task.missing ??= new Set()).add(dep.key);
        let fs = this.fetching.get(dep.key);
        if (!fs) {
          fs = { key: dep.key, state: "fetch", who: dep.who ?? [], nbytes: dep.nbytes, waiters: new Set() };
          this.fetching.set(dep.key, fs);
          this.#emit(dep.key, "released", "fetch", msg.stimulusId);
          (toFetch ??= []).push(fs);
        }
        fs.waiters.add(task);
      }
    }
    if (task.missing === null) this.#makeReady(task, msg.stimulusId);
    if (toFetch) this.#gather(toFetch, msg.stimulusId);
  }

  /** The spans to report for a finished execution: its transfers, then the compute (unix seconds). */
  #spans(task: WorkerTask, msg: { start?: number; stop?: number }): Startstop[] | undefined {
    if (msg.start === undefined || msg.stop === undefined) return task.startstops ?? undefined;
    const spans = task.startstops ?? [];
    spans.push({ action: "compute", start: msg.start, stop: msg.stop });
    return spans;
  }

  /** One gather-dep per first holder. */
  #gather(deps: FetchState[], stimulusId: string): void {
    const groups = new Map<string, string[]>();
    for (const fs of deps) {
      fs.state = "flight";
      this.#emit(fs.key, "fetch", "flight", stimulusId);
      const who = fs.who[0] ?? "";
      const keys = groups.get(who);
      if (keys) keys.push(fs.key);
      else groups.set(who, [fs.key]);
    }
    for (const [who, keys] of groups) this.#out.push({ op: "gather-dep", who, keys, stimulusId });
  }

  #makeReady(task: WorkerTask, stimulusId: string): void {
    this.#transition(task, "ready", stimulusId);
    this.#ready.push(task);
  }

  /** Starts ready tasks while threads are free. */
  #ensureComputing(): void {
    while (this.#executing < this.nthreads && this.#ready.size > 0 && !this.#closing) {
      const task = this.#ready.pop()!;
      // Freed or replaced while queued.
      if (task.state !== "ready" || this.tasks.get(task.key) !== task) continue;
      this.#executing++;
      this.#transition(task, "executing", task.stimulusId);
      this.#out.push({ op: "execute", task });
    }
  }

  #fetched(data: Map<string, unknown>, stimulusId: string, start?: number, stop?: number): void {
    for (const [key, value] of data) {
      const fs = this.fetching.get(key);
      if (!fs) continue;
      this.fetching.delete(key);
      this.#emit(key, "flight", "memory", stimulusId, { nbytes: fs.nbytes });
      for (const task of fs.waiters) {
        if (task.state !== "waiting") continue;
        if (start !== undefined && stop !== undefined) (task.startstops ??= []).push({ action: "transfer", start, stop });
        task.depValues!.set(key, value);
        task.missing!.delete(key);
        if (task.missing!.size === 0) {
          task.missing = null;
          this.#makeReady(task, stimulusId);
        }
      }
    }
  }

  #fetchFailed(keys: string[], stimulusId: string): void {
    for (const key of keys) {
      const fs = this.fetching.get(key);
      if (!fs) continue;
      this.fetching.delete(key);
      this.#emit(key, "flight", "released", stimulusId);
      for (const task of fs.waiters) {
        if (task.state !== "waiting" || this.tasks.get(task.key) !== task) continue;
        // The scheduler finds the data elsewhere (or recomputes it) and sends the task again.
        this.#transition(task, "released", stimulusId);
        this.#forget(task, stimulusId);
        this.#out.push({ op: "send", msg: { op: "missing-data", key: task.key, dep: key } });
      }
    }
  }

  #executed(key: string, stimulusId: string): WorkerTask | null {
    const task = this.tasks.get(key);
    if (!task || task.state !== "executing") return null;
    this.#executing--;
    if (task.cancelled) {
      this.#transition(task, "released", stimulusId);
      this.#forget(task, stimulusId);
      return null;
    }
    task.depValues = null;
    task.args = EMPTY;
    return task;
  }

  #succeeded(msg: Extract<Stimulus, { op: "execute-success" }>): void {
    const task = this.#executed(msg.key, msg.stimulusId);
    if (!task) return;
    const { key, nbytes, duration, stimulusId } = msg;
    const value = msg.value === undefined ? null : msg.value;
    const startstops = this.#spans(task, msg);
    this.data.set(key, value);
    this.#transition(task, "memory", stimulusId, startstops ? { nbytes, startstops } : { nbytes });
    const done: Extract<WorkerToScheduler, { op: "done" }> = nbytes <= this.#inlineLimit
      ? { op: "done", key, nbytes, value, hasValue: true, duration, stimulusId }
      : { op: "done", key, nbytes, duration, stimulusId };
    if (startstops) done.startstops = startstops;
    this.#out.push({ op: "send", msg: done });
  }

  #failed(msg: Extract<Stimulus, { op: "execute-failure" }>): void {
    const task = this.#executed(msg.key, msg.stimulusId);
    if (!task) return;
    const { key, exception, traceback, duration, stimulusId } = msg;
    const startstops = this.#spans(task, msg);
    // Kept in `error` until the scheduler frees the key (or computes it again).
    this.#transition(task, "error", stimulusId, startstops ? { exception, traceback, startstops } : { exception, traceback });
    const erred: Extract<WorkerToScheduler, { op: "erred" }> = { op: "erred", key, exception, traceback, duration, stimulusId };
    if (startstops) erred.startstops = startstops;
    this.#out.push({ op: "send", msg: erred });
  }

  #free(key: string, stimulusId: string): void {
    const task = this.tasks.get(key);
    this.data.delete(key);
    if (!task) return;
    if (task.state === "executing") {
      task.cancelled = true;
      return;
    }
    if (task.missing) for (const dep of task.missing) this.fetching.get(dep)?.waiters.delete(task);
    if (task.state !== "released") this.#transition(task, "released", stimulusId);
    this.#forget(task, stimulusId);
  }

  #forget(task: WorkerTask, stimulusId: string): void {
    if (this.tasks.get(task.key) === task) this.tasks.delete(task.key);
    this.#transition(task, "forgotten", stimulusId);
  }
}

const EMPTY: unknown[] = [];

/** A binary min-heap of tasks by (priority, seq): the ready queue. */
class ReadyHeap {
  #items: WorkerTask[] = [];

  get size(): number {
    return this.#items.length;
  }

  clear(): void {
    this.#items = [];
  }

  push(task: WorkerTask): void {
    const items = this.#items;
    let i = items.push(task) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(task, items[parent])) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = task;
  }

  pop(): WorkerTask | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    let i = 0;
    const n = items.length;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && before(items[right], items[left]) ? right : left;
      if (!before(items[child], last)) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
    return top;
  }
}

function before(a: WorkerTask, b: WorkerTask): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.seq < b.seq);
}
