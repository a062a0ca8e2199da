/**
 * `cluster worker` and `cluster nanny`: runs a worker, or a nanny that runs the worker as a
 * child process and restarts it.
 *
 * @module
 */
import { defineCommand } from "citty";
import { dirname, resolve } from "node:path";
import { Worker } from "../lib/worker/worker.ts";
import { applyTokenFile, checkFlags, collect, commonArgs, intFlag, jsonObjectFlag, onShutdown, schedulerUrl, UsageError } from "./_args.ts";
import { isPreloadUrl } from "../lib/plugins/preload.ts";
import { pluginSpecsFromFile } from "./_plugins.ts";
import { applyTlsArgs, tlsArgs } from "../lib/tls/options.ts";
import { parseMemoryLimit } from "../lib/nanny/memory.ts";
import { ConnectError, unreachableExitCode } from "../lib/connect-error.ts";

const args = {
  scheduler: { type: "positional", description: "Scheduler URL, e.g. http://127.0.0.1:8786", required: true },
  nanny: { type: "boolean", description: "Run under a nanny that restarts the worker" },
  name: { type: "string", description: "Worker name (unique in the cluster)" },
  nthreads: { type: "string", description: "Tasks run at once", default: "1" },
  host: { type: "string", description: "Address of the worker's data endpoint (default: the one this host reaches the scheduler from)" },
  port: { type: "string", description: "Port of the worker's data endpoint (0: free)", default: "0" },
  plugins: { type: "string", description: "plugins.toml: applies its [worker] (and [nanny]) section" },
  preload: { type: "string", description: "Module (path or http(s) URL) with clusterSetup(worker, options); repeatable" },
  "preload-options": { type: "string", description: "JSON object passed as options to every preload's clusterSetup" },
  "preload-nanny": { type: "string", description: "Module (path or URL) with clusterSetup(nanny, options), run in the nanny; repeatable" },
  tasks: { type: "string", description: "Task module whose exports become MODULE.EXPORT; repeatable" },
  "memory-limit": { type: "string", description: "Restart the worker past this RSS (nanny): 2GiB, 500MB, 0.5" },
  "local-directory": { type: "string", description: "Directory for files, packages and plugins (default: its own in the temp directory, removed when it closes)" },
  "contact-address": { type: "string", description: "Data address announced to peers (behind NAT); unreachable peers relay through the scheduler" },
  "connect-timeout": { type: "string", description: "Seconds to keep trying to reach the scheduler", default: "10" },
  "death-timeout": { type: "string", description: "Seconds to keep reconnecting to a lost scheduler before closing (default: for ever)" },
  ...commonArgs,
  ...tlsArgs,
} as const;

async function runWorker(a: Record<string, unknown>, rawArgs: string[], forceNanny: boolean): Promise<void> {
  checkFlags(rawArgs, args);
  applyTokenFile(a["token-file"]);
  const url = schedulerUrl(a.scheduler);
  const nthreads = intFlag(a.nthreads, "nthreads", { fallback: 1, min: 1 });
  const port = intFlag(a.port, "port", { fallback: 0 });
  const memoryLimit = a["memory-limit"] === undefined ? undefined : parseMemoryLimit(String(a["memory-limit"]));
  const connectTimeoutMs = intFlag(a["connect-timeout"], "connect-timeout", { fallback: 10 }) * 1000;
  const plugins = typeof a.plugins === "string" ? a.plugins : undefined;
  const common = {
    scheduler: url,
    name: a.name as string | undefined,
    nthreads,
    host: a.host === undefined ? undefined : String(a.host),
    port,
    preload: collect(rawArgs, "preload").map((p) => isPreloadUrl(p) ? p : resolve(p)),
    preloadOptions: jsonObjectFlag(a["preload-options"], "preload-options"),
    tasks: collect(rawArgs, "tasks").map((p) => resolve(p)),
    localDirectory: a["local-directory"] ? resolve(String(a["local-directory"])) : undefined,
    contactAddress: a["contact-address"] === undefined ? undefined : String(a["contact-address"]),
    connectTimeoutMs,
    deathTimeoutMs: intFlag(a["death-timeout"], "death-timeout", { fallback: 0 }) * 1000,
    baseDir: plugins ? dirname(resolve(plugins)) : process.cwd(),
    tls: applyTlsArgs(a),
  };
  if (a.nanny || forceNanny) {
    const { Nanny } = await import("../lib/nanny/nanny.ts");
    const nanny = await Nanny.start({
      ...common,
      memoryLimit,
      pluginsFile: plugins ? resolve(plugins) : undefined,
      nannyPlugins: await pluginSpecsFromFile(plugins, ["nanny"]),
      preloadNanny: collect(rawArgs, "preload-nanny").map((p) => isPreloadUrl(p) ? p : resolve(p)),
      workerArgs: rawArgs,
    });
    onShutdown(() => nanny.close());
    console.log(`nanny ${nanny.name} listening at ${nanny.address}`);
    await nanny.closed;
    process.exit(0);
  }
  if (collect(rawArgs, "preload-nanny").length > 0) throw new UsageError(`"--preload-nanny" needs --nanny (it runs in the nanny)`);
  if (memoryLimit !== undefined && !process.env.CLUSTER_NANNY) {
    throw new UsageError("--memory-limit needs --nanny (the nanny watches the worker's memory)");
  }
  let worker: Worker;
  try {
    worker = await Worker.start({
      ...common,
      plugins: await pluginSpecsFromFile(plugins, ["worker"]),
      nanny: !!process.env.CLUSTER_NANNY,
    });
  } catch (err) {
    // A distinct exit code for our nanny only (users see 1): it waits for the scheduler
    // instead of counting a death.
    if (process.env.CLUSTER_NANNY && err instanceof ConnectError && err.kind !== "unauthorized") {
      process.stderr.write(`cluster: ${err.message}\n`);
      process.exit(unreachableExitCode);
    }
    throw err;
  }
  onShutdown(() => worker.close());
  console.log(`worker ${worker.name} listening at ${worker.address}`);
  await worker.closed;
  // Gave up on a lost scheduler (--death-timeout): a nanny waits for it and starts us again.
  process.exit(worker.gaveUp ? (process.env.CLUSTER_NANNY ? unreachableExitCode : 1) : 0);
}

/** The `worker` subcommand. */
export const workerCommand = defineCommand({
  meta: { name: "worker", description: "Run a worker (with --nanny: under a nanny)" },
  args,
  run: ({ args: a, rawArgs }) => runWorker(a, rawArgs, false),
});

/** The `nanny` subcommand: `worker --nanny`. */
export const nannyCommand = defineCommand({
  meta: { name: "nanny", description: "Run a nanny that starts and restarts a worker" },
  args,
  run: ({ args: a, rawArgs }) => runWorker(a, rawArgs, true),
});
