/**
 * The nanny: a small parent process that registers with the scheduler, sets up nanny plugins
 * (environment, files) before the first worker starts, runs the worker as a child process of the
 * same program, restarts it with backoff when it dies or passes its memory limit, and forwards
 * SIGINT/SIGTERM to it. A worker that could not reach the scheduler did not die: the nanny waits
 * for the scheduler to come back and starts it again.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import { delimiter, join } from "node:path";
import { Hono } from "hono";
import { unreachableExitCode } from "../connect-error.ts";
import { errorMessage, PluginError } from "../errors.ts";
import type { NannyToScheduler, SchedulerToNanny } from "../messages/nanny.ts";
import type { PluginFailure } from "../messages/worker.ts";
import { createLogger } from "../log.ts";
import { instantiatePlugin, type WirePluginSpec } from "../plugins/load.ts";
import { preloadSpecs } from "../plugins/preload.ts";
import { PluginManager } from "../plugins/manager.ts";
import type { NannyApi, NannyPlugin } from "../plugins/types.ts";
import { version } from "../protocol.ts";
import { chooseDataHost } from "../address.ts";
import { runtime, type RunningServer, type ServerTls } from "../runtime/mod.ts";
import { tlsFlags } from "../tls/options.ts";
import { SchedulerSession } from "../session.ts";
import { withLiveFields } from "../live.ts";
import { localDirectory, removeOwnDirectory } from "../local-directory.ts";
import { formatBytes, processRss } from "./memory.ts";
import { LogForwarder } from "../logs/forwarder.ts";

/** Options of `cluster worker --nanny`. */
export interface NannyOptions {
  scheduler: string;
  name?: string;
  nthreads: number;
  /** The data endpoint's address; without it, the address this host reaches the scheduler from. */
  host?: string;
  port: number;
  preload: string[];
  /** Passed to the worker with its `--preload`s. */
  preloadOptions?: Record<string, unknown>;
  /** Modules (paths or URLs) with `clusterSetup(nanny, options)`, run here (`--preload-nanny`). */
  preloadNanny?: string[];
  tasks: string[];
  localDirectory?: string;
  /** Passed to the worker: its data address as peers see it. */
  contactAddress?: string;
  connectTimeoutMs: number;
  memoryLimit?: number;
  /** plugins.toml handed to the worker for its `[worker]` section. */
  pluginsFile?: string;
  /** The `[nanny]` section of the nanny's own plugins.toml. */
  nannyPlugins: WirePluginSpec[];
  workerArgs: string[];
  baseDir?: string;
  /** Serve https (`--tls-cert`, `--tls-key`); the worker gets the same `--tls-*` flags. */
  tls?: ServerTls;
  /** Close (and stop the worker) after the scheduler was lost this long; 0 or absent: never. */
  deathTimeoutMs?: number;
}

const log = createLogger("nanny");

/**
 * A worker that dies within this time of its start died "quickly": consecutive quick deaths
 * restart with a growing delay (100 ms, 200 ms, … up to 5 s); a worker that lived longer is
 * restarted at once.
 */
const quickDeathMs = 5_000;
/** After this many start-ups in a row that die before the worker registered, the nanny gives up. */
const maxStartupFailures = 5;

/**
 * A running nanny.
 *
 * @example
 * ```ts
 * const nanny = await Nanny.start({ scheduler: "http://127.0.0.1:8786", nthreads: 1, ... });
 * await nanny.close();
 * ```
 */
export class Nanny {
  readonly name: string;
  address = "";
  localDirectory = "";
  readonly env: Record<string, string> = {};
  readonly taskPaths: string[] = [];
  readonly plugins: PluginManager<NannyPlugin>;
  readonly api: NannyApi;
  /** Resolves when the nanny has closed; rejects when it gave up on a worker that keeps dying at start-up. */
  readonly closed: Promise<void>;
  restarts = 0;
  #resolveClosed!: () => void;
  #rejectClosed!: (err: Error) => void;
  #options: NannyOptions;
  #server: RunningServer | null = null;
  /** The --host its worker gets (see lib/address.ts). */
  #workerHost = "127.0.0.1";
  #session: SchedulerSession;
  #child: ChildProcess | null = null;
  #childReady: Promise<void> | null = null;
  #intentionalExit = new WeakSet<ChildProcess>();
  #closing = false;
  #closePromise: Promise<void> | null = null;
  /** Start-ups in a row whose worker died before it registered. */
  #startupFailures = 0;
  /** Deaths in a row within `quickDeathMs` of their start. */
  #quickDeaths = 0;
  /** Set once the first worker is up; before that `#startFirstWorker` handles failures. */
  #supervising = false;
  #memoryTimer: ReturnType<typeof setInterval> | null = null;
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  #restartChain: Promise<void> = Promise.resolve();
  /** The first worker's start (with its retries): a restart asked meanwhile waits for it. */
  #firstStart: Promise<void> | null = null;
  /** Plugin set-ups and teardowns run one after the other, in the order the scheduler sent them. */
  #pluginChain: Promise<unknown> = Promise.resolve();
  /** Log records on their way to the scheduler, sent once a second (CLUSTER_FORWARD_LOGS=0 turns it off). */
  #logs = new LogForwarder({ role: "nanny" });
  #logTimer: ReturnType<typeof setInterval> | null = null;
  /** Welcomed once: from then on the link takes more than its handshake. */
  #welcomed = false;

