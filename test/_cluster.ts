/**
 * Test harness: starts the real `dist/cluster` binary (or the sources under Bun or Deno) on
 * loopback with `--port 0`, waits for its ready line, and stops everything it started by PID.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const root = resolve(import.meta.dir, "..");
export const binary = join(root, "dist", "cluster");

/** How to run the CLI. */
export type Flavor = "binary" | "bun" | "deno";

export function command(flavor: Flavor): string[] {
  switch (flavor) {
    case "binary":
      if (!existsSync(binary)) throw new Error(`${binary} is missing: run "npm run build" first`);
      return [binary];
    case "bun":
      return [process.execPath, join(root, "cmd", "cluster.ts")];
    case "deno":
      return [join(root, "node_modules", ".bin", "deno"), "run", "-A", join(root, "cmd", "cluster.ts")];
  }
}

/** A process started by a test. */
export interface Proc {
  child: ChildProcess;
  pid: number;
  /** The URL from the ready line. */
  url: string;
  stdout: string[];
  stderr: string[];
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const started = new Set<Proc>();

/** Runs the CLI and resolves when a line matching `ready` appears on stdout. */
export function startProcess(
  args: string[],
  options: { flavor?: Flavor; ready?: RegExp; env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
): Promise<Proc> {
  const [cmd, ...lead] = command(options.flavor ?? "binary");
  const child = spawn(cmd, [...lead, ...args], {
    env: { ...process.env, ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
    cwd: options.cwd ?? root,
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exited = new Promise<number | null>((r) => child.on("exit", (code, signal) => r(code ?? (signal ? 128 : null))));
  const ready = options.ready ?? /listening at (\S+)/;
  return new Promise((resolveStart, reject) => {
    let buffer = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`Timed out waiting for ${args.join(" ")}: ${stderr.join("").slice(-2000)}`));
    }, options.timeoutMs ?? 20_000);
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      stderr.push(chunk);
      if (process.env.TEST_VERBOSE) process.stderr.write(chunk);
    });
    child.stdout!.setEncoding("utf8");
    let done = false;
    child.stdout!.on("data", (chunk: string) => {
      stdout.push(chunk);
      if (done) return;
      buffer += chunk;
      const m = ready.exec(buffer);
      if (m) {
        done = true;
        clearTimeout(timer);
        const proc: Proc = {
          child,
          pid: child.pid!,
          url: m[1] ?? "",
          stdout,
          stderr,
          exited,
          stop: async (signal = "SIGTERM") => {
            if (child.exitCode === null && child.signalCode === null) {
              try {
                process.kill(child.pid!, signal);
              } catch {
                // gone already
              }
              const t = setTimeout(() => {
                try {
                  process.kill(child.pid!, "SIGKILL");
                } catch {
                  // gone
                }
              }, 10_000);
              await exited;
              clearTimeout(t);
            }
            started.delete(proc);
            return child.exitCode;
          },
        };
        started.add(proc);
        resolveStart(proc);
      }
    });
    child.on("exit", (code) => {
      if (!done) {
        clearTimeout(timer);
        reject(new Error(`Process exited (${code}) before it was ready: ${stderr.join("").slice(-2000)}`));
      }
    });
  });
}

/** Runs the CLI to completion. */
export function runCli(
  args: string[],
  options: { flavor?: Flavor; env?: Record<string, string>; input?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, ...lead] = command(options.flavor ?? "binary");
  const child = spawn(cmd, [...lead, ...args], { env: { ...process.env, ...options.env }, stdio: ["pipe", "pipe", "pipe"], cwd: options.cwd ?? root });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  if (options.input !== undefined) child.stdin!.end(options.input);
  else child.stdin!.end();
  return new Promise((resolveRun) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
  });
}

/** A scheduler and workers. */
export interface TestCluster {
  url: string;
  scheduler: Proc;
  workers: Proc[];
  addWorker(args?: string[], flavor?: Flavor): Promise<Proc>;
  stop(): Promise<void>;
}

let workerCounter = 0;

