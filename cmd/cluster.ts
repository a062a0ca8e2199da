#!/usr/bin/env bun
/**
 * The `cluster` command line: one executable that runs as scheduler, worker or nanny, starts a
 * local cluster, submits graphs, follows events and shows info.
 *
 * @module
 */
import { type ArgsDef, renderUsage, runCommand } from "citty";
import { argsWithEnv, stripColour, UsageError, useColour } from "./_args.ts";
import { main, subCommands } from "./_commands.ts";
import { versionLine } from "./_version.ts";
import { ConfigError, errorMessage, PluginError } from "../lib/errors.ts";
import { isDebug, setDebug } from "../lib/log.ts";
import { setBuiltins } from "../lib/plugins/registry.ts";
import { builtinPlugins } from "../plugins/mod.ts";

/** Exits with a one-line error: 2 for usage and configuration, 1 at run time. */
function fail(err: unknown): never {
  // A plugin that fails to start from the command line's configuration is a configuration error.
  const usage = err instanceof ConfigError || err instanceof PluginError || (err instanceof Error && (err as { code?: string }).code?.startsWith("E")
    && ["EARG", "E_UNKNOWN_COMMAND", "E_NO_COMMAND", "E_USAGE"].includes((err as { code?: string }).code!));
  const message = stripColour(errorMessage(err)).split("\n")[0];
  process.stderr.write(`cluster: ${message}\n`);
  if (isDebug() && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(usage ? 2 : 1);
}

/** Prints a command's help, with colours only on a terminal that wants them. */
async function printUsage(command: (typeof subCommands)[string], parent?: typeof main): Promise<void> {
  const text = await renderUsage(command, parent);
  console.log(useColour(process.stdout) ? text : stripColour(text));
}

async function run(argv: string[]): Promise<void> {
  if (argv.includes("--debug")) setDebug(true);
  const first = argv.find((a) => a !== "--debug");
  if (first === "--version" || first === "-V" || first === "-v") {
    console.log(versionLine());
    return;
  }
  if (first === undefined || first === "--help" || first === "-h") return printUsage(main);
  if (first === "help") {
    const topic = argv.filter((a) => a !== "--debug")[1];
    if (topic === undefined) return printUsage(main);
    if (!(topic in subCommands)) throw new UsageError(`Unknown command "${topic}" (see cluster --help)`);
    return printUsage(subCommands[topic], main);
  }
  const sub = subCommands[first];
  if (!sub) throw new UsageError(`Unknown command "${first}" (see cluster --help)`);
  // `cluster --debug worker …` is `cluster worker --debug …`.
  const at = argv.indexOf(first);
  const rest = [...argv.slice(0, at), ...argv.slice(at + 1)];
  if (rest.includes("--help") || rest.includes("-h")) return printUsage(sub, main);
  const args = argsWithEnv(rest, (sub.args ?? {}) as ArgsDef);
  if (args.includes("--debug")) setDebug(true);
  await runCommand(main, { rawArgs: [first, ...args] });
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
