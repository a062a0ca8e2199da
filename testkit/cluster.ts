/**
 * Processes for tests and benchmarks: the real `dist/cluster` binary (or the sources under Bun
 * or Deno) started on loopback with `--port 0`, ready once its ready line is printed, and
 * stopped by PID (SIGTERM, then SIGKILL after a grace period). Every process started here is
 * remembered until it exits, so `stopAll()` in an `afterAll` (or on Ctrl-C) leaves none behind.
 *
 * Auth is on by default, so loading the kit gives this process (and so every process it starts,
 * and in-process schedulers and clients) a known admin token in `CLUSTER_TOKEN` (`testToken`),
 * unless one is set already, and a temporary `XDG_STATE_HOME`: no test reads or writes the real
 * state directory. A test that wants a variable unset passes it as `undefined` in `env`.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const root: string = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The admin token of every cluster the kit starts (`CLUSTER_TOKEN`, unless a test gives another). */
export const testToken: string = process.env.CLUSTER_TOKEN ||= `test-${randomBytes(16).toString("hex")}`;

/** The state directory's parent (`XDG_STATE_HOME`) of every process here and started here. */
export const testStateHome: string = process.env.XDG_STATE_HOME = mkdtempSync(join(tmpdir(), "cluster-state-"));
process.once("exit", () => rmSync(testStateHome, { recursive: true, force: true }));

/** The built binary (`npm run build`). */
export const binary: string = process.env.CLUSTER_TEST_BINARY || join(root, "dist", "cluster");

/** How to run the CLI: the built binary, or the sources under Bun or Deno. */
export type Flavor = "binary" | "bun" | "deno";

/** Throws a clear error when `dist/cluster` is missing. */
export function requireBinary(): void {
  if (!existsSync(binary)) throw new Error(`"${binary}" does not exist: run "npm run build" first`);
}

/** The program and leading arguments that run the CLI in `flavor`. */
export function command(flavor: Flavor): string[] {
  switch (flavor) {
    case "binary":
      requireBinary();
      return [binary];
    case "bun":
      return [process.execPath, join(root, "cmd", "cluster.ts")];
    case "deno":
      return [join(root, "node_modules", ".bin", "deno"), "run", "-A", join(root, "cmd", "cluster.ts")];
  }
}

/** A process started by `startProcess`. */
export interface Proc {
  child: ChildProcess;
  pid: number;
  /** The first group of the ready line's match (the URL of `listening at URL`). */
  url: string;
  /** Milliseconds from spawn to the ready line. */
  readyMs: number;
  /** Everything the process printed so far, chunk by chunk. */
  stdout: string[];
  stderr: string[];
  /** The exit code (128 for a signal). */
  exited: Promise<number | null>;
  /** Sends `signal` (SIGTERM), then SIGKILL after `graceMs`; resolves with the exit code once gone. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
}

/** What `startProcess` and `runCli` run and where. */
export interface SpawnOptions {
  /** @default "binary" */
  flavor?: Flavor;
  /** The program and its leading arguments, instead of the CLI in `flavor`. */
  command?: string[];
  /** Added to this process's environment; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** @default root */
  cwd?: string;
  /** @default 20_000 (startProcess), 30_000 (runCli) */
  timeoutMs?: number;
}

const started = new Set<Proc>();

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

function spawnCli(args: string[], options: SpawnOptions): { child: ChildProcess; shown: string } {
  const [program, ...lead] = options.command ?? command(options.flavor ?? "binary");
  const env: Record<string, string | undefined> = { ...process.env, ...options.env };
  for (const name of Object.keys(env)) if (env[name] === undefined) delete env[name];
  const child = spawn(program, [...lead, ...args], {
    env,
    stdio: ["pipe", "pipe", "pipe"],
    cwd: options.cwd ?? root,
  });
  const shown = [program === binary ? "cluster" : program, ...lead, ...args].join(" ");
  return { child, shown };
}

/**
 * Runs the CLI (or `options.command`) and resolves once a stdout line matches `ready` (by default
 * `listening at URL`). A process that exits first, or is not ready within `timeoutMs`, is killed
 * and the promise rejects with the end of its stderr.
 *
 * @example
 * ```ts
 * const scheduler = await startProcess(["scheduler", "--port", "0"]);
 * console.log(scheduler.url, scheduler.readyMs);
 * await scheduler.stop();
 * ```
 */
export function startProcess(args: string[], options: SpawnOptions & { ready?: RegExp } = {}): Promise<Proc> {
  const t0 = performance.now();
  const { child, shown } = spawnCli(args, options);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exited = new Promise<number | null>((r) => child.once("exit", (code, sig) => r(code ?? (sig ? 128 : null))));
  const proc: Proc = {
    child,
    pid: child.pid ?? -1,
    url: "",
    readyMs: NaN,
    stdout,
    stderr,
    exited,
    async stop(sig = "SIGTERM", graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null && proc.pid > 0) {
        signal(proc.pid, sig);
        const timer = setTimeout(() => signal(proc.pid, "SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }
      started.delete(proc);
      return child.exitCode;
    },
  };
  started.add(proc);
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr.push(chunk);
    if (process.env.TEST_VERBOSE) process.stderr.write(chunk);
  });
  const ready = options.ready ?? /listening at (\S+)/;
  return new Promise((resolveStart, reject) => {
    let done = false;
    let buffer = "";
    const fail = (message: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      proc.stop("SIGKILL").finally(() => reject(new Error(`${message}: ${stderr.join("").trim().slice(-2000)}`)));
    };
    const timer = setTimeout(() => fail(`Timed out waiting for "${shown}"`), options.timeoutMs ?? 20_000);
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      stdout.push(chunk);
      if (done) return;
      buffer += chunk;
      const m = ready.exec(buffer);
      if (!m) return;
      done = true;
      clearTimeout(timer);
      proc.readyMs = performance.now() - t0;
      proc.url = m[1] ?? "";
      resolveStart(proc);
    });
    child.once("error", (e) => fail(`Cannot start "${shown}": ${e.message}`));
    child.once("exit", (code, sig) => fail(`"${shown}" exited (${code ?? sig}) before it was ready`));
  });
}

