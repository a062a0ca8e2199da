/**
 * The scheduler's state machine: tasks, workers and clients, and Dask's task transitions.
 * It is pure and synchronous: stimuli (a graph, a finished task, a lost worker) go in;
 * transitions are reported through `onTransition` and messages for workers through
 * `sendToWorker`. The network lives in server.ts.
 *
 * @module
 */
import type {
  ClientView,
  SchedulerTaskStateName,
  TaskStateView,
  TransitionInfo,
  WorkerView,
} from "../plugins/types.ts";
import type { ValidGraph } from "./graph.ts";

/** After this many worker deaths while a task ran, the task is erred with KilledWorker. */
export const allowedFailures = 3;

/** A task at the scheduler. */
export class TaskState implements TaskStateView {
  state: SchedulerTaskStateName = "released";
  readonly deps = new Set<TaskState>();
  readonly dependentTasks = new Set<TaskState>();
  /** Dependencies not yet in memory. */
  readonly waitingOn = new Set<TaskState>();
  /** Dependents not yet computed that need this task's result. */
  readonly waiters = new Set<TaskState>();
  readonly whoWants = new Set<ClientState>();
  readonly whoHas = new Set<WorkerState>();
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
  constructor(
    readonly key: string,
    readonly fn: string,
    readonly args: unknown[],
    public retries: number,
    readonly annotations: Record<string, unknown>,
    public priority: number,
  ) {}
  get dependencies(): ReadonlySet<string> {
    return new Set([...this.deps].map((t) => t.key));
  }
  get dependents(): ReadonlySet<string> {
    return new Set([...this.dependentTasks].map((t) => t.key));
  }
  get worker(): string | null {
    if (this.processingOn) return this.processingOn.name;
    for (const ws of this.whoHas) return ws.name;
    return null;
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
    };
  }
}

/** A worker at the scheduler. */
export class WorkerState implements WorkerView {
  status: "init" | "running" | "closing" = "init";
  readonly processingTasks = new Set<TaskState>();
  readonly heldTasks = new Set<TaskState>();
  nbytes = 0;
  lastSeen = Date.now();
  constructor(
    readonly name: string,
    readonly address: string,
    readonly nthreads: number,
    readonly nanny: boolean,
    readonly modules: Set<string>,
    readonly pid: number,
  ) {}
  get processing(): ReadonlySet<string> {
    return new Set([...this.processingTasks].map((t) => t.key));
  }
  get hasWhat(): ReadonlySet<string> {
    return new Set([...this.heldTasks].map((t) => t.key));
  }
}

/** A client at the scheduler. */
export class ClientState implements ClientView {
  readonly wantedTasks = new Set<TaskState>();
  constructor(readonly id: string) {}
  get wants(): ReadonlySet<string> {
    return new Set([...this.wantedTasks].map((t) => t.key));
  }
}

/** Messages the state machine sends to workers. */
export type WorkerMessage =
  | { op: "compute"; key: string; fn: string; args: unknown[]; deps: DepInfo[]; annotations?: Record<string, unknown>; stimulusId: string }
  | { op: "free"; keys: string[]; stimulusId: string };

/** How a worker gets one dependency: inline `value`, or from the workers at `who`. */
export interface DepInfo {
  key: string;
  value?: unknown;
  who?: string[];
  nbytes: number;
}

/** Callbacks through which the state machine reports what happened. */
export interface SchedulerStateHooks {
  /** Called after every transition; `extra` holds worker, nbytes, exception where they apply. */
  onTransition(
    ts: TaskState,
    start: SchedulerTaskStateName,
    finish: SchedulerTaskStateName,
    stimulusId: string,
    extra: Partial<TransitionInfo> | undefined,
  ): void;
  sendToWorker(ws: WorkerState, msg: WorkerMessage): void;
}

type Finish = SchedulerTaskStateName;

/**
 * The scheduler's state: every change goes through a stimulus method, which runs Dask's
 * recommendation loop (LIFO, a later recommendation for the same task replacing the earlier).
 */
