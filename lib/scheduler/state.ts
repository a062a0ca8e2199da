/**
 * The scheduler's state machine: tasks, workers and clients, changed only by stimuli (a graph, a
 * finished task, a lost worker, …). It is pure and synchronous, in Dask's style: each stimulus
 * fills and returns the {@linkcode Effects} it leads to (transitions, messages for workers,
 * finished keys), which the server applies. Time comes with the stimulus; nothing here reads a
 * clock, sends or calls back.
 *
 * @module
 */
import { Effects } from "./effects.ts";
import { ConflictError } from "./errors.ts";
import type { ValidGraph } from "./graph.ts";
import { Placement } from "./placement.ts";
import { ShardedMap } from "./sharded.ts";
import type { Startstop } from "../plugins/types.ts";
import { allowedFailures, ClientState, own, TaskState, WorkerState } from "./task-state.ts";
import { sameValue } from "./same-value.ts";
import { Transitions } from "./transitions.ts";

export { allowedFailures, ClientState, Effects, TaskState, WorkerState };
export type { DepInfo, TransitionRecord, WorkerMessage } from "./effects.ts";

/** A graph's tasks added by {@linkcode SchedulerState.addGraph}, not yet scheduled. */
export interface AddedGraph {
  /** Tasks made for this graph. */
  created: TaskState[];
  /** Tasks that existed, released or erred, and are to be computed again. */
  touched: TaskState[];
}

/** What a worker says of itself when it registers. */
export interface WorkerInfo {
  name: string;
  address: string;
  nthreads: number;
  nanny: boolean;
  modules: string[];
  pid: number;
}

/**
 * The scheduler's state. Every stimulus method returns `effects` (one reused object, appended
 * to until whoever applies it calls `effects.clear()`).
 *
 * @example
 * ```ts
 * const state = new SchedulerState();
 * const ws = state.addWorker({ name: "a", address: "", nthreads: 1, nanny: false, modules: [], pid: 1 }, Date.now());
 * const fx = state.workerReady(ws, "ready-1");
 * fx.clear();
 * ```
 */
export class SchedulerState {
  readonly tasks = new ShardedMap<TaskState>();
  readonly workers = new Map<string, WorkerState>();
  readonly clients = new Map<string, ClientState>();
  /** What the stimuli led to since the last `effects.clear()`. */
  readonly effects = new Effects();
  readonly placement = new Placement();
  #engine = new Transitions({ tasks: this.tasks, placement: this.placement, effects: this.effects });
  #nextPriority = 0;
  #stimulusCounter = 0;
  /** Counts restarts (forgetAll): a graph added in slices across one is taken back. */
  #epoch = 0;

  /** Tasks by state (forgotten ones are not kept: always 0). */
  get counts(): Readonly<Record<TaskState["state"], number>> {
    return this.#engine.counts;
  }

  /** Every transition made so far. */
  get transitionsTotal(): number {
    return this.#engine.transitionsTotal;
  }

  /** A fresh stimulus id, as Dask's `f"{name}-{time()}"`. */
  stimulusId(name: string): string {
    return `${name}-${++this.#stimulusCounter}`;
  }

  // ---- clients and graphs ------------------------------------------------------------------

  /** Registers a client. */
  addClient(id: string): ClientState {
    let cs = this.clients.get(id);
    if (!cs) {
      cs = new ClientState(id);
      this.clients.set(id, cs);
    }
    return cs;
  }

  /** Adds the tasks of a validated graph and schedules them; the client wants `graph.keys`. */
  updateGraph(client: ClientState, graph: ValidGraph, stimulusId: string): Effects {
    return this.scheduleGraph(this.addGraph(client, graph), stimulusId);
  }

  /**
   * First half of `updateGraph`: the tasks exist (state `released`) and are wanted, but make no
   * transition yet, so that plugins' `updateGraph` can see them first. A key that exists with
   * another `fn` or `args` is a {@linkcode ConflictError}, and nothing is added.
   */
  addGraph(client: ClientState, graph: ValidGraph): AddedGraph {
    return finish(this.addGraphSlices(client, graph, Infinity));
  }

