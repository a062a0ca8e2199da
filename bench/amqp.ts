/**
 * The `amqp` plugin's benchmark (issue 5): a private RabbitMQ broker (`testkit/rabbitmq.ts`) and two
 * `dist/cluster` clusters (a scheduler and 2 single-threaded workers each), one plain and one
 * with `use = "amqp"` in its plugins.toml.
 *
 * 1. The 10,000-task map (`builtin.inc`, submit → all gathered, through the TypeScript client),
 *    one warm-up then `--runs` runs on each cluster, interleaved: the medians and their ratio.
 * 2. Catch-up: a steady stream of small graphs on the amqp cluster; the broker is stopped for
 *    `--outage` seconds (stop and start included) while the stream goes on; once the broker is
 *    back the stream stops, and the time until the plugin's `buffered` stat in `/metrics` is 0.
 *
 * It also reports the CPU seconds the scheduler and the broker used per map run (`/proc`), which
 * tells the plugin's own cost from the broker's competing for the same cores.
 *
 * ```sh
 * npx bun bench/amqp.ts
 * npx bun bench/amqp.ts --runs 3 --outage 10 --rate 1000 --json out.json
 * ```
 *
 * It builds nothing and measures the binary that is there. Every process and the broker are
 * stopped when it is done, on errors and on Ctrl-C.
 *
 * @module
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import amqp from "amqplib";
import { Client } from "../lib/client/mod.ts";
import { authHeaders, cleanUpOnSignal, graphs, type RabbitMQ, requireBinary, sleep, startCluster, startRabbitMQ, stopAll, type TestCluster, waitFor, waitIdle } from "../testkit/mod.ts";
import { median, readCpuMs } from "./_lib.ts";

const usage = `Usage: bun bench/amqp.ts [--runs N] [--size N] [--outage SECONDS] [--rate TASKS_PER_S] [--json FILE]

  --runs N          measured runs of the map per cluster, after one warm-up (default 5)
  --size N          tasks in the map (default 10000)
  --outage SECONDS  how long the broker is away in the catch-up test (default 10)
  --rate N          tasks a second of the steady stream, as graphs of 100 (default 1000)
  --json FILE       also write every sample as JSON`;

/** What a run of the benchmark measures. */
interface Options {
  runs: number;
  size: number;
  outageSeconds: number;
  rate: number;
  json?: string;
}

/** The `cluster_plugin_stat{plugin="amqp",stat=…}` samples. */
async function pluginStats(url: string): Promise<Record<string, number>> {
  const text = await fetch(`${url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
  const stats: Record<string, number> = {};
  for (const m of text.matchAll(/^cluster_plugin_stat\{plugin="amqp",stat="(\w+)"\} (\S+)$/gm)) stats[m[1]] = Number(m[2]);
  if (!("buffered" in stats)) throw new Error(`The amqp plugin's stats are missing from ${url}/metrics`);
  return stats;
}

/** Polls `/metrics` until the plugin has nothing buffered; returns when that was seen. */
async function waitConfirmed(url: string, timeoutMs = 120_000): Promise<number> {
  // `buffered` no longer includes what is in flight: both must be 0.
  await waitFor("the amqp plugin to confirm everything", async () => {
    const s = await pluginStats(url);
    return s.buffered === 0 && s.inFlight === 0;
  }, { timeoutMs, intervalMs: 20 });
  return performance.now();
}

/** CPU seconds (user + system) a process used so far; NaN when it cannot be read (no broker PID). */
function cpuSeconds(pid: number): number {
  try {
    return readCpuMs(pid) / 1000;
  } catch {
    return NaN;
  }
}

/** The PID of the broker's Erlang VM (`beam.smp` with the broker's directory on its command line). */
function brokerPid(broker: RabbitMQ): number {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8");
      if (cmdline.includes("beam") && cmdline.includes(broker.dir)) return Number(name);
    } catch {
      // The process ended meanwhile.
    }
  }
  return -1;
}

let prefixCounter = 0;

/**
 * One map of `n` × `builtin.inc`: tasks a second from submit to all gathered. With `amqp`, also
 * seconds from submit until the plugin had confirmed every transition (release included).
 */
async function mapRun(
  client: Client,
  cluster: TestCluster,
  options: { n: number; amqpOn: boolean; brokerPid: number },
): Promise<{ tps: number; queueSeconds?: number; schedulerCpu: number; brokerCpu: number }> {
  const { n, amqpOn } = options;
  const url = cluster.url;
  const cpu0 = cpuSeconds(cluster.scheduler.pid);
  const brokerCpu0 = cpuSeconds(options.brokerPid);
  const graph = graphs.map(n, `bench-amqp-${++prefixCounter}-${crypto.randomUUID().slice(0, 8)}`);
  const t0 = performance.now();
  await client.compute(graph);
  const values = await client.gather(graph.keys);
  const seconds = (performance.now() - t0) / 1000;
  for (let i = 0; i < n; i++) {
    if (values[i] !== i + 1) throw new Error(`Wrong result for "${graph.keys[i]}": got ${JSON.stringify(values[i])}, expected ${i + 1}`);
  }
  await client.release(graph.keys);
  await waitIdle(url);
  const done = amqpOn ? await waitConfirmed(url) : undefined;
  return {
    tps: n / seconds,
    queueSeconds: done === undefined ? undefined : (done - t0) / 1000,
    schedulerCpu: cpuSeconds(cluster.scheduler.pid) - cpu0,
    brokerCpu: cpuSeconds(options.brokerPid) - brokerCpu0,
  };
}