export class SchedulerState {
  readonly tasks = new Map<string, TaskState>();
  readonly workers = new Map<string, WorkerState>();
  readonly clients = new Map<string, ClientState>();
  readonly counts: Record<SchedulerTaskStateName, number> = {
    released: 0, waiting: 0, "no-worker": 0, queued: 0, processing: 0, memory: 0, erred: 0, forgotten: 0,
  };
  transitionsTotal = 0;
  /** Extra work queued per worker, in seconds of average task duration (keeps workers fed). */
  pipelineSeconds = 0.002;
  /** The largest number of tasks in flight on one worker thread. */
  maxPipeline = 256;
  #hooks: SchedulerStateHooks;
  #running: WorkerState[] = [];
  #queue: TaskState[] = [];
  #queueHead = 0;
  #noWorker = new Set<TaskState>();
  #recStack: TaskState[] = [];
  #recs = new Map<TaskState, Finish>();
  #inLoop = false;
  #nextPriority = 0;
  /** Exponentially weighted average task duration (seconds); Dask's default guess at first. */
  #avgDuration = 0.5;
  #durationSamples = 0;
  #stimulusCounter = 0;

  constructor(hooks: SchedulerStateHooks) {
    this.#hooks = hooks;
  }

  /** A fresh stimulus id, as Dask's `f"{name}-{time()}"`. */
  stimulusId(name: string): string {
    return `${name}-${++this.#stimulusCounter}`;
  }

  /** Running workers. */
  get runningWorkers(): readonly WorkerState[] {
    return this.#running;
  }

  /** How many tasks wait at the scheduler for a free worker. */
  get queuedCount(): number {
    return this.counts.queued;
  }

  // ---- stimuli -------------------------------------------------------------------------------

  /** Adds the tasks of a validated graph and schedules them; the client wants `graph.keys`. */
  updateGraph(client: ClientState, graph: ValidGraph, stimulusId: string): TaskState[] {
    const added = this.addGraph(client, graph);
    this.scheduleGraph(added, stimulusId);
    return added.created;
  }

  /**
   * First half of `updateGraph`: the tasks exist (state `released`) and are wanted, but make no
   * transition yet, so that plugins' `updateGraph` can see them first.
   */
  addGraph(client: ClientState, graph: ValidGraph): { created: TaskState[]; touched: TaskState[] } {
    const created: TaskState[] = [];
    const byKey = new Map<string, TaskState>();
    const priorityBase = this.#nextPriority;
    const priorities = new Map<string, number>();
    for (let i = 0; i < graph.order.length; i++) priorities.set(graph.order[i], priorityBase + i);
    this.#nextPriority += graph.order.length;
    const touched: TaskState[] = [];
    for (const spec of graph.tasks) {
      const existing = this.tasks.get(spec.key);
      if (existing) {
        byKey.set(spec.key, existing);
        if (existing.state === "erred" || existing.state === "released") touched.push(existing);
        continue;
      }
      const ts = new TaskState(spec.key, spec.fn, spec.args, spec.retries, spec.annotations, priorities.get(spec.key)!);
      this.tasks.set(spec.key, ts);
      this.counts.released++;
      byKey.set(spec.key, ts);
      created.push(ts);
    }
    for (const ts of created) {
      for (const depKey of graph.deps.get(ts.key)!) {
        const dep = byKey.get(depKey) ?? this.tasks.get(depKey)!;
        ts.deps.add(dep);
        dep.dependentTasks.add(ts);
      }
    }
    for (const key of graph.keys) {
      const ts = byKey.get(key) ?? this.tasks.get(key)!;
      if (!ts.whoWants.has(client)) {
        ts.whoWants.add(client);
        client.wantedTasks.add(ts);
      }
    }
    return { created, touched };
  }

  /** Second half of `updateGraph`: the new tasks start moving. */
  scheduleGraph(added: { created: TaskState[]; touched: TaskState[] }, stimulusId: string): void {
    // Highest priority last, so that it is taken first (LIFO).
    const recs = [...added.created, ...added.touched]
      .filter((ts) => this.tasks.get(ts.key) === ts)
      .sort((a, b) => b.priority - a.priority);
    for (const ts of recs) {
      if (ts.state === "erred") this.#recommend(ts, "released");
      this.#recommend(ts, "waiting");
    }
    this.#runLoop(stimulusId);
  }

