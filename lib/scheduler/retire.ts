/**
 * Dask's `retire_workers` (`POST /api/v1/workers/retire`): scheduler plugins'
 * `validWorkersDownscaling` may narrow the list; the retiring workers get no new task and finish
 * what they run; every result only they hold is moved off — a remaining worker fetches it from
 * them (`acquire-data`), or, when none can, the scheduler keeps a copy itself — and then they
 * close: through their nanny, which exits instead of restarting them, or directly. Their results
 * stay available to clients.
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import type { ComponentLogger } from "../log.ts";
import type { DepInfo } from "../messages/worker.ts";
import type { PluginManager } from "../plugins/manager.ts";
import type { SchedulerApi, SchedulerPlugin } from "../plugins/types.ts";
import { encodeFrame } from "../protocol.ts";
import { BadRequestError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import type { NannyLinks } from "./nanny-link.ts";
import type { SchedulerState, WorkerState } from "./state.ts";
import type { WorkerConn, WorkerLinks } from "./worker-link.ts";

/** What retiring needs of the scheduler. */
export interface RetireContext {
  readonly state: SchedulerState;
  readonly workers: WorkerLinks;
  readonly nannies: NannyLinks;
  readonly plugins: PluginManager<SchedulerPlugin>;
  readonly api: SchedulerApi;
  readonly events: EventLog;
  readonly log: ComponentLogger;
  apply(): void;
}

/** How long each step may take. */
export const retireTimeouts = {
  /** For the tasks running on a retiring worker to finish. */
  drainMs: 60_000,
  /** For a remaining worker to fetch the data. */
  moveMs: 120_000,
  /** For the worker to close and leave. */
  closeMs: 30_000,
};

/** Reads the request body: `{"workers": [names]}`. */
export function retireRequest(body: unknown): string[] {
  const workers = (body as { workers?: unknown } | null)?.workers;
  if (!Array.isArray(workers) || !workers.every((w) => typeof w === "string")) {
    throw new BadRequestError(`"workers" must be a list of worker names`);
  }
  return [...new Set(workers as string[])];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * Retires workers by name (unknown names are skipped, as Dask does); answers the names retired.
 *
 * @example
 * ```ts
 * const { retired } = await retireWorkers(ctx, ["w1"]);
 * ```
 */
export async function retireWorkers(ctx: RetireContext, names: string[]): Promise<{ retired: string[] }> {
  const { state, log } = ctx;
  let chosen = names.filter((n) => state.workers.has(n));
  // Each plugin in turn may narrow the list (Dask's valid_workers_downscaling).
  for (const entry of ctx.plugins.withHook("validWorkersDownscaling")) {
    try {
      const allowed = await entry.plugin.validWorkersDownscaling!(ctx.api, [...chosen]);
      if (Array.isArray(allowed)) {
        const keep = new Set(allowed.map((w) => typeof w === "string" ? w : (w as { name?: string })?.name));
        chosen = chosen.filter((n) => keep.has(n));
      }
    } catch (err) {
      // A throwing hook retires nothing it was asked about: the safe answer.
      ctx.plugins.reportError(entry.name, "validWorkersDownscaling", err);
      chosen = [];
    }
  }
  const retiring: WorkerState[] = [];
  for (const name of chosen) {
    const ws = state.workers.get(name);
    if (!ws) continue;
    state.retireWorker(ws);
    retiring.push(ws);
  }
  if (retiring.length === 0) return { retired: [] };
  log.info(`Retiring ${retiring.map((w) => `"${w.name}"`).join(", ")}`);
  const leaving = new Set(retiring);
  // Tasks already sent to them finish there (they are not rescheduled, so nothing is lost).
  await until(() => retiring.every((ws) => ws.processingTasks.size === 0 || state.workers.get(ws.name) !== ws), retireTimeouts.drainMs);
  for (const ws of retiring) await moveData(ctx, ws, leaving);
  const retired: string[] = [];
  await Promise.all(retiring.map(async (ws) => {
    if (await closeWorker(ctx, ws)) retired.push(ws.name);
  }));
  ctx.events.append("worker", { action: "retire", workers: retired });
  return { retired: retired.sort() };
}

/** Moves every result only `ws` holds to a worker that stays (or to the scheduler). */
async function moveData(ctx: RetireContext, ws: WorkerState, leaving: Set<WorkerState>): Promise<void> {
  const { state, workers } = ctx;
  const only = [...ws.heldTasks].filter((ts) => !ts.hasValue && [...ts.whoHas].every((h) => leaving.has(h)));
  if (only.length === 0) return;
  const staying = state.placement.running.filter((w) => !leaving.has(w));
  const pending = new Set(only.map((ts) => ts.key));
  if (staying.length > 0) {
    // Spread the keys over the staying workers, the least loaded first.
    const plan = new Map<WorkerState, DepInfo[]>();
    const load = new Map(staying.map((w) => [w, w.nbytes]));
    for (const ts of only) {
      let best = staying[0];
      for (const w of staying) if (load.get(w)! < load.get(best)!) best = w;
      load.set(best, load.get(best)! + ts.nbytes);
      let list = plan.get(best);
      if (!list) plan.set(best, list = []);
      list.push({ key: ts.key, nbytes: ts.nbytes, who: [ws.address] });
    }
    await Promise.all([...plan].map(async ([target, deps]) => {
      const conn = workers.connOf(target);
      if (!conn) return;
      try {
        const reply = await conn.requests.send((id) => workers.send(target, { op: "acquire-data", id, deps }), { timeoutMs: retireTimeouts.moveMs });
        for (const key of (reply.keys as string[] | undefined) ?? []) {
          if (state.addReplica(target, key)) pending.delete(key);
        }
      } catch (err) {
        ctx.log.warn(`Worker "${target.name}" could not take data off "${ws.name}": ${errorMessage(err)}`);
      }
    }));
  }
  if (pending.size === 0) return;
  // No worker took them: the scheduler keeps a copy, so the results stay available.
  const conn = workers.connOf(ws);
  if (!conn) return;
  try {
    const data = await workers.getData(conn, [...pending]);
    for (const [key, value] of Object.entries(data)) state.keepValue(key, value);
  } catch (err) {
    ctx.log.warn(`Cannot pull data off retiring worker "${ws.name}": ${errorMessage(err)}`);
  }
}

/** Closes a retiring worker (through its nanny, which exits too); true once it left. */
async function closeWorker(ctx: RetireContext, ws: WorkerState): Promise<boolean> {
  const { state, workers, nannies } = ctx;
  const conn: WorkerConn | undefined = workers.connOf(ws);
  if (!conn) return !state.workers.has(ws.name);
  // A retirement is no death: its leaving counts against nothing.
  conn.graceful = true;
  const nanny = nannies.byWorker().get(ws.name);
  const reason = "retired";
  try {
    if (nanny) {
      await nanny.requests.send((id) => nanny.ws.send(encodeFrame([{ op: "close", id, reason }])), { timeoutMs: retireTimeouts.closeMs });
    } else {
      workers.send(ws, { op: "close", reason });
      workers.flush();
    }
  } catch (err) {
    ctx.log.warn(`Cannot close retiring worker "${ws.name}": ${errorMessage(err)}`);
    return false;
  }
  const gone = await until(() => state.workers.get(ws.name) !== ws, retireTimeouts.closeMs);
  if (gone) ctx.log.info(`Worker "${ws.name}" retired`);
  return gone;
}
