/**
 * What an open dashboard costs: a 100,000-task map of `builtin.inc` on `dist/cluster` (a
 * scheduler and 2 single-threaded workers on loopback), run alternately with no browser and
 * with the dashboard open in a real browser (Debian's chromium via playwright-core). Prints the
 * scheduler's throughput both ways (target: the dashboard costs ≤ 10 %) and the page's longest
 * frame while the graph runs (target: ≤ 50 ms), from requestAnimationFrame gaps and long tasks.
 *
 * Each time the dashboard is opened, a first map runs with a frame probe in the page (a loop of
 * animation frames that records the gaps between them: it makes the browser draw 60 frames a
 * second, which the page alone does not) and a second map with the page alone, for throughput
 * and CPU: by then the browser has compiled the page's hot code, as for a page left open.
 *
 * ```sh
 * npx bun run build && npx bun bench/dashboard.ts            # 3 runs each way
 * npx bun bench/dashboard.ts --tasks 20000 --runs 1 --json out.json
 * ```
 *
 * Note that the browser runs on the same machine as the cluster: on a small box its CPU is part
 * of what the dashboard costs.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { Client } from "../lib/client/mod.ts";
import { graphs, requireBinary, startCluster, stopAll, waitIdle } from "../testkit/mod.ts";
import { median, readCpuMs, readTreeCpuMs } from "./_lib.ts";

const chromiumPath = "/usr/bin/chromium";

const { values: flags } = parseArgs({
  options: {
    tasks: { type: "string", default: "100000" },
    runs: { type: "string", default: "3" },
    json: { type: "string" },
  },
});
const tasks = Number(flags.tasks);
const runs = Number(flags.runs);
if (!Number.isInteger(tasks) || tasks < 1) throw new RangeError(`Invalid --tasks "${flags.tasks}"`);
if (!Number.isInteger(runs) || runs < 1) throw new RangeError(`Invalid --runs "${flags.runs}"`);
requireBinary();
if (!existsSync(chromiumPath)) throw new Error(`Cannot run the benchmark: "${chromiumPath}" is missing: run .ci/install-chromium.sh as root`);

/** In the page: records the longest gap between animation frames and the longest long task. */
function installFrameProbe(): void {
  const g = globalThis as unknown as { __probe: { maxGap: number; maxLongTask: number; frames: number; over50: number; stop: boolean } };
  const probe = g.__probe = { maxGap: 0, maxLongTask: 0, frames: 0, over50: 0, stop: false };
  let last = performance.now();
  const tick = (now: number) => {
    if (probe.stop) return;
    probe.maxGap = Math.max(probe.maxGap, now - last);
    if (now - last > 50) probe.over50++;
    probe.frames++;
    last = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame((now) => {
    last = now;
    requestAnimationFrame(tick);
  });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) probe.maxLongTask = Math.max(probe.maxLongTask, e.duration);
  }).observe({ type: "longtask" });
}

let prefixCounter = 0;

/** The browser's pid (its processes' CPU is measured per run), once it is launched. */
let browserPid = 0;
const workersCpuMs = () => cluster.workers.reduce((sum, w) => sum + readCpuMs(w.pid), 0);

/**
 * One map: tasks per second from submit to every result gathered, and the CPU of the scheduler,
 * of both workers and of every browser process.
 */
async function mapRun(client: Client, url: string, schedulerPid: number): Promise<{ rate: number; cpuMs: number; workersCpuMs: number; browserCpuMs: number }> {
  const graph = graphs.map(tasks, `dash-${++prefixCounter}-${crypto.randomUUID().slice(0, 6)}`);
  const cpu0 = readCpuMs(schedulerPid);
  const workers0 = workersCpuMs();
  const browser0 = browserPid ? readTreeCpuMs(browserPid) : 0;
  const t0 = performance.now();
  await client.compute(graph);
  const values = await client.gather(graph.keys);
  const seconds = (performance.now() - t0) / 1000;
  const cpuMs = readCpuMs(schedulerPid) - cpu0;
  const workersCpu = workersCpuMs() - workers0;
  const browserCpuMs = browserPid ? readTreeCpuMs(browserPid) - browser0 : 0;
  if (values[tasks - 1] !== tasks) throw new Error(`Wrong result: ${JSON.stringify(values[tasks - 1])}`);
  await client.release(graph.keys);
  await waitIdle(url, 120_000);
  return { rate: tasks / seconds, cpuMs, workersCpuMs: workersCpu, browserCpuMs };
}

