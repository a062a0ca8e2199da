/**
 * The scheduler process, as a composition root: the state machine (state.ts) and the pieces
 * around it, one file per protocol — HTTP routes (routes.ts) behind one auth middleware
 * (auth.ts), the worker, nanny and client links, the event stream, the remote plugin registry,
 * results and metrics. Here the state machine's effects are applied: plugins' `transition`
 * hooks, transition events, key waiters, and messages to workers.
 *
 * @module
 */
import { Hono } from "hono";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import { RequestError } from "../rpc.ts";
import { withLiveFields } from "../live.ts";
import { createLogger } from "../log.ts";
import { type AddResult, PluginManager, type Registered } from "../plugins/manager.ts";
import { instantiatePlugin, type WirePluginSpec, withSource } from "../plugins/load.ts";
import { preloadSpec } from "../plugins/preload.ts";
import type { PluginRole, SchedulerApi, SchedulerPlugin, TransitionInfo } from "../plugins/types.ts";
import { version } from "../protocol.ts";
import { envTokens, type TokenSet } from "../auth/tokens.ts";
import { isLoopback } from "../auth/token-file.ts";
import { connectableHost, isWildcard } from "../address.ts";
import { runtime, type RunningServer, type ServerTls } from "../runtime/mod.ts";
import { authMiddleware } from "./auth.ts";
import { dashboardApp } from "../dashboard/mod.ts";
import { clientSocket } from "./client-link.ts";
import { errorBody, httpStatus } from "./errors.ts";
import { eventStreamSocket } from "./event-stream.ts";
import { type ClusterEvent, type EventBatch, EventLog } from "./events.ts";
import { metricsText } from "./metrics.ts";
import { LogStore, logTopicEvent } from "./logs.ts";
import { NannyLinks } from "./nanny-link.ts";
import { Operations, type PluginListing } from "./operations.ts";
import { type Registration, RemotePlugins } from "./remote-plugins.ts";
import { Results } from "./results.ts";
import { apiRoutes } from "./routes.ts";
import { type Limits, resolveLimits } from "../limits.ts";
import { type ClientState, SchedulerState } from "./state.ts";
import { WorkerLinks } from "./worker-link.ts";
import { TasksView } from "./task-view.ts";
import { retireWorkers } from "./retire.ts";
import { schedulerTarget } from "../plugins/target.ts";
import { authenticatedLink } from "./link-auth.ts";
import { randomBytes } from "node:crypto";

const log = createLogger("scheduler");

