/**
 * The `process-pool` built-in worker plugin: adds an executor of N child processes to the worker,
 * so that CPU-bound tasks annotated `{"executor": NAME}` run in parallel instead of on the
 * worker's event loop (Dask's `ProcessPoolExecutor` on a worker).
 *
 * Each child is this same program started with `CLUSTER_EXECUTOR_CHILD=1` (see
 * lib/worker/executor-child.ts); requests and results travel as length-prefixed CBOR over the
 * child's stdin and stdout. A task goes to the child with the fewest tasks in flight. A child that
 * dies fails its tasks with a clear error and is started again.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { errorMessage } from "../lib/errors.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import { integerAtLeast } from "../lib/plugins/options.ts";
import type { Executor, Logger, PluginContext, WorkerApi, WorkerPlugin } from "../lib/plugins/types.ts";
import { runtime } from "../lib/runtime/mod.ts";
import { encodeFrame, type ExecutorReply, type ExecutorRequest, FrameReader } from "../lib/worker/executor-child.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** Options of the `process-pool` plugin. */
export interface ProcessPoolOptions {
  /** The executor's name, as used in `annotations.executor`. @default "processes" */
  name?: string;
  /** How many child processes. @default 2 */
  size?: number;
}

/** How long a child may take to start and greet (ms). */
const startTimeoutMs = 60_000;
/** How long `close()` waits for a child to exit before killing it (ms). */
const closeTimeoutMs = 3_000;

interface Pending {
  fn: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** One child process of the pool. */
class PoolChild {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly startedAt = Date.now();
  /** Resolves once the child greeted; rejects if it died or spoke nonsense first. */
  readonly ready: Promise<void>;
  readonly inflight = new Map<number, Pending>();
  /** Set once the child has exited (or is being stopped). */
  dead = false;
  #reader = new FrameReader();
  #greeted = false;
  #settleReady!: (err?: Error) => void;

  constructor(command: string[], onExit: (child: PoolChild, why: string) => void) {
    const [cmd, ...args] = command;
    this.process = spawn(cmd, args, {
      env: { ...process.env, CLUSTER_EXECUTOR_CHILD: "1" },
      stdio: ["pipe", "pipe", "inherit"],
    });
    this.pid = this.process.pid ?? -1;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#settleReady = (err) => (err ? reject(err) : resolve());
    });
    this.ready.catch(() => {});
    this.process.stdout!.on("data", (chunk: Uint8Array) => this.#receive(chunk));
    this.process.stdin!.on("error", () => {}); // EPIPE after death: the exit handler reports it
    let exited = false;
    const exit = (why: string) => {
      if (exited) return;
      exited = true;
      this.dead = true;
      this.#settleReady(new Error(`it exited before it was ready (${why})`));
      onExit(this, why);
    };
    this.process.on("exit", (code, signal) => exit(signal ? `signal ${signal}` : `exit code ${code}`));
    this.process.on("error", (err) => exit(errorMessage(err)));
  }

  /** Sends one request. */
  send(request: ExecutorRequest, pending: Pending): void {
    this.inflight.set(request.id, pending);
    this.process.stdin!.write(encodeFrame(request));
  }

  /** Asks the child to stop: stdin closes (it exits by itself), then SIGTERM, then SIGKILL. */
  async stop(): Promise<void> {
    this.dead = true;
    const proc = this.process;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    proc.stdin!.end();
    const term = setTimeout(() => proc.kill("SIGTERM"), closeTimeoutMs / 2);
    const kill = setTimeout(() => proc.kill("SIGKILL"), closeTimeoutMs);
    await exited;
    clearTimeout(term);
    clearTimeout(kill);
  }

