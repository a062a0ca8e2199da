/**
 * How long a big graph blocks the scheduler's event loop, in CPU time: runs the scheduler from
 * the sources with `bench/fixtures/loop-blocks.ts` preloaded, two workers of `dist/cluster`,
 * posts a map of `--tasks` tasks as one JSON or CBOR body (`POST /api/v1/graph`), waits until
 * every result is in memory and prints the longest blocks (main-thread CPU between two 2-ms
 * ticks), those of the idle collection after the last result apart. `--gc` runs the scheduler
 * with `BUN_JSC_logGC=1` and names the collector's pauses inside each block.
 *
 * ```sh
 * bun bench/blocks.ts --format json --tasks 1000000 --gc
 * ```
 *
 * @module
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { encodeCbor } from "../lib/protocol.ts";
import { authHeaders, graphs, root, startProcess, startWorker, stopAll, taskCounts, waitFor } from "../testkit/mod.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    format: { type: "string", default: "json" },
    tasks: { type: "string", default: "1000000" },
    gc: { type: "boolean", default: false },
  },
});
const n = Number(values.tasks);
const format = values.format === "cbor" ? "cbor" : "json";
const out = join(mkdtempSync(join(tmpdir(), "cluster-blocks-")), "blocks.json");
// The preload's clock starts about when the process does.
const spawned = performance.now();
const scheduler = await startProcess(["scheduler", "--port", "0"], {
  command: [process.execPath, "--preload", join(root, "bench", "fixtures", "loop-blocks.ts"), join(root, "cmd", "cluster.ts")],
  env: { LOOP_BLOCKS_OUT: out, ...(values.gc ? { BUN_JSC_logGC: "1", LOOP_BLOCKS_MARK: "1" } : {}) },
});
try {
  await Promise.all([startWorker(scheduler.url), startWorker(scheduler.url)]);
  const { tasks } = graphs.map(n, "blocks");
  const body = format === "json" ? JSON.stringify({ tasks }) : encodeCbor({ tasks }).slice();
  const started = performance.now();
  const response = await fetch(`${scheduler.url}/api/v1/graph`, {
    method: "POST",
    headers: { "content-type": `application/${format}`, ...authHeaders() },
    body,
  });
  if (response.status !== 202) throw new Error(`The graph was refused: ${response.status} ${await response.text()}`);
  await response.arrayBuffer();
  const submitted = performance.now();
  await waitFor("every result to be in memory", async () => (await taskCounts(scheduler.url)).memory === n, { timeoutMs: 900_000, intervalMs: 100 });
  const done = performance.now();
  // The idle collection comes 100 ms after the last transition.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const blocks = JSON.parse(readFileSync(out, "utf8")) as Array<{ wall: number; cpu: number; at: number }>;
  const during = blocks.filter((b) => spawned + b.at <= done);
  const idle = blocks.filter((b) => spawned + b.at > done);
  const byCpu = (list: typeof blocks) => [...list].sort((a, b) => b.cpu - a.cpu).slice(0, 8).map((b) => `${b.cpu} ms (wall ${b.wall})`).join(", ");
  console.log(`${n.toLocaleString("en")} tasks as ${format}: posted in ${((submitted - started) / 1000).toFixed(1)} s, all in memory after ${((done - started) / 1000).toFixed(1)} s`);
  console.log(`until then, blocks over 50 ms of CPU: ${during.filter((b) => b.cpu > 50).length}; the longest: ${byCpu(during)}`);
  console.log(`once idle (the full collection after a burst): ${byCpu(idle) || "none"}`);
  if (values.gc) {
    let since: string[] = [];
    for (const line of scheduler.stderr.join("").split("\n")) {
      if (line === "TICK") since = [];
      else if (line.startsWith("GC<") || line.startsWith("[GC<")) since.push(line);
      else if (line.startsWith("BLOCK")) {
        const pauses = since.map((l) => Number(l.match(/\bp=([\d.]+)ms/)?.[1] ?? 0)).filter((p) => p >= 5);
        console.log(`${line}: collector pauses ≥ 5 ms inside: ${pauses.map((p) => p.toFixed(0)).join(", ") || "none"}`);
        since = [];
      }
    }
  }
} finally {
  await scheduler.stop("SIGTERM", 10_000);
  await stopAll("SIGTERM");
}
