/**
 * The scheduler process: the state machine (state.ts) with the network around it — the Hono
 * HTTP/WebSocket API, the worker, nanny and client protocols, the event log, and plugins.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { WSContext } from "hono/ws";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorMessage, PluginError } from "../errors.ts";
import { createLogger } from "../log.ts";
import { type AddResult, PluginManager, type Registered } from "../plugins/manager.ts";
import { instantiatePlugin, type WirePluginSpec, withSource } from "../plugins/load.ts";
import type {
  PluginRole,
  SchedulerApi,
  SchedulerPlugin,
  SchedulerTaskStateName,
  TaskStateView,
  TransitionInfo,
} from "../plugins/types.ts";
import { clusterToken, decodeCbor, decodeFrame, encodeCbor, encodeFrame, type Message, timingSafeEqual, version } from "../protocol.ts";
import { runtime, type RunningServer } from "../runtime/mod.ts";
import { type ClusterEvent, EventLog } from "./events.ts";
import { GraphError, validateGraph } from "./graph.ts";
import { withLiveFields } from "../live.ts";
import { dashboardApp, hasSession } from "../dashboard/mod.ts"; // dashboard
import { type ClientState, SchedulerState, type TaskState, type WorkerMessage, type WorkerState } from "./state.ts";

const log = createLogger("scheduler");

/** Options of `cluster scheduler`. */
export interface SchedulerOptions {
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 8786 */
  port?: number;
  /** Plugins from plugins.toml, all roles; worker and nanny ones are sent to every worker/nanny. */
  plugins?: WirePluginSpec[];
  /** Modules with `clusterSetup(scheduler, options)`. */
  preload?: string[];
  /** Directory that relative plugin paths resolve against. */
  baseDir?: string;
  /** Events kept for replay. @default 20000 */
  eventsKept?: number;
  /** A worker silent this long is removed. @default 15000 */
  heartbeatTimeoutMs?: number;
}

interface WorkerConn {
  ws: WSContext;
  state: WorkerState;
  outbox: WorkerMessage[] | Message[];
  pluginAcks: Map<number, (error: string | null) => void>;
  dataRequests: Map<number, { resolve: (m: Message) => void; reject: (e: Error) => void }>;
  rss: number;
  restarts: number;
  /** The worker said it is closing: its leaving does not count as a death. */
  graceful: boolean;
}

interface NannyConn {
  ws: WSContext;
  name: string;
  address: string;
  pid: number;
  workerName: string | null;
  restarts: number;
  requests: Map<number, (reply: Message) => void>;
}

type KeyWaiter = () => void;

/** The events topics the scheduler emits by itself. */
const finishedStates = new Set<SchedulerTaskStateName>(["memory", "erred", "forgotten"]);

/**
 * A running scheduler.
 *
 * @example
 * ```ts
 * const scheduler = await Scheduler.start({ port: 0 });
 * console.log(scheduler.address);
 * await scheduler.close();
 * ```
 */
export class Scheduler {
  readonly state: SchedulerState;
  readonly events: EventLog;
  readonly plugins: PluginManager<SchedulerPlugin>;
  /** Worker and nanny plugin specs, sent to every worker/nanny (also later ones). */
  readonly remotePlugins = { worker: [] as WirePluginSpec[], nanny: [] as WirePluginSpec[] };
  readonly api: SchedulerApi;
  address = "";
  #options: SchedulerOptions;
  #server: RunningServer | null = null;
  #conns = new Map<string, WorkerConn>();
  #nannies = new Map<string, NannyConn>();
  #keyWaiters = new Map<string, Set<KeyWaiter>>();
  #httpClient: ClientState;
  #requestId = 0;
  #flushScheduled = false;
  #dirty = new Set<WorkerConn>();
  #heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  #closing: Promise<void> | null = null;
  #token = clusterToken();
  #transitionHooks: readonly Registered<SchedulerPlugin>[] = [];
  #moduleDir = "";
  #restarting = false;
  /** Modules any worker ever reported, for checking `fn` prefixes. */
  #knownModules = new Set<string>();

  private constructor(options: SchedulerOptions) {
    this.#options = options;
    this.events = new EventLog(options.eventsKept ?? 20_000);
    this.plugins = new PluginManager<SchedulerPlugin>((name, hook, err) => {
      log.error(`Plugin "${name}" failed in ${hook}: ${errorMessage(err)}`);
      if (hook !== "logEvent") {
        this.events.append("plugin", { action: "error", plugin: name, hook, error: errorMessage(err) });
      }
    });
    this.state = new SchedulerState({
      onTransition: (ts, start, finish, stimulusId, extra) => this.#onTransition(ts, start, finish, stimulusId, extra),
      sendToWorker: (ws, msg) => this.#sendToWorker(ws, msg),
    });
    this.#httpClient = this.state.addClient("http");
    this.events.onEvent = (event) => {
      const hooks = this.#logEventHooks;
      for (let i = 0; i < hooks.length; i++) {
        try {
          hooks[i].plugin.logEvent!(event.topic, event);
        } catch (err) {
          this.plugins.reportError(hooks[i].name, "logEvent", err);
        }
      }
    };
    this.api = withLiveFields({
      role: "scheduler" as const,
      tasks: this.state.tasks as ReadonlyMap<string, TaskStateView>,
      workers: this.state.workers,
      clients: this.state.clients,
      logEvent: (topic: string, msg: Record<string, unknown>) => {
        this.events.append(topic, msg);
      },
      eventJson: (event: Record<string, unknown>) => this.events.json(event as ClusterEvent),
      addPlugin: async (plugin: SchedulerPlugin) => {
        const name = plugin.name ?? `plugin-${++this.#requestId}`;
        await this.#addSchedulerPlugin({ name, plugin, use: "<object>" });
      },
      removePlugin: async (name: string) => {
        await this.#removeSchedulerPlugin(name);
      },
      log: log.child("plugin"),
    }, this as Scheduler, ["address"]);
  }