/**
 * Submits a graph of `batch` tasks, gathers and releases it, over and over at `rate` tasks a
 * second until `stop()` is true; returns how many tasks ran.
 */
async function steadyStream(client: Client, rate: number, stop: () => boolean): Promise<number> {
  const batch = 100;
  const began = performance.now();
  let tasks = 0;
  while (!stop()) {
    const graph = graphs.map(batch, `bench-stream-${++prefixCounter}`);
    await client.compute(graph);
    await client.gather(graph.keys);
    await client.release(graph.keys);
    tasks += batch;
    const due = began + (tasks / rate) * 1000;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
  }
  return tasks;
}

interface CatchUp {
  rate: number;
  streamedTasks: number;
  awaySeconds: number;
  restartSeconds: number;
  bufferedAtReturn: number;
  caughtUpSeconds: number;
  stats: Record<string, number>;
  queueMessages: number;
}

/** Stops the broker for `outageSeconds` under a steady stream; measures the catch-up. */
async function catchUp(broker: RabbitMQ, cluster: TestCluster, client: Client, options: Options, queue: string): Promise<CatchUp> {
  let streaming = true;
  const before = await pluginStats(cluster.url);
  const producer = steadyStream(client, options.rate, () => !streaming);
  try {
    await sleep(2000);
    const down = performance.now();
    await broker.pause();
    // The broker's own start-up counts as outage: restart so that it is back after the outage.
    const expectedStartMs = broker.startMs;
    await sleep(Math.max(0, options.outageSeconds * 1000 - (performance.now() - down) - expectedStartMs));
    const restartBegan = performance.now();
    await broker.restart();
    const back = performance.now();
    streaming = false;
    const streamedTasks = await producer;
    const bufferedAtReturn = (await pluginStats(cluster.url)).buffered;
    const caughtUp = await waitConfirmed(cluster.url, 300_000);
    const stats = await pluginStats(cluster.url);
    const conn = await amqp.connect(broker.url);
    conn.on("error", () => {});
    const { messageCount } = await (await conn.createChannel()).checkQueue(queue);
    await conn.close().catch(() => {});
    // Counters since the catch-up began; gauges (buffered, inFlight) as they are.
    for (const k of ["published", "confirmed", "dropped", "reconnects"]) stats[k] -= before[k] ?? 0;
    return {
      rate: options.rate,
      streamedTasks,
      awaySeconds: (back - down) / 1000,
      restartSeconds: (back - restartBegan) / 1000,
      bufferedAtReturn,
      caughtUpSeconds: (caughtUp - back) / 1000,
      stats,
      queueMessages: messageCount,
    };
  } finally {
    streaming = false;
    await producer.catch(() => 0);
    if (!broker.running) await broker.restart();
  }
}