  /** A client no longer wants these keys (Dask's `client_releases_keys`). */
  releaseKeys(client: ClientState, keys: Iterable<string>, stimulusId: string): void {
    for (const key of keys) {
      const ts = this.tasks.get(key);
      if (!ts || !ts.whoWants.has(client)) continue;
      ts.whoWants.delete(client);
      client.wantedTasks.delete(ts);
      if (ts.whoWants.size === 0) {
        if (ts.dependentTasks.size === 0) this.#recommend(ts, "forgotten");
        else if (ts.state !== "erred" && ts.waiters.size === 0) this.#recommend(ts, "released");
      }
    }
    this.#runLoop(stimulusId);
  }

  /** Registers a client. */
  addClient(id: string): ClientState {
    let cs = this.clients.get(id);
    if (!cs) {
      cs = new ClientState(id);
      this.clients.set(id, cs);
    }
    return cs;
  }

  /** Removes a client and releases everything it wanted. */
  removeClient(id: string, stimulusId: string): void {
    const cs = this.clients.get(id);
    if (!cs) return;
    this.releaseKeys(cs, [...cs.wantedTasks].map((t) => t.key), stimulusId);
    this.clients.delete(id);
  }

  /** Adds a worker in the `init` state: it gets no task until `workerReady`. */
  addWorker(info: { name: string; address: string; nthreads: number; nanny: boolean; modules: string[]; pid: number }): WorkerState {
    const ws = new WorkerState(info.name, info.address, info.nthreads, info.nanny, new Set(info.modules), info.pid);
    this.workers.set(ws.name, ws);
    return ws;
  }

