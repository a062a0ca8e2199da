/**
 * The public plugin API: the three plugin kinds (scheduler, worker, nanny), the objects their
 * hooks receive, and `define*` identity helpers that give plugin authors types with no run-time
 * import. A plugin module may `import type` from here and nothing else from the host.
 *
 * @module
 */

/** The roles a plugin can be registered for. */
export type PluginRole = "scheduler" | "worker" | "nanny";

/** Dask's scheduler task states. */
export type SchedulerTaskStateName =
  | "released"
  | "waiting"
  | "no-worker"
  | "queued"
  | "processing"
  | "memory"
  | "erred"
  | "forgotten";

/** Dask's worker task states. */
export type WorkerTaskStateName =
  | "released"
  | "waiting"
  | "ready"
  | "executing"
  | "memory"
  | "error"
  | "fetch"
  | "flight"
  | "forgotten";

/**
 * One measured span of a task's life (Dask's `startstops`): `compute` on the worker that ran it,
 * `transfer` for fetching its dependencies from peers. Unix seconds.
 */
export interface Startstop {
  action: "compute" | "transfer";
  start: number;
  stop: number;
}

/** What a `transition` hook receives besides key, start and finish. */
export interface TransitionInfo {
  stimulusId: string;
  /** The worker the task runs on (→processing) or is held by (→memory). */
  worker?: string;
  /** Size of the result in bytes (→memory). */
  nbytes?: number;
  /** The error message (→erred / →error). */
  exception?: string;
  /** The stack of the error (→erred / →error). */
  traceback?: string;
  /** Compute and transfer spans of the attempt that finished (→memory, →erred; worker: →memory, →error). */
  startstops?: Startstop[];
}

/** The full state of one task at the scheduler ("Accessing Full Task State" in Dask). */
export interface TaskStateView {
  readonly key: string;
  readonly state: SchedulerTaskStateName;
  readonly fn: string;
  readonly dependencies: ReadonlySet<string>;
  readonly dependents: ReadonlySet<string>;
  /** The worker processing the task, or the first that holds its result. */
  readonly worker: string | null;
  readonly nbytes: number;
  readonly exception: string | null;
  readonly traceback: string | null;
  readonly annotations: Record<string, unknown>;
  readonly priority: number;
  readonly retries: number;
  /** Dask's `key_split`: the key without its index and hashes (`inc-3` → `inc`). */
  readonly prefix: string;
  /** Dask's task group name: the key without its last `-N` index (`x-y-3` → `x-y`). */
  readonly group: string;
  /** Ids of the clients that want this result. */
  readonly whoWants: ReadonlySet<string>;
  /** Keys of the workers that hold the result. */
  readonly whoHas: ReadonlySet<string>;
  /** Compute and transfer spans of the last finished attempt (empty before one finished). */
  readonly startstops: readonly Startstop[];
  /** Worker deaths while it ran (Dask's `suspicious`). */
  readonly suspicious: number;
}

/** One worker as the scheduler sees it. */
export interface WorkerView {
  readonly name: string;
  readonly address: string;
  readonly nthreads: number;
  readonly status: string;
  readonly nanny: boolean;
  /** Keys processing on this worker. */
  readonly processing: ReadonlySet<string>;
  /** Keys whose results this worker holds. */
  readonly hasWhat: ReadonlySet<string>;
}

/** One client as the scheduler sees it. */
export interface ClientView {
  readonly id: string;
  /** Keys this client wants held. */
  readonly wants: ReadonlySet<string>;
}

/** The scheduler object handed to scheduler plugin hooks and `clusterSetup`. */
export interface SchedulerApi {
  readonly role: "scheduler";
  readonly address: string;
  readonly tasks: ReadonlyMap<string, TaskStateView>;
  readonly workers: ReadonlyMap<string, WorkerView>;
  readonly clients: ReadonlyMap<string, ClientView>;
  /** The scheduler's own directory for files (upload-directory with `target` "scheduler" or "both"). */
  readonly localDirectory: string;
  logEvent(topic: string, msg: Record<string, unknown>): void;
  /** An event's JSON text, made once however many plugins and subscribers need it. */
  eventJson(event: Record<string, unknown>): string;
  /**
   * Receives the event log's events once per tick as a batch whose JSON (lines, lines in UTF-8,
   * or an array) is made once for every subscriber; `topics` null for all. Returns an
   * unsubscribe.
   */
  subscribeEvents?(
    topics: ReadonlySet<string> | null,
    deliver: (batch: { readonly length: number; jsonLines(): string; jsonLinesBytes(): Uint8Array; jsonArray(): string }) => void,
  ): () => void;
  addPlugin(plugin: SchedulerPlugin): Promise<void>;
  removePlugin(name: string): Promise<void>;
  readonly log: Logger;
}

