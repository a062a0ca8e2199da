/**
 * The benchmark suite of issue 6: starts `dist/cluster` (a scheduler and 2 single-threaded
 * workers on loopback) itself, runs every workload `--runs` times after one warm-up, prints a
 * table of medians against the targets and writes every sample as JSON.
 *
 * ```sh
 * npm run bench                                   # everything, 5 runs each
 * bun bench/run.ts --json out.json --runs 3
 * bun bench/run.ts --only map,map-jsonl
 * bun bench/run.ts --sizes small --runs 1         # tiny sizes (the smoke test)
 * ```
 *
 * It builds nothing and measures the binary that is there. Every process it starts is stopped
 * by PID when it is done, on errors and on Ctrl-C.
 *
 * @module
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Client } from "../lib/client/mod.ts";
import { encodeCbor, version } from "../lib/protocol.ts";
import {
  authHeaders,
  cleanUpOnSignal,
  graphs,
  type Proc,
  readMetric,
  requireBinary,
  root,
  sleep,
  startCluster,
  startProcess,
  startDelayProxy,
  startWorker,
  stopAll,
  taskCounts,
  type TestCluster,
  waitFor,
  waitIdle,
} from "../testkit/mod.ts";
import { median, percentile, readCpuMs, readJitCpuMs, readMemory, readRss } from "./_lib.ts";

/** How big each workload is. */
export interface Sizes {
  map: number;
  mapBig: number;
  treeLeaves: number;
  chain: number;
  roundTrips: number;
  rssTasks: number;
  /** Workers of `map-many-workers` (single-threaded, all started at once). */
  manyWorkers: number;
  /** Tasks of `submit-1m`. */
  submitBig: number;
}

/** `--sizes full` is issue 6's; `--sizes small` keeps the smoke test quick. */
export const sizeSets: Record<"full" | "small", Sizes> = {
  full: { map: 10_000, mapBig: 100_000, treeLeaves: 10_000, chain: 2_000, roundTrips: 2_000, rssTasks: 100_000, manyWorkers: 100, submitBig: 1_000_000 },
  small: { map: 200, mapBig: 2_000, treeLeaves: 256, chain: 50, roundTrips: 50, rssTasks: 2_000, manyWorkers: 4, submitBig: 30_000 },
};

/** A target from issue 6. */
export interface Target {
  op: ">=" | "<=";
  value: number;
}

/** One workload's result. */
export interface WorkloadResult {
  name: string;
  label: string;
  unit: string;
  samples: number[];
  median: number;
  min: number;
  max: number;
  target?: Target;
  /** Whether the median meets the target (absent without a target). */
  ok?: boolean;
  details?: Record<string, unknown>;
}

/** A ratio between two workloads' medians. */
export interface RatioResult {
  name: string;
  label: string;
  unit: string;
  value: number;
  /** None for a row shown for information. */
  target?: Target;
  ok?: boolean;
  description: string;
}

/** Every workload name, in report order (`--only` takes these; `round-trip` selects both). */
export const workloadNames = [
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
] as const;

/** A workload name. */
export type WorkloadName = typeof workloadNames[number];

const targets: Partial<Record<WorkloadName, Target>> = {
  "submit-1m": { op: "<=", value: 100 },
  "submit-1m-json": { op: "<=", value: 100 },
  "submit-1m-client": { op: "<=", value: 100 },
  "map": { op: ">=", value: 15_000 },
  "tree-sum": { op: ">=", value: 10_000 },
  "chain": { op: ">=", value: 3_000 },
  "round-trip-p50": { op: "<=", value: 1 },
  "scheduler-rss": { op: "<=", value: 2_048 },
  "cold-start-scheduler": { op: "<=", value: 150 },
  "cold-start-worker": { op: "<=", value: 300 },
};

interface Options {
  runs: number;
  sizes: "full" | "small";
  only: Set<WorkloadName>;
  json?: string;
}

const usage = `Usage: bun bench/run.ts [--runs N] [--sizes full|small] [--only NAME[,NAME]] [--json FILE]

  --runs N        measured runs per workload, after one warm-up (default 5); the 10,000 map,
                  its event variants and the far-worker map run 3 x N after two or three
                  warm-up rounds, the 100-worker map N after two once each of its
                  workers has run 16,000 tasks
  --sizes S       "full" (the target sizes, default) or "small" (a quick smoke run)
  --only NAMES    only these workloads: ${workloadNames.join(", ")}, round-trip
  --json FILE     also write every sample, the medians and the ratios to FILE

Needs dist/cluster ("npm run build").`;

class UsageError extends Error {
  override name = "UsageError";
}

function parseOptions(argv: string[]): Options | null {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        runs: { type: "string", default: "5" },
        sizes: { type: "string", default: "full" },
        only: { type: "string" },
        json: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.help) return null;
  const runs = Number(parsed.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`Invalid --runs "${parsed.runs}": expected a whole number ≥ 1`);
  if (parsed.sizes !== "full" && parsed.sizes !== "small") throw new UsageError(`Invalid --sizes "${parsed.sizes}": expected "full" or "small"`);
  const only = new Set<WorkloadName>();
  for (const raw of (parsed.only ?? workloadNames.join(",")).split(",").map((s) => s.trim()).filter(Boolean)) {
    if (raw === "round-trip") {
      only.add("round-trip-p50");
      only.add("round-trip-p99");
    } else if ((workloadNames as readonly string[]).includes(raw)) only.add(raw as WorkloadName);
    else throw new UsageError(`Unknown workload "${raw}": expected one of ${workloadNames.join(", ")}, round-trip`);
  }
  return { runs, sizes: parsed.sizes, only, json: parsed.json };
}