  /** The worker confirmed its plugins: it may now be given tasks. */
  workerReady(ws: WorkerState, stimulusId: string): void {
    if (ws.status !== "init") return;
    ws.status = "running";
    this.#running.push(ws);
    for (const ts of this.#noWorker) this.#recommend(ts, "processing");
    this.#fillWorkers();
    this.#runLoop(stimulusId);
  }

  /**
   * Removes a worker: its running tasks are rescheduled, results only it held are recomputed.
   * A worker that died (not `graceful`) counts against the tasks it was running.
   */
  removeWorker(name: string, stimulusId: string, options: { graceful?: boolean } = {}): WorkerState | undefined {
    const ws = this.workers.get(name);
    if (!ws) return undefined;
    this.workers.delete(name);
    const idx = this.#running.indexOf(ws);
    if (idx >= 0) this.#running.splice(idx, 1);
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
        this.#recommend(ts, "erred");
      } else {
        this.#recommend(ts, "released");
      }
    }
    for (const ts of ws.heldTasks) {
      ts.whoHas.delete(ws);
      if (ts.whoHas.size === 0 && !ts.hasValue && ts.state === "memory") this.#recommend(ts, "released");
    }
    ws.heldTasks.clear();
    // Released tasks still wanted go back to waiting inside the loop (releasedOrForgotten).
    this.#runLoop(stimulusId);
    return ws;
  }

  /** A worker finished a task. */
  taskFinished(
    ws: WorkerState,
    msg: { key: string; nbytes: number; value?: unknown; hasValue?: boolean; duration?: number },
    stimulusId: string,
  ): void {
    ws.lastSeen = Date.now();
    const ts = this.tasks.get(msg.key);
    if (msg.duration !== undefined) this.#recordDuration(msg.duration);
    if (!ts || ts.state !== "processing" || ts.processingOn !== ws) {
      // Stale: the task was released or moved meanwhile. Keep the result only if it is wanted.
      if (ts && ts.state === "memory" && !ts.whoHas.has(ws)) {
        ts.whoHas.add(ws);
        ws.heldTasks.add(ts);
      } else if (!ts || ts.state !== "memory") {
        this.#hooks.sendToWorker(ws, { op: "free", keys: [msg.key], stimulusId });
      }
      return;
    }
    ts.nbytes = msg.nbytes;
    if (msg.hasValue) {
      ts.value = msg.value;
      ts.hasValue = true;
    }
    this.#recommend(ts, "memory");
    this.#runLoop(stimulusId);
    this.#fillWorkers();
    this.#runLoop(stimulusId);
  }

  /** A task threw on a worker; `retries` are honoured. */
  taskErred(ws: WorkerState, msg: { key: string; exception: string; traceback: string; duration?: number }, stimulusId: string): void {
    ws.lastSeen = Date.now();
    const ts = this.tasks.get(msg.key);
    if (!ts || ts.state !== "processing" || ts.processingOn !== ws) return;
    if (ts.retries > 0) {
      // Retry in place: the dependencies stay in memory for the next attempt.
      ts.retries--;
      ws.processingTasks.delete(ts);
      this.#hooks.sendToWorker(ws, { op: "free", keys: [ts.key], stimulusId }); // the worker drops its erred attempt
      ts.processingOn = null;
      this._set(ts, "released", stimulusId);
      this.#recommend(ts, "waiting");
    } else {
      ts.exception = msg.exception;
      ts.traceback = msg.traceback;
      ts.erredOn = ws;
      this.#recommend(ts, "erred");
    }
    this.#runLoop(stimulusId);
    this.#fillWorkers();
    this.#runLoop(stimulusId);
  }

  /** A worker could not get a dependency of `key` from any holder: run it again later. */
  missingData(ws: WorkerState, key: string, depKey: string, stimulusId: string): void {
    const dep = this.tasks.get(depKey);
    if (dep && dep.state === "memory" && !dep.hasValue) {
      for (const holder of [...dep.whoHas]) {
        if (!holder.heldTasks.has(dep) || holder.status === "closing") dep.whoHas.delete(holder);
      }
      if (dep.whoHas.size === 0) this.#recommend(dep, "released");
    }
    const ts = this.tasks.get(key);
    if (ts && ts.state === "processing" && ts.processingOn === ws) this.#recommend(ts, "released");
    this.#runLoop(stimulusId);
    if (ts && ts.state === "released") this.#recommend(ts, "waiting");
    if (dep && dep.state === "released" && (dep.waiters.size > 0 || dep.whoWants.size > 0)) this.#recommend(dep, "waiting");
    this.#runLoop(stimulusId);
  }

  /** Forgets every task (Dask's `restart`). */
  forgetAll(stimulusId: string): void {
    for (const cs of this.clients.values()) {
      for (const ts of cs.wantedTasks) ts.whoWants.delete(cs);
      cs.wantedTasks.clear();
    }
    // Dependents (higher priority numbers) are taken first from the LIFO stack.
    const all = [...this.tasks.values()].sort((a, b) => a.priority - b.priority);
    for (const ts of all) this.#recommend(ts, "forgotten");
    this.#runLoop(stimulusId);
    this.#queue = [];
    this.#queueHead = 0;
    this.#noWorker.clear();
  }

  /** Asks the recommendation loop to release a task (used by the server on stale data). */
  releaseTask(key: string, stimulusId: string): void {
    const ts = this.tasks.get(key);
    if (!ts) return;
    this.#recommend(ts, "released");
    this.#runLoop(stimulusId);
    if (ts.state === "released" && (ts.whoWants.size > 0 || ts.waiters.size > 0)) {
      this.#recommend(ts, "waiting");
      this.#runLoop(stimulusId);
    }
  }

  // ---- the recommendation loop --------------------------------------------------------------

  #recommend(ts: TaskState, finish: Finish): void {
    if (!this.#recs.has(ts)) this.#recStack.push(ts);
    this.#recs.set(ts, finish);
  }

  #runLoop(stimulusId: string): void {
    if (this.#inLoop) return;
    this.#inLoop = true;
    try {
      while (this.#recStack.length > 0) {
        const ts = this.#recStack.pop()!;
        const finish = this.#recs.get(ts)!;
        this.#recs.delete(ts);
        this.#transition(ts, finish, stimulusId);
      }
    } finally {
      this.#inLoop = false;
    }
  }

  #transition(ts: TaskState, finish: Finish, stimulusId: string): void {
    const start = ts.state;
    if (start === finish || start === "forgotten") return;
    // A stale recommendation must not drop a result that is held and needed again.
    if (start === "memory" && finish === "released" && (ts.whoHas.size > 0 || ts.hasValue) &&
      (ts.waiters.size > 0 || ts.whoWants.size > 0)) return;
    const direct = transitions[`${start}>${finish}`];
    if (direct) {
      direct(this, ts, stimulusId);
      return;
    }
    if (start !== "released" && finish !== "released") {
      const toReleased = transitions[`${start}>released`];
      const fromReleased = transitions[`released>${finish}`];
      if (toReleased && fromReleased) {
        toReleased(this, ts, stimulusId);
        if (ts.state === "released") fromReleased(this, ts, stimulusId);
        return;
      }
    }
    throw new Error(`Impossible transition of "${ts.key}" from ${start} to ${finish}`);
  }

  /** Sets the new state, keeps counts and reports the transition. */
  _set(ts: TaskState, finish: Finish, stimulusId: string, info?: Partial<TransitionInfo>): void {
    const start = ts.state;
    this.counts[start]--;
    this.counts[finish]++;
    ts.state = finish;
    this.transitionsTotal++;
    this.#hooks.onTransition(ts, start, finish, stimulusId, info);
  }

  _recommend(ts: TaskState, finish: Finish): void {
    this.#recommend(ts, finish);
  }

  _send(ws: WorkerState, msg: WorkerMessage): void {
    this.#hooks.sendToWorker(ws, msg);
  }

  _noWorker(): Set<TaskState> {
    return this.#noWorker;
  }

  _enqueue(ts: TaskState): void {
    this.#queue.push(ts);
  }

  /** How many tasks a worker may have in flight: its threads plus a few ms of work. */
  capacity(ws: WorkerState): number {
    const extra = Math.min(this.maxPipeline, Math.floor(this.pipelineSeconds / this.#avgDuration));
    return Math.max(Math.ceil(ws.nthreads * 1.1), ws.nthreads * (1 + extra));
  }

  #recordDuration(seconds: number): void {
    const s = Math.max(seconds, 1e-6);
    this.#durationSamples++;
    const alpha = this.#durationSamples < 10 ? 0.5 : 0.05;
    this.#avgDuration = this.#avgDuration * (1 - alpha) + s * alpha;
  }

  /** Moves queued tasks to workers with free slots. */
  #fillWorkers(): void {
    if (this.#queueHead >= this.#queue.length) return;
    for (const ws of this.#running) {
      let free = this.capacity(ws) - ws.processingTasks.size;
      while (free > 0 && this.#queueHead < this.#queue.length) {
        const ts = this.#queue[this.#queueHead++];
        if (ts.state !== "queued" || this.#recs.has(ts)) continue;
        this.#recommend(ts, "processing");
        free--;
      }
    }
    if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  /**
   * Picks a worker for a ready task: the one holding most bytes of its dependencies, else the
   * least busy. Root tasks go to `queued` (returns "queue") when every worker is saturated.
   */
  _decideWorker(ts: TaskState): WorkerState | "queue" | null {
    let running = this.#running;
    if (running.length === 0) return null;
    const restrict = ts.annotations.workers;
    if (restrict !== undefined) {
      // Dask's `workers=` restriction: only these worker names (or addresses).
      const allowed = new Set(Array.isArray(restrict) ? restrict.map(String) : [String(restrict)]);
      running = running.filter((ws) => allowed.has(ws.name) || allowed.has(ws.address));
      if (running.length === 0) return null;
    }
    if (ts.deps.size === 0) {
      let best: WorkerState | null = null;
      let bestLoad = Infinity;
      for (const ws of running) {
        const n = ws.processingTasks.size;
        if (n >= this.capacity(ws)) continue;
        const load = n / ws.nthreads;
        if (load < bestLoad) {
          best = ws;
          bestLoad = load;
        }
      }
      return best ?? "queue";
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
    let bestLoad = Infinity;
    for (const ws of running) {
      const load = ws.processingTasks.size / ws.nthreads;
      if (load < bestLoad) {
        best = ws;
        bestLoad = load;
      }
    }
    return best;
  }
}

type TransitionFn = (s: SchedulerState, ts: TaskState, stimulusId: string) => void;

function releaseDependencies(s: SchedulerState, ts: TaskState, always = false): void {
  // A task that is wanted goes straight back to waiting: keep what it will need again.
  if (!always && (ts.whoWants.size > 0 || ts.waiters.size > 0)) return;
  for (const dep of ts.deps) {
    dep.waiters.delete(ts);
    if (dep.waiters.size === 0 && dep.whoWants.size === 0 && dep.state !== "released" && dep.state !== "erred") {
      s._recommend(dep, "released");
    }
  }
}

function releasedOrForgotten(s: SchedulerState, ts: TaskState): void {
  if (ts.whoWants.size > 0 || ts.waiters.size > 0) s._recommend(ts, "waiting");
  else if (ts.dependentTasks.size === 0) s._recommend(ts, "forgotten");
}

function sendCompute(s: SchedulerState, ts: TaskState, ws: WorkerState, stimulusId: string): void {
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
  s._send(ws, msg);
}

function toProcessing(s: SchedulerState, ts: TaskState, stimulusId: string): void {
  const choice = s._decideWorker(ts);
  if (choice === null) {
    if (ts.state !== "no-worker") {
      s._noWorker().add(ts);
      s._set(ts, "no-worker", stimulusId);
    }
    return;
  }
  if (choice === "queue") {
    if (ts.state !== "queued") {
      s._enqueue(ts);
      s._set(ts, "queued", stimulusId);
    } else {
      // Taken off the queue for a worker its `workers=` restriction rules out: back in line.
      s._enqueue(ts);
    }
    return;
  }
  if (ts.state === "no-worker") s._noWorker().delete(ts);
  ts.processingOn = choice;
  choice.processingTasks.add(ts);
  s._set(ts, "processing", stimulusId, { worker: choice.name });
  sendCompute(s, ts, choice, stimulusId);
}

function toErredByDependency(s: SchedulerState, ts: TaskState, stimulusId: string): void {
  let blame: TaskState | null = null;
  for (const dep of ts.deps) {
    if (dep.state === "erred") {
      blame = dep.exceptionBlame ?? dep;
      break;
    }
  }
  if (ts.state === "queued" || ts.state === "no-worker") s._noWorker().delete(ts);
  for (const dep of ts.deps) ts.waitingOn.delete(dep);
  ts.exceptionBlame = blame;
  if (blame) {
    ts.exception = blame.exception;
    ts.traceback = blame.traceback;
  } else if (!ts.exception) {
    ts.exception = "Error: a dependency failed";
  }
  erredCommon(s, ts, stimulusId);
}

function erredCommon(s: SchedulerState, ts: TaskState, stimulusId: string): void {
  s._set(ts, "erred", stimulusId, { exception: ts.exception ?? "", traceback: ts.traceback ?? "" });
  for (const dts of ts.dependentTasks) {
    if (dts.state !== "erred" && dts.state !== "memory" && dts.state !== "forgotten") s._recommend(dts, "erred");
  }
  releaseDependencies(s, ts, true);
}

const transitions: Record<string, TransitionFn> = {
  "released>waiting"(s, ts, stimulusId) {
    ts.exception = null;
    ts.traceback = null;
    ts.exceptionBlame = null;
    let erredDep = false;
    for (const dep of ts.deps) {
      dep.waiters.add(ts);
      if (dep.state === "erred") erredDep = true;
      if (dep.state !== "memory") {
        ts.waitingOn.add(dep);
        if (dep.state === "released") s._recommend(dep, "waiting");
      }
    }
    s._set(ts, "waiting", stimulusId);
    if (erredDep) s._recommend(ts, "erred");
    else if (ts.waitingOn.size === 0) s._recommend(ts, "processing");
  },
  "released>forgotten"(s, ts, stimulusId) {
    forget(s, ts, stimulusId);
  },
  "released>erred": toErredByDependency,
  "waiting>processing": toProcessing,
  "waiting>erred": toErredByDependency,
  "waiting>released"(s, ts, stimulusId) {
    ts.waitingOn.clear();
    s._set(ts, "released", stimulusId);
    releaseDependencies(s, ts);
    releasedOrForgotten(s, ts);
  },
  "queued>processing": toProcessing,
  "queued>released"(s, ts, stimulusId) {
    s._set(ts, "released", stimulusId);
    releaseDependencies(s, ts);
    releasedOrForgotten(s, ts);
  },
  "queued>erred": toErredByDependency,
  "no-worker>processing": toProcessing,
  "no-worker>released"(s, ts, stimulusId) {
    s._noWorker().delete(ts);
    s._set(ts, "released", stimulusId);
    releaseDependencies(s, ts);
    releasedOrForgotten(s, ts);
  },
  "no-worker>erred": toErredByDependency,
  "processing>memory"(s, ts, stimulusId) {
    // taskFinished checked that the result came from the worker processing the task.
    const ws = ts.processingOn!;
    ws.processingTasks.delete(ts);
    ts.processingOn = null;
    ts.whoHas.add(ws);
    ws.heldTasks.add(ts);
    ws.nbytes += ts.nbytes;
    s._set(ts, "memory", stimulusId, { worker: ws.name, nbytes: ts.nbytes });
    for (const dts of ts.dependentTasks) {
      dts.waitingOn.delete(ts);
      if (dts.waitingOn.size === 0 && dts.state === "waiting") s._recommend(dts, "processing");
    }
    for (const dep of ts.deps) {
      dep.waiters.delete(ts);
      if (dep.waiters.size === 0 && dep.whoWants.size === 0) s._recommend(dep, "released");
    }
    if (ts.waiters.size === 0 && ts.whoWants.size === 0) s._recommend(ts, "released");
  },
  "processing>erred"(s, ts, stimulusId) {
    const ws = ts.processingOn;
    if (ws) ws.processingTasks.delete(ts);
    ts.processingOn = null;
    erredCommon(s, ts, stimulusId);
  },
  "processing>released"(s, ts, stimulusId) {
    const ws = ts.processingOn;
    if (ws) {
      ws.processingTasks.delete(ts);
      if (ws.status !== "closing") s._send(ws, { op: "free", keys: [ts.key], stimulusId });
    }
    ts.processingOn = null;
    s._set(ts, "released", stimulusId);
    releaseDependencies(s, ts);
    releasedOrForgotten(s, ts);
  },
  "memory>released"(s, ts, stimulusId) {
    dropResult(s, ts, stimulusId);
    s._set(ts, "released", stimulusId);
    for (const dts of ts.dependentTasks) {
      if (dts.state === "waiting") dts.waitingOn.add(ts);
    }
    releasedOrForgotten(s, ts);
  },
  "memory>forgotten"(s, ts, stimulusId) {
    dropResult(s, ts, stimulusId);
    forget(s, ts, stimulusId);
  },
  "erred>released"(s, ts, stimulusId) {
    freeErred(s, ts, stimulusId);
    ts.exception = null;
    ts.traceback = null;
    ts.exceptionBlame = null;
    s._set(ts, "released", stimulusId);
    for (const dts of ts.dependentTasks) {
      if (dts.state === "erred") s._recommend(dts, "released");
    }
    releasedOrForgotten(s, ts);
  },
  "erred>forgotten"(s, ts, stimulusId) {
    freeErred(s, ts, stimulusId);
    forget(s, ts, stimulusId);
  },
};

/** Tells the worker where the task failed to free it (its plugins see error→released→forgotten). */
function freeErred(s: SchedulerState, ts: TaskState, stimulusId: string): void {
  if (ts.erredOn) s._send(ts.erredOn, { op: "free", keys: [ts.key], stimulusId });
  ts.erredOn = null;
}

/** Tells the holders to free a result and drops the scheduler's copy. */
function dropResult(s: SchedulerState, ts: TaskState, stimulusId: string): void {
  for (const ws of ts.whoHas) {
    ws.heldTasks.delete(ts);
    ws.nbytes -= ts.nbytes;
    s._send(ws, { op: "free", keys: [ts.key], stimulusId });
  }
  ts.whoHas.clear();
  ts.value = undefined;
  ts.hasValue = false;
}

function forget(s: SchedulerState, ts: TaskState, stimulusId: string): void {
  if (ts.dependentTasks.size > 0) {
    // Still needed by live dependents: only release.
    if (ts.state !== "released") s._set(ts, "released", stimulusId);
    return;
  }
  s._set(ts, "forgotten", stimulusId);
  s.counts.forgotten--;
  for (const dep of ts.deps) {
    dep.dependentTasks.delete(ts);
    dep.waiters.delete(ts);
    if (dep.dependentTasks.size === 0 && dep.whoWants.size === 0) s._recommend(dep, "forgotten");
  }
  for (const cs of ts.whoWants) cs.wantedTasks.delete(ts);
  s.tasks.delete(ts.key);
}