/** Options of `cluster scheduler`. */
export interface SchedulerOptions {
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 8786 */
  port?: number;
  /** Plugins from plugins.toml, all roles; worker and nanny ones are sent to every worker/nanny. */
  plugins?: WirePluginSpec[];
  /** Modules (paths or http(s) URLs) with `clusterSetup(scheduler, options)`. */
  preload?: string[];
  /** The `options` every preload's `clusterSetup` gets (`--preload-options`). */
  preloadOptions?: Record<string, unknown>;
  /** Directory that relative plugin paths resolve against. */
  baseDir?: string;
  /** Transition events kept for replay. @default 20000 */
  eventsKept?: number;
  /** Other events (log, plugin, worker, posted topics) kept for replay, by count. @default 20000 */
  eventsOtherKept?: number;
  /** Other events kept for replay, by bytes of JSON. @default 67108864 (64 MiB) */
  eventsOtherBytes?: number;
  /** Input limits (see lib/limits.ts): maxBodyBytes, maxGraphTasks, maxArgsDepth, maxArgsBytes, maxKeyLength, maxEventBytes, maxEventDepth. */
  limits?: Partial<Limits>;
  /** A worker silent this long is removed. @default 15000 */
  heartbeatTimeoutMs?: number;
  /** Serve https/wss with this certificate (`--tls-cert`, `--tls-key`). */
  tls?: ServerTls;
  /** The tokens accepted (null: `--no-auth`) and more names to answer to (`--allow-host`). @default tokens from the environment (envTokens()) */
  auth?: { tokens: TokenSet | null; allowHosts?: readonly string[] };
}

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
  readonly state = new SchedulerState();
  /** Log records forwarded by workers and nannies (`GET /api/v1/logs`). */
  readonly logs = new LogStore();
  readonly events: EventLog;
  readonly limits: Limits;
  readonly plugins: PluginManager<SchedulerPlugin>;
  readonly api: SchedulerApi;
  readonly workers: WorkerLinks;
  readonly nannies: NannyLinks;
  /** Worker and nanny plugin specs, sent to every worker/nanny (also later ones). */
  readonly remotePlugins: RemotePlugins;
  readonly results: Results;
  readonly operations: Operations;
  address = "";
  #options: SchedulerOptions;
  #server: RunningServer | null = null;
  #httpClient: ClientState;
  #heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  #closing: Promise<void> | null = null;
  #transitionHooks: readonly Registered<SchedulerPlugin>[] = [];
  #logEventHooks: readonly Registered<SchedulerPlugin>[] = [];
  #onEvent: (event: ClusterEvent) => void;
  #applying = false;
  #tasksView = new TasksView(this.state.tasks);
  #moduleDir = "";
  #restarting = false;
  #pluginCounter = 0;
  #transitionsAtGc = 0;
  #gcTimer: ReturnType<typeof setTimeout> | null = null;
  /** Modules any worker ever reported, for checking `fn` prefixes. */
  #knownModules = new Set<string>();
  /** Settles once the plugins of plugins.toml and --preload started: requests wait for it. */
  #pluginsStarted: Promise<void> | null;
  #settlePluginsStarted!: () => void;

  private constructor(options: SchedulerOptions) {
    this.#options = options;
    this.limits = resolveLimits(options.limits);
    this.events = new EventLog(options.eventsKept ?? 20_000, { otherKept: options.eventsOtherKept, otherBytes: options.eventsOtherBytes, limits: this.limits });
    this.plugins = new PluginManager<SchedulerPlugin>((name, hook, err) => {
      log.error(`Plugin "${name}" failed in ${hook}: ${errorMessage(err)}`);
      if (hook !== "logEvent") {
        this.events.append("plugin", { action: "error", plugin: name, hook, error: errorMessage(err) });
      }
    });
    this.#httpClient = this.state.addClient("http");
    this.#pluginsStarted = new Promise((r) => (this.#settlePluginsStarted = r));
    // A plugin's or a task's `logEvent("log", …)` shows in the scheduler's own log too.
    this.events.onOther = (event) => event.topic === "log" && logTopicEvent(log, event);
    // Set as the log's `onEvent` only while some plugin has a `logEvent` hook: without one the
    // log makes no object per transition.
    this.#onEvent = (event) => {
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
      tasks: this.#tasksView,
      workers: this.state.workers,
      clients: this.state.clients,
      logEvent: (topic: string, msg: Record<string, unknown>) => {
        this.events.post(topic, msg);
      },
      eventJson: (event: Record<string, unknown>) => this.events.json(event as ClusterEvent),
      subscribeEvents: (topics: ReadonlySet<string> | null, deliver: (batch: EventBatch) => void) => this.events.subscribe({ topics, deliver }),
      addPlugin: async (plugin: SchedulerPlugin) => {
        const name = plugin.name ?? `plugin-${++this.#pluginCounter}`;
        await this.#addSchedulerPlugin({ name, plugin, use: "<object>" });
      },
      removePlugin: async (name: string) => {
        await this.#removeSchedulerPlugin(name);
      },
      log: log.child("plugin"),
    }, this as Scheduler, ["address", "localDirectory"]);
    const { state, events, plugins, api } = this;
    const apply = () => this.#apply();
    this.workers = new WorkerLinks({
      state, events, plugins, api, log, apply,
      logs: this.logs,
      knownModules: this.#knownModules,
      remotePlugins: () => this.remotePlugins,
      afterFrame: () => this.#maybeCollectGarbage(),
      // One per scheduler start: workers of a restarted scheduler get the new one in their welcome.
      peerKey: randomBytes(32),
    });
    this.nannies = new NannyLinks({ events, plugins, log, logs: this.logs, remotePlugins: () => this.remotePlugins });
    this.remotePlugins = new RemotePlugins({
      state, events, log, apply,
      workers: this.workers,
      nannies: this.nannies,
      moduleDir: () => this.#moduleDir,
    });
    this.results = new Results(state, this.workers);
    const self = this as Scheduler;
    this.operations = new Operations({
      state, events, plugins, api, apply,
      logs: this.logs,
      limits: this.limits,
      results: this.results,
      workers: this.workers,
      nannies: this.nannies,
      knownModules: this.#knownModules,
      get address() {
        return self.address;
      },
      baseDir: () => this.#options.baseDir ?? process.cwd(),
      registerPlugin: (spec) => this.registerPlugin(spec),
      unregisterPlugin: (role, name) => this.unregisterPlugin(role, name),
      listPlugins: () => this.listPlugins(),
      nannyQuarantine: (name) => this.remotePlugins.nannyQuarantine(name),
      restart: () => this.restart(),
      retireWorkers: (names) => retireWorkers({ state, workers: this.workers, nannies: this.nannies, plugins, api, events, log, apply }, names),
    });
  }

  /** Starts a scheduler: plugins first (a failing one stops the start), then the server. */
  static async start(options: SchedulerOptions = {}): Promise<Scheduler> {
    const scheduler = new Scheduler(options);
    await scheduler.#start();
    return scheduler;
  }

  async #start(): Promise<void> {
    const options = this.#options;
    if (options.auth === undefined && envTokens() === null && !isLoopback(options.host ?? "127.0.0.1")) {
      // Embedded with no token: open on loopback only, as `--no-auth`.
      throw new ConfigError(`A scheduler on "${options.host}" needs a token (CLUSTER_TOKEN or the auth option)`);
    }
    this.#moduleDir = await mkdtemp(join(tmpdir(), "cluster-scheduler-"));
    this.#server = await runtime.serve(this.#app(), { hostname: options.host ?? "127.0.0.1", port: options.port ?? 8786, tls: options.tls });
    // A wildcard bind is no address to connect to: show a connectable one (see lib/address.ts).
    this.address = `${this.#server.protocol}://${connectableHost(this.#server.hostname)}:${this.#server.port}`;
    if (isWildcard(this.#server.hostname)) log.info(`Bound to ${this.#server.hostname} port ${this.#server.port} (every interface); announcing ${this.address}`);
    // Listening already (plugins may read `scheduler.address`), but every request except
    // /health waits until the configured plugins started: no worker, graph or client before.
    try {
      for (const spec of options.plugins ?? []) await this.registerPlugin(spec);
      for (const path of options.preload ?? []) await this.#preload(path);
    } catch (err) {
      await this.#server.stop();
      await rm(this.#moduleDir, { recursive: true, force: true }).catch(() => {});
      throw err;
    } finally {
      this.#settlePluginsStarted();
      this.#pluginsStarted = null;
    }
    // The bare URL, never the token: `cluster dashboard` prints the login link.
    log.info(`Dashboard at ${this.address}/ (\`cluster dashboard ${this.address}\` prints the login link)`);
    const timeout = options.heartbeatTimeoutMs ?? 15_000;
    const every = Math.min(1000, timeout / 2);
    let lastCheck = Date.now();
    let listeningSince = lastCheck;
    this.#heartbeatTimer = setInterval(() => {
      const now = Date.now();
      // A check far later than due: this process was stalled (a long synchronous step, or
      // stopped or starved by the machine) and has not read what its workers sent meanwhile —
      // timers run before the sockets are read. Silence counts from when it listens again;
      // otherwise every worker would be removed at once, and the tasks they ran counted toward
      // KilledWorker.
      if (now - lastCheck > 2 * every) listeningSince = now;
      lastCheck = now;
      this.workers.checkHeartbeats(timeout, now, listeningSince);
      this.nannies.checkHeartbeats(timeout, now, listeningSince);
    }, every);
  }

  /** The HTTP server: `/health` open, everything else behind the auth middleware. */
  #app(): Hono {
    const app = new Hono();
    const upgrade = runtime.upgradeWebSocket;
    app.onError((err, c) => {
      const status = httpStatus(err);
      if (status === 500) log.error(`${c.req.method} ${c.req.path}: ${errorMessage(err)}`);
      return c.json(errorBody(err), status);
    });
    app.get("/health", (c) => c.json({ status: "ok", role: "scheduler", version }));
    // Every request but /health waits until the configured plugins have started.
    app.use("*", async (_c, next) => {
      if (this.#pluginsStarted !== null) await this.#pluginsStarted;
      await next();
    });
    const auth = this.#options.auth;
    const tokens = auth ? auth.tokens : envTokens();
    app.use("*", authMiddleware({
      tokens,
      allowHosts: auth?.allowHosts,
      listener: () => {
        const server = this.#server;
        if (server === null || this.address === "") return null;
        return { protocol: server.protocol, hostname: server.hostname, port: server.port, announced: new URL(this.address).hostname };
      },
    }));
    // The dashboard's page, login and assets (their scopes are in auth.ts's table; the page's
    // feed takes the session cookie the login sets, an HMAC of the admin token).
    app.route("/", dashboardApp({ token: () => tokens?.admin, events: this.events }));
    app.get("/metrics", (c) => c.text(this.metrics(), 200, { "content-type": "text/plain; version=0.0.4" }));
    // The links authenticate in-band (link-auth.ts): the token never travels, not even in a URL.
    const link = (role: "worker" | "nanny" | "client" | "events", make: Parameters<typeof authenticatedLink>[1]) =>
      authenticatedLink({ tokens, role, log }, make);
    app.get("/api/v1/events", upgrade((c) => link("events", () => eventStreamSocket(c, this.events))));
    app.get("/api/v1/worker", upgrade(() => link("worker", (auth) => this.workers.socket(auth))));
    app.get("/api/v1/nanny", upgrade(() => link("nanny", () => this.nannies.socket())));
    app.get("/api/v1/client", upgrade(() =>
      link("client", (auth) =>
        clientSocket({
          state: this.state,
          events: this.events,
          plugins: this.plugins,
          api: this.api,
          operations: this.operations,
          apply: () => this.#apply(),
          maxMessageBytes: this.limits.maxBodyBytes,
        }, auth.scope))
    ));
    app.route("/api/v1", apiRoutes(this.operations, this.#httpClient, this.limits));
    return app;
  }

  async #preload(value: string): Promise<void> {
    const spec = await preloadSpec(value, "scheduler", this.#options.preloadOptions);
    const loaded = await instantiatePlugin<SchedulerPlugin>(spec, { baseDir: process.cwd(), moduleDir: this.#moduleDir, log: log.child("preload") });
    await this.#addSchedulerPlugin({ ...loaded, use: value });
  }

  // ---- effects -------------------------------------------------------------------------------

  /**
   * Applies what the state machine's stimuli led to: each transition goes to the plugins'
   * `transition` hooks and the event log, finished keys wake their waiters, messages go to the
   * workers' outboxes (sent once per tick). Effects of stimuli made meanwhile (by a hook) are
   * applied in the same pass.
   */
  #apply(): void {
    if (this.#applying) return;
    this.#applying = true;
    const fx = this.state.effects;
    try {
      const hooks = this.#transitionHooks;
      const events = this.events;
      // The transitions of one stimulus happen at once: one clock reading for their events.
      const time = Date.now() / 1000;
      for (let i = 0; i < fx.length; i++) {
        const key = fx.tasks[i].key;
        const start = fx.starts[i];
        const finish = fx.finishes[i];
        const stimulusId = fx.stimulusIds[i];
        const extra = fx.extras[i];
        if (hooks.length > 0) {
          this.#tasksView.current = fx.tasks[i];
          const info: TransitionInfo = extra ? Object.assign({ stimulusId }, extra) : { stimulusId };
          for (let h = 0; h < hooks.length; h++) {
            try {
              hooks[h].plugin.transition!(key, start, finish, info);
            } catch (err) {
              this.plugins.reportError(hooks[h].name, "transition", err);
            }
          }
        }
        events.appendTransition(key, start, finish, stimulusId, extra?.worker, extra?.startstops, time);
      }
      if (fx.finishedCount > 0 && this.results.waiting) this.results.wake(fx.finished, fx.finishedCount);
      for (let i = 0; i < fx.messageCount; i++) this.workers.send(fx.recipients[i], fx.messages[i]);
    } finally {
      this.#tasksView.current = null;
      fx.clear();
      this.#applying = false;
    }
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

  // ---- plugins -------------------------------------------------------------------------------

  async #addSchedulerPlugin(entry: { name: string; plugin: SchedulerPlugin; use: string; spec?: unknown }): Promise<AddResult> {
    let result: AddResult;
    try {
      result = await this.plugins.add(entry, {
        start: (p) => p.start?.(this.api),
        teardown: async (p) => {
          await p.beforeClose?.();
          await p.close?.();
        },
      });
    } catch (err) {
      // At start-up the failure is the process's one-line fatal error: not logged twice.
      if (this.address !== "" && this.#heartbeatTimer !== null) log.error(`Registration of the scheduler plugin "${entry.name}" failed: ${errorMessage(err)}`);
      throw err;
    } finally {
      // Also after a failed start: a plugin it was to replace is gone.
      this.#refreshHooks();
    }
    if (result !== "kept") {
      this.events.append("plugin", { action: result, role: "scheduler", plugin: entry.name });
      log.info(`Plugin "${entry.name}" (scheduler) ${result}`);
    }
    return result;
  }

  async #removeSchedulerPlugin(name: string): Promise<boolean> {
    const removed = await this.plugins.remove(name, async (p) => {
      await p.beforeClose?.();
      await p.close?.();
    });
    this.#refreshHooks();
    if (removed) {
      this.events.append("plugin", { action: "removed", role: "scheduler", plugin: name });
      log.info(`Plugin "${name}" (scheduler) removed`);
    }
    return removed;
  }

  #refreshHooks(): void {
    this.#transitionHooks = this.plugins.withHook("transition");
    this.#logEventHooks = this.plugins.withHook("logEvent");
    this.events.onEvent = this.#logEventHooks.length > 0 ? this.#onEvent : null;
  }

  /**
   * Registers a plugin of any role: scheduler plugins start here; worker and nanny plugins are
   * sent to every worker/nanny, which confirm setup before this resolves.
   * Returns what happened and, for nanny plugins, the workers without a nanny.
   */
  async registerPlugin(spec: WirePluginSpec): Promise<Registration> {
    const baseDir = this.#options.baseDir ?? process.cwd();
    const target = schedulerTarget(spec);
    if (target !== "workers") {
      // Also (or only) here: the same built-in as a scheduler plugin (upload-directory's `target`).
      const here = await this.registerPlugin({ ...spec, role: "scheduler", options: { ...spec.options, target: "workers" } });
      if (target === "scheduler") return here;
    }
    if (spec.role === "scheduler") {
      // With the files it imports beside it, when it came as source (imports.ts).
      const loaded = await instantiatePlugin<SchedulerPlugin>(await withSource(spec, baseDir), {
        baseDir,
        moduleDir: this.#moduleDir,
        log: log.child(`plugin:${spec.name ?? spec.use}`),
      });
      const result = await this.#addSchedulerPlugin({ ...loaded, spec });
      return { name: loaded.name, result, warnings: [] };
    }
    return await this.remotePlugins.register({ ...spec, role: spec.role }, baseDir);
  }

  /** Unregisters a plugin; false when unknown. */
  async unregisterPlugin(role: PluginRole, name: string): Promise<boolean> {
    if (role === "scheduler") return await this.#removeSchedulerPlugin(name);
    return await this.remotePlugins.unregister(role, name);
  }

  /** The scheduler's directory for files plugins put here (removed at close). */
  get localDirectory(): string {
    return this.#moduleDir;
  }

  /** What `GET /api/v1/plugins` answers: worker and nanny plugins with their status on each. */
  listPlugins(): Record<PluginRole, PluginListing[]> {
    return {
      scheduler: this.plugins.entries.map((e) => ({ name: e.name, use: e.use })),
      worker: this.remotePlugins.listing("worker"),
      nanny: this.remotePlugins.listing("nanny"),
    };
  }

  // ---- restart, info, metrics, close ---------------------------------------------------------

  /**
   * Dask's `client.restart()`: forget all tasks, call plugins' restart, restart every worker
   * through its nanny, and wait (up to `timeoutMs`) until each is back: registered and ready
   * (running, or quarantined by a failed plugin). A worker not back by then, or whose nanny
   * failed or left, is named in the error (504).
   */
  async restart(timeoutMs = 60_000): Promise<{ workers: string[]; restarted: number; missing: string[] }> {
    if (this.#restarting) throw new Error("A restart is already in progress");
    this.#restarting = true;
    try {
      const deadline = Date.now() + timeoutMs;
      this.state.forgetAll(this.state.stimulusId("restart"));
      this.#apply();
      await this.plugins.callAsync("restart", this.api);
      // Each nanny answers once its new worker has registered.
      const nannies = [...this.nannies.conns.values()];
      const failures = new Map<string, string>();
      await Promise.all(nannies.map(async (n) => {
        try {
          await this.nannies.restartWorker(n, "restart requested", Math.max(1, deadline - Date.now()));
        } catch (err) {
          failures.set(n.workerName ?? n.name, errorMessage(err));
        }
      }));
      // Registered is not yet back: the scheduler may still be confirming its plugins.
      const expected = nannies.map((n) => n.workerName ?? n.name).filter((name) => !failures.has(name));
      const notBack = () => expected.filter((name) => {
        const ws = this.state.workers.get(name);
        return !ws || (ws.status !== "running" && ws.status !== "quarantined");
      });
      while (notBack().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const missing = [...failures.keys(), ...notBack()];
      this.events.append("log", { message: "restart", workers: [...this.state.workers.keys()], missing });
      if (missing.length > 0) {
        const why = missing.map((name) => failures.has(name) ? `${name} (${failures.get(name)})` : name);
        log.warn(`Restart: workers not back within ${timeoutMs / 1000} s: ${why.join(", ")}`);
        throw new RequestError(`Workers not back within ${timeoutMs / 1000} s: ${why.join(", ")}`, { code: "E_TIMEOUT" });
      }
      // Workers without a nanny cannot be restarted; they keep running with their data freed.
      return { workers: [...this.state.workers.keys()], restarted: nannies.length, missing };
    } finally {
      this.#restarting = false;
    }
  }

  /** What `GET /api/v1/info` answers. */
  info(): Record<string, unknown> {
    return this.operations.info();
  }

  /** Prometheus text for `GET /metrics`. */
  metrics(): string {
    return metricsText({ state: this.state, plugins: this.plugins, events: this.events, relayedTotal: this.workers.relayedTotal, workerMetrics: this.workers.metrics });
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
    this.workers.closeAll("scheduler closing");
    // Plugins that take the event log's batches (jsonl) get the last tick's events before they close.
    this.events.flush();
    await this.plugins.closeAll((p) => p.close?.());
    this.events.flush();
    await new Promise((r) => setTimeout(r, 50));
    await this.#server?.stop();
    // Shipped plugin modules were written here for probing; nothing else uses the folder.
    if (this.#moduleDir) await rm(this.#moduleDir, { recursive: true, force: true }).catch(() => {});
  }
}
