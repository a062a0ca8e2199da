/**
 * Profiles the scheduler under the 10,000-task map: runs the scheduler from the sources under
 * `bun --cpu-prof` (`--variant plain|noop|jsonl|subscribers|batch-subscribers`: plain, with a
 * no-op plugin, with the `jsonl` plugin, with the mixed 3 event subscribers or with 3 CBOR-batch
 * ones), two workers of `dist/cluster` (or `--workers N` single-threaded ones), runs the map
 * `--runs` times, stops the scheduler and prints where the profile (Chrome `.cpuprofile` and
 * Bun's markdown summary) was written.
 *
 * ```sh
 * bun bench/profile.ts --variant subscribers --runs 20 --out /tmp/prof
 * bun bench/profile.ts --workers 100 --size 100000 --runs 3   # many single-threaded workers
 * ```
 *
 * @module
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Client } from "../lib/client/mod.ts";
import { graphs, root, startProcess, startWorker, stopAll, waitIdle } from "../testkit/mod.ts";
import { readCpuMs } from "./_lib.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    variant: { type: "string", default: "plain" },
    runs: { type: "string", default: "20" },
    size: { type: "string", default: "10000" },
    out: { type: "string" },
    /** More than 2 workers start single-threaded (`--nthreads 1`), all at once. */
    workers: { type: "string", default: "2" },
  },
});
const out = values.out ?? mkdtempSync(join(tmpdir(), "cluster-prof-"));
const tmp = mkdtempSync(join(tmpdir(), "cluster-prof-run-"));
const args = ["scheduler", "--port", "0"];
if (values.variant === "jsonl") {
  const toml = join(tmp, "plugins.toml");
  writeFileSync(toml, `[[scheduler.plugins]]\nuse = "jsonl"\npath = ${JSON.stringify(join(tmp, "events.jsonl"))}\n`);
  args.push("--plugins", toml);
}
if (values.variant === "noop") {
  const toml = join(tmp, "plugins.toml");
  writeFileSync(toml, `[[scheduler.plugins]]\nuse = ${JSON.stringify(join(root, "bench", "fixtures", "noop-transition.ts"))}\n`);
  args.push("--plugins", toml);
}
const scheduler = await startProcess(args, {
  command: [process.execPath, "--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${out}`, "--cpu-prof-interval=200", join(root, "cmd", "cluster.ts")],
});
try {
  const nWorkers = Number(values.workers);
  const workerArgs = nWorkers > 2 ? ["--nthreads", "1"] : [];
  await Promise.all(Array.from({ length: nWorkers }, () => startWorker(scheduler.url, { args: workerArgs, timeoutMs: 120_000 })));
  if (values.variant === "subscribers" || values.variant === "batch-subscribers") {
    const batches = values.variant === "batch-subscribers" ? ["batches"] : [];
    await startProcess([join(root, "bench", "fixtures", "subscribers.ts"), scheduler.url, ...batches], { command: [process.execPath], ready: /^ready$/m });
  }
  const client = await Client.connect(scheduler.url);
  const n = Number(values.size);
  const cpu0 = readCpuMs(scheduler.pid);
  for (let run = 0; run < Number(values.runs); run++) {
    const graph = graphs.map(n, `prof-${run}`);
    await client.compute(graph);
    await client.gather(graph.keys);
    await client.release(graph.keys);
    await waitIdle(scheduler.url);
  }
  const cpu = readCpuMs(scheduler.pid) - cpu0;
  console.log(`${values.variant}: scheduler CPU ${(cpu * 1000 / (n * Number(values.runs))).toFixed(1)} µs/task (profiled)`);
  await client.close();
} finally {
  await scheduler.stop("SIGTERM", 10_000);
  await stopAll("SIGTERM");
}
console.log(`profile in ${out}`);