  /**
   * `addGraph` in slices of about `every` tasks: yields between them so that the caller can let
   * the event loop run. Until it returns, the new tasks sit in `released`, wanted by no one, and
   * make no transition; should the graph not fit any more at a later slice (a task it depends on
   * was forgotten meanwhile, a restart), what was added is taken back and it throws: nothing is
   * half-submitted. Only one graph may be added at a time (the caller serializes).
   */
  *addGraphSlices(client: ClientState, graph: ValidGraph, every = 1024): Generator<void, AddedGraph> {
    const epoch = this.#epoch;
    let budget = every;
    if (this.tasks.size > 0) {
      for (const spec of graph.tasks) {
        const existing = this.tasks.get(spec.key);
        if (existing && (existing.fn !== spec.fn || !sameValue(existing.args, spec.args))) {
          throw new ConflictError(
            `Key "${spec.key}" is still held with another definition: release it first or use another key`,
            { key: spec.key },
          );
        }
        if (--budget <= 0) {
          yield;
          budget = every;
        }
      }
    }
    const created: TaskState[] = [];
    const wanted: TaskState[] = [];
    // The task of each of the graph's specs, by its index: no map of a million keys.
    const specs = graph.tasks;
    const taskOf: TaskState[] = new Array(specs.length);
    const isNew = new Uint8Array(specs.length);
    const find = (key: string) => {
      const spec = graph.spec(key);
      return spec === undefined ? this.tasks.get(key) : taskOf[spec.index!];
    };
    const priorityBase = this.#nextPriority;
    this.#nextPriority += graph.order.length;
    const touched: TaskState[] = [];
    const counts = this.#engine.counts;
    // A task found existing may be forgotten between slices until something of this graph holds
    // it (a dependent, a want): each is checked where it is first held.
    const held = (ts: TaskState) => {
      if (this.tasks.get(ts.key) !== ts) throw new ConflictError(`Key "${ts.key}" was forgotten while the graph was added: submit it again`, { key: ts.key });
      return ts;
    };
    try {
      for (let i = 0; i < specs.length; i++) {
        const spec = specs[i];
        const existing = this.tasks.get(spec.key);
        if (existing) {
          taskOf[i] = existing;
          if (existing.state === "erred" || existing.state === "released") touched.push(existing);
        } else {
          const ts = new TaskState(spec.key, spec.fn, spec.args, spec.retries, spec.annotations, priorityBase + graph.rank(spec));
          this.tasks.set(spec.key, ts);
          counts.released++;
          taskOf[i] = ts;
          isNew[i] = 1;
          created.push(ts);
        }
        if (--budget <= 0) {
          yield;
          budget = every;
          this.#checkEpoch(epoch);
        }
      }
      for (let i = 0; i < specs.length; i++) {
        if (isNew[i] === 0) continue;
        const ts = taskOf[i];
        const refs = specs[i].refs ?? [];
        for (let r = 0; r < refs.length; r++) {
          const dep = held(find(refs[r]) ?? missing(refs[r]));
          own(ts, "deps").add(dep);
          own(dep, "dependentTasks").add(ts);
        }
        if (--budget <= 0) {
          yield;
          budget = every;
          this.#checkEpoch(epoch);
        }
      }
      for (const key of graph.keys) {
        const ts = held(find(key) ?? missing(key));
        if (!ts.whoWants.has(client)) {
          ts.whoWants.add(client);
          client.wantedTasks.add(ts);
          wanted.push(ts);
        }
        if (--budget <= 0) {
          yield;
          budget = every;
          this.#checkEpoch(epoch);
        }
      }
    } catch (err) {
      for (const ts of wanted) {
        ts.whoWants.delete(client);
        client.wantedTasks.delete(ts);
      }
      this.#takeBack(created);
      throw err;
    }
    return { created, touched };
  }

