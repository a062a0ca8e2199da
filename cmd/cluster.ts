#!/usr/bin/env bun
/**
 * The `cluster` command line: one executable that runs as scheduler, worker or nanny, starts a
 * local cluster, submits graphs, follows events and shows info.
 *
 * @module
 */
import { type ArgsDef, defineCommand, renderUsage, runCommand } from "citty";
import { UsageError } from "./_args.ts";
import { ConfigError, errorMessage, PluginError } from "../lib/errors.ts";
import { isDebug, setDebug } from "../lib/log.ts";
import { version } from "../lib/protocol.ts";
import { setBuiltins } from "../lib/plugins/registry.ts";
import { builtinPlugins } from "../plugins/mod.ts";
import { schedulerCommand } from "./scheduler.ts";
import { nannyCommand, workerCommand } from "./worker.ts";
import { localCommand } from "./local.ts";
import { eventsCommand, infoCommand, submitCommand } from "./client.ts";
import { tlsCommand } from "./tls.ts";

const main = defineCommand({
  meta: { name: "cluster", version, description: "A single-binary edge cluster with Dask's plugin system" },
  subCommands: {
    scheduler: schedulerCommand,
    worker: workerCommand,
    nanny: nannyCommand,
    local: localCommand,
    submit: submitCommand,
    events: eventsCommand,
    info: infoCommand,
    tls: tlsCommand,
  },
});

/** Exits with a one-line error: 2 for usage and configuration, 1 at run time. */
function fail(err: unknown): never {
  // A plugin that fails to start from the command line's configuration is a configuration error.
  const usage = err instanceof ConfigError || err instanceof PluginError || (err instanceof Error && (err as { code?: string }).code?.startsWith("E")
    && ["EARG", "E_UNKNOWN_COMMAND", "E_NO_COMMAND", "E_USAGE"].includes((err as { code?: string }).code!));
  // deno-lint-ignore no-control-regex -- strips terminal colours (citty's) from the message
  const message = errorMessage(err).replace(/\x1b\[[0-9;]*m/g, "").split("\n")[0];
  process.stderr.write(`cluster: ${message}\n`);
  if (isDebug() && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(usage ? 2 : 1);
}

async function run(argv: string[]): Promise<void> {
  if (argv.includes("--debug")) setDebug(true);
  const args = argv.filter((a) => a !== "--debug");
  if (args[0] === "--version" || args[0] === "-v") {
    console.log(version);
    return;
  }
  if (args.length === 0 || args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
    console.log(await renderUsage(main));
    return;
  }
  const sub = (main.subCommands as Record<string, { args?: ArgsDef }>)[args[0]];
  if (sub && (args.includes("--help") || args.includes("-h"))) {
    console.log(await renderUsage(sub as never, main));
    return;
  }
  if (!sub) throw new UsageError(`Unknown command "${args[0]}" (see cluster --help)`);
  await runCommand(main, { rawArgs: args });
}

// The plugin framework does not import the built-ins: this entry point hands them in.
setBuiltins(builtinPlugins);

process.on("unhandledRejection", (err) => {
  process.stderr.write(`cluster: unhandled error: ${errorMessage(err)}\n`);
  if (isDebug() && err instanceof Error) process.stderr.write(`${err.stack}\n`);
});

if (process.env.CLUSTER_EXECUTOR_CHILD === "1") {
  // A process-pool child (plugins/process-pool.ts): it runs tasks from stdin, not the CLI.
  await (await import("../lib/worker/executor-child.ts")).runExecutorChild();
} else {
  try {
    await run(process.argv.slice(2));
  } catch (err) {
    fail(err);
  }
}
