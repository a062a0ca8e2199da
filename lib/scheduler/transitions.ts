/**
 * Dask's task transitions at the scheduler and its recommendation loop (LIFO, a later
 * recommendation for the same task replacing the earlier). Every transition is recorded in the
 * {@linkcode Effects} it was given, with the messages for workers it leads to; nothing here
 * sends, logs or reads the clock.
 *
 * @module
 */
import type { SchedulerTaskStateName } from "../plugins/types.ts";
import type { DepInfo, Effects, TransitionExtra, WorkerMessage } from "./effects.ts";
import type { Placement } from "./placement.ts";
import type { ShardedMap } from "./sharded.ts";
import { own, type TaskState, type WorkerState } from "./task-state.ts";

type Finish = SchedulerTaskStateName;

/** Every direct transition `#direct` makes, for finding a way through `released`. */
const direct: ReadonlySet<string> = new Set([
  "released>waiting", "released>forgotten", "released>erred",
  "waiting>processing", "waiting>erred", "waiting>released",
  "queued>processing", "queued>released", "queued>erred",
  "no-worker>processing", "no-worker>released", "no-worker>erred",
  "processing>memory", "processing>erred", "processing>released",
  "memory>released", "memory>forgotten",
  "erred>released", "erred>forgotten",
]);

/** What the transitions work on: the task table, where tasks run, and where effects go. */
export interface TransitionsContext {
  readonly tasks: ShardedMap<TaskState>;
  readonly placement: Placement;
  readonly effects: Effects;
}

/**
 * The transition engine: `recommend` then `run`. Stimuli (state.ts) only recommend; every state
 * change is made by a transition here.
 */
export class Transitions {
  readonly counts: Record<SchedulerTaskStateName, number> = {
    released: 0, waiting: 0, "no-worker": 0, queued: 0, processing: 0, memory: 0, erred: 0, forgotten: 0,
  };
  transitionsTotal = 0;
  #tasks: ShardedMap<TaskState>;
  #placement: Placement;
  #fx: Effects;
  /** Tasks with a recommendation (`ts.recommended`), the last recommended on top. */
  #recStack: TaskState[] = [];
  #inLoop = false;

  constructor(context: TransitionsContext) {
    this.#tasks = context.tasks;
    this.#placement = context.placement;
    this.#fx = context.effects;
  }

  /** Asks the loop to move a task to `finish`; a later recommendation replaces this one. */
  recommend(ts: TaskState, finish: Finish): void {
    // The recommendation sits on the task, not in a map: three hash operations fewer a transition.
    if (ts.recommended === null) this.#recStack.push(ts);
    ts.recommended = finish;
  }

  /** Runs the recommendations until none is left (re-entrant calls return at once). */
  run(stimulusId: string): void {
    if (this.#inLoop) return;
    this.#inLoop = true;
    try {
      while (this.#recStack.length > 0) {
        const ts = this.#recStack.pop()!;
        const finish = ts.recommended!;
        ts.recommended = null;
        this.#transition(ts, finish, stimulusId);
      }
    } finally {
      this.#inLoop = false;
    }
  }

  /**
   * Sets a task's state directly, keeps counts and records the transition. Only the transitions
   * and a retry in place (a task that erred with retries left) use it.
   */
  set(ts: TaskState, finish: Finish, stimulusId: string, extra?: TransitionExtra): void {
    const start = ts.state;
    this.counts[start]--;
    this.counts[finish]++;
    ts.state = finish;
    this.transitionsTotal++;
    this.#fx.transition(ts, start, finish, stimulusId, extra);
  }

  /**
   * Recommends queued tasks to workers with free slots: to `only` (the worker that just finished
   * a task: O(1) per task whatever the number of workers), or to every running worker.
   */
  fillWorkers(only?: WorkerState): void {
    const placement = this.#placement;
    if (!placement.hasQueued) return;
    if (only !== undefined) {
      // A worker that still has tasks queued waits for a batch of free slots (refillBatch).
      if (only.status === "running" && placement.capacity(only) - only.processingTasks.size >= placement.refillBatch(only)) this.#fill(only);
    } else {
      for (const ws of placement.running) this.#fill(ws);
    }
    placement.compactQueue();
  }

  #fill(ws: WorkerState): void {
    const placement = this.#placement;
    let free = placement.capacity(ws) - ws.processingTasks.size;
    while (free > 0) {
      const ts = placement.nextQueued();
      if (ts === undefined) break;
      if (ts.state !== "queued" || ts.recommended !== null) continue;
      placement.reserve(ts, ws);
      this.recommend(ts, "processing");
      free--;
    }
  }

