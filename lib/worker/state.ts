/**
 * The worker's state machine (Dask's `worker_state_machine`): tasks and their dependencies move
 * through released → waiting → ready → executing → memory | error, and dependencies held
 * elsewhere through released → fetch → flight → memory. It is synchronous: messages from the
 * scheduler and finished fetches go in; instructions (execute, fetch, send) come out through
 * hooks. worker.ts does the I/O.
 *
 * @module
 */
import type { TransitionInfo, WorkerTaskStateName } from "../plugins/types.ts";

/** A task to run on this worker. */
export interface WorkerTask {
  key: string;
  state: WorkerTaskStateName;
  fn: string;
  args: unknown[];
  annotations?: Record<string, unknown>;
  stimulusId: string;
  /** Dependency values captured for this task. */
  depValues: Map<string, unknown> | null;
  /** Dependencies still being fetched. */
  missing: Set<string>;
  /** A `free` arrived while it was executing: drop its result. */
  cancelled: boolean;
}

/** A dependency being fetched from peers. */
export interface FetchState {
  key: string;
  state: "fetch" | "flight";
  who: string[];
  nbytes: number;
  waiters: Set<WorkerTask>;
}

/** What the state machine asks worker.ts to do. */
export interface WorkerStateHooks {
  onTransition?: (key: string, start: WorkerTaskStateName, finish: WorkerTaskStateName, info: TransitionInfo) => void;
  /** Fetch these keys (all held by the same peers). */
  fetch(deps: FetchState[]): void;
  /** A task became ready. */
  ready(task: WorkerTask): void;
  /** A task could not get a dependency from anyone. */
  missingData(task: WorkerTask, dep: string): void;
}

/** The compute instruction from the scheduler. */
export interface ComputeMessage {
  key: string;
  fn: string;
  args: unknown[];
  deps: Array<{ key: string; value?: unknown; who?: string[]; nbytes: number }>;
  annotations?: Record<string, unknown>;
  stimulusId: string;
}

/**
 * Tasks, results and fetches of one worker.
 */
export class WorkerStateMachine {
  readonly tasks = new Map<string, WorkerTask>();
  /** Results held by this worker (its own results; the scheduler knows them). */
  readonly data = new Map<string, unknown>();
  readonly fetching = new Map<string, FetchState>();
  #hooks: WorkerStateHooks;
  hasTransitionHook = false;

  constructor(hooks: WorkerStateHooks) {
    this.#hooks = hooks;
  }

