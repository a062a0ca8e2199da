/**
 * `cluster submit`, `cluster events` and `cluster info`: the client side of the CLI.
 *
 * @module
 */
import { defineCommand } from "citty";
import { readFile } from "node:fs/promises";
import { Client } from "../lib/client/mod.ts";
import { ConfigError, errorMessage } from "../lib/errors.ts";
import { socketUrl } from "../lib/protocol.ts";
import { authenticate, peerToken } from "../lib/auth/handshake.ts";
import { applyTokenFile, checkFlags, collect, commonArgs, schedulerUrl } from "./_args.ts";
import { applyTlsArgs, tlsArgs } from "../lib/tls/options.ts";
import { clientWebSocket } from "../lib/runtime/client.ts";
import { closeCodeFailure, ConnectError, diagnose } from "../lib/connect-error.ts";
import { reachScheduler } from "./_connect.ts";
import { followProgress } from "../lib/progress.ts";

const submitArgs = {
  scheduler: { type: "positional", description: "Scheduler URL", required: true },
  graph: { type: "positional", description: "GRAPH.json, or - for standard input", required: true },
  timeout: { type: "string", description: "Seconds to wait for the results (0: forever)", default: "0" },
  ...commonArgs,
  ...tlsArgs,
} as const;

async function readGraph(path: string): Promise<unknown> {
  let text: string;
  try {
    if (path === "-") {
      const chunks: Uint8Array[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Uint8Array);
      text = Buffer.concat(chunks).toString("utf8");
    } else text = await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(`Cannot read graph "${path}": ${errorMessage(err)}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`Graph "${path}" is not valid JSON: ${errorMessage(err)}`);
  }
}

/** The `submit` subcommand. */
export const submitCommand = defineCommand({
  meta: { name: "submit", description: "Submit a graph, wait, print {\"key\": value} JSON" },
  args: submitArgs,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, submitArgs);
    applyTokenFile(a["token-file"]);
    applyTlsArgs(a);
    const url = schedulerUrl(a.scheduler);
    const graph = await readGraph(String(a.graph)) as { tasks: never[]; keys?: string[] };
    await reachScheduler(url);
    const client = await Client.connect(url);
    const timeout = Number(a.timeout);
    const timer = timeout > 0
      ? setTimeout(() => {
        process.stderr.write(`cluster: timed out after ${timeout} s waiting for results\n`);
        process.exit(1);
      }, timeout * 1000)
      : undefined;
    // A progress bar on a terminal only: piped output stays clean (lib/progress.ts).
    const tasks = Array.isArray(graph?.tasks) ? graph.tasks as Array<{ key?: unknown }> : [];
    const stopProgress = process.stderr.isTTY && tasks.length > 0
      ? await followProgress(client, tasks.map((t) => String(t.key)), process.stderr).catch(() => null)
      : null;
    try {
      let futures;
      try {
        futures = await client.compute(graph);
      } catch (err) {
        throw new ConfigError(`Graph rejected: ${errorMessage(err)}`);
      }
      const keys = Object.keys(futures);
      const { values, errors } = await client.results(keys);
      stopProgress?.(); // cleared before anything else is printed
      const out: Record<string, unknown> = {};
      for (const key of keys) out[key] = key in values ? values[key] : null;
      console.log(JSON.stringify(out));
      for (const [key, e] of Object.entries(errors)) {
        process.stderr.write(`cluster: task "${key}" erred: ${e.error}\n`);
        process.exitCode = 1;
      }
    } finally {
      stopProgress?.();
      if (timer) clearTimeout(timer);
      await client.close();
    }
  },
});

const eventsArgs = {
  scheduler: { type: "positional", description: "Scheduler URL", required: true },
  topic: { type: "string", description: "Only this topic; repeatable" },
  since: { type: "string", description: "Replay the kept events after this seq first, then follow (--since 0: every kept event)" },
  ...commonArgs,
  ...tlsArgs,
} as const;

/** The `events` subcommand. */
export const eventsCommand = defineCommand({
  meta: { name: "events", description: "Follow the event stream, one JSON object a line" },
  args: eventsArgs,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, eventsArgs);
    applyTokenFile(a["token-file"]);
    applyTlsArgs(a);
    const base = schedulerUrl(a.scheduler);
    await reachScheduler(base);
    const url = socketUrl(base, "/api/v1/events");
    for (const t of collect(rawArgs, "topic")) url.searchParams.append("topic", t);
    if (a.since !== undefined) url.searchParams.set("since", String(a.since));
    url.searchParams.set("batch", "1");
    await new Promise<void>((resolve, reject) => {
      const socket = clientWebSocket(url.href);
      socket.binaryType = "arraybuffer";
      let opened = false;
      socket.onopen = () => (opened = true);
      // The token never travels: a challenge–response first (lib/auth/handshake.ts).
      authenticate(socket, {
        role: "events",
        token: peerToken("events"),
        onMessage: (event) => {
          const batch = JSON.parse(String(event.data)) as unknown[];
          process.stdout.write(batch.map((e) => JSON.stringify(e)).join("\n") + "\n");
        },
      }).catch((err: Error) => reject(new ConnectError(url.origin, err.message.startsWith("The scheduler needs") ? "unauthorized" : "unreachable", err.message)));
      socket.onerror = () => {};
      socket.onclose = (event) => {
        // The socket says little (1006): one HTTP request finds out why, worded as everywhere.
        if (!opened || closeCodeFailure(event.code)) {
          if (closeCodeFailure(event.code)) reject(new ConnectError(url.origin, "unauthorized"));
          else if (event.reason) reject(new ConnectError(url.origin, "unreachable", event.reason));
          else diagnose(base, { token: process.env.CLUSTER_TOKEN, fallback: `connection closed (code ${event.code})` }).then(reject);
        }
        else if (event.code !== 1000) reject(new Error(`Event stream closed: ${event.reason || `code ${event.code}`}`));
        else resolve();
      };
      process.on("SIGINT", () => process.exit(0));
      process.on("SIGTERM", () => process.exit(0));
    });
  },
});

const infoArgs = {
  scheduler: { type: "positional", description: "Scheduler URL", required: true },
  json: { type: "boolean", description: "Print JSON" },
  ...commonArgs,
  ...tlsArgs,
} as const;

/** The `info` subcommand. */
export const infoCommand = defineCommand({
  meta: { name: "info", description: "Workers, task counts, plugins" },
  args: infoArgs,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, infoArgs);
    applyTokenFile(a["token-file"]);
    applyTlsArgs(a);
    const url = schedulerUrl(a.scheduler);
    const res = await reachScheduler(url);
    const info = await res.json() as {
      workers: Array<{ name: string; address: string; nthreads: number; status: string; nanny: boolean; processing: number; memory: number }>;
      tasks: Record<string, number>;
      plugins: Record<string, string[]>;
    };
    if (a.json) {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    console.log(`scheduler ${url}`);
    console.log(`workers: ${info.workers.length}`);
    for (const w of info.workers) {
      console.log(`  ${w.name}  ${w.address}  threads=${w.nthreads}  ${w.status}${w.nanny ? "  nanny" : ""}  processing=${w.processing}  memory=${w.memory}`);
    }
    const counts = Object.entries(info.tasks).filter(([, n]) => n > 0).map(([s, n]) => `${s}=${n}`).join("  ");
    console.log(`tasks: ${counts || "none"}`);
    for (const role of ["scheduler", "worker", "nanny"]) {
      console.log(`${role} plugins: ${info.plugins[role]?.join(", ") || "none"}`);
    }
  },
});
