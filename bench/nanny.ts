/**
 * Measures the nanny with the real binary (`dist/cluster`): the peak memory (VmHWM) of an idle
 * nanny and of its idle worker, and the time from SIGKILL of the worker to its replacement being
 * registered at the scheduler (the `worker` topic's `add` event), median of 5, each kill hitting a
 * worker that has run for over 5 s (younger ones are restarted with backoff). Starts everything
 * itself on loopback and stops it.
 *
 * Run: `npm run build && npx bun bench/nanny.ts`
 * (`--json` prints one JSON object instead of the table; `--kills N` kills N times, default 5).
 *
 * @module
 */
import { api, collectEvents, sleep, startProcess, stopAll } from "../testkit/mod.ts";
import { median, readMemory } from "./_lib.ts";

/** `--kills N` (default 5): how many times the worker is killed and its replacement timed. */
const killsFlag = process.argv.indexOf("--kills");
const kills = killsFlag >= 0 ? Number(process.argv[killsFlag + 1]) : 5;
if (!Number.isInteger(kills) || kills < 1) {
  console.error(`bench/nanny: --kills wants a whole number ≥ 1, got "${process.argv[killsFlag + 1]}"`);
  process.exit(2);
}
const idleMs = 2_000;
/** The nanny's quick-death window (lib/nanny/nanny.ts) plus a margin. */
const healthyAfterMs = 5_500;

/** `VmHWM` and `VmRSS` of a process in MiB, from /proc. */
function memory(pid: number): { peakMiB: number; rssMiB: number } {
  const { peak, rss } = readMemory(pid);
  return { peakMiB: round(peak / 2 ** 20), rssMiB: round(rss / 2 ** 20) };
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** The arrival time of the next `worker` topic event matching `match` (through the handshake). */
function nextWorkerEvent(url: string, match: (e: Record<string, unknown>) => boolean): { ready: Promise<void>; event: Promise<number> } {
  const events = collectEvents(url, "topic=worker", (seen) => seen.some(match), 30_000);
  return { ready: events.ready, event: events.done.then(() => performance.now()) };
}

async function main(): Promise<void> {
  const json = process.argv.includes("--json");
  const scheduler = await startProcess(["scheduler", "--port", "0"]);
  const name = `bench-nanny-${process.pid}`;
  const nanny = await startProcess(["nanny", scheduler.url, "--name", name], { ready: /nanny \S+ listening at (\S+)/ });
  const workerPid = async () => (await api(nanny.url, "/health")).body.worker as number;

  // Idle: registered, no task ever run, and past the quick-death window for the first kill.
  await sleep(Math.max(idleMs, healthyAfterMs));
  const idleNanny = memory(nanny.pid);
  const idleWorker = memory(await workerPid());

  const timings: number[] = [];
  for (let i = 0; i < kills; i++) {
    const pid = await workerPid();
    const added = nextWorkerEvent(scheduler.url, (e) => e.action === "add" && e.worker === name);
    await added.ready;
    const start = performance.now();
    process.kill(pid, "SIGKILL");
    timings.push(round((await added.event) - start, 0));
    // A worker that dies within 5 s of its start is restarted with backoff (crash loops); wait
    // past that, so that every round measures the death of a healthy, idle worker.
    await sleep(healthyAfterMs);
  }
  const info = (await api(scheduler.url, "/api/v1/info")).body;
  const restarts = info.nannies.find((n: { name: string }) => n.name === name)?.restarts ?? null;

  await nanny.stop();
  await scheduler.stop();
  await stopAll();

  const result = {
    sigkillToRegisteredMs: { median: median(timings), runs: timings },
    idleNanny,
    idleWorker,
    restarts,
    cpus: navigator.hardwareConcurrency,
    runtime: `bun ${process.versions.bun}`,
  };
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  console.log(`SIGKILL of the worker → replacement registered: median ${result.sigkillToRegisteredMs.median} ms (runs: ${timings.join(", ")} ms)`);
  console.log(`idle nanny:  peak RSS (VmHWM) ${idleNanny.peakMiB} MiB, RSS ${idleNanny.rssMiB} MiB`);
  console.log(`idle worker: peak RSS (VmHWM) ${idleWorker.peakMiB} MiB, RSS ${idleWorker.rssMiB} MiB`);
  console.log(`restarts counted by the scheduler: ${restarts}`);
}

try {
  await main();
} catch (err) {
  await stopAll();
  console.error(`bench/nanny: ${(err as Error).message}`);
  process.exit(1);
}