const cluster = await startCluster();
const { chromium } = await import("playwright-core");
const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
// Playwright does not tell the browser's pid: it is this process's child named chromium.
for (const name of readdirSync("/proc")) {
  try {
    const stat = readFileSync(`/proc/${name}/stat`, "utf8");
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    if (comm === "chromium" && Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === process.pid) browserPid = Number(name);
  } catch {
    // Not a process, or gone.
  }
}
const client = await Client.connect(cluster.url);
const without: Array<{ rate: number; cpuMs: number; workersCpuMs: number; browserCpuMs: number }> = [];
const withDash: Array<{
  rate: number;
  cpuMs: number;
  workersCpuMs: number;
  browserCpuMs: number;
  maxGapMs: number;
  framesOver50: number;
  maxLongTaskMs: number;
  maxWorkMs: number;
  frames: number;
  slowest: Record<string, number>;
}> = [];
const errors: string[] = [];
try {
  console.log(`map of ${tasks.toLocaleString("en")} tasks, ${runs} run(s) each way, scheduler at ${cluster.url}`);
  await mapRun(client, cluster.url, cluster.scheduler.pid); // warm-up
  for (let run = 1; run <= runs; run++) {
    const plain = await mapRun(client, cluster.url, cluster.scheduler.pid);
    without.push(plain);
    console.log(`  run ${run} without dashboard: ${Math.round(plain.rate).toLocaleString("en")} tasks/s, scheduler CPU ${plain.cpuMs} ms, workers ${plain.workersCpuMs} ms`);

    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const page = await context.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    page.on("pageerror", (e) => errors.push(e.message));
    const token = process.env.CLUSTER_TOKEN;
    await page.goto(`${cluster.url}/${token ? `?token=${encodeURIComponent(token)}` : ""}`);
    await page.locator("#connection.live").waitFor({ timeout: 20_000 });
    await page.waitForTimeout(1500);
    await page.evaluate(installFrameProbe);
    // The page's own longest frame is counted from here, not from its start-up replay.
    await page.evaluate(() => {
      const stats = (globalThis as unknown as { __dashboardStats: { maxFrameMs: number; slowest: Record<string, number> } }).__dashboardStats;
      stats.maxFrameMs = 0;
      stats.slowest = {};
    });
    await mapRun(client, cluster.url, cluster.scheduler.pid);
    // Let the page fold what is still queued before reading its frames.
    await page.waitForTimeout(1000);
    const probe = await page.evaluate(() => {
      const g = globalThis as unknown as {
        __probe: { maxGap: number; maxLongTask: number; frames: number; over50: number; stop: boolean };
        __dashboardStats: { maxFrameMs: number; slowest: Record<string, number> };
      };
      g.__probe.stop = true;
      return { ...g.__probe, maxWorkMs: g.__dashboardStats.maxFrameMs, slowest: g.__dashboardStats.slowest };
    });
    const open = await mapRun(client, cluster.url, cluster.scheduler.pid);
    await context.close();
    withDash.push({ ...open, maxGapMs: probe.maxGap, framesOver50: probe.over50, maxLongTaskMs: probe.maxLongTask, maxWorkMs: probe.maxWorkMs, frames: probe.frames, slowest: probe.slowest });
    console.log(
      `  run ${run} with dashboard:    ${Math.round(open.rate).toLocaleString("en")} tasks/s, scheduler CPU ${open.cpuMs} ms, workers ${open.workersCpuMs} ms, ` +
        `browser ${open.browserCpuMs} ms, ` +
        `longest frame ${probe.maxGap.toFixed(1)} ms (${probe.over50} of ${probe.frames} over 50 ms), longest task ${probe.maxLongTask.toFixed(1)} ms, ` +
        `longest frame of the page's own work ${probe.maxWorkMs.toFixed(1)} ms, ${probe.frames} frames`,
    );
    console.log(`    slowest part per frame: ${Object.entries(probe.slowest).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(", ")}`);
  }
} finally {
  await client.close().catch(() => {});
  await browser.close();
  await cluster.stop();
  await stopAll();
}

const base = median(without.map((r) => r.rate));
const open = median(withDash.map((r) => r.rate));
const cost = (1 - open / base) * 100;
const longestFrame = Math.max(...withDash.map((r) => r.maxGapMs));
const framesOver50 = withDash.reduce((n, r) => n + r.framesOver50, 0);
const framesAll = withDash.reduce((n, r) => n + r.frames, 0);
const longestTask = Math.max(...withDash.map((r) => r.maxLongTaskMs));
const longestWork = Math.max(...withDash.map((r) => r.maxWorkMs));
const cpuBase = median(without.map((r) => r.cpuMs));
const cpuOpen = median(withDash.map((r) => r.cpuMs));
const workersBase = median(without.map((r) => r.workersCpuMs));
const workersOpen = median(withDash.map((r) => r.workersCpuMs));
const browserCpu = median(withDash.map((r) => r.browserCpuMs));
const summary = {
  tasks,
  runs,
  withoutDashboard: { medianTasksPerSecond: Math.round(base), samples: without },
  withDashboard: { medianTasksPerSecond: Math.round(open), samples: withDash },
  throughputCostPercent: Number(cost.toFixed(1)),
  longestFrameMs: Number(longestFrame.toFixed(1)),
  framesOver50Ms: framesOver50,
  frames: framesAll,
  longestTaskMs: Number(longestTask.toFixed(1)),
  longestOwnWorkMs: Number(longestWork.toFixed(1)),
  schedulerCpuMs: { without: cpuBase, with: cpuOpen },
  workersCpuMs: { without: workersBase, with: workersOpen },
  browserCpuMs: browserCpu,
  loadAverage: loadavg(),
  consoleErrors: errors,
};
console.log(`
throughput without the dashboard  ${Math.round(base).toLocaleString("en")} tasks/s (median)
throughput with the dashboard     ${Math.round(open).toLocaleString("en")} tasks/s (median)
cost                              ${cost.toFixed(1)} %   (target ≤ 10 %)
scheduler CPU per map             ${cpuBase} ms without, ${cpuOpen} ms with (${((cpuOpen / cpuBase - 1) * 100).toFixed(1)} %)
workers' CPU per map              ${workersBase} ms without, ${workersOpen} ms with
browser CPU per map               ${browserCpu} ms (every chromium process: on the same cores)
longest frame in the page         ${longestFrame.toFixed(1)} ms (target ≤ 50 ms); ${framesOver50} of ${framesAll} frames over 50 ms; longest task ${longestTask.toFixed(1)} ms
longest frame of the page's work  ${longestWork.toFixed(1)} ms (decoding, folding and drawing in one frame)
load average                      ${loadavg().map((l) => l.toFixed(1)).join(" ")} (a busy machine inflates frame gaps)
console errors                    ${errors.length}`);
if (flags.json) writeFileSync(flags.json, JSON.stringify(summary, null, 2));
