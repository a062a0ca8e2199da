/**
 * `cluster local`: a scheduler in this process and N workers, each under a nanny, as child
 * processes. With `--demo` it runs a small demo graph, prints the results and shuts down.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { defineCommand } from "citty";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { createLogger } from "../lib/log.ts";
import { runtime } from "../lib/runtime/mod.ts";
import { Scheduler } from "../lib/scheduler/server.ts";
import { checkFlags, collect, commonArgs, envName, intFlag, onShutdown } from "./_args.ts";
import { authArgs, schedulerAuth } from "./_auth.ts";
import { pluginSpecsFromFile } from "./_plugins.ts";

const log = createLogger("local");

const args = {
  workers: { type: "string", description: "Number of workers", default: "2" },
  nthreads: { type: "string", description: "Threads per worker", default: "1" },
  port: { type: "string", description: "Scheduler port (0: free)", default: "0" },
  plugins: { type: "string", description: "plugins.toml (all sections)" },
  tasks: { type: "string", description: "Task module for the workers; repeatable" },
  "no-nanny": { type: "boolean", description: "Start workers without nannies" },
  demo: { type: "boolean", description: "Run a demo graph, print the results and exit" },
  ...commonArgs,
  ...authArgs,
} as const;

/**
 * The environment for the workers: without the `CLUSTER_…` variables of `local`'s own flags,
 * which were meant for it (`CLUSTER_PORT` is the scheduler's port, not every worker's).
 */
function workerEnv(): Record<string, string> {
  const env = { ...process.env } as Record<string, string>;
  for (const flag of Object.keys(args)) {
    const variable = envName(flag);
    if (variable) delete env[variable];
  }
  return env;
}

/** Starts a child `cluster worker` and resolves on its ready line. */
function startWorker(url: string, name: string, extra: string[]): Promise<ChildProcess> {
  const [command, ...lead] = runtime.selfCommand();
  const child = spawn(command, [...lead, "worker", url, "--name", name, ...extra], { stdio: ["ignore", "pipe", "inherit"], env: workerEnv() });
  return new Promise((resolveReady, reject) => {
    let buffer = "";
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      buffer += chunk;
      const line = /^(worker|nanny) .* listening at .*$/m.exec(buffer);
      if (line) {
        log.info(line[0]);
        child.stdout!.removeAllListeners("data");
        child.stdout!.resume();
        resolveReady(child);
      }
    });
    child.on("exit", (code) => reject(new Error(`Worker "${name}" exited with code ${code} before it was ready`)));
  });
}

async function demo(url: string): Promise<void> {
  const client = await Client.connect(url);
  try {
    const n = 100;
    const tasks = [];
    for (let i = 0; i < n; i++) tasks.push({ key: `inc-${i}`, fn: "builtin.inc", args: [i] });
    tasks.push({ key: "total", fn: "builtin.sum", args: [tasks.map((t) => ({ $ref: t.key }))] });
    tasks.push({ key: "env", fn: "builtin.env", args: ["OMP_NUM_THREADS"] });
    tasks.push({ key: "pid", fn: "builtin.pid", args: [] });
    const started = performance.now();
    const futures = await client.compute({ tasks, keys: ["total", "env", "pid"] });
    const values = await client.gather(Object.values(futures));
    const result = Object.fromEntries(Object.keys(futures).map((k, i) => [k, values[i]]));
    console.log(JSON.stringify(result));
    log.info(`Demo graph of ${tasks.length} tasks done in ${(performance.now() - started).toFixed(1)} ms (sum of 1..${n} = ${result.total})`);
  } finally {
    await client.close();
  }
}

/** The `local` subcommand. */
export const localCommand = defineCommand({
  meta: { name: "local", description: "Run a scheduler and N nanny-supervised workers on this machine" },
  args,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, args);
    const auth = schedulerAuth(a, rawArgs, { host: "127.0.0.1", log });
    // The workers (child processes) and the demo client use the scheduler's admin token.
    if (auth.tokens !== null) process.env.CLUSTER_TOKEN = auth.tokens.admin;
    const count = intFlag(a.workers, "workers", { fallback: 2, min: 1 });
    const nthreads = intFlag(a.nthreads, "nthreads", { fallback: 1, min: 1 });
    const plugins = await pluginSpecsFromFile(a.plugins);
    const scheduler = await Scheduler.start({
      port: intFlag(a.port, "port", { fallback: 0 }),
      plugins,
      baseDir: a.plugins ? dirname(resolve(a.plugins)) : process.cwd(),
      auth,
    });
    console.log(`scheduler listening at ${scheduler.address}`);
    const extra = ["--nthreads", String(nthreads)];
    if (!a["no-nanny"]) extra.push("--nanny");
    for (const t of collect(rawArgs, "tasks")) extra.push("--tasks", resolve(t));
    if (a.debug) extra.push("--debug");
    // One directory for every worker's and nanny's files, removed at shutdown: nothing is left
    // behind in the temp directory.
    const localDirectory = mkdtempSync(join(tmpdir(), "cluster-local-"));
    const children: ChildProcess[] = [];
    const shutdown = async () => {
      for (const child of children) child.kill("SIGTERM");
      await Promise.all(children.map((c) => c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once("exit", r))));
      try {
        await scheduler.close();
      } finally {
        rmSync(localDirectory, { recursive: true, force: true });
      }
    };
    onShutdown(shutdown);
    try {
      for (let i = 0; i < count; i++) {
        const name = `local-${i}`;
        children.push(await startWorker(scheduler.address, name, [...extra, "--local-directory", join(localDirectory, name)]));
      }
    } catch (err) {
      await shutdown();
      throw err;
    }
    if (a.demo) {
      try {
        await demo(scheduler.address);
      } finally {
        await shutdown();
      }
      process.exit(0);
    }
    await new Promise(() => {});
  },
});