// ---- measuring ---------------------------------------------------------------------------------

/** Runs `fn` once to warm up, then `runs` times; returns the measured samples. */
async function repeat<T>(runs: number, fn: (run: number) => Promise<T>): Promise<T[]> {
  await fn(0);
  const samples: T[] = [];
  for (let run = 1; run <= runs; run++) samples.push(await fn(run));
  return samples;
}

let prefixCounter = 0;

/**
 * Runs `a` and `b` in turns: `warmUps` rounds first (not kept), then `runs` rounds, each in the
 * other order than the one before, so that neither always runs right after the other (its
 * garbage still being collected, its processes still busy).
 */
async function alternating<T>(runs: number, warmUps: number, a: () => Promise<T>, b: () => Promise<T>): Promise<{ a: T[]; b: T[] }> {
  const out = { a: [] as T[], b: [] as T[] };
  for (let run = 1 - warmUps; run <= runs; run++) {
    const bFirst = (run & 1) === 1;
    const early = bFirst ? await b() : null;
    const x = await a();
    const y = early ?? await b();
    if (run > 0) {
      out.a.push(x);
      out.b.push(y);
    }
  }
  return out;
}

/** A key prefix no earlier run used. */
function uniquePrefix(name: string): string {
  return `bench-${name}-${++prefixCounter}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Submits a graph, gathers its wanted keys, then releases them and waits until all is forgotten. */
async function computeGather(client: Client, url: string, graph: { tasks: any[]; keys: string[] }): Promise<{ seconds: number; values: unknown[] }> {
  const t0 = performance.now();
  await client.compute(graph);
  const values = await client.gather(graph.keys);
  const seconds = (performance.now() - t0) / 1000;
  await client.release(graph.keys);
  await waitIdle(url);
  return { seconds, values };
}

/** One map of `n` × `builtin.inc`: tasks per second from submit to all results gathered. */
async function mapRun(client: Client, url: string, n: number, name: string): Promise<number> {
  const graph = graphs.map(n, uniquePrefix(name));
  const { seconds, values } = await computeGather(client, url, graph);
  for (let i = 0; i < n; i++) {
    if (values[i] !== i + 1) throw new Error(`Wrong result for "${graph.keys[i]}": got ${JSON.stringify(values[i])}, expected ${i + 1}`);
  }
  return n / seconds;
}

/** One tree sum over `leaves` leaves: tasks (leaves and adds) per second. */
async function treeRun(client: Client, url: string, leaves: number): Promise<number> {
  const graph = graphs.treeSum(leaves, uniquePrefix("tree"));
  const { seconds, values } = await computeGather(client, url, graph);
  if (values[0] !== leaves) throw new Error(`Wrong tree sum: got ${JSON.stringify(values[0])}, expected ${leaves}`);
  return graph.tasks.length / seconds;
}

/** One chain of `n` dependent `builtin.inc`: tasks per second. */
async function chainRun(client: Client, url: string, n: number): Promise<number> {
  const graph = graphs.chain(n, uniquePrefix("chain"));
  const { seconds, values } = await computeGather(client, url, graph);
  if (values[0] !== n) throw new Error(`Wrong chain result: got ${JSON.stringify(values[0])}, expected ${n}`);
  return n / seconds;
}

/** `count` sequential `submit("builtin.inc", i)` → `result()`; latency percentiles in ms. */
async function roundTripRun(client: Client, url: string, count: number): Promise<{ p50: number; p99: number }> {
  const latencies: number[] = [];
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const future = client.submit("builtin.inc", i);
    const value = await future.result();
    latencies.push(performance.now() - t0);
    keys.push(future.key);
    if (value !== i + 1) throw new Error(`Wrong result for "${future.key}": got ${JSON.stringify(value)}, expected ${i + 1}`);
  }
  await client.release(keys);
  await waitIdle(url);
  return { p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

/** Connects a client, runs `fn`, closes the client. */
async function withClient<T>(url: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await Client.connect(url);
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/** Starts a cluster, runs `fn`, stops the cluster. */
async function withCluster<T>(options: { plugins?: string }, fn: (cluster: TestCluster) => Promise<T>): Promise<T> {
  const cluster = await startCluster(options);
  try {
    return await fn(cluster);
  } finally {
    await cluster.stop();
  }
}

/** The three-subscriber process (`bench/fixtures/subscribers.ts`) and a way to ask its counts. */
async function startSubscribers(url: string, batches = false): Promise<{ proc: Proc; counts(): Promise<{ counts: number[]; closed: Array<string | null> }> }> {
  const proc = await startProcess([join(root, "bench", "fixtures", "subscribers.ts"), url, ...(batches ? ["batches"] : [])], { command: [process.execPath], ready: /^ready$/m });
  const lines = createInterface({ input: proc.child.stdout! });
  const waiting: Array<(line: string) => void> = [];
  lines.on("line", (line) => waiting.shift()?.(line));
  return {
    proc,
    counts: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("The subscriber process did not answer")), 10_000);
        waiting.push((line) => {
          clearTimeout(timer);
          resolve(JSON.parse(line));
        });
        proc.child.stdin!.write("counts\n");
      }),
  };
}

// ---- the suite -----------------------------------------------------------------------------------

const labels: Record<WorkloadName, (s: Sizes) => [label: string, unit: string]> = {
  "map": (s) => [`map ${s.map.toLocaleString("en")} inc`, "tasks/s"],
  "map-big": (s) => [`map ${s.mapBig.toLocaleString("en")} inc`, "tasks/s"],
  "tree-sum": (s) => [`tree sum ${s.treeLeaves.toLocaleString("en")} leaves`, "tasks/s"],
  "chain": (s) => [`chain ${s.chain.toLocaleString("en")}`, "tasks/s"],
  "round-trip-p50": (s) => [`${s.roundTrips.toLocaleString("en")} round trips, p50`, "ms"],
  "round-trip-p99": (s) => [`${s.roundTrips.toLocaleString("en")} round trips, p99`, "ms"],
  "map-noop-transition": (s) => [`map ${s.map.toLocaleString("en")} + no-op transition plugin`, "tasks/s"],
  "map-jsonl": (s) => [`map ${s.map.toLocaleString("en")} + jsonl plugin`, "tasks/s"],
  "map-3-subscribers": (s) => [`map ${s.map.toLocaleString("en")} + 3 event subscribers`, "tasks/s"],
  "map-3-batch-subscribers": (s) => [`map ${s.map.toLocaleString("en")} + 3 CBOR-batch subscribers`, "tasks/s"],
  "map-far-workers": (s) => [`map ${s.map.toLocaleString("en")}, workers behind a 25 ms (one way) proxy`, "tasks/s"],
  "map-many-workers": (s) => [`map ${s.mapBig.toLocaleString("en")}, ${s.manyWorkers} workers`, "tasks/s"],
  "submit-1m": (s) => [`/health p99 while ${s.submitBig.toLocaleString("en")} tasks are submitted and run`, "ms"],
  "submit-1m-json": (s) => [`/health p99 while ${s.submitBig.toLocaleString("en")} tasks are submitted as JSON and run`, "ms"],
  "submit-1m-client": (s) => [`/health p99 while ${s.submitBig.toLocaleString("en")} tasks are submitted by the client and run`, "ms"],
  "scheduler-rss": (s) => [`scheduler RSS holding ${s.rssTasks.toLocaleString("en")} results`, "B/task"],
  "cold-start-scheduler": () => ["cold start: scheduler to ready", "ms"],
  "cold-start-worker": () => ["cold start: worker to registered", "ms"],
};

/** Stops what `runSuite` started for one cluster (each step at most once). */
async function stopSetup(setup: { subscribers?: { proc: Proc }; client?: Client; cluster: TestCluster; stopped?: boolean }): Promise<void> {
  if (setup.stopped) return;
  setup.stopped = true;
  const errors: unknown[] = [];
  for (const step of [() => setup.subscribers?.proc.stop(), () => setup.client?.close(), () => setup.cluster.stop()]) {
    try {
      await step();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, "Cannot stop a benchmark cluster cleanly");
}

/** Runs the selected workloads; calls `report` as each one finishes. */
async function runSuite(options: Options, tmp: string, report: (r: WorkloadResult) => void): Promise<Map<WorkloadName, WorkloadResult>> {
  const sizes = sizeSets[options.sizes];
  const results = new Map<WorkloadName, WorkloadResult>();
  const want = (name: WorkloadName) => options.only.has(name);
  const record = (name: WorkloadName, samples: number[], details?: Record<string, unknown>) => {
    const [label, unit] = labels[name](sizes);
    const target = targets[name];
    const result: WorkloadResult = {
      name,
      label,
      unit,
      samples,
      median: median(samples),
      min: Math.min(...samples),
      max: Math.max(...samples),
      ...(target ? { target, ok: meets(median(samples), target) } : {}),
      ...(details ? { details } : {}),
    };
    results.set(name, result);
    report(result);
  };
  const runs = options.runs;

  // The 10,000 map and its variants: a cluster each (a fresh one per plugin set; the subscribers
  // get their own so they disturb nothing else), all started before any run, and their runs
  // interleaved (map, no-op, jsonl, subscribers, then backwards, …) so that the load of a busy
  // machine and the JIT warming up fall on every variant alike and the cost ratios compare like
  // with like.
  const variants: Array<{ name: WorkloadName; toml?: string; subscribers?: boolean; batches?: boolean }> = [
    { name: "map" },
    { name: "map-noop-transition", toml: `[[scheduler.plugins]]\nuse = ${JSON.stringify(join(root, "bench", "fixtures", "noop-transition.ts"))}\n` },
    { name: "map-jsonl", toml: `[[scheduler.plugins]]\nuse = "jsonl"\npath = ${JSON.stringify(join(tmp, "events.jsonl"))}\n` },
    { name: "map-3-subscribers", subscribers: true },
    { name: "map-3-batch-subscribers", subscribers: true, batches: true },
  ];
  const plainRest: WorkloadName[] = ["map-big", "tree-sum", "chain", "round-trip-p50", "round-trip-p99"];
  interface Setup {
    name: WorkloadName;
    cluster: TestCluster;
    client: Client;
    subscribers?: Awaited<ReturnType<typeof startSubscribers>>;
    transitionsBefore: number;
    samples: number[];
    /** The scheduler's CPU time per run (ms): robust where wall-clock time is noisy. */
    cpu: number[];
    /** The subscriber process's CPU time per run (ms): on the same cores, part of the cost. */
    subscriberCpu: number[];
  }
  const setups: Setup[] = [];
  let plain: Setup | undefined;
  try {
    for (const variant of variants) {
      const isPlain = variant.name === "map";
      if (!want(variant.name) && !(isPlain && plainRest.some(want))) continue;
      let plugins: string | undefined;
      if (variant.toml) {
        plugins = join(tmp, `${variant.name}.toml`);
        writeFileSync(plugins, variant.toml);
      }
      const cluster = await startCluster({ plugins });
      const setup: Setup = { name: variant.name, cluster, client: undefined as unknown as Client, transitionsBefore: 0, samples: [], cpu: [], subscriberCpu: [] };
      setups.push(setup);
      setup.client = await Client.connect(cluster.url);
      if (variant.subscribers) {
        setup.subscribers = await startSubscribers(cluster.url, variant.batches);
        setup.transitionsBefore = await readMetric(cluster.url, "cluster_transitions_total");
      }
      if (isPlain) plain = setup;
    }
    const mapSetups = setups.filter((s) => want(s.name));
    const drained = async (s: Setup) => {
      const expected = (await readMetric(s.cluster.url, "cluster_transitions_total")) - s.transitionsBefore;
      await waitFor("the subscribers to catch up", async () => {
        const last = await s.subscribers!.counts();
        return last.counts.every((n) => n >= expected) || last.closed.some((c) => c !== null);
      }, { timeoutMs: 60_000, intervalMs: 20 });
    };
    // Three warm-up rounds: a fresh scheduler's CPU per map keeps falling for the first few maps
    // (the JIT tiering up), more than any event cost. Then three times --runs rounds: a 10,000
    // map takes a fifth of a second, and its scheduler CPU varies by a third from run to run, as
    // much as the costs measured against it.
    const warmUps = 3;
    const variantRuns = 3 * runs;
    for (let run = 1 - warmUps; run <= variantRuns; run++) {
      // Forward in even rounds, backward in odd ones: a run right after another variant's (its
      // cluster still collecting garbage, its subscribers' process still busy) falls on every
      // variant alike instead of always on the same one.
      for (const s of (run & 1) === 0 ? mapSetups : [...mapSetups].reverse()) {
        const cpuBefore = readCpuMs(s.cluster.scheduler.pid);
        const subscriberBefore = s.subscribers ? readCpuMs(s.subscribers.proc.pid) : 0;
        const tps = await mapRun(s.client, s.cluster.url, sizes.map, s.name);
        if (run > 0) {
          s.samples.push(tps);
          s.cpu.push(readCpuMs(s.cluster.scheduler.pid) - cpuBefore);
          if (s.subscribers) s.subscriberCpu.push(readCpuMs(s.subscribers.proc.pid) - subscriberBefore);
        }
        // Subscribers still decoding their backlog would take the next variant's CPU: the next
        // run starts once they have every event.
        if (s.subscribers) await drained(s);
      }
    }
    for (const s of mapSetups) {
      if (!s.subscribers) {
        record(s.name, s.samples, { schedulerCpuMs: s.cpu, tasks: sizes.map });
        continue;
      }
      const url = s.cluster.url;
      const expected = (await readMetric(url, "cluster_transitions_total")) - s.transitionsBefore;
      let last = await s.subscribers.counts();
      await waitFor("the subscribers to receive every transition event", async () => {
        last = await s.subscribers!.counts();
        return last.counts.every((n) => n >= expected) || last.closed.some((c) => c !== null);
      }, { timeoutMs: 30_000, intervalMs: 100 });
      if (last.counts.some((n) => n !== expected)) {
        throw new Error(`Event subscribers did not get every transition event: expected ${expected}, got ${last.counts.join(", ")} (closed: ${last.closed.map(String).join(", ")})`);
      }
      record(s.name, s.samples, { expectedEvents: expected, receivedEvents: last.counts, formats: s.name === "map-3-batch-subscribers" ? ["cbor batch", "cbor batch", "cbor batch"] : ["json", "json batch", "cbor batch"], schedulerCpuMs: s.cpu, subscriberProcessCpuMs: s.subscriberCpu });
    }
    const base = setups.find((s) => s.name === "map" && s.samples.length > 0);
    if (base) {
      // The same ratios per interleaved run, to see how much of a cost is noise.
      for (const s of mapSetups) {
        if (s === base) continue;
        results.get(s.name)!.details = {
          ...results.get(s.name)!.details,
          pairedCosts: s.samples.map((v, i) => 1 - v / base.samples[i]),
        };
      }
    }
    // The variants' clusters are not needed any more; the plain one goes on.
    for (const s of setups.filter((x) => x !== plain).reverse()) await stopSetup(s);

    if (plain) {
      const { client, cluster: { url } } = plain;
      if (want("map-big")) record("map-big", await repeat(runs, () => mapRun(client, url, sizes.mapBig, "map-big")));
      if (want("tree-sum")) record("tree-sum", await repeat(runs, () => treeRun(client, url, sizes.treeLeaves)));
      if (want("chain")) record("chain", await repeat(runs, () => chainRun(client, url, sizes.chain)));
      if (want("round-trip-p50") || want("round-trip-p99")) {
        const samples = await repeat(runs, () => roundTripRun(client, url, sizes.roundTrips));
        if (want("round-trip-p50")) record("round-trip-p50", samples.map((s) => s.p50));
        if (want("round-trip-p99")) record("round-trip-p99", samples.map((s) => s.p99));
      }
    }
  } finally {
    for (const s of setups.reverse()) await stopSetup(s);
  }

  // Far workers: 2 workers reaching the scheduler through a delaying proxy (25 ms each way) against
  // 2 direct ones, runs alternating (near, far, near, …) so that the machine's load falls on both.
  if (want("map-far-workers")) {
    const near = await startCluster({});
    const farScheduler = await startProcess(["scheduler", "--port", "0"]);
    const proxy = await startDelayProxy({ target: Number(new URL(farScheduler.url).port), delayMs: 25 });
    const farWorkers: Proc[] = [];
    try {
      for (let i = 0; i < 2; i++) farWorkers.push(await startWorker(`http://127.0.0.1:${proxy.port}`));
      const nearSamples: number[] = [];
      const farSamples: number[] = [];
      await withClient(near.url, (nearClient) =>
        withClient(farScheduler.url, async (farClient) => {
          // Like the map's variants: two warm-up rounds (the far pipeline learns its round trip),
          // then 3 × --runs rounds of these quick maps.
          const turns = await alternating(3 * runs, 2, () => mapRun(nearClient, near.url, sizes.map, "near"), () => mapRun(farClient, farScheduler.url, sizes.map, "far"));
          nearSamples.push(...turns.a);
          farSamples.push(...turns.b);
        }));
      record("map-far-workers", farSamples, { nearSamples, pairedRatios: farSamples.map((f, i) => f / nearSamples[i]), oneWayDelayMs: 25 });
    } finally {
      for (const w of farWorkers) await w.stop();
      await proxy.close();
      await farScheduler.stop();
      await near.stop();
    }
  }

  // Many workers: the big map on N single-threaded workers against 2, runs alternating; and how
  // long the N workers take from their start until all are registered.
  if (want("map-many-workers")) {
    const two = await startCluster({});
    const many = await startProcess(["scheduler", "--port", "0"]);
    const procs: Proc[] = [];
    try {
      // Registration is timed from the first spawn and from the last one: on a small machine the
      // workers' own start-up (their CPU, all at once on the same cores) is most of it.
      const firstSpawn = performance.now();
      const starting: Promise<Proc>[] = [];
      for (let i = 0; i < sizes.manyWorkers; i++) {
        starting.push(startWorker(many.url, { args: ["--nthreads", "1"], timeoutMs: 120_000 }));
      }
      const lastSpawn = performance.now();
      for (const p of await Promise.allSettled(starting)) {
        if (p.status === "fulfilled") procs.push(p.value);
        else throw p.reason;
      }
      await waitFor("every worker to register", async () => (await readMetric(many.url, "cluster_workers")) >= sizes.manyWorkers, {
        timeoutMs: 120_000,
        intervalMs: 50,
      });
      const registered = performance.now();
      const registerSeconds = (registered - firstSpawn) / 1000;
      const registerAfterLastSpawnSeconds = (registered - lastSpawn) / 1000;
      // CPU the workers spent to start and register (before any task), per worker.
      const startCpuMsPerWorker = procs.reduce((sum, w) => sum + readCpuMs(w.pid), 0) / procs.length;
      const schedulerRegisterCpuMs = readCpuMs(many.pid);
      const twoSamples: number[] = [];
      const manySamples: number[] = [];
      // Scheduler CPU per run (ms): whether the many workers cost the scheduler more per task.
      const twoCpu: number[] = [];
      const manyCpu: number[] = [];
      // And the workers' CPU per run, all of them together: on a small machine they share its cores.
      const workersCpuMs = (ws: Proc[]) => ws.reduce((sum, w) => sum + readCpuMs(w.pid), 0);
      const twoWorkersCpu: number[] = [];
      const manyWorkersCpu: number[] = [];
      // Of which their JIT compiler threads: a hundred processes each compiling the same code.
      const manyWorkersJit: number[] = [];
      // The many workers' maps alone before the measured ones (their JIT's start-up).
      const warmUpSamples: number[] = [];
      const warmUpJitCpuMs: number[] = [];
      const warmUpWorkersCpuMs: number[] = [];
      await withClient(two.url, (twoClient) =>
        withClient(many.url, async (manyClient) => {
          const runTwo = async () => {
            const cpu0 = readCpuMs(two.scheduler.pid);
            const w0 = workersCpuMs(two.workers);
            const tps = await mapRun(twoClient, two.url, sizes.mapBig, "two");
            return { tps, cpu: readCpuMs(two.scheduler.pid) - cpu0, workersCpu: workersCpuMs(two.workers) - w0 };
          };
          const workersJitMs = (ws: Proc[]) => ws.reduce((sum, w) => sum + readJitCpuMs(w.pid), 0);
          const runMany = async () => {
            const cpu0 = readCpuMs(many.pid);
            const w0 = workersCpuMs(procs);
            const j0 = workersJitMs(procs);
            const tps = await mapRun(manyClient, many.url, sizes.mapBig, "many");
            return { tps, cpu: readCpuMs(many.pid) - cpu0, workersCpu: workersCpuMs(procs) - w0, workersJit: workersJitMs(procs) - j0 };
          };
          // Warm-up, as much per worker process on both sides: each fresh process compiles the
          // same hot code as its functions cross JavaScriptCore's tiers, in bursts over its first
          // ~15,000 tasks (one worker's log of compilations: 63, 0.42 s, the last in its 15th
          // thousand). Two workers get there within their first map; a hundred, 1,000 tasks a map
          // each, after 15, seconds of JIT CPU a map on the cores the scheduler shares. So the
          // many workers first run maps alone until each has run 16,000 tasks: what is measured
          // is the cluster's steady rate, and those maps' rates and JIT CPU are kept to show what
          // fresh workers cost.
          const warmUpMaps = Math.ceil(16_000 * sizes.manyWorkers / sizes.mapBig);
          for (let i = 0; i < warmUpMaps; i++) {
            const w = await runMany();
            warmUpSamples.push(w.tps);
            warmUpJitCpuMs.push(w.workersJit);
            warmUpWorkersCpuMs.push(w.workersCpu);
          }
          const turns = await alternating(runs, 2, runTwo, runMany);
          for (const a of turns.a) {
            twoSamples.push(a.tps);
            twoCpu.push(a.cpu);
            twoWorkersCpu.push(a.workersCpu);
          }
          for (const b of turns.b) {
            manySamples.push(b.tps);
            manyCpu.push(b.cpu);
            manyWorkersCpu.push(b.workersCpu);
            manyWorkersJit.push(b.workersJit);
          }
        }));
      record("map-many-workers", manySamples, { workers: sizes.manyWorkers, registerSeconds, registerAfterLastSpawnSeconds, startCpuMsPerWorker, schedulerRegisterCpuMs, twoWorkerSamples: twoSamples, pairedRatios: manySamples.map((m, i) => m / twoSamples[i]), schedulerCpuMs: manyCpu, twoWorkerSchedulerCpuMs: twoCpu, workersCpuMs: manyWorkersCpu, workersJitCpuMs: manyWorkersJit, twoWorkersCpuMs: twoWorkersCpu, warmUpSamples, warmUpJitCpuMs, warmUpWorkersCpuMs });
    } finally {
      await Promise.all(procs.map((w) => w.stop()));
      await many.stop();
      await two.stop();
    }
  }

  // A big graph: /health is asked again and again (one request at a time) while a map of a
  // million tasks is submitted and runs; its latencies, and the scheduler's memory per held task.
  // One run (each takes a minute or more), whatever --runs says. Once as CBOR, once as JSON (both
  // over HTTP), once through the client's socket (a 50 MB frame, sent in chunks).
  for (const [name, format] of [["submit-1m", "cbor"], ["submit-1m-json", "json"], ["submit-1m-client", "client"]] as const) {
    if (!want(name)) continue;
    await withCluster({}, (cluster) =>
      withClient(cluster.url, async (client) => {
        const { url } = cluster;
        const pid = cluster.scheduler.pid;
        await mapRun(client, url, Math.min(1_000, sizes.submitBig), "submit-warm");
        await sleep(200);
        const before = readMemory(pid);
        // Short keys and no "keys" (every task is wanted): a million tasks fit the 64 MiB body limit.
        const graph = graphs.map(sizes.submitBig, `s${++prefixCounter}`);
        const poller = await startProcess([join(root, "bench", "fixtures", "health-poller.ts"), url], { command: [process.execPath], ready: /^ready$/m });
        const body = format === "cbor" ? encodeCbor({ tasks: graph.tasks }).slice() : format === "json" ? JSON.stringify({ tasks: graph.tasks }) : null;
        const t0 = performance.now();
        if (body === null) await client.compute({ tasks: graph.tasks });
        else {
          const response = await fetch(`${url}/api/v1/graph`, { method: "POST", headers: { "content-type": `application/${format}`, ...authHeaders() }, body });
          if (response.status !== 202) throw new Error(`The big graph was refused: ${response.status} ${await response.text()}`);
          await response.arrayBuffer();
        }
        const submitSeconds = (performance.now() - t0) / 1000;
        await waitFor("every result to be in memory", async () => (await taskCounts(url)).memory === sizes.submitBig, {
          timeoutMs: 900_000,
          intervalMs: 200,
        });
        const totalSeconds = (performance.now() - t0) / 1000;
        const answer = new Promise<string>((resolve) => createInterface({ input: poller.child.stdout! }).on("line", (l) => l.startsWith("{") && resolve(l)));
        poller.child.stdin!.write("stop\n");
        const latencies = (JSON.parse(await answer) as { latencies: number[] }).latencies;
        await poller.stop();
        await sleep(1000);
        const after = readMemory(pid);
        const p99 = percentile(latencies, 99);
        record(name, [p99], {
          bodyBytes: body === null ? null : typeof body === "string" ? Buffer.byteLength(body) : body.byteLength,
          worstMs: Math.max(...latencies),
          p50Ms: percentile(latencies, 50),
          requests: latencies.length,
          over100Ms: latencies.filter((l) => l > 100).length,
          submitSeconds,
          totalSeconds,
          tasksPerSecond: sizes.submitBig / totalSeconds,
          bytesPerHeldTask: (after.rss - before.rss) / sizes.submitBig,
          peakRssBytes: after.peak,
        });
        // The cluster is stopped with the million results held (nothing to release them in bulk over HTTP).
      }));
  }

  // Memory: a fresh cluster per sample, so no run reuses the heap an earlier one grew.
  if (want("scheduler-rss")) {
    const details: Array<{ before: number; after: number }> = [];
    const samples = await repeat(runs, (run) =>
      withCluster({}, (cluster) =>
        withClient(cluster.url, async (client) => {
          const url = cluster.url;
          const pid = cluster.scheduler.pid;
          // Warm the code paths first: the baseline should not include what the first graph loads.
          await mapRun(client, url, Math.min(1_000, sizes.rssTasks), "rss-warm");
          await sleep(200);
          const before = readRss(pid);
          const graph = graphs.map(sizes.rssTasks, uniquePrefix("rss"));
          await client.compute(graph);
          await waitFor("every result to be in memory", async () => (await taskCounts(url)).memory === sizes.rssTasks, {
            timeoutMs: 300_000,
            intervalMs: 50,
          });
          // Settled: the scheduler collects the burst's garbage once it is idle.
          await sleep(1000);
          const after = readRss(pid);
          if (run > 0) details.push({ before, after });
          return (after - before) / sizes.rssTasks;
        })));
    record("scheduler-rss", samples, { rssBytes: details });
  }

  if (want("cold-start-scheduler")) {
    record("cold-start-scheduler", await repeat(runs, async () => {
      const proc = await startProcess(["scheduler", "--port", "0"]);
      await proc.stop();
      return proc.readyMs;
    }));
  }
  if (want("cold-start-worker")) {
    const scheduler = await startProcess(["scheduler", "--port", "0"]);
    try {
      record("cold-start-worker", await repeat(runs, async () => {
        const worker = await startWorker(scheduler.url);
        await worker.stop();
        return worker.readyMs;
      }));
    } finally {
      await scheduler.stop();
    }
  }
  return results;
}

