/**
 * `cluster logs URL [--worker NAME] [--level L] [--since SEQ] [--follow] [--json]`: the log
 * records that workers and nannies forwarded to the scheduler (`GET /api/v1/logs`), one a line;
 * `--follow` keeps asking for newer ones once a second until Ctrl-C.
 *
 * @module
 */
import { defineCommand } from "citty";
import { fetchScheduler } from "./_connect.ts";
import type { LogRecord } from "../lib/logs/record.ts";
import { parseLevel } from "../lib/logs/record.ts";
import { applyTlsArgs, tlsArgs } from "../lib/tls/options.ts";
import { applyTokenFile, checkFlags, commonArgs, intFlag, schedulerUrl, UsageError } from "./_args.ts";

const logsArgs = {
  scheduler: { type: "positional", description: "Scheduler URL", required: true },
  worker: { type: "string", description: "Only this worker's records (and its nanny's)" },
  level: { type: "string", description: "Only this level and above: debug, info, warn, error" },
  since: { type: "string", description: "Only records after this seq (0: every kept one)" },
  follow: { type: "boolean", alias: "f", description: "Keep printing new records until Ctrl-C" },
  json: { type: "boolean", description: "One JSON object a line" },
  ...commonArgs,
  ...tlsArgs,
} as const;

/** How often `--follow` asks for new records. */
const pollMs = 1000;

/**
 * One record as a line: `TIME LEVEL ROLE NAME [SOURCE key=K] message`.
 *
 * @example
 * ```ts
 * formatRecord({ seq: 1, time: 0, level: "info", source: "worker", worker: "w1", role: "worker", message: "hi" });
 * // "1970-01-01T00:00:00.000Z INFO  worker w1 [worker] hi"
 * ```
 */
export function formatRecord(r: LogRecord): string {
  const key = r.key !== undefined ? ` key=${r.key}` : "";
  return `${new Date(r.time * 1000).toISOString()} ${r.level.toUpperCase().padEnd(5)} ${r.role} ${r.worker} [${r.source}${key}] ${r.message}`;
}

async function fetchLogs(url: string, query: URLSearchParams): Promise<LogRecord[]> {
  return await (await fetchScheduler(url, `/api/v1/logs?${query}`)).json() as LogRecord[];
}

/** The `logs` subcommand. */
export const logsCommand = defineCommand({
  meta: { name: "logs", description: "Print the log records workers and nannies forwarded to the scheduler" },
  args: logsArgs,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, logsArgs);
    applyTokenFile(a["token-file"]);
    applyTlsArgs(a);
    const url = schedulerUrl(a.scheduler);
    const query = new URLSearchParams();
    if (a.worker) query.set("worker", String(a.worker));
    if (a.level !== undefined) {
      const level = parseLevel(String(a.level));
      if (!level) throw new UsageError(`Invalid value for "--level": "${a.level}" (expected debug, info, warn or error)`);
      query.set("level", level);
    }
    let since = intFlag(a.since, "since", { fallback: 0, max: Number.MAX_SAFE_INTEGER });
    const print = (records: LogRecord[]) => {
      if (records.length === 0) return;
      process.stdout.write(records.map((r) => a.json ? JSON.stringify(r) : formatRecord(r)).join("\n") + "\n");
      since = Math.max(since, records[records.length - 1].seq);
    };
    query.set("since", String(since));
    print(await fetchLogs(url, query));
    if (!a.follow) return;
    let stopped = false;
    const stop = () => {
      stopped = true;
      process.exit(0);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    let warned = false;
    while (!stopped) {
      await new Promise((r) => setTimeout(r, pollMs));
      query.set("since", String(since));
      try {
        print(await fetchLogs(url, query));
        warned = false;
      } catch (err) {
        // A scheduler that restarts comes back: say so once and keep asking.
        if (!warned) process.stderr.write(`cluster: ${(err as Error).message}; still trying\n`);
        warned = true;
      }
    }
  },
});