  private constructor(options: NannyOptions) {
    this.#options = options;
    this.name = options.name ?? `${hostname()}-${process.pid}`;
    this.#session = new SchedulerSession({
      scheduler: options.scheduler,
      path: "/api/v1/nanny",
      role: "nanny",
      deathTimeoutMs: options.deathTimeoutMs,
      gaveUp: (reason) => this.close(new Error(reason)),
      register: () => ({ op: "register", name: this.name, address: this.address, pid: process.pid }),
      welcome: (msg) => this.#welcome(msg as { plugins?: WirePluginSpec[] }),
      message: (msg) => this.#handle(msg as unknown as SchedulerToNanny),
      log,
    });
    this.closed = new Promise((resolveClosed, rejectClosed) => {
      this.#resolveClosed = resolveClosed;
      this.#rejectClosed = rejectClosed;
    });
    this.closed.catch(() => {}); // whoever awaits `closed` still sees the rejection
    this.plugins = new PluginManager<NannyPlugin>((name, hook, err) => {
      log.error(`Plugin "${name}" failed in ${hook}: ${errorMessage(err)}`);
      this.#send({ op: "plugin-error", plugin: name, hook, error: errorMessage(err) });
    });
    this.api = withLiveFields({
      role: "nanny" as const,
      env: this.env,
      taskPaths: this.taskPaths,
      restartWorker: (reason: string) => this.restartWorker(reason),
      log: log.child("plugin"),
    }, this as Nanny, ["name", "address", "localDirectory"]);
  }

  /** Starts a nanny: registers, sets up nanny plugins, then starts the worker. */
  static async start(options: NannyOptions): Promise<Nanny> {
    const nanny = new Nanny(options);
    await nanny.#start();
    return nanny;
  }

  async #start(): Promise<void> {
    const opts = this.#options;
    if (process.env.CLUSTER_FORWARD_LOGS !== "0") {
      this.#logs.attach();
      this.#logTimer = setInterval(() => this.#forwardLogs(), 1000);
    }
    this.localDirectory = localDirectory(opts.localDirectory, "nanny", this.name);
    await mkdir(this.localDirectory, { recursive: true });
    const app = new Hono();
    app.get("/health", (c) => c.json({ status: "ok", role: "nanny", version, name: this.name, worker: this.#child?.pid ?? null, restarts: this.restarts }));
    // Data address (see lib/address.ts): without --host, the address this host reaches the scheduler from.
    const connectDeadline = Date.now() + opts.connectTimeoutMs;
    const data = await chooseDataHost(opts.host, opts.scheduler, connectDeadline, (m) => log.warn(m));
    this.#workerHost = opts.host || data.listen;
    this.#server = await runtime.serve(app, { hostname: data.listen, port: 0, tls: opts.tls });
    this.address = `${this.#server.protocol}://${data.announce}:${this.#server.port}`;
    const preloads = await preloadSpecs(opts.preloadNanny ?? [], "nanny", opts.preloadOptions).catch(async (err) => {
      await this.#server!.stop();
      throw err;
    });
    const failures: string[] = [];
    for (const spec of [...opts.nannyPlugins, ...preloads]) {
      const { error } = await this.#addPlugin(spec, opts.baseDir ?? process.cwd(), false);
      if (error) {
        log.error(`Plugin "${spec.name ?? spec.use}" failed to set up: ${error}`);
        failures.push(error);
      }
    }
    if (failures.length > 0) {
      await this.plugins.closeAll((p) => p.teardown?.(this.api));
      await this.#server.stop();
      throw new PluginError(opts.nannyPlugins[0].name ?? opts.nannyPlugins[0].use, failures.join("; "));
    }
    await this.#session.connect(Math.max(1, connectDeadline - Date.now()));
    // Heartbeats as workers send them: the scheduler removes a nanny silent past --worker-ttl.
    this.#heartbeat = setInterval(() => this.#session.isOpen && this.#send({ op: "heartbeat" }), 1000);
    this.#firstStart = this.#startFirstWorker();
    await this.#firstStart;
    if (opts.memoryLimit) this.#memoryTimer = setInterval(() => this.#checkMemory(), 250);
  }

  /**
   * Starts the first worker, retrying with backoff; after `maxStartupFailures` failed start-ups
   * the nanny closes and throws. From then on `#onExit` supervises.
   */
  async #startFirstWorker(): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        await this.#startWorker();
        this.#supervising = true;
        return;
      } catch (err) {
        if (this.#closing) throw err;
        if ((err as { exitCode?: number }).exitCode === unreachableExitCode) {
          // Not a start-up death: the scheduler went away (a restart). Wait for it.
          attempt--;
          await this.#waitForScheduler();
          continue;
        }
        if (attempt >= maxStartupFailures) {
          await this.close();
          throw new Error(`Worker keeps dying at start-up (${attempt} times in a row): giving up: ${errorMessage(err)}`);
        }
        log.warn(`${errorMessage(err)}; trying again (${attempt} of ${maxStartupFailures})`);
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** (attempt - 1), 5000)));
        this.restarts++;
      }
    }
  }

  // ---- the scheduler -------------------------------------------------------------------------

  /** Waits until the nanny is registered with its scheduler again (or closes). */
  async #waitForScheduler(): Promise<void> {
    if (this.#session.isOpen) return;
    log.warn(`The worker cannot reach the scheduler at ${this.#options.scheduler}: waiting for it to come back`);
    await Promise.race([this.#session.whenOpen(), this.closed.catch(() => {})]);
  }

  async #welcome(msg: { plugins?: WirePluginSpec[] }): Promise<void> {
    // Nanny plugins first, so the first worker starts with their environment and files. Those
    // that fail are named in `ready`: the scheduler then gives this nanny's worker no task.
    const failed = await this.#serially(async () => {
      const out: PluginFailure[] = [];
      for (const spec of msg.plugins ?? []) {
        const { error } = await this.#addPlugin(spec, this.localDirectory, false);
        if (error) {
          const plugin = spec.name ?? spec.use;
          log.error(`Plugin "${plugin}" failed to set up: ${error}`);
          out.push({ plugin, error });
        }
      }
      return out;
    });
    this.#send(failed.length > 0 ? { op: "ready", failed } : { op: "ready" });
    if (this.#child) this.#send({ op: "worker", worker: this.name, restarts: this.restarts });
    this.#welcomed = true;
  }

  /** Sends the queued log records while registered; else they wait (bounded) in the queue. */
  #forwardLogs(): void {
    if (!this.#welcomed || !this.#session.isOpen || this.#logs.size === 0) return;
    this.#send({ op: "logs", records: this.#logs.take() });
  }

  #send(msg: NannyToScheduler): void {
    try {
      this.#session.send([msg]);
    } catch {
      // reconnecting
    }
  }

  #handle(msg: SchedulerToNanny): void {
    switch (msg.op) {
      case "plugin-add":
        this.#serially(() => this.#addPlugin(msg.spec, this.localDirectory, true)).then(({ error, warning }) => {
          if (error) log.error(`Plugin "${msg.spec.name ?? msg.spec.use}" failed to set up: ${error}`);
          this.#send(error ? { op: "reply", id: msg.id, error } : warning ? { op: "reply", id: msg.id, warning } : { op: "reply", id: msg.id });
        });
        break;
      case "plugin-remove":
        this.#serially(() => this.plugins.remove(msg.name, (p) => p.teardown?.(this.api))).then(() => {
          this.#send({ op: "reply", id: msg.id });
        });
        break;
      case "close":
        // Retired: answer, then stop the worker for good and leave (the process exits).
        log.info(`The scheduler retires this nanny's worker: ${msg.reason}`);
        this.#send({ op: "reply", id: msg.id });
        setTimeout(() => this.close(), 50);
        break;
      case "restart-worker":
        this.restartWorker(String(msg.reason ?? "restart requested")).then(
          () => this.#send({ op: "reply", id: msg.id, pid: this.#child?.pid }),
          (err) => this.#send({ op: "reply", id: msg.id, error: errorMessage(err) }),
        );
        break;
      default:
        log.warn(`Unknown message "${(msg as { op: string }).op}" from the scheduler`);
    }
  }

  /** Runs a plugin set-up or teardown after those before it. */
  #serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#pluginChain.then(run, run);
    this.#pluginChain = next.catch(() => {});
    return next;
  }

  /**
   * Adds a plugin; returns the setup's error, if any. Restarts the worker if the plugin asks:
   * a restart that fails (the worker keeps dying) is a `warning`, not a failed setup — the
   * plugin is set up, and Dask keeps it.
   */
  async #addPlugin(spec: WirePluginSpec, baseDir: string, mayRestart: boolean): Promise<{ error?: string; warning?: string }> {
    let loaded;
    try {
      loaded = await instantiatePlugin<NannyPlugin>(spec, {
        baseDir,
        moduleDir: join(this.localDirectory, "plugins"),
        log: log.child(`plugin:${spec.name ?? spec.use}`),
      });
      const result = await this.plugins.add({ ...loaded, spec }, {
        start: (p) => p.setup?.(this.api),
        teardown: (p) => p.teardown?.(this.api),
      });
      if (result === "kept" || !mayRestart || !loaded.plugin.restart) return {};
    } catch (err) {
      return { error: errorMessage(err) };
    }
    // A worker that is still starting is restarted once it registered (restartWorker waits).
    if (!this.#child && !this.#firstStart) return {};
    try {
      await this.restartWorker(`plugin "${loaded.name}" asks for a restart`);
      return {};
    } catch (err) {
      const warning = `the worker restart that plugin "${loaded.name}" asked for failed: ${errorMessage(err)}`;
      log.warn(warning);
      return { warning };
    }
  }

  // ---- the worker process --------------------------------------------------------------------

  #workerCommand(): { command: string; args: string[] } {
    const [command, ...lead] = runtime.selfCommand();
    const o = this.#options;
    const args = [...lead, "worker", o.scheduler, "--name", this.name, "--nthreads", String(o.nthreads),
      "--host", this.#workerHost, "--port", String(o.port), "--local-directory", join(this.localDirectory, "worker"),
      "--connect-timeout", String(Math.ceil(o.connectTimeoutMs / 1000))];
    for (const p of o.preload) args.push("--preload", p);
    if (o.preloadOptions) args.push("--preload-options", JSON.stringify(o.preloadOptions));
    for (const t of o.tasks) args.push("--tasks", t);
    if (o.pluginsFile) args.push("--plugins", o.pluginsFile);
    if (o.contactAddress) args.push("--contact-address", o.contactAddress);
    if (o.deathTimeoutMs) args.push("--death-timeout", String(Math.ceil(o.deathTimeoutMs / 1000)));
    if (o.workerArgs.includes("--debug")) args.push("--debug");
    args.push(...tlsFlags(o.workerArgs));
    return { command, args };
  }

  /** Starts the worker and resolves when it has registered (its ready line). */
  #startWorker(): Promise<void> {
    const { command, args } = this.#workerCommand();
    const env: Record<string, string> = {
      ...process.env as Record<string, string>,
      ...this.env,
      CLUSTER_NANNY: "1",
      CLUSTER_WORKER_RESTARTS: String(this.restarts),
    };
    if (this.taskPaths.length > 0) env.CLUSTER_TASK_PATHS = this.taskPaths.join(delimiter);
    const child = spawn(command, args, { env, stdio: ["pipe", "pipe", "inherit"] });
    this.#child = child;
    const startedAt = Date.now();
    this.#childReady = new Promise<void>((resolveReady, rejectReady) => {
      let buffer = "";
      let ready = false;
      child.stdout!.setEncoding("utf8");
      child.stdout!.on("data", (chunk: string) => {
        if (ready) return;
        buffer += chunk;
        if (/worker .* listening at /.test(buffer)) {
          ready = true;
          this.#startupFailures = 0;
          this.#send({ op: "worker", worker: this.name, restarts: this.restarts, pid: child.pid });
          resolveReady();
        }
      });
      child.on("exit", (code, signal) => {
        if (!ready) rejectReady(Object.assign(new Error(`Worker exited during start-up (${signal ?? `code ${code}`})`), { exitCode: code }));
        this.#onExit(child, { code, signal, startedAt, ready });
      });
      child.on("error", (err) => rejectReady(err));
    });
    this.#childReady.catch(() => {});
    log.info(`Started worker process ${child.pid}`);
    return this.#childReady;
  }

  #onExit(child: ChildProcess, exit: { code: number | null; signal: string | null; startedAt: number; ready: boolean }): void {
    if (this.#child === child) this.#child = null;
    if (this.#intentionalExit.has(child) || this.#closing || !this.#supervising) return;
    if (exit.code === unreachableExitCode) {
      this.#restartChain = this.#restartChain.then(async () => {
        await this.#waitForScheduler();
        if (this.#closing || this.#child) return;
        this.restarts++;
        await this.#startWorker().catch((err) => log.warn(errorMessage(err)));
      });
      return;
    }
    log.warn(`Worker process ${child.pid} exited unexpectedly (${exit.signal ?? `code ${exit.code}`})`);
    if (!exit.ready) this.#startupFailures++;
    if (this.#startupFailures >= maxStartupFailures) {
      const error = new Error(`Worker keeps dying at start-up (${this.#startupFailures} times in a row): giving up`);
      log.error(error.message);
      this.#send({ op: "event", topic: "log", msg: { level: "error", message: `nanny ${this.name} gave up restarting its worker` } });
      this.close(error);
      return;
    }
    this.#quickDeaths = Date.now() - exit.startedAt < quickDeathMs ? this.#quickDeaths + 1 : 0;
    const delay = this.#quickDeaths === 0 ? 0 : Math.min(100 * 2 ** (this.#quickDeaths - 1), 5000);
    this.#restartChain = this.#restartChain.then(async () => {
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      if (this.#closing || this.#child) return;
      this.restarts++;
      await this.#startWorker().catch((err) => log.warn(errorMessage(err)));
    });
  }

  async #checkMemory(): Promise<void> {
    const child = this.#child;
    const limit = this.#options.memoryLimit;
    if (!child?.pid || !limit) return;
    const rss = await processRss(child.pid);
    if (rss > limit && this.#child === child && !this.#intentionalExit.has(child)) {
      log.warn(`Worker process ${child.pid} uses ${formatBytes(rss)}, past its memory limit of ${formatBytes(limit)}: restarting it`);
      this.#send({ op: "event", topic: "log", msg: { level: "warning", message: `worker ${this.name} exceeded its memory limit`, rss, limit } });
      // Not intentional from the supervisor's view: the restart path handles it as a death.
      child.kill("SIGKILL");
    }
  }

  /** Stops the worker (gracefully, then killed after `timeoutMs`) and waits for its exit. */
  async #stopWorker(timeoutMs = 10_000): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    this.#intentionalExit.add(child);
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => {
      log.warn(`Worker process ${child.pid} did not exit in time; killing it`);
      child.kill("SIGKILL");
    }, timeoutMs);
    await exited;
    clearTimeout(timer);
    if (this.#child === child) this.#child = null;
  }

  /** Restarts the worker process; resolves when the new one has registered. */
  restartWorker(reason: string): Promise<void> {
    const run = async () => {
      // A first worker still starting is restarted only once it registered: two workers must
      // never race for one name.
      if (this.#firstStart && !this.#supervising) await this.#firstStart.catch(() => {});
      if (this.#closing) return;
      log.info(`Restarting the worker: ${reason}`);
      await this.#stopWorker(5_000);
      this.restarts++;
      await this.#startWorker();
    };
    const next = this.#restartChain.then(run, run);
    this.#restartChain = next.catch(() => {});
    return next;
  }

  /**
   * Closes: the worker exits gracefully, nanny plugins tear down, the nanny leaves. With
   * `error` (the nanny gave up), `closed` rejects with it once all that is done.
   */
  close(error?: Error): Promise<void> {
    this.#closePromise ??= (async () => {
      this.#closing = true;
      if (this.#memoryTimer) clearInterval(this.#memoryTimer);
      if (this.#heartbeat) clearInterval(this.#heartbeat);
      await this.#stopWorker();
      await this.plugins.closeAll((p) => p.teardown?.(this.api));
      if (this.#logTimer) clearInterval(this.#logTimer);
      this.#forwardLogs();
      this.#logs.detach();
      this.#session.close("nanny closing");
      await this.#server?.stop();
      await removeOwnDirectory(this.#options.localDirectory, this.localDirectory);
      log.info(`Nanny "${this.name}" closed`);
      if (error) this.#rejectClosed(error);
      else this.#resolveClosed();
    })();
    return this.#closePromise;
  }
}