  #receive(chunk: Uint8Array): void {
    let replies: unknown[];
    try {
      replies = this.#reader.push(chunk);
    } catch (err) {
      this.#protocolError(`malformed output: ${errorMessage(err)}`);
      return;
    }
    for (const reply of replies as ExecutorReply[]) {
      if (!this.#greeted) {
        if (reply && (reply as { ready?: boolean }).ready === true) {
          this.#greeted = true;
          this.#settleReady();
          continue;
        }
        this.#protocolError("it did not greet");
        return;
      }
      const id = (reply as { id?: number }).id ?? -1;
      const pending = this.inflight.get(id);
      if (!pending) continue;
      this.inflight.delete(id);
      if ("error" in reply) {
        const err = new Error(reply.error);
        if (reply.name) err.name = reply.name;
        err.stack = reply.stack ?? `${err.name}: ${err.message}`;
        pending.reject(err);
      } else {
        pending.resolve((reply as { value: unknown }).value);
      }
    }
  }

  #protocolError(what: string): void {
    const err = new Error(
      `Executor child process ${this.pid} does not speak the executor protocol (${what}); ` +
        `is CLUSTER_EXECUTOR_CHILD handled by cmd/cluster.ts?`,
    );
    this.#settleReady(err);
    this.process.kill("SIGKILL");
  }
}

/**
 * An executor of `size` child processes.
 *
 * @example
 * ```ts
 * const pool = new ProcessPool({ name: "processes", size: 2, log: console });
 * await pool.start();
 * await pool.run("builtin.inc", [1], { modules: [] }); // 2
 * await pool.close();
 * ```
 */
export class ProcessPool implements Executor {
  readonly name: string;
  readonly size: number;
  #log: Logger;
  #command: string[];
  #slots: Array<PoolChild | null>;
  #nextId = 0;
  #closed = false;
  /** Consecutive quick deaths per slot, for the respawn backoff. */
  #quickDeaths: number[];
  #waiting: Array<() => void> = [];
  #turn = 0;

  constructor(options: { name: string; size: number; log: Logger; command?: string[] }) {
    this.name = options.name;
    this.size = options.size;
    this.#log = options.log;
    this.#command = options.command ?? runtime.selfCommand();
    this.#slots = new Array(this.size).fill(null);
    this.#quickDeaths = new Array(this.size).fill(0);
  }

