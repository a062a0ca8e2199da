/**
 * The worker process: one WebSocket out to the scheduler, a small HTTP server for peers' data
 * requests, task execution, worker plugins, and reconnection. What to run, when, and what to tell
 * the scheduler is decided by the state machine in state.ts; this file carries out its
 * instructions (execute, gather-dep, send) and feeds back what happened as stimuli.
 *
 * @module
 */
import { Hono } from "hono";
import { mkdir, readdir } from "node:fs/promises";
import { hostname } from "node:os";
import { delimiter, join } from "node:path";
import { setImmediate } from "node:timers";
import { errorMessage, PluginError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { instantiatePlugin, type WirePluginSpec } from "../plugins/load.ts";
import { preloadSpecs } from "../plugins/preload.ts";
import { PluginManager } from "../plugins/manager.ts";
import type { Executor, WorkerApi, WorkerPlugin } from "../plugins/types.ts";
import type { DepInfo, PluginFailure, SchedulerToWorker, WorkerToScheduler } from "../messages/worker.ts";
import { inlineLimitBytes, type Message, sizeOf, version } from "../protocol.ts";
import { type PeerAuth, peerToken, type Sealed, unseal } from "../auth/handshake.ts";
import { Requests } from "../rpc.ts";
import { chooseDataHost } from "../address.ts";
import { runtime, type RunningServer, type ServerTls } from "../runtime/mod.ts";
import { SchedulerSession } from "../session.ts";
import { PeerData } from "./peer-data.ts";
import { withLiveFields } from "../live.ts";
import { TaskFunctions } from "./task-functions.ts";
import { cpuMeter } from "./cpu.ts";
import { TaskContextImpl } from "./task-context.ts";
import { LogForwarder } from "../logs/forwarder.ts";
import { type Instruction, type Stimulus, type WorkerTask, WorkerState } from "./state.ts";
import { resolveRefs, unixSeconds } from "./values.ts";
import { localDirectory, removeOwnDirectory } from "../local-directory.ts";

export { resolveRefs };

/** Options of `cluster worker`. */
export interface WorkerOptions {
  scheduler: string;
  /** @default `${hostname}-${pid}` */
  name?: string;
  /** @default 1 */
  nthreads?: number;
  /** @default the address this host reaches the scheduler from */
  host?: string;
  /** @default 0 */
  port?: number;
  /** The worker's own plugins (plugins.toml `[worker]`). */
  plugins?: WirePluginSpec[];
  /** Modules (paths or http(s) URLs) with `clusterSetup(worker, options)`. */
  preload?: string[];
  /** The `options` every preload's `clusterSetup` gets (`--preload-options`). */
  preloadOptions?: Record<string, unknown>;
  /** Task modules (`--tasks`). */
  tasks?: string[];
  localDirectory?: string;
  /** Started by a nanny. */
  nanny?: boolean;
  /** The data address announced to the scheduler and peers, when not the listening one (NAT). */
  contactAddress?: string;
  /** How long to keep trying to reach the scheduler at start-up. @default 10000 */
  connectTimeoutMs?: number;
  baseDir?: string;
  /** Serve the data endpoint with https (`--tls-cert`, `--tls-key`). */
  tls?: ServerTls;
  /** Close after the scheduler was lost this long (`--death-timeout`); 0 or absent: never. */
  deathTimeoutMs?: number;
}

const log = createLogger("worker");

/** What the scheduler sends, plus the op an older scheduler answers `relay` with. */
type FromScheduler = SchedulerToWorker;

/** A task's own time budget per tick before the event loop gets a turn (ms). */
const tickBudgetMs = 8;

/**
 * A running worker.
 *
 * @example
 * ```ts
 * const worker = await Worker.start({ scheduler: "http://127.0.0.1:8786" });
 * await worker.close();
 * ```
 */
export class Worker {
  readonly name: string;
  readonly nthreads: number;
  address = "";
  localDirectory = "";
  readonly state: WorkerState;
  readonly plugins: PluginManager<WorkerPlugin>;
  readonly api: WorkerApi;
  #options: WorkerOptions;
  #session: SchedulerSession;
  #server: RunningServer | null = null;
  #outbox: WorkerToScheduler[] = [];
  #flushScheduled = false;
  /** Instructions not yet carried out; `#head` is the next one. */
  #instructions: Instruction[] = [];
  #head = 0;
  #draining = false;
  #drainScheduled = false;
  #functions = new TaskFunctions();
  /** Counts stimuli for ids like Dask's `task-finished-…`. */
  #stimuli = 0;
  #executors = new Map<string, Executor>();
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  /** Log records on their way to the scheduler (CLUSTER_FORWARD_LOGS=0 turns it off). */
  #logs = new LogForwarder({ role: "worker" });
  #cpu = cpuMeter();
  #closing: Promise<void> | null = null;
  #registered = false;
  /** Our requests to the scheduler (relay). */
  #requests = new Requests({ peer: "the scheduler", timeoutMs: 30_000 });
  /** Results served to and fetched from peers (signed with the peer key when there is a token). */
  #peers: PeerData;
  /** The worker closed because its scheduler did not come back within `--death-timeout`. */
  gaveUp = false;
  #pendingLocal: WirePluginSpec[] = [];
  /**
   * Plugin set-ups and teardowns run one after the other, in the order the scheduler sent them:
   * a removal that arrives while the welcome's set-ups run waits for them, so nothing it
   * removes is set up after it.
   */
  #pluginChain: Promise<unknown> = Promise.resolve();
  #onClosed: Array<() => void> = [];
  #resolveClosed!: () => void;
  /** Resolves when the worker has closed (signal, or the scheduler asked). */
  readonly closed: Promise<void> = new Promise((r) => (this.#resolveClosed = r));

  private constructor(options: WorkerOptions) {
    this.#options = options;
    this.name = options.name ?? `${hostname()}-${process.pid}`;
    this.state = new WorkerState({ nthreads: options.nthreads, inlineLimit: inlineLimitBytes });
    this.nthreads = this.state.nthreads;
    this.#peers = new PeerData({ token: peerToken("worker"), data: this.state.data, log });
    this.#session = new SchedulerSession({
      scheduler: options.scheduler,
      path: "/api/v1/worker",
      role: "worker",
      register: () => this.#registerMessage(),
      welcome: (msg, auth) => this.#welcome(msg, auth),
      message: (msg) => this.#handle(msg as unknown as FromScheduler),
      lost: () => this.#lost(),
      deathTimeoutMs: options.deathTimeoutMs,
      gaveUp: () => {
        this.gaveUp = true;
        this.close();
      },
      log,
    });
    this.plugins = new PluginManager<WorkerPlugin>((name, hook, err) => {
      log.error(`Plugin "${name}" failed in ${hook}: ${errorMessage(err)}`);
      this.#send({ op: "plugin-error", plugin: name, hook, error: errorMessage(err) });
    });
    this.api = withLiveFields({
      role: "worker" as const,
      data: this.state.data,
      logEvent: (topic: string, msg: Record<string, unknown>) => this.#send({ op: "event", topic, msg }),
      loadTaskModule: (path: string) => this.loadTaskModule(path),
      addExecutor: (name: string, executor: Executor) => {
        this.#executors.set(name, executor);
      },
      removeExecutor: (name: string) => {
        this.#executors.delete(name);
      },
      log: log.child("plugin"),
    }, this as Worker, ["name", "address", "localDirectory"]);
  }

  /** Starts a worker: data server, local plugins, task modules, then registration. */
  static async start(options: WorkerOptions): Promise<Worker> {
    const worker = new Worker(options);
    await worker.#start();
    return worker;
  }

  async #start(): Promise<void> {
    const opts = this.#options;
    if (process.env.CLUSTER_FORWARD_LOGS !== "0") this.#logs.attach();
    // URL preloads are fetched once, before anything listens: a failed fetch stops the start.
    const preloads = await preloadSpecs(opts.preload ?? [], "worker", opts.preloadOptions);
    this.localDirectory = localDirectory(opts.localDirectory, "worker", this.name);
    await mkdir(this.localDirectory, { recursive: true });
    // Data address (see lib/address.ts): without --host, the address this host reaches the scheduler from.
    const connectDeadline = Date.now() + (opts.connectTimeoutMs ?? 10_000);
    const data = await chooseDataHost(opts.host, opts.scheduler, connectDeadline, (m) => log.warn(m));
    this.#server = await runtime.serve(this.#routes(), { hostname: data.listen, port: opts.port ?? 0, tls: opts.tls });
    this.address = opts.contactAddress ?? `${this.#server.protocol}://${data.announce}:${this.#server.port}`;
    for (const path of opts.tasks ?? []) await this.loadTaskModule(path);
    // Directories a nanny plugin (upload-directory with updatePath) made importable.
    for (const dir of (process.env.CLUSTER_TASK_PATHS ?? "").split(delimiter).filter(Boolean)) {
      for (const file of await readdir(dir).catch(() => [] as string[])) {
        if (/\.(m?[jt]s)$/.test(file) && !file.endsWith(".d.ts")) await this.loadTaskModule(join(dir, file));
      }
    }
    if (opts.nanny) {
      // Our nanny holds our stdin: when it is gone, so are we.
      process.stdin.on("end", () => this.close().then(() => process.exit(0)));
      process.stdin.on("error", () => {});
      process.stdin.resume();
    }
    this.#pendingLocal = [...(opts.plugins ?? [])];
    this.#pendingLocal.push(...preloads);
    // Local plugins are set up once, before the first registration; failing ones stop the
    // start, every failure logged and named (Dask's test_plugin_multiple_exceptions).
    const failures: string[] = [];
    for (const spec of this.#pendingLocal) {
      const error = await this.#addPlugin(spec, opts.baseDir ?? process.cwd());
      if (error) {
        log.error(`Plugin "${spec.name ?? spec.use}" failed to set up: ${error}`);
        failures.push(error);
      }
    }
    if (failures.length > 0) {
      await this.plugins.closeAll((p) => p.teardown?.(this.api));
      await this.#server.stop();
      throw new PluginError(this.#pendingLocal[0].name ?? this.#pendingLocal[0].use, failures.join("; "));
    }
    await this.#session.connect(Math.max(1, connectDeadline - Date.now()));
    this.#heartbeat = setInterval(() => this.#beat(), 1000);
  }

  /** A heartbeat with CPU and memory, then the log records of the last second. */
  #beat(): void {
    this.#send({ op: "heartbeat", rss: process.memoryUsage().rss, cpu: this.#cpu(), executing: this.state.executing, ready: this.state.readyCount });
    const records = this.#registered ? this.#logs.take() : [];
    if (records.length > 0) this.#send({ op: "logs", records });
  }

  /** Loads a module whose exports become the task functions `MODULE.EXPORT`; returns MODULE. */
  async loadTaskModule(path: string): Promise<string> {
    const { name, count } = await this.#functions.load(path);
    if (this.#registered) this.#send({ op: "modules", modules: [name] });
    log.info(`Loaded task module "${name}" (${count} functions)`);
    return name;
  }

  // ---- connection ----------------------------------------------------------------------------

  #registerMessage(): Message {
    return {
      op: "register",
      name: this.name,
      nthreads: this.nthreads,
      address: this.address,
      nanny: !!this.#options.nanny,
      pid: process.pid,
      modules: this.#functions.moduleNames(),
      restarts: Number(process.env.CLUSTER_WORKER_RESTARTS ?? 0),
      version,
      records: true, // it reads frames in cbor-x's record extension (protocol.ts)
    };
  }

  async #welcome(msg: Message, auth: PeerAuth): Promise<void> {
    this.#peers.key = auth.sessionKey && msg.peerKey ? unseal(msg.peerKey as Sealed, auth.sessionKey) : null;
    // Plugins registered at the scheduler: set up before this worker accepts any task. A plugin
    // that fails here is reported in `ready`: the scheduler quarantines the worker (no task).
    const failed = await this.#serially(async () => {
      const out: PluginFailure[] = [];
      for (const spec of (msg.plugins as WirePluginSpec[]) ?? []) {
        const error = await this.#addPlugin(spec, this.localDirectory);
        if (error) {
          const plugin = spec.name ?? spec.use;
          log.error(`Plugin "${plugin}" failed to set up: ${error}`);
          out.push({ plugin, error });
        }
      }
      return out;
    });
    this.#registered = true;
    // Task modules that welcome-time plugins (upload-file) loaded were not announced yet.
    this.#send({ op: "modules", modules: this.#functions.moduleNames() });
    this.#send(failed.length > 0 ? { op: "ready", failed } : { op: "ready" });
    this.#flush();
    log.info(`Registered with the scheduler at ${this.#options.scheduler} as "${this.name}"`);
  }

  /** The scheduler was lost: it forgets this worker's tasks, so drop them too. */
  #lost(): void {
    this.#registered = false;
    this.state.reset();
    this.#outbox = [];
    this.#requests.rejectAll("connection lost");
  }

  #send(msg: WorkerToScheduler): void {
    this.#outbox.push(msg);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#outbox.length === 0 || !this.#session.isOpen) return;
    const box = this.#outbox;
    this.#outbox = [];
    this.#session.send(box);
  }

  #handle(msg: FromScheduler): void {
    switch (msg.op) {
      case "compute":
        this.#stimulus({
          op: "compute-task",
          key: msg.key,
          fn: msg.fn,
          args: msg.args,
          deps: msg.deps,
          annotations: msg.annotations,
          priority: msg.priority,
          stimulusId: msg.stimulusId,
        });
        break;
      case "free":
        this.#stimulus({ op: "free-keys", keys: msg.keys, stimulusId: msg.stimulusId });
        break;
      case "get-data": {
        const data: Record<string, unknown> = {};
        for (const key of msg.keys) if (this.state.data.has(key)) data[key] = this.state.data.get(key);
        this.#send({ op: "reply", id: msg.id, data });
        break;
      }
      case "reply":
        this.#requests.settle(msg);
        break;
      case "acquire-data":
        this.#acquireData(msg.id, msg.deps);
        break;
      case "plugin-add":
        this.#serially(() => this.#addPlugin(msg.spec, this.localDirectory)).then((error) => {
          if (error) log.error(`Plugin "${msg.spec.name ?? msg.spec.use}" failed to set up: ${error}`);
          this.#send(error ? { op: "reply", id: msg.id, error } : { op: "reply", id: msg.id });
        });
        break;
      case "plugin-remove":
        this.#serially(() => this.plugins.remove(msg.name, (p) => p.teardown?.(this.api))).then(() => {
          this.state.recordTransitions = this.plugins.has("transition");
          this.#send({ op: "reply", id: msg.id });
        });
        break;
      case "close":
        log.info(`The scheduler asks to close: ${msg.reason ?? ""}`);
        this.close();
        break;
      default:
        log.warn(`Unknown message "${(msg as Message).op}" from the scheduler`);
    }
  }

  /** Runs a plugin set-up or teardown after those before it. */
  #serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#pluginChain.then(run, run);
    this.#pluginChain = next.catch(() => {});
    return next;
  }

  /** Adds a plugin; returns an error message or null. Same name replaces (teardown first). */
  async #addPlugin(spec: WirePluginSpec, baseDir: string): Promise<string | null> {
    try {
      const loaded = await instantiatePlugin<WorkerPlugin>(spec, {
        baseDir,
        // Under packages/ (where package-install puts node_modules): a shipped module's bare imports resolve there.
        moduleDir: join(this.localDirectory, "packages", "plugins"),
        log: log.child(`plugin:${spec.name ?? spec.use}`),
      });
      await this.plugins.add({ ...loaded, spec }, {
        start: (p) => p.setup?.(this.api),
        teardown: (p) => p.teardown?.(this.api),
      });
      this.state.recordTransitions = this.plugins.has("transition");
      return null;
    } catch (err) {
      return errorMessage(err);
    }
  }

  // ---- carrying out the state machine's instructions -----------------------------------------

  #stimulus(stimulus: Stimulus): void {
    const out = this.state.handleStimulus(stimulus);
    if (out.length > 0) {
      for (let i = 0; i < out.length; i++) this.#instructions.push(out[i]);
      this.#drain();
    }
    // A closing worker waits for its running tasks (a cancelled one finishes with no instruction).
    if (this.#onClosed.length > 0 && this.state.executing === 0) for (const cb of this.#onClosed.splice(0)) cb();
  }

  /**
   * Carries out queued instructions in order. A synchronous task's result feeds the next
   * stimulus from inside this loop (no recursion); after `tickBudgetMs` of work the rest waits a
   * tick, so the network gets a turn (send what is done, take new messages).
   */
  #drain(): void {
    if (this.#draining || this.#drainScheduled) return;
    this.#draining = true;
    const started = performance.now();
    try {
      while (this.#head < this.#instructions.length) {
        const ins = this.#instructions[this.#head++];
        switch (ins.op) {
          case "execute":
            this.#execute(ins.task);
            break;
          case "send":
            this.#send(ins.msg);
            break;
          case "gather-dep":
            this.#gatherDep(ins.who, ins.keys);
            break;
          case "transition":
            this.plugins.callSync("transition", ins.key, ins.start, ins.finish, ins.info);
            break;
        }
        if (ins.op === "execute" && performance.now() - started > tickBudgetMs) {
          this.#drainScheduled = true;
          setTimeout(() => {
            this.#drainScheduled = false;
            this.#drain();
          }, 0);
          break;
        }
      }
    } finally {
      this.#draining = false;
    }
    if (this.#head === this.#instructions.length) {
      this.#instructions = [];
      this.#head = 0;
    } else if (this.#head > 1024) {
      this.#instructions = this.#instructions.slice(this.#head);
      this.#head = 0;
    }
  }

  #execute(task: WorkerTask): void {
    const start = performance.now();
    let result: unknown;
    try {
      const args = task.depValues ? resolveRefs(task.args, task.depValues) as unknown[] : task.args;
      const executor = task.annotations?.executor;
      if (typeof executor === "string" && executor !== "default") {
        const ex = this.#executors.get(executor);
        if (!ex) throw new Error(`Unknown executor "${executor}" (add one with the process-pool plugin)`);
        result = ex.run(task.fn, args, { modules: this.#functions.modulePaths() });
      } else {
        const fn = this.#functions.get(task.fn);
        if (!fn) throw new Error(`Unknown task function "${task.fn}" on worker "${this.name}"`);
        // `this` is the task's context (lib/worker/task-context.ts): logEvent and log.
        result = (fn as (...a: unknown[]) => unknown).call(new TaskContextImpl(task.key, this.api), ...args);
      }
    } catch (err) {
      this.#failed(task.key, err, start);
      return;
    }
    if (result instanceof Promise || (result !== null && typeof result === "object" && typeof (result as PromiseLike<unknown>).then === "function")) {
      (result as Promise<unknown>).then((value) => this.#succeeded(task.key, value, start), (err) => this.#failed(task.key, err, start));
    } else {
      this.#succeeded(task.key, result, start);
    }
  }

  #succeeded(key: string, value: unknown, start: number): void {
    const end = performance.now();
    const duration = (end - start) / 1000;
    const nbytes = sizeOf(value ?? null);
    this.#stimulus({
      op: "execute-success", key, value, nbytes, duration, stimulusId: `task-finished-${++this.#stimuli}`,
      start: unixSeconds(start), stop: unixSeconds(end),
    });
  }

  #failed(key: string, err: unknown, start: number): void {
    const end = performance.now();
    const duration = (end - start) / 1000;
    const exception = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const traceback = err instanceof Error ? err.stack ?? "" : "";
    this.#stimulus({
      op: "execute-failure", key, exception, traceback, duration, stimulusId: `task-erred-${++this.#stimuli}`,
      start: unixSeconds(start), stop: unixSeconds(end),
    });
  }

  // ---- data transfer -------------------------------------------------------------------------

  /** Fetches keys from their holder; what it lacks comes through the scheduler (relay). */
  async #gatherDep(who: string, keys: string[]): Promise<void> {
    const start = performance.now();
    const data = await this.#fetch(who, keys);
    const results = new Map<string, unknown>();
    const failed: string[] = [];
    for (const key of keys) {
      if (key in data) results.set(key, data[key]);
      else failed.push(key);
    }
    const stimulusId = `gather-dep-${++this.#stimuli}`;
    if (results.size > 0) {
      this.#stimulus({ op: "gather-dep-success", data: results, stimulusId, start: unixSeconds(start), stop: unixSeconds(performance.now()) });
    }
    if (failed.length > 0) this.#stimulus({ op: "gather-dep-failure", keys: failed, stimulusId });
  }

  /** Keeps results fetched from their holders (moved off a retiring worker); answers the keys got. */
  async #acquireData(id: number, deps: DepInfo[]): Promise<void> {
    const byHolder = new Map<string, string[]>();
    for (const dep of deps) {
      if (this.state.data.has(dep.key)) continue;
      const who = dep.who?.[0] ?? "";
      const list = byHolder.get(who);
      if (list) list.push(dep.key);
      else byHolder.set(who, [dep.key]);
    }
    const got = deps.filter((d) => this.state.data.has(d.key)).map((d) => d.key);
    await Promise.all([...byHolder].map(async ([who, keys]) => {
      const data = await this.#fetch(who, keys);
      for (const key of keys) {
        if (!(key in data)) continue;
        // Held like a result of its own: served to peers, freed when the scheduler says so.
        this.state.data.set(key, data[key]);
        got.push(key);
      }
    }));
    this.#send({ op: "reply", id, keys: got });
  }

  /** Keys from their holder `who` (if any); what it lacks comes through the scheduler (relay). */
  async #fetch(who: string, keys: string[]): Promise<Record<string, unknown>> {
    let data: Record<string, unknown> = {};
    if (who) {
      try {
        data = await this.#peers.fetch(who, keys);
      } catch (err) {
        log.debug(`Peer ${who} unreachable (${errorMessage(err)}); relaying through the scheduler`);
      }
    }
    const missing = keys.filter((k) => !(k in data));
    if (missing.length > 0) Object.assign(data, await this.#relay(missing));
    return data;
  }

  async #relay(keys: string[]): Promise<Record<string, unknown>> {
    try {
      const reply = await this.#requests.send((id) => this.#send({ op: "relay", id, keys }));
      return (reply.data as Record<string, unknown>) ?? {};
    } catch (err) {
      log.debug(`Relay of ${keys.length} keys failed: ${errorMessage(err)}`);
      return {};
    }
  }

  #routes(): Hono {
    const app = new Hono();
    app.get("/health", (c) => c.json({ status: "ok", role: "worker", version, name: this.name }));
    app.post("/api/v1/data", (c) => this.#peers.serve(c));
    return app;
  }

  // ---- close ---------------------------------------------------------------------------------

  /** Closes gracefully: running tasks finish (bounded), plugins tear down, the socket closes. */
  close(timeoutMs = 10_000): Promise<void> {
    this.#closing ??= this.#close(timeoutMs);
    return this.#closing;
  }

  async #close(timeoutMs: number): Promise<void> {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#send({ op: "closing" });
    // Hand back queued work: the scheduler reschedules what we do not finish.
    this.state.close();
    if (this.state.executing > 0) {
      await Promise.race([
        new Promise<void>((r) => this.#onClosed.push(r)),
        new Promise((r) => setTimeout(r, timeoutMs)),
      ]);
    }
    this.#flush();
    await this.plugins.closeAll((p) => p.teardown?.(this.api));
    const records = this.#logs.take();
    if (records.length > 0) this.#send({ op: "logs", records });
    this.#logs.detach();
    this.#flush();
    for (const ex of this.#executors.values()) await ex.close().catch(() => {});
    this.#session.close("worker closing");
    this.#requests.rejectAll("worker closing", { final: true });
    await this.#server?.stop();
    await removeOwnDirectory(this.#options.localDirectory, this.localDirectory);
    log.info(`Worker "${this.name}" closed`);
    this.#resolveClosed();
  }

}
