/**
 * What a stimulus of the scheduler's state machine leads to (Dask's "instructions"): the
 * transitions made, in order, the messages for each worker, and the keys now finished. The
 * state machine only fills this; the server applies it (plugin hooks, events, key waiters,
 * sending), so the state machine itself needs no sockets, clocks or callbacks.
 *
 * @module
 */
import type { DepInfo, SchedulerToWorker } from "../messages/worker.ts";
import type { SchedulerTaskStateName, TransitionInfo } from "../plugins/types.ts";
import type { TaskState, WorkerState } from "./task-state.ts";

export type { DepInfo };

/** Messages the state machine sends to workers. */
export type WorkerMessage = Extract<SchedulerToWorker, { op: "compute" | "free" }>;

/** Worker, nbytes, exception and traceback, where a transition has them. */
export type TransitionExtra = Partial<Omit<TransitionInfo, "stimulusId">>;

/** One transition, as {@linkcode Effects.transitionList} gives it (for tests and readers). */
export interface TransitionRecord extends TransitionExtra {
  key: string;
  start: SchedulerTaskStateName;
  finish: SchedulerTaskStateName;
  stimulusId: string;
}

const finishedStates: Readonly<Record<SchedulerTaskStateName, boolean>> = {
  released: false, waiting: false, "no-worker": false, queued: false, processing: false,
  memory: true, erred: true, forgotten: true,
};

/**
 * The effects of one or more stimuli, kept in parallel arrays that are reused: the hot path
 * makes no object per transition or message beyond the message itself. Whoever applies the
 * effects calls `clear()` afterwards; effects of stimuli made meanwhile are appended.
 *
 * @example
 * ```ts
 * const fx = state.taskFinished(ws, { key: "x", nbytes: 8 }, "done-x");
 * for (let i = 0; i < fx.length; i++) console.log(fx.tasks[i].key, fx.starts[i], fx.finishes[i]);
 * fx.clear();
 * ```
 */
export class Effects {
  /** The task of each transition, in the order they were made. */
  readonly tasks: TaskState[] = [];
  readonly starts: SchedulerTaskStateName[] = [];
  readonly finishes: SchedulerTaskStateName[] = [];
  readonly stimulusIds: string[] = [];
  /** Worker, nbytes, exception where the transition has them (otherwise `undefined`). */
  readonly extras: (TransitionExtra | undefined)[] = [];
  /** Messages in the order they were made; `recipients[i]` gets `messages[i]`. */
  readonly recipients: WorkerState[] = [];
  readonly messages: WorkerMessage[] = [];
  /** Keys that reached memory, erred or forgotten (what waiting clients wait for). */
  readonly finished: string[] = [];

  /** How many transitions are recorded. */
  get length(): number {
    return this.tasks.length;
  }

  /** Records one transition. */
  transition(
    ts: TaskState,
    start: SchedulerTaskStateName,
    finish: SchedulerTaskStateName,
    stimulusId: string,
    extra: TransitionExtra | undefined,
  ): void {
    this.tasks.push(ts);
    this.starts.push(start);
    this.finishes.push(finish);
    this.stimulusIds.push(stimulusId);
    this.extras.push(extra);
    if (finishedStates[finish]) this.finished.push(ts.key);
  }

  /** Records one message for a worker. */
  send(ws: WorkerState, msg: WorkerMessage): void {
    this.recipients.push(ws);
    this.messages.push(msg);
  }

  /** Empties every list, keeping the arrays. */
  clear(): void {
    this.tasks.length = 0;
    this.starts.length = 0;
    this.finishes.length = 0;
    this.stimulusIds.length = 0;
    this.extras.length = 0;
    this.recipients.length = 0;
    this.messages.length = 0;
    this.finished.length = 0;
  }

  /** The transitions as records (allocates: for tests and debugging, not the hot path). */
  transitionList(): TransitionRecord[] {
    return this.tasks.map((ts, i) => ({
      key: ts.key,
      start: this.starts[i],
      finish: this.finishes[i],
      stimulusId: this.stimulusIds[i],
      ...this.extras[i],
    }));
  }

  /** The messages for each worker name, in order (allocates: for tests and debugging). */
  messagesByWorker(): Map<string, WorkerMessage[]> {
    const out = new Map<string, WorkerMessage[]>();
    for (let i = 0; i < this.messages.length; i++) {
      const name = this.recipients[i].name;
      let list = out.get(name);
      if (!list) out.set(name, list = []);
      list.push(this.messages[i]);
    }
    return out;
  }
}