  #checkEpoch(epoch: number): void {
    if (this.#epoch !== epoch) throw new ConflictError("The scheduler restarted while the graph was added: submit it again");
  }

  /** Removes tasks added by a graph that could not be added after all (they made no transition). */
  #takeBack(created: TaskState[]): void {
    const counts = this.#engine.counts;
    for (const ts of created) {
      if (this.tasks.get(ts.key) !== ts) continue;
      this.tasks.delete(ts.key);
      counts.released--;
      for (const dep of ts.deps) dep.dependentTasks.delete(ts);
      // Whoever began to wait for it between slices (a gather) is told it is gone.
      if (ts.finishWaiters !== null) {
        ts.state = "forgotten";
        this.effects.gone(ts);
      }
    }
  }

  /** Second half of `updateGraph`: the new tasks start moving. */
  scheduleGraph(added: AddedGraph, stimulusId: string): Effects {
    return finish(this.scheduleGraphSlices(added, stimulusId, Infinity));
  }

  /**
   * `scheduleGraph` in slices of about `every` tasks, in priority order; yields the effects of
   * each slice, which the caller applies before the next. The tasks of later slices stay in
   * `released` meanwhile: a finished dependency they will need is computed again if it was let go.
   */
  *scheduleGraphSlices(added: AddedGraph, stimulusId: string, every = 2048): Generator<Effects, Effects> {
    const engine = this.#engine;
    // Lowest priority number first. `created` is in submission order and its priorities are
    // consecutive from the first: placed by priority, not sorted (a million tasks). Each pass
    // over the tasks yields every `every` of them too: a million take a few hundred ms.
    const live = added.touched.filter((ts) => this.tasks.get(ts.key) === ts).sort((a, b) => a.priority - b.priority);
    const created = added.created;
    let base = Infinity;
    for (const ts of created) if (ts.priority < base) base = ts.priority;
    const ordered: (TaskState | undefined)[] = new Array(created.length);
    const stray: TaskState[] = [];
    for (let i = 0; i < created.length; i++) {
      const ts = created[i];
      const at = ts.priority - base;
      if (at < ordered.length && ordered[at] === undefined) ordered[at] = ts;
      else stray.push(ts);
      if (i % every === every - 1) yield this.effects;
    }
    for (let i = 0; i < ordered.length; i++) {
      const ts = ordered[i];
      if (ts !== undefined && this.tasks.get(ts.key) === ts) live.push(ts);
      if (i % every === every - 1) yield this.effects;
    }
    for (const ts of stray) if (this.tasks.get(ts.key) === ts) live.push(ts);
    for (let from = 0; from < live.length; from += every) {
      // Highest priority last, so that it is taken first (LIFO).
      const to = Math.min(live.length, from + every);
      for (let i = to - 1; i >= from; i--) {
        const ts = live[i];
        if (ts.state === "erred") engine.recommend(ts, "released");
        engine.recommend(ts, "waiting");
      }
      engine.run(stimulusId);
      // New root tasks queue behind queued ones; free slots (idle workers) take them now.
      engine.fillWorkers();
      engine.run(stimulusId);
      if (to < live.length) yield this.effects;
    }
    return this.effects;
  }

  /** A client no longer wants these keys (Dask's `client_releases_keys`). */
  releaseKeys(client: ClientState, keys: readonly string[], stimulusId: string): Effects {
    return finish(this.releaseKeysSlices(client, keys, stimulusId, Infinity));
  }

  /**
   * `releaseKeys` in slices of `every` keys, yielding the effects of each but the last (which it
   * returns): releasing a million keys at once holds the scheduler for seconds.
   */
  *releaseKeysSlices(client: ClientState, keys: readonly string[], stimulusId: string, every = 2048): Generator<Effects, Effects> {
    let at = 0;
    return yield* this.#releaseSlices(client, () => {
      while (at < keys.length) {
        const ts = this.tasks.get(keys[at++]);
        if (ts) return ts;
      }
      return undefined;
    }, stimulusId, every);
  }

  /** Removes a client and releases everything it wanted. */
  removeClient(id: string, stimulusId: string): Effects {
    return finish(this.removeClientSlices(id, stimulusId, Infinity));
  }

  /** `removeClient` in slices of `every` tasks (see `releaseKeysSlices`). */
  *removeClientSlices(id: string, stimulusId: string, every = 2048): Generator<Effects, Effects> {
    const cs = this.clients.get(id);
    if (!cs) return this.effects;
    // Each task is taken out of the set as it is released: the set's iterator goes on past it.
    const wanted = cs.wantedTasks.values();
    yield* this.#releaseSlices(cs, () => {
      const next = wanted.next();
      return next.done ? undefined : next.value;
    }, stimulusId, every);
    this.clients.delete(id);
    return this.effects;
  }

  /** Releases the tasks `next` gives (until undefined) for `client`, `every` a slice. */
  *#releaseSlices(client: ClientState, next: () => TaskState | undefined, stimulusId: string, every: number): Generator<Effects, Effects> {
    const engine = this.#engine;
    for (let more = true; more;) {
      for (let n = 0; n < every; n++) {
        const ts = next();
        if (ts === undefined) {
          more = false;
          break;
        }
        if (!ts.whoWants.has(client)) continue;
        ts.whoWants.delete(client);
        client.wantedTasks.delete(ts);
        if (ts.whoWants.size === 0) {
          if (ts.dependentTasks.size === 0) engine.recommend(ts, "forgotten");
          else if (ts.state !== "erred" && ts.waiters.size === 0) engine.recommend(ts, "released");
        }
      }
      engine.run(stimulusId);
      if (more) {
        yield this.effects;
        continue;
      }
      // Released tasks may have freed slots that queued tasks are waiting for: filled once all
      // are released (between slices, queued tasks about to be released would be sent too).
      engine.fillWorkers();
      engine.run(stimulusId);
    }
    return this.effects;
  }

  // ---- workers -----------------------------------------------------------------------------

  /** Adds a worker in the `init` state at time `now` (ms): it gets no task until `workerReady`. */
  addWorker(info: WorkerInfo, now: number): WorkerState {
    const ws = new WorkerState(info.name, info.address, info.nthreads, info.nanny, new Set(info.modules), info.pid, now);
    this.workers.set(ws.name, ws);
    return ws;
  }

  /** The worker confirmed its plugins (or left quarantine): it may now be given tasks. */
  workerReady(ws: WorkerState, stimulusId: string): Effects {
    if (ws.status !== "init" && ws.status !== "quarantined") return this.effects;
    ws.status = "running";
    ws.quarantine = null;
    this.placement.addRunning(ws);
    const engine = this.#engine;
    for (const ts of this.placement.noWorker) engine.recommend(ts, "processing");
    engine.fillWorkers();
    engine.run(stimulusId);
    return this.effects;
  }

  /**
   * Holds a worker out of placement (a plugin failed to set up on it): it gets no new task; what
   * it runs or holds stays. `workerReady` lets it back.
   */
  quarantineWorker(ws: WorkerState, reason: string): Effects {
    ws.quarantine = reason;
    if (ws.status === "closing" || ws.status === "quarantined") return this.effects;
    ws.status = "quarantined";
    const running = this.placement.running;
    const idx = running.indexOf(ws);
    if (idx >= 0) running.splice(idx, 1);
    return this.effects;
  }

  /**
   * Removes a worker: its running tasks are rescheduled, results only it held are recomputed.
   * A worker that died (not `graceful`) counts against the tasks it was running.
   */
  removeWorker(name: string, stimulusId: string, options: { graceful?: boolean } = {}): Effects {
    const ws = this.workers.get(name);
    if (!ws) return this.effects;
    const engine = this.#engine;
    this.workers.delete(name);
    const running = this.placement.running;
    const idx = running.indexOf(ws);
    if (idx >= 0) running.splice(idx, 1);
    ws.status = "closing";
    for (const ts of [...ws.processingTasks]) {
      // Only a worker that died counts against the task (Dask's `suspicious`), not one that left.
      if (!options.graceful) ts.suspicious++;
      ws.processingTasks.delete(ts);
      ts.processingOn = null;
      if (ts.suspicious >= allowedFailures) {
        ts.exception = `KilledWorker: attempted to run task "${ts.key}" on ${ts.suspicious} different workers, ` +
          `but all those workers died while running it; the last was "${ws.name}"`;
        ts.traceback = "";
        engine.recommend(ts, "erred");
      } else {
        engine.recommend(ts, "released");
      }
    }
    for (const ts of ws.heldTasks) {
      ts.whoHas.delete(ws);
      if (ts.whoHas.size === 0 && !ts.hasValue && ts.state === "memory") engine.recommend(ts, "released");
    }
    ws.heldTasks.clear();
    // Released tasks still wanted go back to waiting inside the loop (releasedOrForgotten).
    engine.run(stimulusId);
    engine.fillWorkers();
    engine.run(stimulusId);
    return this.effects;
  }

  /**
   * A worker being retired (Dask's `closing_gracefully`): it is given no new task; what it runs
   * finishes, and it still serves what it holds until it closes.
   */
  retireWorker(ws: WorkerState): void {
    const idx = this.placement.running.indexOf(ws);
    if (idx >= 0) this.placement.running.splice(idx, 1);
  }

  /** A copy of a result now held by `ws` as well (moved off a retiring worker); false if not in memory. */
  addReplica(ws: WorkerState, key: string): boolean {
    const ts = this.tasks.get(key);
    if (!ts || ts.state !== "memory" || ts.whoHas.has(ws) || this.workers.get(ws.name) !== ws) return false;
    ts.whoHas.add(ws);
    ws.heldTasks.add(ts);
    ws.nbytes += ts.nbytes;
    return true;
  }

  /** The scheduler keeps a copy of a result itself (pulled off a retiring worker that had the only one). */
  keepValue(key: string, value: unknown): boolean {
    const ts = this.tasks.get(key);
    if (!ts || ts.state !== "memory") return false;
    ts.value = value;
    ts.hasValue = true;
    return true;
  }

  // ---- tasks -------------------------------------------------------------------------------

  /** A worker finished a task. */
  taskFinished(
    ws: WorkerState,
    msg: { key: string; nbytes: number; value?: unknown; hasValue?: boolean; duration?: number; startstops?: Startstop[] },
    stimulusId: string,
  ): Effects {
    const ts = this.tasks.get(msg.key);
    if (msg.duration !== undefined) this.placement.recordDuration(msg.duration);
    if (!ts || ts.state !== "processing" || ts.processingOn !== ws) {
      // Stale: the task was released or moved meanwhile. Keep the result only if it is wanted.
      if (ts && ts.state === "memory" && !ts.whoHas.has(ws)) {
        ts.whoHas.add(ws);
        ws.heldTasks.add(ts);
      } else if (!ts || ts.state !== "memory") {
        this.effects.send(ws, { op: "free", keys: [msg.key], stimulusId });
      }
      return this.effects;
    }
    ts.nbytes = msg.nbytes;
    if (msg.startstops !== undefined) ts.startstops = msg.startstops;
    if (msg.hasValue) {
      ts.value = msg.value;
      ts.hasValue = true;
    }
    const engine = this.#engine;
    engine.recommend(ts, "memory");
    engine.run(stimulusId);
    engine.fillWorkers(ws);
    engine.run(stimulusId);
    return this.effects;
  }

  /** A task threw on a worker; `retries` are honoured. */
  taskErred(
    ws: WorkerState,
    msg: { key: string; exception: string; traceback: string; duration?: number; startstops?: Startstop[] },
    stimulusId: string,
  ): Effects {
    const ts = this.tasks.get(msg.key);
    if (!ts || ts.state !== "processing" || ts.processingOn !== ws) return this.effects;
    if (msg.startstops !== undefined) ts.startstops = msg.startstops;
    const engine = this.#engine;
    if (ts.retries > 0) {
      // Retry in place: the dependencies stay in memory for the next attempt.
      ts.retries--;
      ws.processingTasks.delete(ts);
      this.placement.freed(ws);
      // The worker drops its erred attempt (its plugins see error→released).
      this.effects.send(ws, { op: "free", keys: [ts.key], stimulusId });
      ts.processingOn = null;
      engine.set(ts, "released", stimulusId);
      engine.recommend(ts, "waiting");
    } else {
      ts.exception = msg.exception;
      ts.traceback = msg.traceback;
      ts.erredOn = ws;
      engine.recommend(ts, "erred");
    }
    engine.run(stimulusId);
    engine.fillWorkers(ws);
    engine.run(stimulusId);
    return this.effects;
  }

  /** A worker could not get a dependency of `key` from any holder: run it again later. */
  missingData(ws: WorkerState, key: string, depKey: string, stimulusId: string): Effects {
    const engine = this.#engine;
    // The task first, its lost dependency last: the stack is LIFO, so the dependency is released
    // (and scheduled again) before the task goes back to waiting on it.
    const ts = this.tasks.get(key);
    if (ts && ts.state === "processing" && ts.processingOn === ws) engine.recommend(ts, "released");
    const dep = this.tasks.get(depKey);
    if (dep && dep.state === "memory" && !dep.hasValue) {
      for (const holder of [...dep.whoHas]) {
        if (!holder.heldTasks.has(dep) || holder.status === "closing") dep.whoHas.delete(holder);
      }
      if (dep.whoHas.size === 0) engine.recommend(dep, "released");
    }
    engine.run(stimulusId);
    if (ts && ts.state === "released") engine.recommend(ts, "waiting");
    if (dep && dep.state === "released" && (dep.waiters.size > 0 || dep.whoWants.size > 0)) engine.recommend(dep, "waiting");
    engine.run(stimulusId);
    return this.effects;
  }

  /** Forgets every task (Dask's `restart`). */
  forgetAll(stimulusId: string): Effects {
    this.#epoch++;
    for (const cs of this.clients.values()) {
      for (const ts of cs.wantedTasks) ts.whoWants.delete(cs);
      cs.wantedTasks.clear();
    }
    const engine = this.#engine;
    // Dependents (higher priority numbers) are taken first from the LIFO stack.
    const all = [...this.tasks.values()].sort((a, b) => a.priority - b.priority);
    for (const ts of all) engine.recommend(ts, "forgotten");
    engine.run(stimulusId);
    this.placement.clear();
    return this.effects;
  }

  /** Releases a task (and computes it again when it is still wanted). */
  releaseTask(key: string, stimulusId: string): Effects {
    const ts = this.tasks.get(key);
    if (!ts) return this.effects;
    const engine = this.#engine;
    engine.recommend(ts, "released");
    engine.run(stimulusId);
    if (ts.state === "released" && (ts.whoWants.size > 0 || ts.waiters.size > 0)) {
      engine.recommend(ts, "waiting");
      engine.run(stimulusId);
    }
    return this.effects;
  }
}

/** Runs a generator to its end; its return value. */
function finish<T>(steps: Generator<unknown, T>): T {
  for (;;) {
    const next = steps.next();
    if (next.done) return next.value;
  }
}

/** A key the graph needs that is gone (forgotten between slices). */
function missing(key: string): never {
  throw new ConflictError(`Key "${key}" was forgotten while the graph was added: submit it again`, { key });
}
