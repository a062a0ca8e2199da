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
 * The effects of one or more stimuli, kept in parallel arrays that are reused (each valid up to
 * its count): the hot path makes no object per transition or message beyond the message itself. Whoever applies the
 * effects calls `clear()` afterwards; effects of stimuli made meanwhile are appended.
 *
 * @example
 * ```ts
 * const fx = state.taskFinished(ws, { key: "x", nbytes: 8 }, "done-x");
 * for (let i = 0; i < fx.length; i++) console.log(fx.tasks[i].key, fx.starts[i], fx.finishes[i]);
 * for (let i = 0; i < fx.messageCount; i++) console.log(fx.recipients[i].name, fx.messages[i].op);
 * fx.clear();
 * ```
 */
export class Effects {
  /** The task of each transition, in the order they were made (valid below `length`). */
  readonly tasks: TaskState[] = [];
  readonly starts: SchedulerTaskStateName[] = [];
  readonly finishes: SchedulerTaskStateName[] = [];
  readonly stimulusIds: string[] = [];
  /** Worker, nbytes, exception where the transition has them (otherwise `undefined`). */
  readonly extras: (TransitionExtra | undefined)[] = [];
  /** How many transitions are recorded. */
  length = 0;
  /** Messages in the order they were made; `recipients[i]` gets `messages[i]` (below `messageCount`). */
  readonly recipients: WorkerState[] = [];
  readonly messages: WorkerMessage[] = [];
  messageCount = 0;
  /** Tasks that reached memory, erred or forgotten (below `finishedCount`): what clients wait for. */
  readonly finished: TaskState[] = [];
  finishedCount = 0;

  /** Records one transition. */
  transition(
    ts: TaskState,
    start: SchedulerTaskStateName,
    finish: SchedulerTaskStateName,
    stimulusId: string,
    extra: TransitionExtra | undefined,
  ): void {
    // Written by index, never shrunk: the arrays keep their storage from one stimulus to the next.
    const i = this.length++;
    this.tasks[i] = ts;
    this.starts[i] = start;
    this.finishes[i] = finish;
    this.stimulusIds[i] = stimulusId;
    this.extras[i] = extra;
    if (finishedStates[finish]) this.finished[this.finishedCount++] = ts;
  }

  /** A task gone without a transition (a graph taken back): its waiters are woken as for one. */
  gone(ts: TaskState): void {
    this.finished[this.finishedCount++] = ts;
  }

  /** Records one message for a worker. */
  send(ws: WorkerState, msg: WorkerMessage): void {
    const i = this.messageCount++;
    this.recipients[i] = ws;
    this.messages[i] = msg;
  }

  /** Forgets what was recorded (the arrays keep their storage unless they grew large). */
  clear(): void {
    if (this.length > 4096 || this.messageCount > 4096) {
      // After a big stimulus (a large graph, a restart) let the tasks and messages go.
      this.tasks.length = this.starts.length = this.finishes.length = this.stimulusIds.length = this.extras.length = 0;
      this.recipients.length = this.messages.length = this.finished.length = 0;
    }
    this.length = 0;
    this.messageCount = 0;
    this.finishedCount = 0;
  }

  /** The transitions as records (allocates: for tests and debugging, not the hot path). */
  transitionList(): TransitionRecord[] {
    const out: TransitionRecord[] = [];
    for (let i = 0; i < this.length; i++) {
      out.push({ key: this.tasks[i].key, start: this.starts[i], finish: this.finishes[i], stimulusId: this.stimulusIds[i], ...this.extras[i] });
    }
    return out;
  }

  /** The finished keys (allocates: for tests and debugging). */
  finishedKeys(): string[] {
    return this.finished.slice(0, this.finishedCount).map((ts) => ts.key);
  }

  /** The messages for each worker name, in order (allocates: for tests and debugging). */
  messagesByWorker(): Map<string, WorkerMessage[]> {
    const out = new Map<string, WorkerMessage[]>();
    for (let i = 0; i < this.messageCount; i++) {
      const name = this.recipients[i].name;
      let list = out.get(name);
      if (!list) out.set(name, list = []);
      list.push(this.messages[i]);
    }
    return out;
  }
}
