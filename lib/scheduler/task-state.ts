/**
 * What the scheduler knows of each task, worker and client (Dask's `TaskState`, `WorkerState`,
 * `ClientState`). Plain records: the state machine (state.ts, transitions.ts) changes them.
 *
 * @module
 */
import type { ClientView, SchedulerTaskStateName, Startstop, WorkerView } from "../plugins/types.ts";
import { ComputeSpan } from "./event-types.ts";
import { ShardedSet } from "./sharded.ts";
import { SmallSet } from "./small-set.ts";

/** After this many worker deaths while a task ran, the task is erred with KilledWorker. */
export const allowedFailures = 3;

/**
 * The empty set every task holds for its dependencies, dependents, `waitingOn` and `waiters`
 * until it needs one of its own ({@linkcode own}): most tasks of a big map never do, and four
 * empty sets a task are a third of its memory. Adding to it throws.
 */
export const noTasks: ReadonlySet<TaskState> = Object.assign(new Set<TaskState>(), {
  add(): never {
    throw new Error("noTasks is shared and stays empty: take the task's own set first");
  },
});

/** The task's own set for one of its four task sets (made on first use). */
export function own(ts: TaskState, field: "deps" | "dependentTasks" | "waitingOn" | "waiters"): Set<TaskState> {
  const set = ts[field];
  return set === noTasks ? (ts[field] = new Set<TaskState>()) : set as Set<TaskState>;
}

/** A task at the scheduler (plugins see it through task-view.ts). */
export class TaskState {
  state: SchedulerTaskStateName = "released";
  // Shared and empty until a task needs one (own(ts, field)); delete and clear work on them.
  deps = noTasks as Set<TaskState>;
  dependentTasks = noTasks as Set<TaskState>;
  /** Dependencies not yet in memory. */
  waitingOn = noTasks as Set<TaskState>;
  /** Dependents not yet computed that need this task's result. */
  waiters = noTasks as Set<TaskState>;
  // One client and one worker nearly always: no hash table for those (small-set.ts).
  readonly whoWants = new SmallSet<ClientState>();
  readonly whoHas = new SmallSet<WorkerState>();
  processingOn: WorkerState | null = null;
  /** The worker that holds this task in `error` until it is released (Dask's `erred_on`). */
  erredOn: WorkerState | null = null;
  exception: string | null = null;
  traceback: string | null = null;
  exceptionBlame: TaskState | null = null;
  nbytes = 0;
  /** The scheduler's copy of a small result. */
  value: unknown = undefined;
  hasValue = false;
  /** Worker deaths while this task ran on them. */
  suspicious = 0;
  // The last attempt's spans (`startstops`): a lone compute span, what nearly every task has,
  // as two numbers (an array, an object and a string less per held task); any other as sent.
  #computeStart = NaN;
  #computeStop = NaN;
  #spans: Startstop[] | null = null;
  /** The state the transition engine's loop will move it to next (null: none pending). */
  recommended: SchedulerTaskStateName | null = null;
  /** Who waits for it to finish (clients' gathers, results.ts): one waiter, several, or none. */
  finishWaiters: (() => void) | Array<() => void> | null = null;
  constructor(
    readonly key: string,
    readonly fn: string,
    readonly args: unknown[],
    public retries: number,
    readonly annotations: Record<string, unknown>,
    public priority: number,
  ) {}
  /** Compute and transfer spans of the last finished attempt, as its worker measured them. */
  get startstops(): Startstop[] | null {
    if (this.#spans !== null) return this.#spans;
    if (this.#computeStart !== this.#computeStart) return null; // NaN: none
    return [new ComputeSpan(this.#computeStart, this.#computeStop)];
  }
  set startstops(spans: Startstop[] | null) {
    const one = spans !== null && spans.length === 1 ? spans[0] : null;
    if (one !== null && one.action === "compute" && typeof one.start === "number" && typeof one.stop === "number") {
      this.#computeStart = one.start;
      this.#computeStop = one.stop;
      this.#spans = null;
    } else {
      this.#computeStart = this.#computeStop = NaN;
      this.#spans = spans;
    }
  }
  get dependencies(): ReadonlySet<string> {
    return new Set([...this.deps].map((t) => t.key));
  }
  get dependents(): ReadonlySet<string> {
    return new Set([...this.dependentTasks].map((t) => t.key));
  }
  get worker(): string | null {
    if (this.processingOn) return this.processingOn.name;
    return this.whoHas.first()?.name ?? null;
  }
  /** The JSON shape of `GET /api/v1/tasks/KEY`. */
  toJSON(): Record<string, unknown> {
    return {
      key: this.key,
      state: this.state,
      fn: this.fn,
      dependencies: [...this.deps].map((t) => t.key),
      dependents: [...this.dependentTasks].map((t) => t.key),
      worker: this.worker,
      processingOn: this.processingOn?.name ?? null,
      whoHas: [...this.whoHas].map((w) => w.name),
      nbytes: this.nbytes,
      retries: this.retries,
      priority: this.priority,
      annotations: this.annotations,
      exception: this.exception,
      traceback: this.traceback,
      suspicious: this.suspicious,
      wanted: this.whoWants.size > 0,
      whoWants: [...this.whoWants].map((c) => c.id),
      startstops: this.startstops ?? [],
    };
  }
}

/** A worker at the scheduler. */
export class WorkerState implements WorkerView {
  /** `quarantined`: a plugin failed to set up on it (or its nanny); it gets no task until that is fixed. */
  status: "init" | "running" | "quarantined" | "closing" = "init";
  /** Why the worker is quarantined (the plugin and its message), else null. */
  quarantine: string | null = null;
  readonly processingTasks = new Set<TaskState>();
  readonly heldTasks = new ShardedSet<TaskState>();
  nbytes = 0;
  /** The measured round trip to the worker (seconds; 0 until measured): deepens its pipeline. */
  rttSeconds = 0;
  /** When the worker was last heard from (ms since the epoch); the server keeps it current. */
  lastSeen: number;
  constructor(
    readonly name: string,
    readonly address: string,
    readonly nthreads: number,
    readonly nanny: boolean,
    readonly modules: Set<string>,
    readonly pid: number,
    now: number,
  ) {
    this.lastSeen = now;
  }
  get processing(): ReadonlySet<string> {
    return new Set([...this.processingTasks].map((t) => t.key));
  }
  get hasWhat(): ReadonlySet<string> {
    return new Set([...this.heldTasks].map((t) => t.key));
  }
}

/** A client at the scheduler. */
export class ClientState implements ClientView {
  readonly wantedTasks = new ShardedSet<TaskState>();
  constructor(readonly id: string) {}
  get wants(): ReadonlySet<string> {
    return new Set([...this.wantedTasks].map((t) => t.key));
  }
}