function meets(value: number, target: Target): boolean {
  return target.op === ">=" ? value >= target.value : value <= target.value;
}

/** The plugin-cost and growth ratios of issue 6, from the medians. */
function ratios(results: Map<WorkloadName, WorkloadResult>): RatioResult[] {
  const out: RatioResult[] = [];
  const far = results.get("map-far-workers");
  const near = median((far?.details?.nearSamples as number[] | undefined) ?? []);
  if (far && near > 0) {
    out.push({
      name: "far-vs-near", label: "far workers (50 ms round trip) vs near", unit: "×", value: far.median / near,
      target: { op: ">=", value: 0.6 }, ok: far.median / near >= 0.6,
      description: "map-far-workers / the same map on direct workers, same run, alternating (medians)",
    });
  }
  const many = results.get("map-many-workers");
  const two = median((many?.details?.twoWorkerSamples as number[] | undefined) ?? []);
  if (many && two > 0) {
    out.push({
      name: "many-vs-two-workers", label: `${many.details?.workers} workers vs 2`, unit: "×", value: many.median / two,
      target: { op: ">=", value: 0.7 }, ok: many.median / two >= 0.7,
      description: "map-many-workers / the same map on 2 workers, same run, alternating (medians), once the many workers' JIT has settled",
    });
    const fresh = (many.details?.warmUpSamples as number[] | undefined ?? []).slice(0, 3);
    if (fresh.length > 0) {
      out.push({
        name: "many-fresh-vs-two-workers", label: `${many.details?.workers} fresh workers (first maps) vs 2`, unit: "×", value: median(fresh) / two,
        description: "the many workers' first (up to 3) maps, while their JIT compiles the hot code, / the 2-worker map (medians)",
      });
    }
    const reg = many.details?.registerSeconds as number;
    out.push({
      name: "many-workers-registered", label: `${many.details?.workers} workers registered after start`, unit: "s", value: reg,
      target: { op: "<=", value: 5 }, ok: reg <= 5,
      description: "seconds from starting the first worker (all at once) until the scheduler counts them all",
    });
    const afterLast = many.details?.registerAfterLastSpawnSeconds as number;
    out.push({
      name: "many-workers-registered-after-last", label: `${many.details?.workers} workers registered after the last spawn`, unit: "s", value: afterLast,
      target: { op: "<=", value: 5 }, ok: afterLast <= 5,
      description: "seconds from spawning the last worker until the scheduler counts them all",
    });
  }
  const submit = results.get("submit-1m");
  if (submit) {
    const worst = submit.details?.worstMs as number;
    const perTask = submit.details?.bytesPerHeldTask as number;
    out.push({
      name: "submit-1m-worst", label: "/health worst during the big submit", unit: "ms", value: worst,
      target: { op: "<=", value: 1000 }, ok: worst <= 1000,
      description: "the slowest /health answer while the big graph was submitted and ran (the target is the p99's, 100 ms; this is informative)",
    });
    out.push({
      name: "submit-1m-bytes-per-task", label: "scheduler memory per held task (big submit)", unit: "B", value: perTask,
      target: { op: "<=", value: 1200 }, ok: perTask <= 1200,
      description: "scheduler RSS after every result is in memory minus before, divided by the tasks",
    });
  }
  for (const [name, how] of [["submit-1m-json", "JSON"], ["submit-1m-client", "client's"]] as const) {
    const result = results.get(name);
    if (!result) continue;
    const worst = result.details?.worstMs as number;
    out.push({
      name: `${name}-worst`, label: `/health worst during the big ${how} submit`, unit: "ms", value: worst,
      target: { op: "<=", value: 1000 }, ok: worst <= 1000,
      description: `the slowest /health answer while the big graph, sent ${how === "JSON" ? "as JSON" : "by the client"}, was submitted and ran (informative)`,
    });
  }
  const base = results.get("map");
  if (!base) return out;
  const baseCpuMs = median((base.details?.schedulerCpuMs as number[] | undefined) ?? []);
  const baseTasks = base.details?.tasks as number | undefined;
  if (Number.isFinite(baseCpuMs) && baseTasks) {
    const perTask = baseCpuMs * 1000 / baseTasks;
    out.push({
      name: "map-scheduler-cpu-per-task", label: "scheduler CPU per task of the map", unit: "µs", value: perTask,
      target: { op: "<=", value: 15 }, ok: perTask <= 15,
      description: "the scheduler's CPU (all its threads) per task of the plain map, median of its runs",
    });
  }
  const big = results.get("map-big");
  if (big) {
    out.push({
      name: "map-big-per-task-cost",
      label: "map-big vs map, time per task",
      unit: "×",
      value: base.median / big.median,
      target: { op: "<=", value: 1 },
      ok: base.median / big.median <= 1,
      description: "time per task of the big map divided by that of the map (1 = flat; above 1 = slower as graphs grow)",
    });
  }
  const costs: Array<[WorkloadName, string, string, number]> = [
    ["map-noop-transition", "noop-plugin", "no-op transition plugin cost", 0.05],
    ["map-jsonl", "jsonl", "jsonl plugin cost", 0.10],
    ["map-3-subscribers", "events-3-subscribers", "3 event subscribers cost", 0.10],
    ["map-3-batch-subscribers", "events-3-batch-subscribers", "3 CBOR-batch subscribers cost", 0.10],
  ];
  // Targets in scheduler CPU: the no-op plugin 5 %, jsonl and the subscribers 20 %.
  const cpuLimits: Partial<Record<WorkloadName, number>> = { "map-noop-transition": 0.05, "map-jsonl": 0.20, "map-3-subscribers": 0.20, "map-3-batch-subscribers": 0.20 };
  for (const [workload, name, label, limit] of costs) {
    const variant = results.get(workload);
    if (!variant) continue;
    const cost = 1 - variant.median / base.median;
    out.push({
      name,
      label,
      unit: "%",
      value: cost,
      target: { op: "<=", value: limit },
      ok: cost <= limit,
      description: `throughput lost against the plain map: 1 - ${workload} / map (medians; negative = faster)`,
    });
  }
  // The same costs in the scheduler's CPU time per run, which a busy machine disturbs far less.
  for (const [workload, name, label] of costs) {
    const limit = cpuLimits[workload]!;
    const cpu = median((results.get(workload)?.details?.schedulerCpuMs as number[] | undefined) ?? []);
    if (!Number.isFinite(cpu) || !Number.isFinite(baseCpuMs) || baseCpuMs <= 0) continue;
    const cost = cpu / baseCpuMs - 1;
    out.push({
      name: `${name}-cpu`,
      label: `${label} (scheduler CPU)`,
      unit: "%",
      value: cost,
      target: { op: "<=", value: limit },
      ok: cost <= limit,
      description: `extra scheduler CPU time per run: ${workload} / map - 1 (medians)`,
    });
  }
  return out;
}

