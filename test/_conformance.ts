/**
 * Helpers shared by the Dask conformance tests (test/dask-conformance.test.ts and the tests kept
 * aside in test/dask-conformance-pending.ts): fixture paths, reading a recorder's JSON lines,
 * polling, and starting named workers and nannies with the real binary.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { api, type Proc, root, startProcess } from "./_cluster.ts";

export const fixtures = join(root, "test", "fixtures", "conformance");
export const schedulerRecorder = join(fixtures, "scheduler-recorder.ts");
export const workerRecorder = join(fixtures, "worker-recorder.ts");
export const nannyRecorder = join(fixtures, "nanny-recorder.ts");
export const emptyPlugin = join(fixtures, "empty.ts");
export const slowPreload = join(fixtures, "slow-preload.ts");

/** The JSON lines a recorder fixture wrote so far (none when the file does not exist yet). */
export function lines(path: string): any[] {
  try {
    return readFileSync(path, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `probe` until it returns something truthy; throws naming `what` at the timeout. */
export async function until<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Starts `cluster worker URL --name NAME` (with `--nanny` when asked) and waits for its ready line. */
export function startNamedWorker(url: string, name: string, args: string[] = [], nanny = false): Promise<Proc> {
  return startProcess(["worker", url, "--name", name, ...(nanny ? ["--nanny"] : []), ...args], {
    ready: nanny ? /nanny \S+ listening at (\S+)/ : /listening at (\S+)/,
    timeoutMs: 30_000,
  });
}

/** Registers one plugin over the API. */
export function register(url: string, spec: Record<string, unknown>): Promise<{ status: number; body: any }> {
  return api(url, "/api/v1/plugins", { body: spec });
}

/** Submits tasks, waits for `key`'s result, and returns the `/api/v1/results` answer. */
export async function compute(url: string, tasks: unknown[], keys: string[], key = keys[0]): Promise<{ status: number; body: any }> {
  const res = await api(url, "/api/v1/graph", { body: { tasks, keys } });
  if (res.status !== 202) throw new Error(`graph refused: ${res.status} ${JSON.stringify(res.body)}`);
  return api(url, `/api/v1/results/${key}?timeout=20`);
}

/** The running workers' names by PID, from `GET /api/v1/info`. */
export async function workerNames(url: string): Promise<string[]> {
  const body = (await api(url, "/api/v1/info")).body;
  return body.workers.filter((w: any) => w.status === "running").map((w: any) => w.name as string);
}

/** Whether a process exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
