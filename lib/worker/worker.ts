/**
 * The worker process: one WebSocket out to the scheduler, a small HTTP server for peers' data
 * requests, task execution with up to `nthreads` tasks in flight, worker plugins, and
 * reconnection. The task bookkeeping lives in state.ts.
 *
 * @module
 */
import { Hono } from "hono";
import { createHash } from "node:crypto";
import { copyFile, mkdir, readdir, readFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { basename, delimiter, dirname, extname, join, resolve } from "node:path";
import { setImmediate } from "node:timers";
import { pathToFileURL } from "node:url";
import { errorMessage } from "../errors.ts";
import { createLogger } from "../log.ts";
import { instantiatePlugin, type WirePluginSpec } from "../plugins/load.ts";
import { PluginManager } from "../plugins/manager.ts";
import type { Executor, WorkerApi, WorkerPlugin } from "../plugins/types.ts";
import {
  clusterToken,
  decodeCbor,
  encodeCbor,
  inlineLimitBytes,
  type Message,
  sizeOf,
  timingSafeEqual,
  version,
} from "../protocol.ts";
import { chooseDataHost } from "../address.ts";
import { runtime, type RunningServer, type ServerTls } from "../runtime/mod.ts";
import { SchedulerSession } from "../session.ts";
import { withLiveFields } from "../live.ts";
import { builtins, type TaskFunction } from "./builtins.ts";
import { type ComputeMessage, type FetchState, type WorkerTask, WorkerStateMachine } from "./state.ts";

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
  preload?: string[];
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
}

