/**
 * Smoke test of the benchmark suite (`bench/run.ts`, and `bench/nanny.ts` with one kill): one
 * quick run with tiny sizes against the real binary, so the scripts never rot. It checks that every workload ran and has a median,
 * not how fast anything is.
 *
 * @module
 */
import { expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { binary, root, tempDir } from "../testkit/mod.ts";

/** Every workload the suite reports (issue 6); a name missing from the JSON fails the test. */
const workloads = [
  "map",
  "map-big",
  "tree-sum",
  "chain",
  "round-trip-p50",
  "round-trip-p99",
  "map-noop-transition",
  "map-jsonl",
  "map-3-subscribers",
  "map-3-batch-subscribers",
  "map-far-workers",
  "map-many-workers",
  "submit-1m",
  "submit-1m-json",
  "submit-1m-client",
  "scheduler-rss",
  "cold-start-scheduler",
  "cold-start-worker",
];

/** Runs `bun bench/SCRIPT ARGS…`; SIGKILLs it after `timeoutMs` (it stops its own cluster on SIGTERM). */
function runBench(args: string[], timeoutMs: number, script = "run.ts"): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(root, "bench", script), ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  return new Promise((resolve) => {
    const term = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs + 5_000);
    child.on("exit", (code) => {
      clearTimeout(term);
      clearTimeout(kill);
      resolve({ code, stdout, stderr });
    });
  });
}

test("the benchmark runs every workload with tiny sizes and writes a median for each", async () => {
  expect(existsSync(binary)).toBe(true);
  const dir = tempDir("cluster-bench-smoke-");
  try {
    const out = join(dir, "bench.json");
    const { code, stdout, stderr } = await runBench(["--sizes", "small", "--runs", "1", "--json", out], 90_000);
    if (code !== 0) throw new Error(`bench/run.ts exited with ${code}:\n${stdout}\n${stderr}`);
    const report = JSON.parse(readFileSync(out, "utf8"));
    // The quick maps (the 10,000 map, its event variants, the far map) run three rounds a run.
    const tripled = new Set(["map", "map-noop-transition", "map-jsonl", "map-3-subscribers", "map-3-batch-subscribers", "map-far-workers"]);
    for (const name of workloads) {
      expect(Number.isFinite(report.medians[name]), `median of "${name}"`).toBe(true);
      expect(report.workloads[name].samples).toHaveLength(tripled.has(name) ? 3 : 1);
    }
    for (const name of ["map-big-per-task-cost", "noop-plugin", "jsonl", "events-3-subscribers", "events-3-batch-subscribers", "far-vs-near", "many-vs-two-workers", "many-fresh-vs-two-workers", "map-scheduler-cpu-per-task"]) {
      expect(Number.isFinite(report.ratios[name].value), `ratio "${name}"`).toBe(true);
    }
    for (const name of ["map-3-subscribers", "map-3-batch-subscribers"]) {
      expect(report.workloads[name].details.receivedEvents).toEqual(Array(3).fill(report.workloads[name].details.expectedEvents));
    }
    // The table names every workload.
    expect(stdout).toContain("map 200 inc");
    expect(stdout).toContain("cold start: worker to registered");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

test("the benchmark rejects an unknown workload with exit code 2", async () => {
  const { code, stderr } = await runBench(["--only", "nope"], 20_000);
  expect(code).toBe(2);
  expect(stderr).toContain('Unknown workload "nope"');
});

test("the nanny benchmark kills a worker under a nanny and times its replacement", async () => {
  const { code, stdout, stderr } = await runBench(["--kills", "1", "--json"], 60_000, "nanny.ts");
  if (code !== 0) throw new Error(`bench/nanny.ts exited with ${code}:\n${stdout}\n${stderr}`);
  const result = JSON.parse(stdout.trim().split("\n").at(-1)!);
  expect(result.sigkillToRegisteredMs.runs).toHaveLength(1);
  expect(result.sigkillToRegisteredMs.median).toBeGreaterThan(0);
  expect(result.restarts).toBe(1);
  expect(result.idleWorker.peakMiB).toBeGreaterThan(1);
}, 70_000);