// ---- output ------------------------------------------------------------------------------------

function fmt(value: number, unit = ""): string {
  if (!Number.isFinite(value)) return "-";
  if (unit === "%") return `${(value * 100).toFixed(1)} %`;
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toLocaleString("en");
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function fmtTarget(target: Target | undefined, unit: string): string {
  if (!target) return "";
  return `${target.op === ">=" ? "≥" : "≤"} ${fmt(target.value, unit)}`;
}

function table(header: string[], rows: string[][], right: boolean[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (right[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function workloadTable(results: WorkloadResult[]): string {
  return table(
    ["workload", "unit", "median", "min", "max", "target", "ok"],
    results.map((r) => [r.label, r.unit, fmt(r.median), fmt(r.min), fmt(r.max), fmtTarget(r.target, r.unit), r.ok === undefined ? "" : r.ok ? "✓" : "✗"]),
    [false, false, true, true, true, true, false],
  );
}

function ratioTable(list: RatioResult[]): string {
  return table(
    ["ratio (of medians)", "value", "target", "ok"],
    list.map((r) => [r.label, `${fmt(r.value, r.unit)}${r.unit === "×" ? " ×" : ""}`, r.target ? `${fmtTarget(r.target, r.unit)}${r.unit === "×" ? " ×" : ""}` : "", r.ok === undefined ? "" : r.ok ? "✓" : "✗"]),
    [false, true, true, false],
  );
}

// ---- main --------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  let options: Options | null;
  try {
    options = parseOptions(argv);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (!options) {
    console.log(usage);
    return 0;
  }
  try {
    requireBinary();
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 2;
  }
  const tmp = mkdtempSync(join(tmpdir(), "cluster-bench-"));
  const cleanup = async () => {
    await stopAll("SIGTERM");
    rmSync(tmp, { recursive: true, force: true });
  };
  cleanUpOnSignal("bench: interrupted; stopping the cluster", cleanup);

  const startedAt = new Date();
  const loadBefore = loadavg();
  const runtime = process.versions.bun ? `bun ${process.versions.bun}` : `node ${process.versions.node}`;
  console.log(`cluster ${version} benchmark: ${options.runs} runs after a warm-up (the quick maps ${3 * options.runs} after 2–3), ${options.sizes} sizes, ` +
    `${cpus().length} CPUs, load ${loadBefore.map((l) => l.toFixed(2)).join(" ")}, ${runtime}`);
  let results: Map<WorkloadName, WorkloadResult>;
  try {
    results = await runSuite(options, tmp, (r) =>
      console.error(`  ${r.label}: median ${fmt(r.median)} ${r.unit} (${r.samples.map((s) => fmt(s)).join(", ")})`));
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    if (process.env.BENCH_VERBOSE) console.error(err);
    await cleanup();
    return 1;
  }
  await cleanup();

  const ordered = workloadNames.filter((n) => results.has(n)).map((n) => results.get(n)!);
  const ratioList = ratios(results);
  console.log("");
  console.log(workloadTable(ordered));
  if (ratioList.length > 0) {
    console.log("");
    console.log(ratioTable(ratioList));
  }
  if (options.json) {
    const out = {
      tool: "cluster bench",
      version,
      date: startedAt.toISOString(),
      durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "", platform: process.platform, arch: process.arch, runtime, loadBefore, loadAfter: loadavg() },
      options: { runs: options.runs, sizes: options.sizes, sizeValues: sizeSets[options.sizes], only: [...options.only] },
      medians: Object.fromEntries(ordered.map((r) => [r.name, r.median])),
      workloads: Object.fromEntries(ordered.map((r) => [r.name, r])),
      ratios: Object.fromEntries(ratioList.map((r) => [r.name, r])),
    };
    writeFileSync(options.json, JSON.stringify(out, null, 2) + "\n");
    console.log(`\nwrote ${options.json}`);
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
process.exit();