const log = createLogger("worker");

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
  readonly state: WorkerStateMachine;
  readonly plugins: PluginManager<WorkerPlugin>;
  readonly api: WorkerApi;
  #options: WorkerOptions;
  #session: SchedulerSession;
  #server: RunningServer | null = null;
  #outbox: Message[] = [];
  #flushScheduled = false;
  #ready: WorkerTask[] = [];
  #readyHead = 0;
  #executing = 0;
  #pumpScheduled = false;
  #functions = new Map<string, TaskFunction>();
  #modules = new Map<string, string>();
  #moduleHashes = new Map<string, string>();
  /** Counts stimuli for ids like Dask's `task-finished-…`. */
  #stimuli = 0;
  #executors = new Map<string, Executor>();
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  #closing: Promise<void> | null = null;
  #registered = false;
  #requestId = 0;
  #relays = new Map<number, (data: Record<string, unknown>) => void>();
  #token = clusterToken();
  #pendingLocal: WirePluginSpec[] = [];
  #onClosed: Array<() => void> = [];
  #resolveClosed!: () => void;
  /** Resolves when the worker has closed (signal, or the scheduler asked). */
  readonly closed: Promise<void> = new Promise((r) => (this.#resolveClosed = r));

  private constructor(options: WorkerOptions) {
    this.#options = options;
    this.name = options.name ?? `${hostname()}-${process.pid}`;
    this.nthreads = Math.max(1, Math.floor(options.nthreads ?? 1));
    this.state = new WorkerStateMachine({
      onTransition: (key, start, finish, info) => this.plugins.callSync("transition", key, start, finish, info),
      fetch: (deps) => this.#fetch(deps),
      ready: (task) => this.#enqueue(task),
      missingData: (task, dep) => this.#send({ op: "missing-data", key: task.key, dep }),
    });
    this.#session = new SchedulerSession({
      scheduler: options.scheduler,
      path: "/api/v1/worker",
      register: () => this.#registerMessage(),
      welcome: (msg) => this.#welcome(msg),
      message: (msg) => this.#handle(msg),
      lost: () => this.#lost(),
      log,
    });
    this.plugins = new PluginManager<WorkerPlugin>((name, hook, err) => {
      log.error(`Plugin "${name}" failed in ${hook}: ${errorMessage(err)}`);
      this.#send({ op: "plugin-error", plugin: name, hook, error: errorMessage(err) });
    });
    for (const [name, fn] of Object.entries(builtins)) this.#functions.set(`builtin.${name}`, fn);
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
    this.localDirectory = resolve(opts.localDirectory ?? join(tmpdir(), `cluster-worker-${this.name.replace(/[^\w.-]/g, "_")}`));
    await mkdir(this.localDirectory, { recursive: true });
    // Data address (see lib/address.ts): without --host, the address this host reaches the scheduler from.
    const connectDeadline = Date.now() + (opts.connectTimeoutMs ?? 10_000);
    const data = await chooseDataHost(opts.host, opts.scheduler, connectDeadline);
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
    for (const path of opts.preload ?? []) this.#pendingLocal.push({ role: "worker", use: resolve(path), options: {} });
    // Local plugins are set up once, before the first registration; a failing one stops the start.
    for (const spec of this.#pendingLocal) {
      const error = await this.#addPlugin(spec, opts.baseDir ?? process.cwd());
      if (error) {
        await this.#server.stop();
        throw new Error(error);
      }
    }
    await this.#session.connect(Math.max(1, connectDeadline - Date.now()));
    this.#heartbeat = setInterval(() => {
      this.#send({ op: "heartbeat", rss: process.memoryUsage().rss, executing: this.#executing, ready: this.#ready.length - this.#readyHead });
    }, 1000);
  }

  /** Loads a module whose exports become the task functions `MODULE.EXPORT`; returns MODULE. */
  async loadTaskModule(path: string): Promise<string> {
    const abs = resolve(path);
    const name = basename(abs, extname(abs));
    // Runtimes cache modules by path: a changed file is imported from a copy named by its hash.
    const hash = createHash("sha256").update(await readFile(abs)).digest("hex").slice(0, 12);
    const previous = this.#moduleHashes.get(abs);
    let target = abs;
    if (previous !== undefined && previous !== hash) {
      target = join(dirname(abs), `.${name}.${hash}${extname(abs)}`);
      await copyFile(abs, target);
    }
    this.#moduleHashes.set(abs, hash);
    const mod = await import(pathToFileURL(target).href) as Record<string, unknown>;
    for (const key of [...this.#functions.keys()]) if (key.startsWith(`${name}.`)) this.#functions.delete(key);
    let count = 0;
    for (const [exportName, value] of Object.entries(mod)) {
      if (typeof value === "function") {
        this.#functions.set(`${name}.${exportName}`, value as TaskFunction);
        count++;
      }
    }
    if (count === 0) throw new Error(`Task module "${path}" exports no functions`);
    this.#modules.set(name, abs);
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
      modules: [...this.#modules.keys()],
      restarts: Number(process.env.CLUSTER_WORKER_RESTARTS ?? 0),
      version,
    };
  }

  async #welcome(msg: Message): Promise<void> {
    // Plugins registered at the scheduler: set up before this worker accepts any task.
    // A plugin that fails here is reported and left out; the worker still joins.
    for (const spec of (msg.plugins as WirePluginSpec[]) ?? []) {
      const error = await this.#addPlugin(spec, this.localDirectory);
      if (error) {
        log.error(error);
        this.#send({ op: "plugin-error", plugin: spec.name ?? spec.use, hook: "setup", error });
      }
    }
    this.#registered = true;
    // Task modules that welcome-time plugins (upload-file) loaded were not announced yet.
    this.#send({ op: "modules", modules: [...this.#modules.keys()] });
    this.#send({ op: "ready" });
    this.#flush();
    log.info(`Registered with the scheduler at ${this.#options.scheduler} as "${this.name}"`);
  }

  /** The scheduler was lost: it forgets this worker's tasks, so drop them too. */
  #lost(): void {
    this.#registered = false;
    this.state.reset();
    this.#ready = [];
    this.#readyHead = 0;
    this.#outbox = [];
  }

  #send(msg: Message): void {
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

  #handle(msg: Message): void {
    switch (msg.op) {
      case "compute":
        this.state.compute(msg as unknown as ComputeMessage);
        break;
      case "free":
        this.state.free(msg.keys as string[]);
        break;
      case "get-data": {
        const data: Record<string, unknown> = {};
        for (const key of msg.keys as string[]) if (this.state.data.has(key)) data[key] = this.state.data.get(key);
        this.#send({ op: "data", id: msg.id, data });
        break;
      }
      case "relayed": {
        const cb = this.#relays.get(msg.id as number);
        this.#relays.delete(msg.id as number);
        cb?.(msg.data as Record<string, unknown>);
        break;
      }
      case "plugin-add":
        this.#addPlugin(msg.spec as WirePluginSpec, this.localDirectory).then((error) => {
          this.#send({ op: "ack", id: msg.id, error: error ?? undefined });
        });
        break;
      case "plugin-remove":
        this.plugins.remove(msg.name as string, (p) => p.teardown?.(this.api)).then(() => {
          this.state.hasTransitionHook = this.plugins.has("transition");
          this.#send({ op: "ack", id: msg.id });
        });
        break;
      case "close":
        log.info(`The scheduler asks to close: ${msg.reason ?? ""}`);
        this.close();
        break;
      default:
        log.warn(`Unknown message "${msg.op}" from the scheduler`);
    }
  }

  /** Adds a plugin; returns an error message or null. Same name replaces (teardown first). */
  async #addPlugin(spec: WirePluginSpec, baseDir: string): Promise<string | null> {
    try {
      const loaded = await instantiatePlugin<WorkerPlugin>(spec, {
        baseDir,
        moduleDir: join(this.localDirectory, "plugins"),
        log: log.child(`plugin:${spec.name ?? spec.use}`),
      });
      await this.plugins.add({ ...loaded, spec }, {
        start: (p) => p.setup?.(this.api),
        teardown: (p) => p.teardown?.(this.api),
      });
      this.state.hasTransitionHook = this.plugins.has("transition");
      return null;
    } catch (err) {
      return errorMessage(err);
    }
  }

  // ---- execution -----------------------------------------------------------------------------

  #enqueue(task: WorkerTask): void {
    this.#ready.push(task);
    this.#schedulePump();
  }

  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => this.#pump());
  }

  #pump(): void {
    this.#pumpScheduled = false;
    const started = performance.now();
    while (this.#executing < this.nthreads && this.#readyHead < this.#ready.length) {
      const task = this.#ready[this.#readyHead++];
      if (task.state !== "ready" || this.state.tasks.get(task.key) !== task) continue;
      this.#run(task);
      if (performance.now() - started > tickBudgetMs) {
        // Let the network in: send what is done, take new messages.
        this.#pumpScheduled = true;
        setTimeout(() => {
          this.#pumpScheduled = false;
          this.#pump();
        }, 0);
        break;
      }
    }
    if (this.#readyHead > 1024 && this.#readyHead * 2 > this.#ready.length) {
      this.#ready = this.#ready.slice(this.#readyHead);
      this.#readyHead = 0;
    }
  }

  #run(task: WorkerTask): void {
    this.state.startExecuting(task);
    this.#executing++;
    const start = performance.now();
    let result: unknown;
    try {
      const args = task.depValues ? resolveRefs(task.args, task.depValues) as unknown[] : task.args;
      const executor = task.annotations?.executor;
      if (typeof executor === "string" && executor !== "default") {
        const ex = this.#executors.get(executor);
        if (!ex) throw new Error(`Unknown executor "${executor}" (add one with the process-pool plugin)`);
        result = ex.run(task.fn, args, { modules: [...this.#modules.values()] });
      } else {
        const fn = this.#functions.get(task.fn);
        if (!fn) throw new Error(`Unknown task function "${task.fn}" on worker "${this.name}"`);
        result = (fn as (...a: unknown[]) => unknown)(...args);
      }
    } catch (err) {
      this.#failed(task, err, start);
      return;
    }
    if (result instanceof Promise || (result !== null && typeof result === "object" && typeof (result as PromiseLike<unknown>).then === "function")) {
      (result as Promise<unknown>).then((value) => this.#succeeded(task, value, start), (err) => this.#failed(task, err, start));
    } else {
      this.#succeeded(task, result, start);
    }
  }

  #succeeded(task: WorkerTask, value: unknown, start: number): void {
    this.#executing--;
    const duration = (performance.now() - start) / 1000;
    if (value === undefined) value = null;
    const nbytes = sizeOf(value);
    if (this.state.finished(task, value, nbytes)) {
      if (nbytes <= inlineLimitBytes) this.#send({ op: "done", key: task.key, nbytes, value, hasValue: true, duration, stimulusId: `task-finished-${++this.#stimuli}` });
      else this.#send({ op: "done", key: task.key, nbytes, duration, stimulusId: `task-finished-${++this.#stimuli}` });
    }
    if (this.#readyHead < this.#ready.length) this.#schedulePump();
    else this.#checkIdle();
  }

  #failed(task: WorkerTask, err: unknown, start: number): void {
    this.#executing--;
    const duration = (performance.now() - start) / 1000;
    const exception = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const traceback = err instanceof Error ? err.stack ?? "" : "";
    if (this.state.erred(task, exception, traceback)) {
      this.#send({ op: "erred", key: task.key, exception, traceback, duration, stimulusId: `task-erred-${++this.#stimuli}` });
    }
    if (this.#readyHead < this.#ready.length) this.#schedulePump();
    else this.#checkIdle();
  }

  #checkIdle(): void {
    if (this.#executing === 0) for (const cb of this.#onClosed.splice(0)) cb();
  }

  // ---- data transfer -------------------------------------------------------------------------

  async #fetch(deps: FetchState[]): Promise<void> {
    // Group by first holder; each group is one request.
    const groups = new Map<string, FetchState[]>();
    for (const fs of deps) {
      const who = fs.who[0] ?? "";
      let list = groups.get(who);
      if (!list) groups.set(who, list = []);
      list.push(fs);
    }
    await Promise.all([...groups].map(async ([who, list]) => {
      const keys = list.map((fs) => fs.key);
      let data: Record<string, unknown> = {};
      if (who) {
        try {
          data = await this.#fetchFromPeer(who, keys);
        } catch (err) {
          log.debug(`Peer ${who} unreachable (${errorMessage(err)}); relaying through the scheduler`);
        }
      }
      const missing = keys.filter((k) => !(k in data));
      if (missing.length > 0) Object.assign(data, await this.#relay(missing));
      const results = new Map<string, unknown>();
      const failed: string[] = [];
      for (const key of keys) {
        if (key in data) results.set(key, data[key]);
        else failed.push(key);
      }
      this.state.fetched(results, failed);
    }));
  }

  async #fetchFromPeer(address: string, keys: string[]): Promise<Record<string, unknown>> {
    const headers: Record<string, string> = { "content-type": "application/cbor" };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    const res = await runtime.fetch(new URL("/api/v1/data", address), {
      method: "POST",
      headers,
      body: encodeCbor({ keys }),
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = decodeCbor(new Uint8Array(await res.arrayBuffer())) as { data: Record<string, unknown> };
    return body.data;
  }

  #relay(keys: string[]): Promise<Record<string, unknown>> {
    const id = ++this.#requestId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#relays.delete(id);
        resolve({});
      }, 30_000);
      this.#relays.set(id, (data) => {
        clearTimeout(timer);
        resolve(data);
      });
      this.#send({ op: "relay", id, keys });
    });
  }

  #routes(): Hono {
    const app = new Hono();
    app.get("/health", (c) => c.json({ status: "ok", role: "worker", version, name: this.name }));
    app.post("/api/v1/data", async (c) => {
      if (this.#token) {
        const header = c.req.header("authorization") ?? "";
        if (!header.startsWith("Bearer ") || !timingSafeEqual(header.slice(7), this.#token)) {
          return c.json({ error: "Unauthorized" }, 401);
        }
      }
      let keys: string[];
      try {
        keys = (decodeCbor(new Uint8Array(await c.req.arrayBuffer())) as { keys: string[] }).keys;
        if (!Array.isArray(keys)) throw new TypeError("keys must be an array");
      } catch (err) {
        return c.json({ error: errorMessage(err) }, 400);
      }
      const data: Record<string, unknown> = {};
      for (const key of keys) if (this.state.data.has(key)) data[key] = this.state.data.get(key);
      return c.body(encodeCbor({ data }) as Uint8Array<ArrayBuffer>, 200, { "content-type": "application/cbor" });
    });
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
    this.#ready = [];
    this.#readyHead = 0;
    if (this.#executing > 0) {
      await Promise.race([
        new Promise<void>((r) => this.#onClosed.push(r)),
        new Promise((r) => setTimeout(r, timeoutMs)),
      ]);
    }
    this.#flush();
    await this.plugins.closeAll((p) => p.teardown?.(this.api));
    this.#flush();
    for (const ex of this.#executors.values()) await ex.close().catch(() => {});
    this.#session.close("worker closing");
    await this.#server?.stop();
    log.info(`Worker "${this.name}" closed`);
    this.#resolveClosed();
  }

}

/** Replaces `{"$ref": KEY}` inside a value by the dependency's result. */
export function resolveRefs(value: unknown, deps: Map<string, unknown>): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    const out = new Array(value.length);
    for (let i = 0; i < value.length; i++) out[i] = resolveRefs(value[i], deps);
    return out;
  }
  if (value instanceof Uint8Array) return value;
  const ref = (value as { $ref?: unknown }).$ref;
  if (typeof ref === "string") {
    if (!deps.has(ref)) throw new Error(`Missing dependency "${ref}"`);
    return deps.get(ref);
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = resolveRefs(v, deps);
  return out;
}
