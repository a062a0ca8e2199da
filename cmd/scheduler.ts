/**
 * `cluster scheduler`: runs the scheduler until SIGINT/SIGTERM.
 *
 * @module
 */
import { defineCommand } from "citty";
import { dirname, resolve } from "node:path";
import { Scheduler } from "../lib/scheduler/server.ts";
import { checkFlags, collect, commonArgs, intFlag, jsonObjectFlag, onShutdown } from "./_args.ts";
import { authArgs, schedulerAuth } from "./_auth.ts";
import { createLogger } from "../lib/log.ts";
import { isPreloadUrl } from "../lib/plugins/preload.ts";
import { pluginSpecsFromFile } from "./_plugins.ts";
import { applyTlsArgs, tlsArgs } from "../lib/tls/options.ts";

const args = {
  host: { type: "string", description: "Address to listen on", default: "127.0.0.1" },
  port: { type: "string", description: "Port (0 takes a free one)", default: "8786" },
  plugins: { type: "string", description: "plugins.toml to apply" },
  preload: { type: "string", description: "Module (path or http(s) URL) with clusterSetup(scheduler, options); repeatable" },
  "preload-options": { type: "string", description: "JSON object passed as options to every preload's clusterSetup" },
  "events-kept": { type: "string", description: "Events kept for replay", default: "20000" },
  "worker-ttl": { type: "string", description: "Seconds without a heartbeat before a worker is removed (Dask's worker-ttl)", default: "15" },
  "max-body-mib": { type: "string", description: "MiB in one submitted graph (an HTTP body or a client message)", default: "64" },
  "max-args-mib": { type: "string", description: "MiB in one task's args", default: "16" },
  ...commonArgs,
  ...authArgs,
  ...tlsArgs,
} as const;

/** The `scheduler` subcommand. */
export const schedulerCommand = defineCommand({
  meta: { name: "scheduler", description: "Run the scheduler" },
  args,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, args);
    const port = intFlag(a.port, "port", { fallback: 8786 });
    const auth = schedulerAuth(a, rawArgs, { host: a.host, log: createLogger("scheduler") });
    const preloadOptions = jsonObjectFlag(a["preload-options"], "preload-options");
    const plugins = await pluginSpecsFromFile(a.plugins);
    const scheduler = await Scheduler.start({
      host: a.host,
      port,
      plugins,
      preload: collect(rawArgs, "preload").map((p) => isPreloadUrl(p) ? p : resolve(p)),
      preloadOptions,
      baseDir: a.plugins ? dirname(resolve(a.plugins)) : process.cwd(),
      eventsKept: intFlag(a["events-kept"], "events-kept", { fallback: 20_000, min: 10_000 }),
      heartbeatTimeoutMs: intFlag(a["worker-ttl"], "worker-ttl", { fallback: 15, min: 2 }) * 1000,
      tls: applyTlsArgs(a),
      auth,
      limits: {
        maxBodyBytes: intFlag(a["max-body-mib"], "max-body-mib", { fallback: 64, min: 1, max: 1 << 20 }) * 1024 * 1024,
        maxArgsBytes: intFlag(a["max-args-mib"], "max-args-mib", { fallback: 16, min: 1, max: 1 << 20 }) * 1024 * 1024,
      },
    });
    // Handlers first: a signal right after the ready line must still close gracefully.
    onShutdown(() => scheduler.close());
    console.log(`scheduler listening at ${scheduler.address}`);
    await new Promise(() => {});
  },
});