/** Runs the CLI to completion (SIGKILL after `timeoutMs`), with `input` on stdin. */
export function runCli(
  args: string[],
  options: SpawnOptions & { input?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { child } = spawnCli(args, options);
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  child.stdin!.end(options.input);
  return new Promise((resolveRun) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
  });
}

/** Stops every process started here and not stopped yet (SIGKILL unless told otherwise). */
export async function stopAll(sig: NodeJS.Signals = "SIGKILL", graceMs = 2_000): Promise<void> {
  await Promise.all([...started].map((p) => p.stop(sig, graceMs)));
}

/**
 * On SIGINT or SIGTERM, prints `message` on stderr, runs `cleanup` and exits with 130 or 143:
 * a script interrupted with Ctrl-C leaves no process behind.
 */
export function cleanUpOnSignal(message: string, cleanup: () => Promise<void>): void {
  const onSignal = (code: number) => () => {
    console.error(`\n${message}`);
    cleanup().finally(() => process.exit(code));
  };
  process.once("SIGINT", onSignal(130));
  process.once("SIGTERM", onSignal(143));
}

let workerCounter = 0;

/** Starts `cluster worker URL --name UNIQUE ARGS…` and resolves once it has registered. */
export function startWorker(
  url: string,
  options: { args?: string[]; flavor?: Flavor; env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<Proc> {
  const name = `w${++workerCounter}-${process.pid}`;
  return startProcess(["worker", url, "--name", name, ...(options.args ?? [])], { flavor: options.flavor, env: options.env, timeoutMs: options.timeoutMs });
}

/** A scheduler and its workers. */
export interface TestCluster {
  url: string;
  scheduler: Proc;
  workers: Proc[];
  /** Starts one more worker (with the cluster's worker arguments, then `args`). */
  addWorker(args?: string[], flavor?: Flavor): Promise<Proc>;
  /** Stops the workers, then the scheduler. */
  stop(): Promise<void>;
}

/**
 * Starts `cluster scheduler --port 0` and `workers` (default 2) workers, one after the other
 * (two processes starting at once on two cores slow each other down). `nanny: true` runs the
 * workers under nannies; `plugins` is the scheduler's plugins.toml.
 *
 * @example
 * ```ts
 * const cluster = await startCluster({ workers: 1, plugins: "/tmp/x/plugins.toml" });
 * try { … } finally { await cluster.stop(); }
 * ```
 */
export async function startCluster(options: {
  workers?: number;
  flavor?: Flavor;
  workerFlavor?: Flavor;
  plugins?: string;
  schedulerArgs?: string[];
  workerArgs?: string[];
  env?: Record<string, string | undefined>;
  nanny?: boolean;
} = {}): Promise<TestCluster> {
  const schedulerArgs = [...(options.plugins ? ["--plugins", options.plugins] : []), ...(options.schedulerArgs ?? [])];
  const scheduler = await startProcess(["scheduler", "--port", "0", ...schedulerArgs], { flavor: options.flavor, env: options.env });
  const workers: Proc[] = [];
  const cluster: TestCluster = {
    url: scheduler.url,
    scheduler,
    workers,
    async addWorker(args = [], flavor) {
      const proc = await startWorker(scheduler.url, {
        args: [...(options.nanny ? ["--nanny"] : []), ...(options.workerArgs ?? []), ...args],
        flavor: flavor ?? options.workerFlavor ?? options.flavor,
        env: options.env,
      });
      workers.push(proc);
      return proc;
    },
    async stop() {
      // Workers first, so the scheduler does not reschedule their work while it closes.
      await Promise.all(workers.map((w) => w.stop()));
      await scheduler.stop();
    },
  };
  try {
    for (let i = 0; i < (options.workers ?? 2); i++) await cluster.addWorker();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Temporary directories made by this process, removed when it exits. */
const tempDirs: string[] = [];
process.once("exit", () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary directory, removed when the test process exits. */
export function tempDir(prefix = "cluster-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}