/** Starts a scheduler and `workers` workers (`nanny: true` runs them under nannies). */
export async function startCluster(options: {
  workers?: number;
  flavor?: Flavor;
  workerFlavor?: Flavor;
  schedulerArgs?: string[];
  workerArgs?: string[];
  env?: Record<string, string>;
  nanny?: boolean;
} = {}): Promise<TestCluster> {
  const scheduler = await startProcess(["scheduler", "--port", "0", ...(options.schedulerArgs ?? [])], {
    flavor: options.flavor,
    env: options.env,
  });
  const workers: Proc[] = [];
  const cluster: TestCluster = {
    url: scheduler.url,
    scheduler,
    workers,
    async addWorker(args = [], flavor) {
      const name = `w${++workerCounter}-${process.pid}`;
      const proc = await startProcess(
        ["worker", scheduler.url, "--name", name, ...(options.nanny ? ["--nanny"] : []), ...(options.workerArgs ?? []), ...args],
        { flavor: flavor ?? options.workerFlavor ?? options.flavor, env: options.env },
      );
      workers.push(proc);
      return proc;
    },
    async stop() {
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

/** Stops every process a test started and did not stop (call in afterAll). */
export async function stopAll(): Promise<void> {
  await Promise.all([...started].map((p) => p.stop("SIGKILL")));
}

/** A fresh temporary directory. */
export function tempDir(prefix = "cluster-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** JSON over HTTP. */
export async function api(
  url: string,
  path: string,
  init: { method?: string; body?: unknown; token?: string; raw?: BodyInit; contentType?: string } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  let body: BodyInit | undefined = init.raw;
  if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers["content-type"] = "application/json";
  }
  if (init.contentType) headers["content-type"] = init.contentType;
  const res = await fetch(url + path, { method: init.method ?? (body ? "POST" : "GET"), headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed };
}

/** Collects events from the event stream until `until` returns true (or the timeout). */
export function collectEvents(
  url: string,
  query: string,
  until: (events: any[]) => boolean,
  timeoutMs = 20_000,
): { ready: Promise<void>; done: Promise<any[]>; close(): void } {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/v1/events?${query}`);
  const events: any[] = [];
  let resolveReady!: () => void;
  const ready = new Promise<void>((r) => (resolveReady = r));
  const done = new Promise<any[]>((resolveDone, reject) => {
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(`Timed out with ${events.length} events: ${JSON.stringify(events.slice(-5))}`));
    }, timeoutMs);
    ws.onopen = () => resolveReady();
    ws.onmessage = (e) => {
      const data = JSON.parse(String(e.data));
      if (Array.isArray(data)) events.push(...data);
      else events.push(data);
      if (until(events)) {
        clearTimeout(timer);
        ws.close();
        resolveDone(events);
      }
    };
  });
  return { ready, done, close: () => ws.close() };
}

/** Graph builders used by tests and benchmarks. */
export const graphs = {
  map(n: number, prefix = "inc"): { tasks: any[]; keys: string[] } {
    const tasks = [];
    for (let i = 0; i < n; i++) tasks.push({ key: `${prefix}-${i}`, fn: "builtin.inc", args: [i] });
    return { tasks, keys: tasks.map((t) => t.key) };
  },
  /** A binary tree of `builtin.add` over `n` leaves of `builtin.identity(1)`. */
  treeSum(n: number, prefix = "tree"): { tasks: any[]; keys: string[] } {
    const tasks: any[] = [];
    let level: string[] = [];
    for (let i = 0; i < n; i++) {
      tasks.push({ key: `${prefix}-leaf-${i}`, fn: "builtin.identity", args: [1] });
      level.push(`${prefix}-leaf-${i}`);
    }
    let depth = 0;
    while (level.length > 1) {
      const next: string[] = [];
      for (let i = 0; i < level.length; i += 2) {
        if (i + 1 === level.length) {
          next.push(level[i]);
          continue;
        }
        const key = `${prefix}-${depth}-${i}`;
        tasks.push({ key, fn: "builtin.add", args: [{ $ref: level[i] }, { $ref: level[i + 1] }] });
        next.push(key);
      }
      level = next;
      depth++;
    }
    return { tasks, keys: [level[0]] };
  },
  chain(n: number, prefix = "chain"): { tasks: any[]; keys: string[] } {
    const tasks: any[] = [{ key: `${prefix}-0`, fn: "builtin.inc", args: [0] }];
    for (let i = 1; i < n; i++) tasks.push({ key: `${prefix}-${i}`, fn: "builtin.inc", args: [{ $ref: `${prefix}-${i - 1}` }] });
    return { tasks, keys: [`${prefix}-${n - 1}`] };
  },
};