  /** Starts every child and waits until all have greeted; throws (and stops them) if one cannot. */
  async start(): Promise<void> {
    for (let i = 0; i < this.size; i++) this.#spawn(i);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`it did not start within ${startTimeoutMs / 1000} s`)), startTimeoutMs);
    });
    try {
      await Promise.race([Promise.all(this.#slots.map((c) => c!.ready)), timeout]);
    } catch (err) {
      await this.close();
      throw new Error(`Cannot start process pool "${this.name}": a child process failed: ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
    }
    this.#log.info(`Process pool "${this.name}" started ${this.size} children (pids ${this.pids().join(", ")})`);
  }

  /** The PIDs of the live children. */
  pids(): number[] {
    return this.#slots.filter((c): c is PoolChild => c !== null && !c.dead).map((c) => c.pid);
  }

  /** Runs `fn(...args)` in the least busy child. */
  async run(fn: string, args: unknown[], options: { modules: string[] }): Promise<unknown> {
    let child = this.#leastBusy();
    while (!child) {
      if (this.#closed) throw new Error(`Process pool "${this.name}" is closed`);
      // Every child is being restarted: wait for one.
      await new Promise<void>((r) => this.#waiting.push(r));
      child = this.#leastBusy();
    }
    const request: ExecutorRequest = { id: ++this.#nextId, fn, args, modules: options.modules };
    return await new Promise((resolve, reject) => {
      try {
        child.send(request, { fn, resolve, reject });
      } catch (err) {
        child.inflight.delete(request.id);
        reject(new Error(`Cannot send task "${fn}" to process pool "${this.name}": ${errorMessage(err)}`));
      }
    });
  }

  /** Stops every child; tasks still in flight fail. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const wake of this.#waiting.splice(0)) wake();
    const children = this.#slots.filter((c): c is PoolChild => c !== null);
    this.#slots.fill(null);
    for (const child of children) this.#failInflight(child, `process pool "${this.name}" closed`);
    await Promise.all(children.map((c) => c.stop()));
  }

  #leastBusy(): PoolChild | null {
    // Ties go round-robin, so that idle children share the work (and a restarted one gets some).
    let best: PoolChild | null = null;
    const n = this.#slots.length;
    for (let i = 0; i < n; i++) {
      const child = this.#slots[(this.#turn + i) % n];
      if (child && !child.dead && (!best || child.inflight.size < best.inflight.size)) best = child;
    }
    this.#turn = (this.#turn + 1) % n;
    return best;
  }

  #spawn(slot: number): void {
    const child = new PoolChild(this.#command, (dead, why) => this.#onExit(slot, dead, why));
    this.#slots[slot] = child;
    child.ready.then(() => {
      this.#quickDeaths[slot] = 0;
      for (const wake of this.#waiting.splice(0)) wake();
    }, () => {});
  }

  #onExit(slot: number, child: PoolChild, why: string): void {
    this.#failInflight(child, `executor child process ${child.pid} of process pool "${this.name}" died (${why})`);
    if (this.#closed || this.#slots[slot] !== child) return;
    this.#slots[slot] = null;
    const quick = Date.now() - child.startedAt < 5_000;
    this.#quickDeaths[slot] = quick ? this.#quickDeaths[slot] + 1 : 0;
    const delay = quick ? Math.min(100 * 2 ** this.#quickDeaths[slot], 10_000) : 0;
    this.#log.warn(`Executor child process ${child.pid} of process pool "${this.name}" died (${why}); restarting it`);
    setTimeout(() => {
      if (!this.#closed && this.#slots[slot] === null) this.#spawn(slot);
    }, delay);
  }

  #failInflight(child: PoolChild, why: string): void {
    for (const [id, pending] of child.inflight) {
      child.inflight.delete(id);
      pending.reject(new Error(`Task "${pending.fn}" failed: ${why}`));
    }
  }
}

/**
 * The plugin: starts the pool in `setup` and adds it to the worker as an executor.
 *
 * @example
 * ```toml
 * [[worker.plugins]]
 * use = "process-pool"
 * size = 4
 * ```
 */
export class ProcessPoolPlugin implements WorkerPlugin {
  name = "process-pool";
  #options: Required<ProcessPoolOptions>;
  #log: Logger;
  #pool: ProcessPool | null = null;

  constructor(options: ProcessPoolOptions, context: Pick<PluginContext, "log">) {
    this.#options = { name: options.name ?? "processes", size: options.size ?? 2 };
    if (!Number.isInteger(this.#options.size) || this.#options.size < 1) {
      throw new RangeError(`Option "size" of process-pool must be an integer of at least 1, got ${this.#options.size}`);
    }
    this.name = processPoolName(this.#options.name);
    this.#log = context.log;
  }

  /** The running pool, once set up. */
  get pool(): ProcessPool | null {
    return this.#pool;
  }

  async setup(worker: WorkerApi): Promise<void> {
    await this.#pool?.close();
    const pool = new ProcessPool({ ...this.#options, log: this.#log });
    await pool.start();
    this.#pool = pool;
    worker.addExecutor(this.#options.name, pool);
  }

  async teardown(worker: WorkerApi): Promise<void> {
    const pool = this.#pool;
    this.#pool = null;
    worker.removeExecutor(this.#options.name);
    await pool?.close();
  }
}

const options: Record<string, CheckedOptionSpec> = {
  name: { type: "string", default: "processes", description: 'the executor name tasks use in {"executor": NAME}' },
  size: { type: "number", default: 2, check: integerAtLeast(1), description: "how many child processes" },
};

/** `process-pool` for the default executor, `process-pool-NAME` for another (pools side by side). */
function processPoolName(executor: unknown): string {
  return executor === undefined || executor === "processes" ? "process-pool" : `process-pool-${executor}`;
}

/**
 * The `process-pool` entry of `builtinPlugins`. An entry's `name` is the executor's name (the
 * name tasks use in `{"executor": NAME}`); the plugin registers as `process-pool`, or
 * `process-pool-NAME` for an executor not called `processes`.
 */
export const processPool: BuiltinPlugin = {
  role: "worker",
  description: "adds an executor of N child processes; tasks annotated {executor: NAME} run there",
  options,
  nameOption: "name",
  pluginName: (opts) => processPoolName(opts.name),
  create: (opts, context) => new ProcessPoolPlugin(opts as ProcessPoolOptions, context),
};
