/**
 * A private RabbitMQ broker for tests: Debian's `rabbitmq-server` started on a free loopback
 * port, with its own node name, Erlang cookie (`HOME`), config, data and log directories in a
 * temporary directory, and no plugins. It can be stopped and started again on the same port
 * and data directory (for outage tests), and is always killed when the test process exits.
 *
 * Start-up is dominated by the Erlang VM loading and JIT-compiling RabbitMQ's modules (a few
 * seconds of CPU), so the broker only gets the applications it needs on its code path, a
 * classic `.config` file (no cuttlefish schema translation) and no scheduler busy-waiting.
 *
 * Install the broker with `.ci/install-rabbitmq.sh`.
 *
 * @module
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import amqp from "amqplib";
import type { ConsumeMessage } from "amqplib";
import { freePort, tcpOpen } from "./net.ts";
import { sleep } from "./wait.ts";

/** A running private broker. */
export interface RabbitMQ {
  /** `amqp://guest:guest@127.0.0.1:PORT`. */
  readonly url: string;
  /** The AMQP port on 127.0.0.1; it stays the same across `restart()`. */
  readonly port: number;
  /** The node name, e.g. `cluster-test-1234-abcd@localhost`. */
  readonly nodename: string;
  /** The temporary directory holding config, data and logs. */
  readonly dir: string;
  /** Milliseconds the last start took, until an AMQP connection succeeded. */
  readonly startMs: number;
  /** Whether the broker is running (between start and stop). */
  readonly running: boolean;
  /**
   * Stops the broker but keeps its data directory. `graceful` (the default) sends SIGTERM and
   * waits for RabbitMQ to shut down cleanly; `graceful: false` kills it with SIGKILL at once
   * (a crash). Either way the broker's processes are gone when the promise resolves.
   */
  pause(options?: { graceful?: boolean }): Promise<void>;
  /** Starts the broker again on the same port and data directory; resolves once AMQP works. */
  restart(): Promise<void>;
  /** Stops the broker and deletes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** Where Debian's package installs the broker's scripts and applications. */
const RABBITMQ_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RABBITMQ_LIB = "/usr/lib/rabbitmq/lib";
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

/** Brokers started by this process, killed on exit if a test forgot them. */
const live = new Set<Broker>();
let exitHookInstalled = false;

/**
 * Starts a private broker on a free port of 127.0.0.1 and waits until an AMQP connection works.
 * Throws if `rabbitmq-server` is not installed, naming the script that installs it.
 *
 * @example
 * ```ts
 * const broker = await startRabbitMQ();
 * try {
 *   await useBroker(broker.url);
 * } finally {
 *   await broker.stop();
 * }
 * ```
 */
export async function startRabbitMQ(): Promise<RabbitMQ> {
  const pluginsSource = findPluginsDir();
  const dir = mkdtempSync(join(tmpdir(), "cluster-rabbitmq-"));
  const port = await freePort();
  const nodename = `cluster-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}@localhost`;
  const broker = new Broker({ dir, port, nodename, pluginsSource });
  installExitHook();
  live.add(broker);
  try {
    await broker.restart();
  } catch (err) {
    await broker.stop();
    throw err;
  }
  return broker;
}

class Broker implements RabbitMQ {
  readonly url: string;
  readonly port: number;
  readonly nodename: string;
  readonly dir: string;
  startMs = 0;
  #child: ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  #logFile: string;
  #env: Record<string, string>;
  #removed = false;

  constructor(init: { dir: string; port: number; nodename: string; pluginsSource: string }) {
    const { dir, port, nodename } = init;
    this.dir = dir;
    this.port = port;
    this.nodename = nodename;
    this.url = `amqp://guest:guest@127.0.0.1:${port}`;
    this.#logFile = join(dir, "stdout.log");
    const home = join(dir, "home");
    const plugins = join(dir, "plugins");
    for (const sub of ["home", "mnesia", "log", "plugins"]) mkdirSync(join(dir, sub), { recursive: true });
    linkNeededApps(init.pluginsSource, plugins);
    writeFileSync(join(dir, "rabbitmq-env.conf"), "");
    writeFileSync(join(dir, "enabled_plugins"), "[].\n");
    // Classic Erlang-term config: no cuttlefish translation at boot.
    writeFileSync(
      join(dir, "rabbitmq.config"),
      `[{rabbit, [{tcp_listeners, [{"127.0.0.1", ${port}}]},
           {log, [{console, [{enabled, false}]}, {file, [{level, warning}]}]}]}].\n`,
    );
    this.#env = {
      PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
      LANG: "C.UTF-8",
      HOME: home,
      RABBITMQ_NODENAME: nodename,
      RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
      RABBITMQ_NODE_PORT: String(port),
      RABBITMQ_CONF_ENV_FILE: join(dir, "rabbitmq-env.conf"),
      RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq.config"),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, "advanced.config"),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
      RABBITMQ_PLUGINS_DIR: plugins,
      RABBITMQ_MNESIA_BASE: join(dir, "mnesia"),
      RABBITMQ_LOG_BASE: join(dir, "log"),
      // A port mapper this starts itself listens on loopback only; one already running is shared.
      ERL_EPMD_ADDRESS: "127.0.0.1",
      // Two cores shared with other work: don't let idle schedulers spin.
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "+sbwt none +sbwtdcpu none +sbwtdio none",
    };
  }