  #transition(ts: TaskState, finish: Finish, stimulusId: string): void {
    const start = ts.state;
    if (start === finish || start === "forgotten") return;
    // A stale recommendation must not drop a result that is held and needed again.
    if (start === "memory" && finish === "released" && (ts.whoHas.size > 0 || ts.hasValue) &&
      (ts.waiters.size > 0 || ts.whoWants.size > 0)) return;
    if (this.#direct(ts, start, finish, stimulusId)) return;
    // No direct transition: through released, where both halves exist (Dask does the same).
    if (start !== "released" && finish !== "released" && direct.has(`${start}>released`) && direct.has(`released>${finish}`)) {
      this.#direct(ts, start, "released", stimulusId);
      if (ts.state === "released") this.#direct(ts, "released", finish, stimulusId);
      return;
    }
    throw new Error(`Impossible transition of "${ts.key}" from ${start} to ${finish}`);
  }

  /** Makes the transition `start>finish` if there is one (the `direct` table); false otherwise. */
  #direct(ts: TaskState, start: Finish, finish: Finish, id: string): boolean {
    // A switch, not a lookup by a made-up string key: this runs for every transition.
    switch (start) {
      case "released":
        if (finish === "waiting") this.#releasedWaiting(ts, id);
        else if (finish === "forgotten") this.#forget(ts, id);
        else if (finish === "erred") this.#toErredByDependency(ts, id);
        else return false;
        return true;
      case "waiting":
        if (finish === "processing") this.#toProcessing(ts, id);
        else if (finish === "erred") this.#toErredByDependency(ts, id);
        else if (finish === "released") {
          ts.waitingOn.clear();
          this.#toReleased(ts, id);
        } else return false;
        return true;
      case "queued":
        if (finish === "processing") this.#toProcessing(ts, id);
        else if (finish === "released") this.#toReleased(ts, id);
        else if (finish === "erred") this.#toErredByDependency(ts, id);
        else return false;
        return true;
      case "no-worker":
        if (finish === "processing") this.#toProcessing(ts, id);
        else if (finish === "released") {
          this.#placement.noWorker.delete(ts);
          this.#toReleased(ts, id);
        } else if (finish === "erred") this.#toErredByDependency(ts, id);
        else return false;
        return true;
      case "processing":
        if (finish === "memory") this.#processingMemory(ts, id);
        else if (finish === "erred") {
          const ws = ts.processingOn;
          if (ws) {
            ws.processingTasks.delete(ts);
            this.#placement.freed(ws);
          }
          ts.processingOn = null;
          this.#erredCommon(ts, id, ws);
        } else if (finish === "released") {
          const ws = ts.processingOn;
          if (ws) {
            ws.processingTasks.delete(ts);
            this.#placement.freed(ws);
            if (ws.status !== "closing") this.#fx.send(ws, { op: "free", keys: [ts.key], stimulusId: id });
          }
          ts.processingOn = null;
          this.#toReleased(ts, id);
        } else return false;
        return true;
      case "memory":
        if (finish === "released") {
          this.#dropResult(ts, id);
          this.set(ts, "released", id);
          for (const dts of ts.dependentTasks) {
            if (dts.state === "waiting") own(dts, "waitingOn").add(ts);
          }
          this.#releasedOrForgotten(ts);
        } else if (finish === "forgotten") {
          this.#dropResult(ts, id);
          this.#forget(ts, id);
        } else return false;
        return true;
      case "erred":
        if (finish === "released") {
          this.#freeErred(ts, id);
          ts.exception = null;
          ts.traceback = null;
          ts.exceptionBlame = null;
          this.set(ts, "released", id);
          for (const dts of ts.dependentTasks) {
            if (dts.state === "erred") this.recommend(dts, "released");
          }
          this.#releasedOrForgotten(ts);
        } else if (finish === "forgotten") {
          this.#freeErred(ts, id);
          this.#forget(ts, id);
        } else return false;
        return true;
      default:
        return false;
    }
  }

  #releasedWaiting(ts: TaskState, stimulusId: string): void {
    ts.exception = null;
    ts.traceback = null;
    ts.exceptionBlame = null;
    let erredDep = false;
    for (const dep of ts.deps) {
      own(dep, "waiters").add(ts);
      if (dep.state === "erred") erredDep = true;
      if (dep.state !== "memory") {
        own(ts, "waitingOn").add(dep);
        if (dep.state === "released") this.recommend(dep, "waiting");
      }
    }
    this.set(ts, "waiting", stimulusId);
    if (erredDep) this.recommend(ts, "erred");
    else if (ts.waitingOn.size === 0) this.recommend(ts, "processing");
  }

  /** queued/no-worker/waiting/processing → released, once the task left its worker. */
  #toReleased(ts: TaskState, stimulusId: string): void {
    this.set(ts, "released", stimulusId);
    this.#releaseDependencies(ts);
    this.#releasedOrForgotten(ts);
  }

  #processingMemory(ts: TaskState, stimulusId: string): void {
    // taskFinished checked that the result came from the worker processing the task.
    const ws = ts.processingOn!;
    ws.processingTasks.delete(ts);
    this.#placement.freed(ws);
    ts.processingOn = null;
    ts.whoHas.add(ws);
    ws.heldTasks.add(ts);
    ws.nbytes += ts.nbytes;
    const startstops = ts.startstops;
    this.set(ts, "memory", stimulusId, startstops === null ? { worker: ws.name, nbytes: ts.nbytes } : { worker: ws.name, nbytes: ts.nbytes, startstops });
    for (const dts of ts.dependentTasks) {
      dts.waitingOn.delete(ts);
      if (dts.waitingOn.size === 0 && dts.state === "waiting") this.recommend(dts, "processing");
    }
    for (const dep of ts.deps) {
      dep.waiters.delete(ts);
      if (dep.waiters.size === 0 && dep.whoWants.size === 0) this.recommend(dep, "released");
    }
    if (ts.waiters.size === 0 && ts.whoWants.size === 0) this.recommend(ts, "released");
  }

  #toProcessing(ts: TaskState, stimulusId: string): void {
    const placement = this.#placement;
    const choice = placement.decideWorker(ts);
    if (choice === null) {
      if (ts.state !== "no-worker") {
        placement.noWorker.add(ts);
        this.set(ts, "no-worker", stimulusId);
      }
      return;
    }
    if (choice === "queue") {
      // Also when it was taken off the queue for a worker its `workers=` rule out: back in line.
      placement.enqueue(ts);
      if (ts.state !== "queued") this.set(ts, "queued", stimulusId);
      return;
    }
    if (ts.state === "no-worker") placement.noWorker.delete(ts);
    ts.processingOn = choice;
    choice.processingTasks.add(ts);
    this.set(ts, "processing", stimulusId, { worker: choice.name });
    this.#sendCompute(ts, choice, stimulusId);
  }

  #sendCompute(ts: TaskState, ws: WorkerState, stimulusId: string): void {
    const deps: DepInfo[] = [];
    for (const dep of ts.deps) {
      if (dep.whoHas.has(ws)) deps.push({ key: dep.key, nbytes: dep.nbytes });
      else if (dep.hasValue) deps.push({ key: dep.key, value: dep.value, nbytes: dep.nbytes });
      else deps.push({ key: dep.key, who: [...dep.whoHas].map((w) => w.address), nbytes: dep.nbytes });
    }
    const msg: WorkerMessage = { op: "compute", key: ts.key, fn: ts.fn, args: ts.args, deps, stimulusId };
    for (const _ in ts.annotations) {
      msg.annotations = ts.annotations;
      break;
    }
    this.#fx.send(ws, msg);
  }

  #toErredByDependency(ts: TaskState, stimulusId: string): void {
    let blame: TaskState | null = null;
    for (const dep of ts.deps) {
      if (dep.state === "erred") {
        blame = dep.exceptionBlame ?? dep;
        break;
      }
    }
    if (ts.state === "queued" || ts.state === "no-worker") this.#placement.noWorker.delete(ts);
    for (const dep of ts.deps) ts.waitingOn.delete(dep);
    ts.exceptionBlame = blame;
    if (blame) {
      ts.exception = blame.exception;
      ts.traceback = blame.traceback;
    } else if (!ts.exception) {
      ts.exception = "Error: a dependency failed";
    }
    this.#erredCommon(ts, stimulusId);
  }

  /** → erred; `ws` is the worker where it failed (Dask's transition kwargs name it, with the spans). */
  #erredCommon(ts: TaskState, stimulusId: string, ws?: WorkerState | null): void {
    const exception = ts.exception ?? "";
    const traceback = ts.traceback ?? "";
    const startstops = ws ? ts.startstops : null;
    if (!ws) this.set(ts, "erred", stimulusId, { exception, traceback });
    else if (startstops === null) this.set(ts, "erred", stimulusId, { exception, traceback, worker: ws.name });
    else this.set(ts, "erred", stimulusId, { exception, traceback, worker: ws.name, startstops });
    for (const dts of ts.dependentTasks) {
      if (dts.state !== "erred" && dts.state !== "memory" && dts.state !== "forgotten") this.recommend(dts, "erred");
    }
    this.#releaseDependencies(ts, true);
  }

  #releaseDependencies(ts: TaskState, always = false): void {
    // A task that is wanted goes straight back to waiting: keep what it will need again.
    if (!always && (ts.whoWants.size > 0 || ts.waiters.size > 0)) return;
    for (const dep of ts.deps) {
      dep.waiters.delete(ts);
      if (dep.waiters.size === 0 && dep.whoWants.size === 0 && dep.state !== "released" && dep.state !== "erred") {
        this.recommend(dep, "released");
      }
    }
  }

  #releasedOrForgotten(ts: TaskState): void {
    if (ts.whoWants.size > 0 || ts.waiters.size > 0) this.recommend(ts, "waiting");
    else if (ts.dependentTasks.size === 0) this.recommend(ts, "forgotten");
  }

  /** Tells the worker where the task failed to free it (its plugins see error→released→forgotten). */
  #freeErred(ts: TaskState, stimulusId: string): void {
    if (ts.erredOn && ts.erredOn.status !== "closing") this.#fx.send(ts.erredOn, { op: "free", keys: [ts.key], stimulusId });
    ts.erredOn = null;
  }

  /** Tells the holders to free a result and drops the scheduler's copy. */
  #dropResult(ts: TaskState, stimulusId: string): void {
    for (const ws of ts.whoHas) {
      ws.heldTasks.delete(ts);
      ws.nbytes -= ts.nbytes;
      this.#fx.send(ws, { op: "free", keys: [ts.key], stimulusId });
    }
    ts.whoHas.clear();
    ts.value = undefined;
    ts.hasValue = false;
  }

  #forget(ts: TaskState, stimulusId: string): void {
    if (ts.dependentTasks.size > 0) {
      // Still needed by live dependents: only release.
      if (ts.state !== "released") this.set(ts, "released", stimulusId);
      return;
    }
    this.set(ts, "forgotten", stimulusId);
    this.counts.forgotten--;
    for (const dep of ts.deps) {
      dep.dependentTasks.delete(ts);
      dep.waiters.delete(ts);
      if (dep.dependentTasks.size === 0 && dep.whoWants.size === 0) this.recommend(dep, "forgotten");
    }
    for (const cs of ts.whoWants) cs.wantedTasks.delete(ts);
    this.#tasks.delete(ts.key);
  }
}