  #logEventHooks: readonly Registered<SchedulerPlugin>[] = [];

  /** Starts a scheduler: plugins first (a failing one stops the start), then the server. */
  static async start(options: SchedulerOptions = {}): Promise<Scheduler> {
    const scheduler = new Scheduler(options);
    await scheduler.#start();
    return scheduler;
  }

  async #start(): Promise<void> {
    const options = this.#options;
    this.#moduleDir = await mkdtemp(join(tmpdir(), "cluster-scheduler-"));
    const app = this.#routes();
    this.#server = await runtime.serve(app, { hostname: options.host ?? "127.0.0.1", port: options.port ?? 8786 });
    const host = this.#server.hostname.includes(":") ? `[${this.#server.hostname}]` : this.#server.hostname;
    this.address = `http://${host}:${this.#server.port}`;
    try {
      for (const spec of options.plugins ?? []) await this.registerPlugin(spec);
      for (const path of options.preload ?? []) await this.#preload(path);
    } catch (err) {
      await this.#server.stop();
      throw err;
    }
    const timeout = options.heartbeatTimeoutMs ?? 15_000;
    this.#heartbeatTimer = setInterval(() => this.#checkHeartbeats(timeout), Math.min(1000, timeout / 2));
  }

  async #preload(path: string): Promise<void> {
    const loaded = await instantiatePlugin<SchedulerPlugin>(
      { role: "scheduler", use: path, options: {} },
      { baseDir: process.cwd(), moduleDir: this.#moduleDir, log: log.child("preload") },
    );
    await this.#addSchedulerPlugin({ ...loaded, use: path });
  }

  // ---- plugins -------------------------------------------------------------------------------

  async #addSchedulerPlugin(entry: { name: string; plugin: SchedulerPlugin; use: string; spec?: unknown }): Promise<AddResult> {
    const result = await this.plugins.add(entry, {
      start: (p) => p.start?.(this.api),
      teardown: async (p) => {
        await p.beforeClose?.();
        await p.close?.();
      },
    });
    this.#refreshHooks();
    if (result !== "kept") this.events.append("plugin", { action: result, role: "scheduler", plugin: entry.name });
    return result;
  }

  async #removeSchedulerPlugin(name: string): Promise<boolean> {
    const removed = await this.plugins.remove(name, async (p) => {
      await p.beforeClose?.();
      await p.close?.();
    });
    this.#refreshHooks();
    if (removed) this.events.append("plugin", { action: "removed", role: "scheduler", plugin: name });
    return removed;
  }

  #refreshHooks(): void {
    this.#transitionHooks = this.plugins.withHook("transition");
    this.#logEventHooks = this.plugins.withHook("logEvent");
  }

  /**
   * Registers a plugin of any role: scheduler plugins start here; worker and nanny plugins are
   * sent to every worker/nanny, which confirm setup before this resolves.
   * Returns what happened and, for nanny plugins, the workers without a nanny.
   */
  async registerPlugin(spec: WirePluginSpec): Promise<{ name: string; result: AddResult; warnings: string[] }> {
    const baseDir = this.#options.baseDir ?? process.cwd();
    if (spec.role === "scheduler") {
      const loaded = await instantiatePlugin<SchedulerPlugin>(spec, {
        baseDir,
        moduleDir: this.#moduleDir,
        log: log.child(`plugin:${spec.name ?? spec.use}`),
      });
      const result = await this.#addSchedulerPlugin({ ...loaded, spec });
      return { name: loaded.name, result, warnings: [] };
    }
    const shipped = await withSource(spec, baseDir);
    // Validate locally first: a module that does not load fails the registration here.
    const probe = await instantiatePlugin({ ...shipped, role: spec.role }, {
      baseDir,
      moduleDir: this.#moduleDir,
      log: log.child("probe"),
    }).catch((err) => {
      throw new PluginError(spec.name ?? spec.use, errorMessage(err), { cause: err });
    });
    const name = probe.name;
    const full: WirePluginSpec = { ...shipped, name };
    const list = this.remotePlugins[spec.role];
    const existing = list.findIndex((s) => s.name === name);
    if (existing >= 0 && probe.plugin.idempotent) return { name, result: "kept", warnings: [] };
    const warnings: string[] = [];
    const errors: string[] = [];
    if (spec.role === "worker") {
      await Promise.all([...this.#conns.values()].map(async (conn) => {
        const error = await this.#askWorker(conn, { op: "plugin-add", spec: full });
        if (error) errors.push(`${conn.state.name}: ${error}`);
      }));
    } else {
      await Promise.all([...this.#nannies.values()].map(async (nanny) => {
        const reply = await this.#askNanny(nanny, { op: "plugin-add", spec: full });
        if (reply.error) errors.push(`${nanny.name}: ${reply.error}`);
      }));
      const without = [...this.state.workers.values()].filter((w) => !w.nanny).map((w) => w.name);
      if (without.length > 0) {
        warnings.push(`Nanny plugin "${name}" not applied to workers without a nanny: ${without.join(", ")}`);
      }
    }
    if (errors.length > 0) {
      // Remove it again wherever it did get set up: a failed registration leaves nothing behind.
      await this.#unregisterRemote(spec.role, name);
      throw new PluginError(name, errors.join("; "));
    }
    if (existing >= 0) list.splice(existing, 1);
    list.push(full);
    this.events.append("plugin", { action: existing >= 0 ? "replaced" : "added", role: spec.role, plugin: name });
    return { name, result: existing >= 0 ? "replaced" : "added", warnings };
  }

  async #unregisterRemote(role: "worker" | "nanny", name: string): Promise<void> {
    if (role === "worker") {
      await Promise.all([...this.#conns.values()].map((conn) => this.#askWorker(conn, { op: "plugin-remove", name })));
    } else {
      await Promise.all([...this.#nannies.values()].map((n) => this.#askNanny(n, { op: "plugin-remove", name })));
    }
  }

  /** Unregisters a plugin; false when unknown. */
  async unregisterPlugin(role: PluginRole, name: string): Promise<boolean> {
    if (role === "scheduler") return await this.#removeSchedulerPlugin(name);
    const list = this.remotePlugins[role];
    const index = list.findIndex((s) => s.name === name);
    if (index < 0) return false;
    list.splice(index, 1);
    await this.#unregisterRemote(role, name);
    this.events.append("plugin", { action: "removed", role, plugin: name });
    return true;
  }

  /** What `GET /api/v1/plugins` answers. */
  listPlugins(): Record<PluginRole, Array<{ name: string; use: string }>> {
    return {
      scheduler: this.plugins.entries.map((e) => ({ name: e.name, use: e.use })),
      worker: this.remotePlugins.worker.map((s) => ({ name: s.name!, use: s.use })),
      nanny: this.remotePlugins.nanny.map((s) => ({ name: s.name!, use: s.use })),
    };
  }

  // ---- transitions and messages --------------------------------------------------------------

  #onTransition(
    ts: TaskState,
    start: SchedulerTaskStateName,
    finish: SchedulerTaskStateName,
    stimulusId: string,
    extra: Partial<TransitionInfo> | undefined,
  ): void {
    const hooks = this.#transitionHooks;
    if (hooks.length > 0) {
      const info: TransitionInfo = extra ? Object.assign({ stimulusId }, extra) : { stimulusId };
      for (let i = 0; i < hooks.length; i++) {
        try {
          hooks[i].plugin.transition!(ts.key, start, finish, info);
        } catch (err) {
          this.plugins.reportError(hooks[i].name, "transition", err);
        }
      }
    }
    this.events.appendTransition(ts.key, start, finish, stimulusId, extra?.worker);
    if (this.#keyWaiters.size > 0 && finishedStates.has(finish)) {
      const waiters = this.#keyWaiters.get(ts.key);
      if (waiters) {
        this.#keyWaiters.delete(ts.key);
        for (const w of waiters) w();
      }
    }
  }

  #sendToWorker(ws: WorkerState, msg: WorkerMessage | Message): void {
    const conn = this.#conns.get(ws.name);
    if (!conn || conn.state !== ws) return;
    const box = conn.outbox as Message[];
    const last = box[box.length - 1];
    if (msg.op === "free" && last?.op === "free") (last.keys as string[]).push(...(msg as { keys: string[] }).keys);
    else box.push(msg.op === "free" ? { ...msg, keys: [...(msg as { keys: string[] }).keys] } : msg as Message);
    this.#dirty.add(conn);
    this.#scheduleFlush();
  }

  /**
   * After a big burst of work (about 50,000 tasks or more), once the cluster is idle, runs a full
   * garbage collection: such a burst leaves tens of megabytes of garbage (decoded graphs,
   * messages) that an edge box should get back now, not at the next burst. Small bursts are left
   * to the runtime's own collector.
   */
  #maybeCollectGarbage(): void {
    const counts = this.state.counts;
    if (this.state.transitionsTotal - this.#transitionsAtGc < 250_000) return;
    if (counts.processing > 0 || counts.queued > 0 || counts.waiting > 0) return;
    if (this.#gcTimer) clearTimeout(this.#gcTimer);
    this.#gcTimer = setTimeout(() => {
      this.#gcTimer = null;
      const c = this.state.counts;
      if (c.processing > 0 || c.queued > 0 || c.waiting > 0) return;
      this.#transitionsAtGc = this.state.transitionsTotal;
      runtime.collectGarbage();
    }, 100);
  }

  #transitionsAtGc = 0;
  #gcTimer: ReturnType<typeof setTimeout> | null = null;

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    for (const conn of this.#dirty) {
      const box = conn.outbox;
      if (box.length === 0) continue;
      conn.outbox = [];
      try {
        conn.ws.send(encodeFrame(box));
      } catch (err) {
        log.warn(`Cannot send to worker "${conn.state.name}": ${errorMessage(err)}`);
      }
    }
    this.#dirty.clear();
  }

  #askWorker(conn: WorkerConn, msg: Message): Promise<string | null> {
    const id = ++this.#requestId;
    return new Promise((resolve) => {
      conn.pluginAcks.set(id, resolve);
      this.#sendToWorker(conn.state, { ...msg, id });
    });
  }

  #askNanny(nanny: NannyConn, msg: Message): Promise<Message> {
    const id = ++this.#requestId;
    return new Promise((resolve) => {
      nanny.requests.set(id, resolve);
      try {
        nanny.ws.send(encodeFrame([{ ...msg, id }]));
      } catch (err) {
        nanny.requests.delete(id);
        resolve({ op: "reply", id, error: errorMessage(err) });
      }
    });
  }

  // ---- results -------------------------------------------------------------------------------

  /** Waits until every key is in memory, erred or gone; false on timeout. */
  waitForKeys(keys: string[], timeoutMs?: number): Promise<boolean> {
    let pending = 0;
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const registered: Array<[string, KeyWaiter]> = [];
      const done = () => {
        if (--pending === 0) {
          if (timer) clearTimeout(timer);
          resolve(true);
        }
      };
      for (const key of keys) {
        const ts = this.state.tasks.get(key);
        if (!ts || finishedStates.has(ts.state)) continue;
        pending++;
        let set = this.#keyWaiters.get(key);
        if (!set) this.#keyWaiters.set(key, set = new Set());
        const waiter = () => done();
        set.add(waiter);
        registered.push([key, waiter]);
      }
      if (pending === 0) return resolve(true);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          for (const [key, waiter] of registered) {
            const set = this.#keyWaiters.get(key);
            set?.delete(waiter);
            if (set?.size === 0) this.#keyWaiters.delete(key);
          }
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  /**
   * The results of finished keys: values (fetched from workers when not kept here), or errors.
   * Waits for the keys first; results lost with a worker are waited for again.
   */
  async gather(keys: string[]): Promise<{ values: Record<string, unknown>; errors: Record<string, { error: string; traceback: string }>; missing: string[] }> {
    const values: Record<string, unknown> = {};
    const errors: Record<string, { error: string; traceback: string }> = {};
    const missing: string[] = [];
    let todo = keys;
    for (let attempt = 0; todo.length > 0 && attempt < 20; attempt++) {
      await this.waitForKeys(todo);
      const remote = new Map<WorkerConn, string[]>();
      const retry: string[] = [];
      for (const key of todo) {
        const ts = this.state.tasks.get(key);
        if (!ts) {
          missing.push(key);
        } else if (ts.state === "erred") {
          errors[key] = { error: ts.exception ?? "Error", traceback: ts.traceback ?? "" };
        } else if (ts.state === "memory") {
          if (ts.hasValue) values[key] = ts.value;
          else {
            const holder = [...ts.whoHas].map((w) => this.#conns.get(w.name)).find((c) => c !== undefined);
            if (!holder) retry.push(key);
            else {
              let list = remote.get(holder);
              if (!list) remote.set(holder, list = []);
              list.push(key);
            }
          }
        } else {
          retry.push(key);
        }
      }
      await Promise.all([...remote].map(async ([conn, list]) => {
        try {
          const reply = await this.#getData(conn, list);
          const data = reply.data as Record<string, unknown>;
          for (const key of list) {
            if (key in data) values[key] = data[key];
            else retry.push(key);
          }
        } catch {
          retry.push(...list);
        }
      }));
      todo = retry;
      if (todo.length > 0) await new Promise((r) => setTimeout(r, 50));
    }
    missing.push(...todo);
    return { values, errors, missing };
  }

  #getData(conn: WorkerConn, keys: string[]): Promise<Message> {
    const id = ++this.#requestId;
    return new Promise((resolve, reject) => {
      conn.dataRequests.set(id, { resolve, reject });
      this.#sendToWorker(conn.state, { op: "get-data", id, keys });
    });
  }

  // ---- workers -------------------------------------------------------------------------------

  #handleWorkerMessage(conn: WorkerConn, msg: Message): void {
    const ws = conn.state;
    switch (msg.op) {
      case "done":
        this.state.taskFinished(ws, msg as never, msg.stimulusId as string ?? this.state.stimulusId("task-finished"));
        break;
      case "erred":
        this.state.taskErred(ws, msg as never, msg.stimulusId as string ?? this.state.stimulusId("task-erred"));
        break;
      case "missing-data":
        this.state.missingData(ws, msg.key as string, msg.dep as string, this.state.stimulusId("missing-data"));
        break;
      case "heartbeat":
        ws.lastSeen = Date.now();
        if (typeof msg.rss === "number") conn.rss = msg.rss;
        break;
      case "closing":
        conn.graceful = true;
        break;
      case "ready":
        this.#workerReady(conn);
        break;
      case "ack": {
        const ack = conn.pluginAcks.get(msg.id as number);
        conn.pluginAcks.delete(msg.id as number);
        ack?.((msg.error as string | undefined) ?? null);
        break;
      }
      case "data": {
        const req = conn.dataRequests.get(msg.id as number);
        conn.dataRequests.delete(msg.id as number);
        req?.resolve(msg);
        break;
      }
      case "relay":
        this.#relay(conn, msg);
        break;
      case "modules":
        for (const m of msg.modules as string[]) {
          ws.modules.add(m);
          this.#knownModules.add(m);
        }
        break;
      case "event":
        this.events.append(String(msg.topic), { ...(msg.msg as Record<string, unknown>), worker: ws.name });
        break;
      case "plugin-error":
        this.plugins.reportError(`${ws.name}/${msg.plugin}`, String(msg.hook), msg.error);
        this.events.append("plugin", { action: "error", role: "worker", worker: ws.name, plugin: msg.plugin, hook: msg.hook, error: msg.error });
        break;
      default:
        log.warn(`Unknown message "${msg.op}" from worker "${ws.name}"`);
    }
  }

  #registerWorker(ws: WSContext, msg: Message): WorkerConn | null {
    const name = msg.name;
    const nthreads = msg.nthreads;
    if (typeof name !== "string" || name === "" || typeof nthreads !== "number" || nthreads < 1) {
      ws.close(4002, "Invalid register message: needs name and nthreads");
      return null;
    }
    if (this.state.workers.has(name)) {
      ws.close(4009, `A worker named "${name}" is already connected`);
      return null;
    }
    const modules = Array.isArray(msg.modules) ? (msg.modules as string[]) : [];
    for (const m of modules) this.#knownModules.add(m);
    const state = this.state.addWorker({
      name,
      address: String(msg.address ?? ""),
      nthreads,
      nanny: !!msg.nanny,
      modules,
      pid: Number(msg.pid ?? 0),
    });
    const conn: WorkerConn = {
      ws,
      state,
      outbox: [],
      pluginAcks: new Map(),
      dataRequests: new Map(),
      rss: 0,
      restarts: Number(msg.restarts ?? 0),
      graceful: false,
    };
    this.#conns.set(name, conn);
    // Plugins first: the worker confirms them with "ready" before it gets any task.
    this.#sendToWorker(state, { op: "welcome", plugins: this.remotePlugins.worker, version } as Message);
    return conn;
  }

  async #workerReady(conn: WorkerConn): Promise<void> {
    const ws = conn.state;
    if (this.plugins.has("addWorker")) await this.plugins.callAsync("addWorker", this.api, ws.name);
    if (this.#conns.get(ws.name) !== conn) return;
    this.state.workerReady(ws, this.state.stimulusId("worker-ready"));
    this.events.append("worker", { action: "add", worker: ws.name, address: ws.address, nthreads: ws.nthreads, nanny: ws.nanny });
    log.info(`Worker "${ws.name}" joined (${ws.nthreads} threads${ws.nanny ? ", nanny" : ""})`);
  }

  async #removeWorker(conn: WorkerConn, reason: string): Promise<void> {
    const name = conn.state.name;
    if (this.#conns.get(name) !== conn) return;
    this.#conns.delete(name);
    for (const req of conn.dataRequests.values()) req.reject(new Error(`Worker "${name}" left`));
    for (const ack of conn.pluginAcks.values()) ack(`worker "${name}" left`);
    const wasRunning = conn.state.status === "running";
    const stimulusId = this.state.stimulusId("remove-worker");
    this.state.removeWorker(name, stimulusId, { graceful: conn.graceful });
    if (wasRunning) {
      this.events.append("worker", { action: "remove", worker: name, reason });
      log.info(`Worker "${name}" left: ${reason}`);
      if (this.plugins.has("removeWorker")) await this.plugins.callAsync("removeWorker", this.api, name, { stimulusId });
    }
  }

  #checkHeartbeats(timeoutMs: number): void {
    const now = Date.now();
    for (const conn of this.#conns.values()) {
      if (now - conn.state.lastSeen > timeoutMs) {
        log.warn(`Worker "${conn.state.name}" missed heartbeats for ${Math.round((now - conn.state.lastSeen) / 1000)} s`);
        try {
          conn.ws.close(4008, "Heartbeat timeout");
        } catch {
          // already closed
        }
        this.#removeWorker(conn, "heartbeat timeout");
      }
    }
  }

  async #relay(conn: WorkerConn, msg: Message): Promise<void> {
    const keys = msg.keys as string[];
    const data: Record<string, unknown> = {};
    const byHolder = new Map<WorkerConn, string[]>();
    for (const key of keys) {
      const ts = this.state.tasks.get(key);
      if (!ts) continue;
      if (ts.hasValue) {
        data[key] = ts.value;
        continue;
      }
      const holder = [...ts.whoHas].map((w) => this.#conns.get(w.name)).find((c) => c && c !== conn);
      if (!holder) continue;
      let list = byHolder.get(holder);
      if (!list) byHolder.set(holder, list = []);
      list.push(key);
    }
    await Promise.all([...byHolder].map(async ([holder, list]) => {
      try {
        const reply = await this.#getData(holder, list);
        Object.assign(data, reply.data as Record<string, unknown>);
      } catch {
        // reported as missing below
      }
    }));
    this.#sendToWorker(conn.state, { op: "relayed", id: msg.id, data } as Message);
  }

  // ---- nannies -------------------------------------------------------------------------------

  #onNannyMessage(nanny: NannyConn | null, ws: WSContext, msg: Message, setNanny: (n: NannyConn) => void): void {
    if (!nanny) {
      if (msg.op !== "register" || typeof msg.name !== "string") {
        ws.close(4002, "Expected a register message first");
        return;
      }
      const conn: NannyConn = {
        ws,
        name: msg.name,
        address: String(msg.address ?? ""),
        pid: Number(msg.pid ?? 0),
        workerName: null,
        restarts: 0,
        requests: new Map(),
      };
      this.#nannies.set(conn.name, conn);
      setNanny(conn);
      ws.send(encodeFrame([{ op: "welcome", plugins: this.remotePlugins.nanny, version }]));
      return;
    }
    switch (msg.op) {
      case "reply": {
        const cb = nanny.requests.get(msg.id as number);
        nanny.requests.delete(msg.id as number);
        cb?.(msg);
        break;
      }
      case "worker":
        nanny.workerName = (msg.worker as string | null) ?? null;
        nanny.restarts = Number(msg.restarts ?? nanny.restarts);
        break;
      case "event":
        this.events.append(String(msg.topic), { ...(msg.msg as Record<string, unknown>), nanny: nanny.name });
        break;
      case "plugin-error":
        this.plugins.reportError(`${nanny.name}/${msg.plugin}`, String(msg.hook), msg.error);
        this.events.append("plugin", { action: "error", role: "nanny", nanny: nanny.name, plugin: msg.plugin, hook: msg.hook, error: msg.error });
        break;
      default:
        log.warn(`Unknown message "${msg.op}" from nanny "${nanny.name}"`);
    }
  }

  /** Dask's `client.restart()`: forget all tasks, call plugins' restart, restart every worker. */
  async restart(timeoutMs = 60_000): Promise<{ workers: string[]; restarted: number }> {
    if (this.#restarting) throw new Error("A restart is already in progress");
    this.#restarting = true;
    try {
      const stimulusId = this.state.stimulusId("restart");
      this.state.forgetAll(stimulusId);
      await this.plugins.callAsync("restart", this.api);
      // Each nanny answers once its new worker has registered.
      const nannies = [...this.#nannies.values()];
      const replies = await Promise.race([
        Promise.all(nannies.map((n) => this.#askNanny(n, { op: "restart-worker", reason: "restart requested" }))),
        new Promise<null>((r) => setTimeout(() => r(null), timeoutMs)),
      ]);
      if (replies === null) throw new Error(`Workers did not come back within ${timeoutMs / 1000} s`);
      const failed = replies.filter((r) => r.error).map((r) => String(r.error));
      if (failed.length > 0) throw new Error(`Restart failed: ${failed.join("; ")}`);
      // The scheduler may still be confirming the new workers' plugins.
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const back = [...this.state.workers.values()].filter((w) => w.nanny && w.status === "running").length;
        if (back >= nannies.length) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      // Workers without a nanny cannot be restarted; they keep running with their data freed.
      this.events.append("log", { message: "restart", workers: [...this.state.workers.keys()] });
      return { workers: [...this.state.workers.keys()], restarted: nannies.length };
    } finally {
      this.#restarting = false;
    }
  }

  // ---- clients -------------------------------------------------------------------------------

  /** Submits a validated graph for a client; throws GraphError for a bad one. */
  async submitGraph(client: ClientState, body: unknown): Promise<string[]> {
    const graph = validateGraph(body, {
      existing: (key) => this.state.tasks.has(key),
      knownModules: this.state.workers.size > 0 ? this.#knownModules : null,
    });
    const stimulusId = this.state.stimulusId("update-graph");
    if (this.plugins.has("updateGraph")) {
      const annotations: Record<string, Record<string, unknown>> = {};
      const priority: Record<string, number> = {};
      graph.order.forEach((key, i) => (priority[key] = i));
      for (const t of graph.tasks) if (Object.keys(t.annotations).length > 0) annotations[t.key] = t.annotations;
      // The tasks exist before the hook and make their first transition after it.
      const added = this.state.addGraph(client, graph);
      await this.plugins.callAsync("updateGraph", this.api, {
        client: client.id,
        keys: graph.keys,
        tasks: graph.tasks.map((t) => t.key),
        annotations,
        priority,
        stimulusId,
      });
      this.state.scheduleGraph(added, stimulusId);
    } else {
      this.state.updateGraph(client, graph, stimulusId);
    }
    return graph.keys;
  }

  // ---- HTTP and WebSocket routes ---------------------------------------------------------------

  #authorized(c: Context): boolean {
    if (!this.#token) return true;
    if (hasSession(c.req.header("cookie"), this.#token)) return true; // dashboard: its login cookie
    const header = c.req.header("authorization");
    const given = header?.startsWith("Bearer ") ? header.slice(7) : c.req.query("token");
    return given !== undefined && timingSafeEqual(given, this.#token);
  }

  #routes(): Hono {
    const app = new Hono();
    const upgrade = runtime.upgradeWebSocket;
    app.onError((err, c) => {
      if (err instanceof GraphError) return c.json({ error: err.message }, 400);
      log.error(`${c.req.method} ${c.req.path}: ${errorMessage(err)}`);
      return c.json({ error: errorMessage(err) }, 500);
    });
    app.get("/health", (c) => c.json({ status: "ok", role: "scheduler", version }));
    app.route("/", dashboardApp({ token: () => this.#token, events: this.events })); // dashboard: before auth, it does its own
    app.use("*", async (c, next) => {
      if (!this.#authorized(c)) return c.json({ error: "Unauthorized: a valid bearer token is required" }, 401);
      await next();
    });
    app.get("/api/v1/info", (c) => c.json(this.info()));
    app.post("/api/v1/graph", async (c) => {
      const body = await readBody(c);
      if (body instanceof Response) return body;
      const keys = await this.submitGraph(this.#httpClient, body);
      return c.json({ keys }, 202);
    });
    app.get("/api/v1/tasks/:key{.+}", (c) => {
      const ts = this.state.tasks.get(c.req.param("key"));
      return ts ? c.json(ts.toJSON()) : c.json({ error: `Unknown key "${c.req.param("key")}"` }, 404);
    });
    app.delete("/api/v1/tasks/:key{.+}", (c) => {
      const key = c.req.param("key");
      const ts = this.state.tasks.get(key);
      if (!ts) return c.json({ error: `Unknown key "${key}"` }, 404);
      this.state.releaseKeys(this.#httpClient, [key], this.state.stimulusId("client-releases-keys"));
      return c.body(null, 204);
    });
    app.get("/api/v1/results/:key{.+}", async (c) => {
      const key = c.req.param("key");
      if (!this.state.tasks.has(key)) return c.json({ error: `Unknown key "${key}"` }, 404);
      const timeout = Number(c.req.query("timeout") ?? "0");
      if (!Number.isFinite(timeout) || timeout < 0) return c.json({ error: `Invalid timeout "${c.req.query("timeout")}"` }, 400);
      const done = await this.waitForKeys([key], timeout * 1000);
      if (!done) return c.json({ key, state: this.state.tasks.get(key)?.state, error: "Not finished yet" }, 408);
      const result = await this.gather([key]);
      if (key in result.errors) return c.json({ key, ...result.errors[key] }, 409);
      if (key in result.values) return c.json({ key, value: result.values[key] ?? null });
      return c.json({ error: `Key "${key}" was released` }, 404);
    });
    app.get("/api/v1/plugins", (c) => c.json(this.listPlugins()));
    app.post("/api/v1/plugins", async (c) => {
      const body = await readBody(c);
      if (body instanceof Response) return body;
      const { validatePluginRequest } = await import("../plugins/request.ts");
      const spec = validatePluginRequest(body, this.#options.baseDir ?? process.cwd());
      if (spec instanceof Error) return c.json({ error: spec.message }, 400);
      try {
        const out = await this.registerPlugin(spec);
        return c.json({ name: out.name, result: out.result, warnings: out.warnings }, 201);
      } catch (err) {
        const status = err instanceof PluginError ? 422 : 400;
        return c.json({ error: errorMessage(err) }, status);
      }
    });
    app.delete("/api/v1/plugins/:role/:name", async (c) => {
      const role = c.req.param("role");
      if (role !== "scheduler" && role !== "worker" && role !== "nanny") {
        return c.json({ error: `Unknown role "${role}": expected scheduler, worker or nanny` }, 404);
      }
      const removed = await this.unregisterPlugin(role, c.req.param("name"));
      return removed ? c.body(null, 204) : c.json({ error: `No ${role} plugin named "${c.req.param("name")}"` }, 404);
    });
    app.post("/api/v1/restart", async (c) => {
      const out = await this.restart();
      return c.json(out, 200);
    });
    app.post("/api/v1/events/:topic", async (c) => {
      const body = await readBody(c);
      if (body instanceof Response) return body;
      const msg = body !== null && typeof body === "object" && !Array.isArray(body) ? body as Record<string, unknown> : { value: body };
      const event = this.events.append(c.req.param("topic"), msg);
      return c.json({ seq: event.seq }, 200);
    });
    app.get("/metrics", (c) => c.text(this.metrics(), 200, { "content-type": "text/plain; version=0.0.4" }));
    app.get("/api/v1/events", upgrade((c) => this.#eventSocket(c)));
    app.get("/api/v1/worker", upgrade(() => {
      let conn: WorkerConn | null = null;
      return {
        onOpen: (_e, ws) => runtime.prepareSocket(ws),
        onMessage: (event, ws) => {
          let messages: Message[];
          try {
            messages = decodeFrame(event.data);
          } catch (err) {
            log.warn(`Closing a worker socket: ${errorMessage(err)}`);
            ws.close(1007, errorMessage(err).slice(0, 120));
            return;
          }
          for (const msg of messages) {
            if (conn) {
              this.#handleWorkerMessage(conn, msg);
            } else if (msg.op !== "register") {
              ws.close(4002, "Expected a register message first");
              return;
            } else if (!(conn = this.#registerWorker(ws, msg))) {
              return;
            }
          }
          this.#maybeCollectGarbage();
        },
        onClose: () => {
          if (conn) this.#removeWorker(conn, "connection closed");
        },
      };
    }));
    app.get("/api/v1/nanny", upgrade(() => {
      let nanny: NannyConn | null = null;
      return {
        onOpen: (_e, ws) => runtime.prepareSocket(ws),
        onMessage: (event, ws) => {
          try {
            for (const msg of decodeFrame(event.data)) this.#onNannyMessage(nanny, ws, msg, (n) => (nanny = n));
          } catch (err) {
            ws.close(1007, errorMessage(err).slice(0, 120));
          }
        },
        onClose: () => {
          if (nanny && this.#nannies.get(nanny.name) === nanny) {
            this.#nannies.delete(nanny.name);
            for (const cb of nanny.requests.values()) cb({ op: "reply", error: "nanny left" });
          }
        },
      };
    }));
    app.get("/api/v1/client", upgrade(() => this.#clientSocket()));
    return app;
  }

  #eventSocket(c: Context) {
    const topics = c.req.queries("topic");
    const topicSet = topics && topics.length > 0 ? new Set(topics.flatMap((t) => t.split(","))) : null;
    const sinceRaw = c.req.query("since");
    const since = sinceRaw === undefined ? undefined : Number(sinceRaw);
    const cbor = c.req.query("format") === "cbor";
    const batch = c.req.query("batch") === "1" || c.req.query("batch") === "true";
    const maxBuffered = 16 * 1024 * 1024;
    let unsubscribe: (() => void) | null = null;
    return {
      onOpen: (_e: Event, ws: WSContext) => {
        runtime.prepareSocket(ws);
        if (since !== undefined && !Number.isFinite(since)) {
          ws.close(1008, `Invalid since "${sinceRaw}"`);
          return;
        }
        unsubscribe = this.events.subscribe({
          topics: topicSet,
          deliver: (events: ClusterEvent[]) => {
            if (runtime.bufferedAmount(ws) > maxBuffered) {
              unsubscribe?.();
              unsubscribe = null;
              ws.close(1013, "Subscriber too slow: event buffer full");
              return;
            }
            runtime.cork(ws, () => {
              if (batch) runtime.send(ws, cbor ? batchCbor(events) : batchJson(events, this.events));
              else if (cbor) for (const e of events) runtime.send(ws, encodeCbor(e).slice());
              else for (const e of events) runtime.send(ws, this.events.json(e));
            });
          },
        }, since);
      },
      onClose: () => {
        unsubscribe?.();
      },
    };
  }

  #clientSocket() {
    const id = `client-${crypto.randomUUID()}`;
    let client: ClientState | null = null;
    let chain: Promise<unknown> = Promise.resolve();
    const reply = (ws: WSContext, msg: Message) => {
      try {
        ws.send(encodeFrame([msg]));
      } catch {
        // the client left
      }
    };
    return {
      onOpen: (_e: Event, ws: WSContext) => {
        runtime.prepareSocket(ws);
        client = this.state.addClient(id);
        this.events.append("client", { action: "add", client: id });
        if (this.plugins.has("addClient")) this.plugins.callAsync("addClient", this.api, id);
        reply(ws, { op: "welcome", client: id, version });
      },
      onMessage: (event: MessageEvent, ws: WSContext) => {
        let messages: Message[];
        try {
          messages = decodeFrame(event.data);
        } catch (err) {
          ws.close(1007, errorMessage(err).slice(0, 120));
          return;
        }
        // Messages start in the order they came (a gather sent right after its graph finds the
        // graph applied), but a gather's long wait does not hold up what follows it.
        for (const msg of messages) {
          const handle = () =>
            this.#handleClientMessage(client!, ws, msg, reply).catch((err) => {
              reply(ws, { op: "error", id: msg.id, error: errorMessage(err), status: err instanceof GraphError ? 400 : err instanceof PluginError ? 422 : 500 });
            });
          chain = chain.then(() => {
            const running = handle();
            return msg.op === "gather" ? undefined : running;
          });
        }
      },
      onClose: () => {
        this.state.removeClient(id, this.state.stimulusId("remove-client"));
        this.events.append("client", { action: "remove", client: id });
        if (this.plugins.has("removeClient")) this.plugins.callAsync("removeClient", this.api, id);
      },
    };
  }

  async #handleClientMessage(client: ClientState, ws: WSContext, msg: Message, reply: (ws: WSContext, m: Message) => void): Promise<void> {
    switch (msg.op) {
      case "graph": {
        const keys = await this.submitGraph(client, msg.graph);
        reply(ws, { op: "ok", id: msg.id, keys });
        break;
      }
      case "gather": {
        const result = await this.gather(msg.keys as string[]);
        reply(ws, { op: "ok", id: msg.id, ...result });
        break;
      }
      case "release":
        this.state.releaseKeys(client, msg.keys as string[], this.state.stimulusId("client-releases-keys"));
        if (msg.id !== undefined) reply(ws, { op: "ok", id: msg.id });
        break;
      case "event":
        this.events.append(String(msg.topic), msg.msg as Record<string, unknown>);
        if (msg.id !== undefined) reply(ws, { op: "ok", id: msg.id });
        break;
      case "register-plugin": {
        const { validatePluginRequest } = await import("../plugins/request.ts");
        const spec = validatePluginRequest(msg.spec, this.#options.baseDir ?? process.cwd());
        if (spec instanceof Error) throw new GraphError(spec.message);
        const out = await this.registerPlugin(spec);
        reply(ws, { op: "ok", id: msg.id, ...out });
        break;
      }
      case "unregister-plugin": {
        const removed = await this.unregisterPlugin(msg.role as PluginRole, msg.name as string);
        reply(ws, removed ? { op: "ok", id: msg.id } : { op: "error", id: msg.id, status: 404, error: `No ${msg.role} plugin named "${msg.name}"` });
        break;
      }
      case "info":
        reply(ws, { op: "ok", id: msg.id, info: this.info() });
        break;
      default:
        reply(ws, { op: "error", id: msg.id, status: 400, error: `Unknown op "${msg.op}"` });
    }
  }

  // ---- info, metrics, close ------------------------------------------------------------------

  /** What `GET /api/v1/info` answers. */
  info(): Record<string, unknown> {
    const nannyByWorker = new Map<string, NannyConn>();
    for (const n of this.#nannies.values()) if (n.workerName) nannyByWorker.set(n.workerName, n);
    const tasks: Record<string, number> = {};
    for (const [state, n] of Object.entries(this.state.counts)) if (state !== "forgotten") tasks[state] = n;
    const plugins = this.listPlugins();
    return {
      address: this.address,
      version,
      workers: [...this.state.workers.values()].map((w) => ({
        name: w.name,
        address: w.address,
        nthreads: w.nthreads,
        status: w.status,
        nanny: w.nanny,
        processing: w.processingTasks.size,
        memory: w.heldTasks.size,
        nbytes: w.nbytes,
        pid: w.pid,
        rss: this.#conns.get(w.name)?.rss ?? 0,
        restarts: nannyByWorker.get(w.name)?.restarts ?? this.#conns.get(w.name)?.restarts ?? 0,
      })),
      nannies: [...this.#nannies.values()].map((n) => ({ name: n.name, address: n.address, pid: n.pid, worker: n.workerName, restarts: n.restarts })),
      tasks,
      plugins: {
        scheduler: plugins.scheduler.map((p) => p.name),
        worker: plugins.worker.map((p) => p.name),
        nanny: plugins.nanny.map((p) => p.name),
      },
      clients: this.state.clients.size,
      events: { lastSeq: this.events.lastSeq, subscribers: this.events.subscriberCount },
    };
  }

  /** Prometheus text for `GET /metrics`. */
  metrics(): string {
    const lines: string[] = [];
    const metric = (name: string, help: string, type: string, samples: Array<[string, number]>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
    };
    metric("cluster_tasks", "Tasks by state", "gauge",
      Object.entries(this.state.counts).filter(([s]) => s !== "forgotten").map(([s, n]) => [`{state="${s}"}`, n]));
    metric("cluster_transitions_total", "Task transitions", "counter", [["", this.state.transitionsTotal]]);
    metric("cluster_workers", "Connected workers", "gauge", [["", this.state.workers.size]]);
    metric("cluster_plugin_errors_total", "Plugin hook errors", "counter", [["", this.plugins.errorsTotal]]);
    const byPlugin = [...this.plugins.errors].map(([name, n]) => [`{plugin="${name.replace(/"/g, "'")}"}`, n] as [string, number]);
    if (byPlugin.length > 0) metric("cluster_plugin_errors", "Plugin hook errors by plugin", "counter", byPlugin);
    metric("cluster_event_subscribers", "Event-stream subscribers", "gauge", [["", this.events.subscriberCount]]);
    metric("cluster_events_total", "Events logged", "counter", [["", this.events.lastSeq]]);
    for (const entry of this.plugins.entries) {
      const stats = (entry.plugin as { stats?: () => Record<string, number | boolean> }).stats?.();
      if (!stats) continue;
      for (const [k, v] of Object.entries(stats)) {
        if (typeof v === "number" || typeof v === "boolean") {
          lines.push(`cluster_plugin_stat{plugin="${entry.name}",stat="${k}"} ${Number(v)}`);
        }
      }
    }
    return lines.join("\n") + "\n";
  }

  /** Closes gracefully: plugins' beforeClose and close run once, workers are told to close. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    if (this.#gcTimer) clearTimeout(this.#gcTimer);
    await this.plugins.callAsync("beforeClose");
    for (const conn of this.#conns.values()) this.#sendToWorker(conn.state, { op: "close", reason: "scheduler closing" });
    this.#flush();
    await this.plugins.closeAll((p) => p.close?.());
    this.events.flush();
    await new Promise((r) => setTimeout(r, 50));
    await this.#server?.stop();
    // Shipped plugin modules were written here for probing; nothing else uses the folder.
    if (this.#moduleDir) await rm(this.#moduleDir, { recursive: true, force: true }).catch(() => {});
  }
}

const batchCache = new WeakMap<ClusterEvent[], { json?: string; cbor?: Uint8Array }>();

/** One tick's events as a JSON array, made once for every subscriber that gets this array. */
function batchJson(events: ClusterEvent[], log: EventLog): string {
  let cached = batchCache.get(events);
  if (!cached) batchCache.set(events, cached = {});
  return cached.json ??= `[${events.map((e) => log.json(e)).join(",")}]`;
}

/** One tick's events as a CBOR array, made once for every subscriber that gets this array. */
function batchCbor(events: ClusterEvent[]): Uint8Array {
  let cached = batchCache.get(events);
  if (!cached) batchCache.set(events, cached = {});
  return cached.cbor ??= encodeFrame(events);
}

/** Reads a JSON or CBOR body; a Response (400) when it is malformed. */
async function readBody(c: Context): Promise<unknown | Response> {
  const type = c.req.header("content-type") ?? "application/json";
  try {
    if (type.includes("cbor")) return decodeCbor(new Uint8Array(await c.req.arrayBuffer()));
    const text = await c.req.text();
    return JSON.parse(text);
  } catch (err) {
    return c.json({ error: `Malformed ${type.includes("cbor") ? "CBOR" : "JSON"} body: ${errorMessage(err)}` }, 400);
  }
}