  get running(): boolean {
    return this.#child !== null;
  }

  async restart(): Promise<void> {
    if (this.#removed) throw new Error(`Cannot start RabbitMQ node "${this.nodename}": it was stopped for good`);
    if (this.#child) return;
    const began = performance.now();
    const env = { ...this.#env, RABBITMQ_DIST_PORT: String(await freePort()) };
    const fd = openSync(this.#logFile, "a");
    let child: ChildProcess;
    try {
      // `detached` makes the script the leader of a new process group, so the group (the shell
      // and beam.smp) can be signalled as one.
      child = spawn(RABBITMQ_BIN, [], { cwd: this.dir, env, detached: true, stdio: ["ignore", fd, fd] });
    } finally {
      closeSync(fd);
    }
    this.#child = child;
    if (child.pid) startWatchdog(child.pid, this.dir);
    this.#exited = new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    let exitCode: number | null = null;
    child.once("exit", (code) => (exitCode = code ?? -1));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (true) {
      if (exitCode !== null) {
        this.#child = null;
        throw new Error(
          `Cannot start RabbitMQ on port ${this.port}: rabbitmq-server exited with code ${exitCode}\n${this.#tail()}`,
        );
      }
      if (Date.now() > deadline) {
        await this.pause({ graceful: false });
        throw new Error(`Cannot start RabbitMQ on port ${this.port}: not ready after ${START_TIMEOUT_MS} ms\n${this.#tail()}`);
      }
      if ((await tcpOpen(this.port)) && (await amqpOpens(this.url))) break;
      await sleep(50);
    }
    this.startMs = performance.now() - began;
  }

  async pause(options: { graceful?: boolean } = {}): Promise<void> {
    const child = this.#child;
    if (!child?.pid) {
      this.#child = null;
      return;
    }
    const pgid = child.pid;
    // beam.smp's helpers (erl_child_setup, inet_gethost) run in process groups of their own;
    // they exit when beam.smp does, but note them so they can be killed by PID if they linger.
    const helpers = descendants(pgid);
    if (options.graceful ?? true) {
      signalGroup(pgid, "SIGTERM");
      await Promise.race([this.#exited, sleep(STOP_TIMEOUT_MS)]);
    }
    signalGroup(pgid, "SIGKILL");
    await this.#exited;
    // The shell exiting does not mean beam.smp is gone: wait until the whole group is.
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (groupAlive(pgid) && Date.now() < deadline) {
      signalGroup(pgid, "SIGKILL");
      await sleep(20);
    }
    for (const pid of helpers) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    this.#child = null;
    // Wait until the port is free again, so a restart can bind it.
    while ((await tcpOpen(this.port)) && Date.now() < deadline) await sleep(20);
  }

  async stop(): Promise<void> {
    await this.pause({ graceful: false });
    if (!this.#removed) {
      this.#removed = true;
      live.delete(this);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** Kills the broker synchronously (process exit hook). */
  killNow(): void {
    if (this.#child?.pid) signalGroup(this.#child.pid, "SIGKILL");
    this.#child = null;
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      // Best effort at exit.
    }
  }

  #tail(): string {
    const parts: string[] = [];
    for (const file of [this.#logFile, join(this.dir, "log", `${this.nodename}.log`)]) {
      try {
        parts.push(readFileSync(file, "utf8").split("\n").slice(-30).join("\n"));
      } catch {
        // No such log yet.
      }
    }
    return parts.join("\n");
  }
}

function findPluginsDir(): string {
  const missing = `Cannot start RabbitMQ: "rabbitmq-server" is not installed (run ".ci/install-rabbitmq.sh" as root)`;
  if (!existsSync(RABBITMQ_BIN) || !existsSync(RABBITMQ_LIB)) throw new Error(missing);
  const server = readdirSync(RABBITMQ_LIB).find((name) => name.startsWith("rabbitmq_server-"));
  if (!server) throw new Error(missing);
  return join(RABBITMQ_LIB, server, "plugins");
}

/**
 * Links the `rabbit` application and its dependencies (read from the `.app` files) into
 * `target`: the ~50 optional plugins stay off the code path, which makes boot faster.
 */
function linkNeededApps(source: string, target: string): void {
  const dirs = new Map<string, string>();
  for (const entry of readdirSync(source)) {
    const match = /^(.+)-[0-9][^-]*$/.exec(entry);
    if (match) dirs.set(match[1], entry);
  }
  const needed = new Set<string>();
  const queue = ["rabbit", "cuttlefish"];
  while (queue.length > 0) {
    const app = queue.pop()!;
    const entry = dirs.get(app);
    if (!entry || needed.has(app)) continue;
    needed.add(app);
    let spec = "";
    try {
      spec = readFileSync(join(source, entry, "ebin", `${app}.app`), "utf8");
    } catch {
      continue;
    }
    for (const key of ["applications", "included_applications"]) {
      const list = new RegExp(`\\{${key},\\s*\\[([^\\]]*)\\]`).exec(spec)?.[1] ?? "";
      for (const dep of list.split(",")) if (dep.trim()) queue.push(dep.trim());
    }
  }
  for (const app of needed) symlinkSync(join(source, dirs.get(app)!), join(target, dirs.get(app)!));
}

/** Whether a full AMQP handshake succeeds (the listener opens before boot completes). */
async function amqpOpens(url: string): Promise<boolean> {
  try {
    const conn = await amqp.connect(url, { timeout: 2000 });
    conn.on("error", () => {});
    await conn.close().catch(() => {});
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // No process left in the group.
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PIDs of all descendants of `pid`, from /proc (Linux). */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  try {
    for (const name of readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const stat = readFileSync(`/proc/${name}/stat`, "utf8");
        // Fields after the command (which may hold spaces) in parentheses: state, ppid, ...
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        const list = children.get(ppid) ?? [];
        list.push(Number(name));
        children.set(ppid, list);
      } catch {
        // The process ended meanwhile.
      }
    }
  } catch {
    return [];
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const child of children.get(queue.pop()!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

/**
 * Kills the broker's process group and removes its directory if this process dies without
 * cleaning up (SIGKILL, a crashed runner), so no broker outlives its tests. The watchdog ends
 * by itself once the group is gone.
 */
function startWatchdog(pgid: number, dir: string): void {
  const script = `while kill -0 ${process.pid} 2>/dev/null && kill -0 -${pgid} 2>/dev/null; do sleep 1; done
if ! kill -0 ${process.pid} 2>/dev/null; then kill -KILL -${pgid} 2>/dev/null; sleep 2; rm -rf '${dir}'; fi`;
  const watchdog = spawn("/bin/sh", ["-c", script], { detached: true, stdio: "ignore" });
  watchdog.unref();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const broker of live) broker.killNow();
  });
}

/** Reads (and acks) every message in `queue`; the count comes from the broker first. */
export async function readQueue(url: string, queue: string, options: { timeoutMs?: number } = {}): Promise<ConsumeMessage[]> {
  const conn = await amqp.connect(url);
  conn.on("error", () => {});
  try {
    const channel = await conn.createChannel();
    const { messageCount } = await channel.checkQueue(queue);
    const out: ConsumeMessage[] = [];
    if (messageCount === 0) return out;
    await channel.prefetch(5000);
    await new Promise<void>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? 90_000;
      const timer = setTimeout(() => reject(new Error(`Timed out reading ${messageCount} messages, got ${out.length}`)), timeoutMs);
      channel.consume(queue, (msg) => {
        if (!msg) return;
        out.push(msg);
        channel.ack(msg);
        if (out.length === messageCount) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return out;
  } finally {
    await conn.close().catch(() => {});
  }
}

/** Deletes a queue. */
export async function deleteQueue(url: string, queue: string): Promise<void> {
  const conn = await amqp.connect(url);
  conn.on("error", () => {});
  try {
    const channel = await conn.createChannel();
    await channel.deleteQueue(queue);
  } finally {
    await conn.close().catch(() => {});
  }
}

/** A message's JSON body. */
export function messageBody<T = Record<string, unknown>>(msg: ConsumeMessage): T {
  return JSON.parse(msg.content.toString("utf8"));
}
