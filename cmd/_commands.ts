/**
 * The command tree of `cluster`, apart from running it (cmd/cluster.ts), so that the completion
 * scripts and docs/cli.md (scripts/cli-docs.ts) are generated from the same definitions.
 *
 * @module
 */
import { type ArgsDef, type CommandDef, defineCommand } from "citty";
import { commonArgs } from "./_args.ts";
import { versionLine } from "./_version.ts";
import { version } from "../lib/protocol.ts";
import { schedulerCommand } from "./scheduler.ts";
import { nannyCommand, workerCommand } from "./worker.ts";
import { localCommand } from "./local.ts";
import { eventsCommand, infoCommand, submitCommand } from "./client.ts";
import { logsCommand } from "./logs.ts";
import { dashboardCommand } from "./dashboard.ts";
import { type CommandInfo, completionCommand } from "./completion.ts";
import { tlsCommand } from "./tls.ts";

const versionCommand = defineCommand({
  meta: { name: "version", description: "Print the version, the commit and the target (also --version, -V)" },
  args: { ...commonArgs },
  run() {
    console.log(versionLine());
  },
});

/** `help [COMMAND]`: handled in cmd/cluster.ts; defined here so that it is listed and completed. */
const helpCommand = defineCommand({
  meta: { name: "help", description: "Show the help of a command (cluster help worker)" },
  args: { command: { type: "positional", description: "A command", required: false } },
});

/** Every subcommand, in the order the help lists them. */
export const subCommands: Record<string, CommandDef<any>> = {
  scheduler: schedulerCommand,
  worker: workerCommand,
  nanny: nannyCommand,
  local: localCommand,
  submit: submitCommand,
  events: eventsCommand,
  info: infoCommand,
  logs: logsCommand,
  dashboard: dashboardCommand,
  tls: tlsCommand,
  version: versionCommand,
  help: helpCommand,
  completion: completionCommand(() => commandInfo()),
};

/** The top-level command. */
export const main = defineCommand({
  meta: { name: "cluster", version, description: "A single-binary edge cluster with Dask's plugin system" },
  subCommands,
});

/** Description and arguments of each subcommand (completion, docs). */
export function commandInfo(): Record<string, CommandInfo> {
  const out: Record<string, CommandInfo> = {};
  for (const [name, command] of Object.entries(subCommands)) {
    const meta = command.meta as { description?: string } | undefined;
    out[name] = { description: meta?.description ?? "", args: (command.args ?? {}) as ArgsDef };
  }
  return out;
}