  #emit(key: string, start: WorkerTaskStateName, finish: WorkerTaskStateName, info: TransitionInfo): void {
    if (this.hasTransitionHook) this.#hooks.onTransition?.(key, start, finish, info);
  }

  /** Sets a task's state and reports the transition. */
  transition(task: WorkerTask, finish: WorkerTaskStateName, extra?: Partial<TransitionInfo>): void {
    const start = task.state;
    task.state = finish;
    if (this.hasTransitionHook) this.#emit(task.key, start, finish, { stimulusId: task.stimulusId, ...extra });
  }

  /** The scheduler asks for a task to be computed. */
  compute(msg: ComputeMessage): void {
    const existing = this.tasks.get(msg.key);
    if (existing) {
      // Asked again while it runs (after a cancel): keep the running attempt.
      if (existing.state === "executing") {
        existing.cancelled = false;
        return;
      }
      if (existing.state === "waiting" || existing.state === "ready") return;
    }
    const task: WorkerTask = {
      key: msg.key,
      state: "released",
      fn: msg.fn,
      args: msg.args,
      annotations: msg.annotations,
      stimulusId: msg.stimulusId,
      depValues: null,
      missing: new Set(),
      cancelled: false,
    };
    this.tasks.set(task.key, task);
    this.transition(task, "waiting");
    const toFetch: FetchState[] = [];
    for (const dep of msg.deps) {
      task.depValues ??= new Map();
      if ("value" in dep) {
        task.depValues.set(dep.key, dep.value);
      } else if (this.data.has(dep.key)) {
        task.depValues.set(dep.key, this.data.get(dep.key));
      } else {
        task.missing.add(dep.key);
        let fs = this.fetching.get(dep.key);
        if (!fs) {
          fs = { key: dep.key, state: "fetch", who: dep.who ?? [], nbytes: dep.nbytes, waiters: new Set() };
          this.fetching.set(dep.key, fs);
          this.#emit(dep.key, "released", "fetch", { stimulusId: msg.stimulusId });
          toFetch.push(fs);
        }
        fs.waiters.add(task);
      }
    }
    // Dependencies this worker holds itself are not listed by the scheduler: take them from data.
    if (task.missing.size === 0) this.#ready(task);
    if (toFetch.length > 0) {
      for (const fs of toFetch) {
        fs.state = "flight";
        this.#emit(fs.key, "fetch", "flight", { stimulusId: msg.stimulusId });
      }
      this.#hooks.fetch(toFetch);
    }
  }

  #ready(task: WorkerTask): void {
    this.transition(task, "ready");
    this.#hooks.ready(task);
  }

  /** Fetched dependency data arrived (or is missing). */
  fetched(results: Map<string, unknown>, failed: string[]): void {
    for (const [key, value] of results) {
      const fs = this.fetching.get(key);
      if (!fs) continue;
      this.fetching.delete(key);
      this.#emit(key, "flight", "memory", { stimulusId: "gather-dep-success", nbytes: fs.nbytes });
      for (const task of fs.waiters) {
        if (task.state !== "waiting") continue;
        task.depValues!.set(key, value);
        task.missing.delete(key);
        if (task.missing.size === 0) this.#ready(task);
      }
    }
    for (const key of failed) {
      const fs = this.fetching.get(key);
      if (!fs) continue;
      this.fetching.delete(key);
      this.#emit(key, "flight", "released", { stimulusId: "gather-dep-failed" });
      for (const task of fs.waiters) {
        if (task.state !== "waiting") continue;
        this.tasks.delete(task.key);
        this.transition(task, "released");
        this.#hooks.missingData(task, key);
      }
    }
  }

  /** The task is about to run. */
  startExecuting(task: WorkerTask): void {
    this.transition(task, "executing");
  }

  /** The task returned; false when its result is to be dropped (cancelled). */
  finished(task: WorkerTask, value: unknown, nbytes: number): boolean {
    if (task.cancelled || this.tasks.get(task.key) !== task) {
      this.transition(task, "released");
      this.#forget(task);
      return false;
    }
    this.data.set(task.key, value);
    task.depValues = null;
    task.args = EMPTY;
    this.transition(task, "memory", { nbytes });
    return true;
  }

  /** The task threw; false when cancelled. */
  erred(task: WorkerTask, exception: string, traceback: string): boolean {
    if (task.cancelled || this.tasks.get(task.key) !== task) {
      this.transition(task, "released");
      this.#forget(task);
      return false;
    }
    task.depValues = null;
    this.transition(task, "error", { exception, traceback });
    this.tasks.delete(task.key);
    return true;
  }

  /** The scheduler releases keys: results are dropped, queued tasks cancelled. */
  free(keys: string[]): void {
    for (const key of keys) {
      const task = this.tasks.get(key);
      this.data.delete(key);
      if (!task) continue;
      if (task.state === "executing") {
        task.cancelled = true;
        continue;
      }
      this.tasks.delete(key);
      const start = task.state;
      if (start !== "released") this.transition(task, "released");
      for (const dep of task.missing) {
        const fs = this.fetching.get(dep);
        fs?.waiters.delete(task);
      }
      this.#forget(task);
    }
  }

  #forget(task: WorkerTask): void {
    if (this.tasks.get(task.key) === task) this.tasks.delete(task.key);
    this.transition(task, "forgotten");
  }

  /** Drops everything (the scheduler connection was lost). */
  reset(): void {
    for (const task of this.tasks.values()) task.cancelled = true;
    this.tasks.clear();
    this.data.clear();
    this.fetching.clear();
  }
}

const EMPTY: unknown[] = [];
