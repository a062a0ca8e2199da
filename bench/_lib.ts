/**
 * Benchmark helpers: starting `dist/cluster` processes on loopback and stopping them by PID
 * (also on Ctrl-C and on errors), reading a process's RSS and the scheduler's metrics, and the
 * statistics the report needs.
 *
 * Nothing here builds anything: the benchmark measures the binary that is already there.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const root: string = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The binary under test. */
export const binary: string = join(root, "dist", "cluster");

/** A process started by the benchmark. */
export interface Proc {
  child: ChildProcess;
  pid: number;
  /** The URL from the ready line. */
  url: string;
  /** Milliseconds from spawn to the ready line. */
  readyMs: number;
  /** The last stderr output, for error messages. */
  stderr(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const started = new Set<Proc>();

/** Throws a clear error when `dist/cluster` is missing. */
export function requireBinary(): void {
  if (!existsSync(binary)) {
    throw new Error(`Cannot run the benchmark: "${binary}" does not exist: run "npm run build" first`);
  }
}

/**
 * Spawns `dist/cluster ARGS…` and resolves once a stdout line matches `ready`
 * (by default `listening at URL`), with the time that took.
 *
 * @example
 * ```ts
 * const scheduler = await spawnReady(["scheduler", "--port", "0"]);
 * console.log(scheduler.url, scheduler.readyMs);
 * await scheduler.stop();
 * ```
 */
export function spawnReady(
  args: string[],
  options: {
    /** @default /listening at (\S+)/ */
    ready?: RegExp;
    /** @default 20_000 */
    timeoutMs?: number;
    /** The program and its leading arguments. @default [binary] */
    command?: string[];
    /** Keep stdin open as a pipe. @default false */
    stdin?: boolean;
  } = {},
): Promise<Proc> {
  const ready = options.ready ?? /listening at (\S+)/;
  const [program, ...lead] = options.command ?? [binary];
  const t0 = performance.now();
  const child = spawn(program, [...lead, ...args], { stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"], cwd: root });
  let err = "";
  let out = "";
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const proc: Proc = {
    child,
    pid: child.pid ?? -1,
    url: "",
    readyMs: NaN,
    stderr: () => err.slice(-2000),
    async stop(graceMs = 5_000) {
      if (child.exitCode === null && child.signalCode === null) {
        signal(proc.pid, "SIGTERM");
        const timer = setTimeout(() => signal(proc.pid, "SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }
      started.delete(proc);
    },
  };
  started.add(proc);
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    err = (err + chunk).slice(-8000);
    if (process.env.BENCH_VERBOSE) process.stderr.write(chunk);
  });
  return new Promise((resolveReady, reject) => {
    let done = false;
    const fail = (message: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      proc.stop(0).finally(() => reject(new Error(`${message}: ${err.trim().slice(-1000)}`)));
    };
    const shown = [program === binary ? "cluster" : program, ...lead, ...args].join(" ");
    const timer = setTimeout(() => fail(`Timed out waiting for "${shown}"`), options.timeoutMs ?? 20_000);
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      if (done) return;
      out += chunk;
      const m = ready.exec(out);
      if (!m) return;
      done = true;
      clearTimeout(timer);
      proc.readyMs = performance.now() - t0;
      proc.url = m[1] ?? "";
      resolveReady(proc);
    });
    child.once("error", (e) => fail(`Cannot start "${program}": ${e.message}`));
    child.once("exit", (code, sig) => fail(`"${shown}" exited (${code ?? sig}) before it was ready`));
  });
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** Stops every process the benchmark started and has not stopped yet. */
export async function stopAll(graceMs = 2_000): Promise<void> {
  await Promise.all([...started].map((p) => p.stop(graceMs)));
}

/** A scheduler and its workers. */
export interface BenchCluster {
  url: string;
  scheduler: Proc;
  workers: Proc[];
  stop(): Promise<void>;
}

let workerCounter = 0;

/**
 * Starts `dist/cluster scheduler --port 0` and `workers` × `dist/cluster worker URL --nthreads 1`,
 * each ready (workers print their line after registering).
 *
 * @example
 * ```ts
 * const cluster = await startCluster({ plugins: "/tmp/x/plugins.toml" });
 * try { … } finally { await cluster.stop(); }
 * ```
 */
export async function startCluster(options: {
  /** A plugins.toml for the scheduler. */
  plugins?: string;
  /** @default 2 */
  workers?: number;
} = {}): Promise<BenchCluster> {
  const scheduler = await spawnReady(["scheduler", "--port", "0", ...(options.plugins ? ["--plugins", options.plugins] : [])]);
  const workers: Proc[] = [];
  const cluster: BenchCluster = {
    url: scheduler.url,
    scheduler,
    workers,
    async stop() {
      // Workers first, so the scheduler does not reschedule their work while it closes.
      await Promise.all(workers.map((w) => w.stop()));
      await scheduler.stop();
    },
  };
  try {
    // One after the other: two binaries starting at once on two cores slow each other down.
    for (let i = 0; i < (options.workers ?? 2); i++) workers.push(await spawnWorker(scheduler.url));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Starts one `dist/cluster worker URL --nthreads 1` and waits for its ready line. */
export function spawnWorker(url: string): Promise<Proc> {
  return spawnReady(["worker", url, "--nthreads", "1", "--name", `bench-w${++workerCounter}-${process.pid}`]);
}

/** The resident set size of a process in bytes, from `/proc/PID/status` (`VmRSS`). */
export function readRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`Cannot read the RSS of process ${pid}: no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** The CPU time (user + system) a process has used so far, in milliseconds (Linux `/proc`). */
export function readCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of stat, in clock ticks (100 a second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** One unlabelled sample of the scheduler's Prometheus text (`GET /metrics`). */
export async function readMetric(url: string, name: string): Promise<number> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`Metric "${name}" is missing from ${url}/metrics`);
  return Number(m[1]);
}

/** The scheduler's task counts by state (`GET /api/v1/info`). */
export async function taskCounts(url: string): Promise<Record<string, number>> {
  const res = await fetch(`${url}/api/v1/info`);
  const info = await res.json() as { tasks: Record<string, number> };
  return info.tasks;
}

/** Polls `check` every `intervalMs` until it is true; throws after `timeoutMs`. */
export async function waitUntil(
  what: string,
  check: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(options.intervalMs ?? 20);
  }
}

/** Waits until the scheduler holds no task at all (what the last run released is forgotten). */
export function waitIdle(url: string, timeoutMs = 30_000): Promise<void> {
  return waitUntil("the scheduler to forget every task", async () => {
    const counts = await taskCounts(url);
    return Object.values(counts).every((n) => n === 0);
  }, { timeoutMs, intervalMs: 25 });
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The median of the samples (the mean of the middle two for an even count). */
export function median(samples: number[]): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The `p`-th percentile (0–100) by the nearest-rank method. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}