/** The worker object handed to worker plugin hooks and `clusterSetup`. */
export interface WorkerApi {
  readonly role: "worker";
  readonly name: string;
  readonly address: string;
  /** Results held by this worker. */
  readonly data: ReadonlyMap<string, unknown>;
  readonly localDirectory: string;
  logEvent(topic: string, msg: Record<string, unknown>): void;
  /** Loads a module whose exports become task functions `MODULE.EXPORT`. */
  loadTaskModule(path: string): Promise<string>;
  /** Adds a named executor; tasks annotated `{"executor": name}` run in it. */
  addExecutor(name: string, executor: Executor): void;
  /** Removes a named executor (tasks annotated with it then fail as unknown). */
  removeExecutor(name: string): void;
  readonly log: Logger;
}

/** The nanny object handed to nanny plugin hooks and `clusterSetup`. */
export interface NannyApi {
  readonly role: "nanny";
  readonly name: string;
  readonly address: string;
  readonly localDirectory: string;
  /** Environment variables the worker process is started with. */
  readonly env: Record<string, string>;
  /** Directories added to the worker's task-module search path. */
  readonly taskPaths: string[];
  /** Restarts the worker process (after the current setup finished). */
  restartWorker(reason: string): Promise<void>;
  readonly log: Logger;
}

/** Runs task functions somewhere else than the worker's event loop. */
export interface Executor {
  run(fn: string, args: unknown[], options: { modules: string[] }): Promise<unknown>;
  close(): Promise<void>;
}

/** A minimal logger; messages go to stderr. */
export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

interface PluginBase {
  /** Unique name; defaults to the module or built-in name. */
  name?: string;
  /** An idempotent plugin registered again under the same name is kept as it is. */
  idempotent?: boolean;
}

/** Dask's SchedulerPlugin, camelCased. Every hook is optional. */
export interface SchedulerPlugin extends PluginBase {
  start?(scheduler: SchedulerApi): void | Promise<void>;
  beforeClose?(): void | Promise<void>;
  close?(): void | Promise<void>;
  updateGraph?(scheduler: SchedulerApi, graph: UpdateGraphInfo): void | Promise<void>;
  restart?(scheduler: SchedulerApi): void | Promise<void>;
  /** Called synchronously after every task state change. */
  transition?(key: string, start: SchedulerTaskStateName, finish: SchedulerTaskStateName, info: TransitionInfo): void;
  addWorker?(scheduler: SchedulerApi, worker: string): void | Promise<void>;
  removeWorker?(scheduler: SchedulerApi, worker: string, info: { stimulusId: string }): void | Promise<void>;
  addClient?(scheduler: SchedulerApi, client: string): void | Promise<void>;
  removeClient?(scheduler: SchedulerApi, client: string): void | Promise<void>;
  /** Called synchronously for every event on every topic. */
  logEvent?(topic: string, msg: Record<string, unknown>): void;
  /**
   * Which of `workers` (names) may be retired now (`POST /api/v1/workers/retire`): return the
   * list, narrowed; a worker left out is not retired.
   */
  validWorkersDownscaling?(scheduler: SchedulerApi, workers: string[]): string[] | Promise<string[]>;
}

/** What `updateGraph` receives. */
export interface UpdateGraphInfo {
  client: string;
  keys: string[];
  tasks: string[];
  annotations: Record<string, Record<string, unknown>>;
  priority: Record<string, number>;
  stimulusId: string;
}

/** Dask's WorkerPlugin, camelCased. Every hook is optional. */
export interface WorkerPlugin extends PluginBase {
  setup?(worker: WorkerApi): void | Promise<void>;
  teardown?(worker: WorkerApi): void | Promise<void>;
  /** Called synchronously after every worker-side task state change. */
  transition?(key: string, start: WorkerTaskStateName, finish: WorkerTaskStateName, info: TransitionInfo): void;
}

/** Dask's NannyPlugin, camelCased. Every hook is optional. */
export interface NannyPlugin extends PluginBase {
  setup?(nanny: NannyApi): void | Promise<void>;
  teardown?(nanny: NannyApi): void | Promise<void>;
  /** Restart the worker after `setup` ran. */
  restart?: boolean;
}

/** Any plugin. */
export type Plugin = SchedulerPlugin | WorkerPlugin | NannyPlugin;

/** What a plugin class or factory receives besides its options. */
export interface PluginContext {
  role: PluginRole;
  /** The directory of the plugins.toml (or the cwd), for resolving relative paths. */
  baseDir: string;
  /** Files sent along with the registration, by option name (upload-file, upload-directory). */
  files: Record<string, Uint8Array>;
  log: Logger;
}

/**
 * Gives a scheduler plugin its type; returns its argument.
 *
 * @example
 * ```ts
 * import type {} from "cluster/lib/plugins/types.ts";
 * export default defineSchedulerPlugin({ name: "count", transition() {} });
 * ```
 */
export function defineSchedulerPlugin<T extends SchedulerPlugin>(plugin: T): T {
  return plugin;
}

/** Gives a worker plugin its type; returns its argument. */
export function defineWorkerPlugin<T extends WorkerPlugin>(plugin: T): T {
  return plugin;
}

/** Gives a nanny plugin its type; returns its argument. */
export function defineNannyPlugin<T extends NannyPlugin>(plugin: T): T {
  return plugin;
}