async function purge(url: string, queue: string): Promise<void> {
  const conn = await amqp.connect(url);
  conn.on("error", () => {});
  try {
    await (await conn.createChannel()).purgeQueue(queue);
  } finally {
    await conn.close().catch(() => {});
  }
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function run(options: Options): Promise<void> {
  requireBinary();
  const tmp = mkdtempSync(join(tmpdir(), "cluster-bench-amqp-"));
  let broker: RabbitMQ | undefined;
  const clients: Client[] = [];
  const clusters: TestCluster[] = [];
  const cleanup = async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => {});
    for (const c of clusters.splice(0).reverse()) await c.stop();
    await stopAll("SIGTERM");
    await broker?.stop();
    rmSync(tmp, { recursive: true, force: true });
  };
  cleanUpOnSignal("bench: interrupted; stopping the clusters and the broker", cleanup);
  const loadBefore = loadavg();
  console.log(`amqp plugin benchmark: map ${fmt(options.size)} × ${options.runs} runs after a warm-up, ` +
    `${options.outageSeconds} s outage at ${fmt(options.rate)} tasks/s; ${cpus().length} CPUs, load ${loadBefore.map((l) => l.toFixed(2)).join(" ")}`);
  try {
    broker = await startRabbitMQ();
    console.error(`  RabbitMQ on port ${broker.port} started in ${fmt(broker.startMs)} ms`);
    const queue = `bench-amqp-${process.pid}`;
    const toml = join(tmp, "plugins.toml");
    writeFileSync(toml, `[[scheduler.plugins]]\nuse = "amqp"\nurl = "${broker.url}"\nqueue = "${queue}"\n`);
    const plain = await startCluster();
    clusters.push(plain);
    const withAmqp = await startCluster({ plugins: toml });
    clusters.push(withAmqp);
    const plainClient = await Client.connect(plain.url);
    clients.push(plainClient);
    const amqpClient = await Client.connect(withAmqp.url);
    clients.push(amqpClient);

    // Interleaved, alternating which goes first, so machine load falls on both alike. The queue
    // is purged between runs (outside the timing) so the broker's work stays the same.
    const plainSamples: number[] = [];
    const amqpSamples: number[] = [];
    const queueSeconds: number[] = [];
    const cpu = { plain: [] as number[], amqp: [] as number[], brokerPlain: [] as number[], brokerAmqp: [] as number[] };
    const beam = brokerPid(broker);
    for (let i = 0; i <= options.runs; i++) {
      const order = i % 2 === 0 ? [false, true] : [true, false];
      for (const amqpOn of order) {
        const result = amqpOn
          ? await mapRun(amqpClient, withAmqp, { n: options.size, amqpOn, brokerPid: beam })
          : await mapRun(plainClient, plain, { n: options.size, amqpOn, brokerPid: beam });
        if (amqpOn) await purge(broker.url, queue);
        if (i === 0) continue; // the warm-up
        (amqpOn ? amqpSamples : plainSamples).push(result.tps);
        if (result.queueSeconds !== undefined) queueSeconds.push(result.queueSeconds);
        (amqpOn ? cpu.amqp : cpu.plain).push(result.schedulerCpu);
        (amqpOn ? cpu.brokerAmqp : cpu.brokerPlain).push(result.brokerCpu);
      }
    }
    const plainMedian = median(plainSamples);
    const amqpMedian = median(amqpSamples);
    const paired = amqpSamples.map((v, i) => v / plainSamples[i]);
    console.log("");
    console.log(`map ${fmt(options.size)}, no plugin:   median ${fmt(plainMedian)} tasks/s (${plainSamples.map((s) => fmt(s)).join(", ")})`);
    console.log(`map ${fmt(options.size)}, amqp plugin: median ${fmt(amqpMedian)} tasks/s (${amqpSamples.map((s) => fmt(s)).join(", ")})`);
    console.log(`ratio amqp / no plugin: ${fmt(amqpMedian / plainMedian, 2)} (per run: ${paired.map((r) => fmt(r, 2)).join(", ")})`);
    console.log(`every transition confirmed by RabbitMQ: median ${fmt(median(queueSeconds), 2)} s after submit ` +
      `(${queueSeconds.map((s) => fmt(s, 2)).join(", ")}; release and forget included)`);
    console.log(`scheduler CPU per run (until idle; with amqp until all confirmed): no plugin median ${fmt(median(cpu.plain), 2)} s, ` +
      `amqp ${fmt(median(cpu.amqp), 2)} s; RabbitMQ CPU during the amqp runs: median ${fmt(median(cpu.brokerAmqp), 2)} s ` +
      `(${fmt(median(cpu.brokerPlain), 2)} s during the plain runs)`);

    const outage = await catchUp(broker, withAmqp, amqpClient, options, queue);
    console.log("");
    console.log(`catch-up: ${fmt(outage.rate)} tasks/s in graphs of 100; broker away ${fmt(outage.awaySeconds, 1)} s ` +
      `(its start ${fmt(outage.restartSeconds, 1)} s of that); ${fmt(outage.bufferedAtReturn)} transitions buffered when it was back; ` +
      `buffered 0 after ${fmt(outage.caughtUpSeconds, 2)} s`);
    console.log(`catch-up stats: ${JSON.stringify(outage.stats)}; ${fmt(outage.queueMessages)} messages in the queue (resends included)`);
    const loadAfter = loadavg();
    console.log(`load after: ${loadAfter.map((l) => l.toFixed(2)).join(" ")}`);
    if (options.json) {
      writeFileSync(options.json, JSON.stringify({
        tool: "cluster bench amqp",
        date: new Date().toISOString(),
        machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "", loadBefore, loadAfter },
        options,
        map: { plain: { samples: plainSamples, median: plainMedian }, amqp: { samples: amqpSamples, median: amqpMedian }, ratio: amqpMedian / plainMedian, paired, queueSeconds, cpu },
        catchUp: outage,
      }, null, 2) + "\n");
    }
  } finally {
    await cleanup();
  }
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: "string", default: "5" },
      size: { type: "string", default: "10000" },
      outage: { type: "string", default: "10" },
      rate: { type: "string", default: "1000" },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return null;
  const int = (name: string, raw: string, min: number): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new RangeError(`Option "--${name}" must be an integer of at least ${min}, got "${raw}"`);
    return n;
  };
  return {
    runs: int("runs", values.runs!, 1),
    size: int("size", values.size!, 1),
    outageSeconds: int("outage", values.outage!, 1),
    rate: int("rate", values.rate!, 1),
    json: values.json,
  };
}

if (import.meta.main) {
  let options: Options | null;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n\n${usage}`);
    process.exit(2);
  }
  if (!options) {
    console.log(usage);
    process.exit(0);
  }
  try {
    await run(options);
    process.exit(0);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    process.exit(1);
  }
}
