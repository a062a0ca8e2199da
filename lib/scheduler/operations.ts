/**
 * The scheduler's operations: the one table behind both the HTTP routes (routes.ts) and the
 * client socket (client-link.ts). Each takes plain input and returns the answer's payload, or
 * throws a typed error that errors.ts maps to a status in one place.
 *
 * @module
 */
import type { PluginManager } from "../plugins/manager.ts";
import type { WirePluginSpec } from "../plugins/load.ts";
import type { PluginRole, SchedulerApi, SchedulerPlugin } from "../plugins/types.ts";
import { version } from "../protocol.ts";
import { BadRequestError, httpStatus, NotFoundError, NotReadyError, TaskFailedError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import type { LogQuery, LogStore } from "./logs.ts";
import type { LogRecord } from "../logs/record.ts";
import { parseLevel } from "../logs/record.ts";
import { validateGraph, validateGraphSliced, yieldToLoop } from "./graph.ts";
import type { Limits } from "../limits.ts";
import type { NannyLinks } from "./nanny-link.ts";
import type { Registration } from "./remote-plugins.ts";
import type { GatherListResult, GatherResult, Results } from "./results.ts";
import type { ClientState, SchedulerState } from "./state.ts";
import type { WorkerLinks } from "./worker-link.ts";

/** One plugin in `GET /api/v1/plugins`; worker and nanny plugins with their status on each. */
export interface PluginListing {
  name: string;
  use: string;
  status?: Record<string, string>;
}

/** What the operations need of the scheduler. */
export interface OperationsContext {
  readonly state: SchedulerState;
  readonly events: EventLog;
  readonly plugins: PluginManager<SchedulerPlugin>;
  readonly api: SchedulerApi;
  readonly results: Results;
  readonly workers: WorkerLinks;
  readonly nannies: NannyLinks;
  readonly knownModules: ReadonlySet<string>;
  readonly limits: Limits;
  readonly logs: LogStore;
  readonly address: string;
  /** Directory that relative plugin paths resolve against. */
  baseDir(): string;
  /** Applies the state machine's pending effects. */
  apply(): void;
  registerPlugin(spec: WirePluginSpec): Promise<Registration>;
  unregisterPlugin(role: PluginRole, name: string): Promise<boolean>;
  listPlugins(): Record<PluginRole, PluginListing[]>;
  /** Why a nanny's worker is held out (a failed nanny plugin), or null. */
  nannyQuarantine(name: string): string | null;
  restart(): Promise<{ workers: string[]; restarted: number; missing: string[] }>;
  /** Dask's `retire_workers` (retire.ts). */
  retireWorkers(names: string[]): Promise<{ retired: string[] }>;
}

/** The operations, each as callable from HTTP and from the client socket. */
export class Operations {
  #ctx: OperationsContext;

  constructor(context: OperationsContext) {
    this.#ctx = context;
  }

  /**
   * Submits a graph for a client: validated as a whole (GraphError), a held key with another
   * definition refused (ConflictError), plugins' `updateGraph` awaited before the first transition.
   * Graphs are taken one at a time; a big one is validated, added and scheduled in slices of
   * about 10 ms with the event loop free in between (see `SchedulerState.addGraphSlices`).
   */
  submitGraph(client: ClientState, body: unknown): Promise<{ keys: string[] }> {
    const run = this.#intake.then(() => this.#submitGraph(client, body));
    this.#intake = run.catch(() => {});
    return run;
  }

  #intake: Promise<unknown> = Promise.resolve();

  async #submitGraph(client: ClientState, body: unknown): Promise<{ keys: string[] }> {
    const ctx = this.#ctx;
    const state = ctx.state;
    const tasks = (body as { tasks?: unknown } | null)?.tasks;
    const sliced = Array.isArray(tasks) && tasks.length > slicedGraphTasks;
    const context = {
      existing: (key: string) => state.tasks.has(key),
      knownModules: state.workers.size > 0 ? ctx.knownModules : null,
      limits: ctx.limits,
    };
    const graph = sliced ? await validateGraphSliced(body, context) : validateGraph(body, context);
    const stimulusId = state.stimulusId("update-graph");
    const added = sliced ? await runSliced(state.addGraphSlices(client, graph)) : state.addGraph(client, graph);
    if (ctx.plugins.has("updateGraph")) {
      // The tasks exist before the hook and make their first transition after it.
      // Dask's shape: {annotation name: {key: value}}; priorities as the tasks hold them.
      const annotations: Record<string, Record<string, unknown>> = {};
      const priority: Record<string, number> = {};
      for (const t of graph.tasks) {
        for (const name in t.annotations) (annotations[name] ??= {})[t.key] = t.annotations[name];
        const ts = state.tasks.get(t.key);
        if (ts) priority[t.key] = ts.priority;
      }
      await ctx.plugins.callAsync("updateGraph", ctx.api, {
        client: client.id,
        keys: graph.keys,
        tasks: graph.tasks.map((t) => t.key),
        annotations,
        priority,
        stimulusId,
      });
    }
    if (sliced) {
      // Each slice's transitions and messages go out before the next slice is made.
      await runSliced(state.scheduleGraphSlices(added, stimulusId), () => ctx.apply());
    } else {
      state.scheduleGraph(added, stimulusId);
    }
    ctx.apply();
    return { keys: graph.keys };
  }

  /** Waits for keys and answers their values, errors and the keys that are gone. */
  gather(keys: string[]): Promise<GatherResult> {
    return this.#ctx.results.gather(keys);
  }

  /** The same, the values as a list in the keys' order. */
  gatherList(keys: string[]): Promise<GatherListResult> {
    return this.#ctx.results.gather(keys, true);
  }

  /** One key's value, waiting up to `timeoutSeconds`. */
  async result(key: string, timeoutSeconds: number): Promise<{ key: string; value: unknown }> {
    const { state, results } = this.#ctx;
    if (!state.tasks.has(key)) throw new NotFoundError(`Unknown key "${key}"`);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds < 0) throw new BadRequestError(`Invalid timeout "${timeoutSeconds}"`);
    const done = await results.waitForKeys([key], timeoutSeconds * 1000);
    if (!done) throw new NotReadyError("Not finished yet", { key, state: state.tasks.get(key)?.state });
    const result = await results.gather([key]);
    if (key in result.errors) throw new TaskFailedError(result.errors[key].error, { key, traceback: result.errors[key].traceback });
    if (key in result.values) return { key, value: result.values[key] ?? null };
    throw new NotFoundError(`Key "${key}" was released`);
  }

  /** The full state of one task. */
  task(key: string): Record<string, unknown> {
    const ts = this.#ctx.state.tasks.get(key);
    if (!ts) throw new NotFoundError(`Unknown key "${key}"`);
    return ts.toJSON();
  }

  /** The client no longer wants these keys (many of them: in slices, the event loop running between). */
  async release(client: ClientState, keys: string[], options: { mustExist?: boolean } = {}): Promise<Record<string, never>> {
    const { state } = this.#ctx;
    if (options.mustExist) {
      for (const key of keys) if (!state.tasks.has(key)) throw new NotFoundError(`Unknown key "${key}"`);
    }
    const stimulusId = state.stimulusId("client-releases-keys");
    if (keys.length > slicedGraphTasks) await runSliced(state.releaseKeysSlices(client, keys, stimulusId), () => this.#ctx.apply());
    else state.releaseKeys(client, keys, stimulusId);
    this.#ctx.apply();
    return {};
  }

  /** A client left: everything it wanted is released, in slices. */
  async removeClient(id: string): Promise<void> {
    const { state } = this.#ctx;
    await runSliced(state.removeClientSlices(id, state.stimulusId("remove-client")), () => this.#ctx.apply());
    this.#ctx.apply();
  }

  /** Logs an event on a topic. */
  logEvent(topic: string, msg: unknown): { seq: number } {
    // post() checks the event's size and depth (a LimitError, 413/400) before it gets a seq.
    return { seq: this.#ctx.events.post(topic, msg).seq };
  }

  /** Registers a plugin from an API request body (one plugins.toml entry plus `role`). */
  async registerPlugin(body: unknown): Promise<Registration> {
    const { validatePluginRequest } = await import("../plugins/request.ts");
    const spec = validatePluginRequest(body, this.#ctx.baseDir());
    if (spec instanceof Error) throw new BadRequestError(spec.message);
    try {
      return await this.#ctx.registerPlugin(spec);
    } catch (err) {
      // A module that does not load here (not a failed start or setup) is a bad request.
      if (httpStatus(err) === 500) throw new BadRequestError(err instanceof Error ? err.message : String(err), { cause: err });
      throw err;
    }
  }

  /** Unregisters a plugin; NotFoundError for an unknown role or name. */
  async unregisterPlugin(role: string, name: string): Promise<Record<string, never>> {
    if (role !== "scheduler" && role !== "worker" && role !== "nanny") {
      throw new NotFoundError(`Unknown role "${role}": expected scheduler, worker or nanny`);
    }
    if (!(await this.#ctx.unregisterPlugin(role, name))) throw new NotFoundError(`No ${role} plugin named "${name}"`);
    return {};
  }

  /** The registered plugins of every role. */
  listPlugins(): Record<PluginRole, PluginListing[]> {
    return this.#ctx.listPlugins();
  }

  /**
   * Dask's `client.restart()`: answers once every nanny's worker is back; a RequestError
   * (`E_TIMEOUT`, 504) naming the workers that are not.
   */
  restart(): Promise<{ workers: string[]; restarted: number; missing: string[] }> {
    return this.#ctx.restart();
  }

  /** Forwarded log records (`GET /api/v1/logs`): a bad `since` or `level` is a BadRequestError. */
  logs(query: { worker?: string; since?: string; level?: string }): LogRecord[] {
    const q: LogQuery = {};
    if (query.worker) q.worker = query.worker;
    if (query.since !== undefined && query.since !== "") {
      const since = Number(query.since);
      if (!Number.isFinite(since)) throw new BadRequestError(`Invalid since "${query.since}"`);
      q.since = since;
    }
    if (query.level !== undefined && query.level !== "") {
      const level = parseLevel(query.level);
      if (!level) throw new BadRequestError(`Invalid level "${query.level}": expected debug, info, warn or error`);
      q.level = level;
    }
    return this.#ctx.logs.query(q);
  }

  /** Dask's `retire_workers`: `{"workers": [names]}` → `{retired: [names]}`. */
  async retireWorkers(body: unknown): Promise<{ retired: string[] }> {
    const { retireRequest } = await import("./retire.ts");
    return await this.#ctx.retireWorkers(retireRequest(body));
  }

  /** What `GET /api/v1/info` answers. */
  info(): Record<string, unknown> {
    const { state, workers, nannies, events } = this.#ctx;
    const nannyByWorker = nannies.byWorker();
    const tasks: Record<string, number> = {};
    for (const [name, n] of Object.entries(state.counts)) if (name !== "forgotten") tasks[name] = n;
    const plugins = this.listPlugins();
    return {
      address: this.#ctx.address,
      version,
      workers: [...state.workers.values()].map((w) => ({
        name: w.name,
        address: w.address,
        nthreads: w.nthreads,
        status: w.status,
        ...(w.quarantine ? { quarantine: w.quarantine } : {}),
        nanny: w.nanny,
        processing: w.processingTasks.size,
        memory: w.heldTasks.size,
        nbytes: w.nbytes,
        pid: w.pid,
        rss: workers.conns.get(w.name)?.rss ?? 0,
        restarts: nannyByWorker.get(w.name)?.restarts ?? workers.conns.get(w.name)?.restarts ?? 0,
        held: w.heldTasks.size,
        ...workers.metrics.infoFields(w.name),
      })),
      nannies: [...nannies.conns.values()].map((n) => {
        const quarantine = this.#ctx.nannyQuarantine(n.name);
        return { name: n.name, address: n.address, pid: n.pid, worker: n.workerName, restarts: n.restarts, ...(quarantine ? { quarantine } : {}) };
      }),
      tasks,
      plugins: {
        scheduler: plugins.scheduler.map((p) => p.name),
        worker: plugins.worker.map((p) => p.name),
        nanny: plugins.nanny.map((p) => p.name),
      },
      clients: state.clients.size,
      events: { lastSeq: events.lastSeq, subscribers: events.subscriberCount },
      logs: { lastSeq: this.#ctx.logs.lastSeq },
    };
  }
}

/** Graphs of more tasks than this are taken in slices (smaller ones take well under 50 ms). */
export const slicedGraphTasks = 20_000;

/**
 * Runs a generator of slices: about 10 ms of them at a time, then the event loop runs (timers,
 * sockets, `/health`) before the next; `between` runs after every slice (applies its effects).
 */
async function runSliced<T>(steps: Generator<unknown, T>, between?: () => void, sliceMs = 10): Promise<T> {
  for (;;) {
    const t0 = performance.now();
    while (performance.now() - t0 < sliceMs) {
      const next = steps.next();
      between?.();
      if (next.done) return next.value;
    }
    await yieldToLoop();
  }
}
