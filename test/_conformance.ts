/**
 * Helpers of the Dask conformance tests (test/dask-conformance.test.ts): fixture paths, reading
 * a recorder's JSON lines, polling, and starting named workers and nannies with the real binary.
 *
 * @module
 */
import { expect } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { api, type Proc, root, runCli, startCluster, startProcess, tempDir } from "../testkit/mod.ts";

export const fixtures = join(root, "test", "fixtures", "conformance");
export const schedulerRecorder = join(fixtures, "scheduler-recorder.ts");
export const workerRecorder = join(fixtures, "worker-recorder.ts");
export const nannyRecorder = join(fixtures, "nanny-recorder.ts");
export const emptyPlugin = join(fixtures, "empty.ts");
export const slowPreload = join(fixtures, "slow-preload.ts");

/** Makes worker and nanny names unique to this test process. */
const suffix = String(process.pid);

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

/**
 * Dask's test_nanny_plugin_register_during_start_success: a nanny plugin registered while a
 * nanny's first worker is starting (its `--preload` takes 2 s) answers 201, is set up on that
 * nanny, and the nanny becomes ready with one worker (with `restart`, one with the environment).
 */
export async function registerDuringStart(restart: boolean): Promise<void> {
  const out = join(tempDir(), "n.jsonl");
  const cluster = await startCluster({ workers: 0 });
  const name = `during-${restart}-${suffix}`;
  try {
    // The worker's preload takes 2 s, so the nanny is connected while its worker is starting.
    const starting = startNamedWorker(cluster.url, name, ["--preload", slowPreload], true);
    starting.catch(() => {});
    await until("the nanny to connect", async () => ((await api(cluster.url, "/api/v1/info")).body.nannies ?? []).some((n: any) => n.name === name));
    const res = await register(cluster.url, { role: "nanny", use: nannyRecorder, out, tag: "foo", restart });
    expect({ status: res.status, error: res.body?.error }).toEqual({ status: 201, error: undefined });
    const nanny = await starting;
    try {
      await until("the nanny's worker", async () => (await workerNames(cluster.url)).includes(name), 20_000);
      expect(lines(out).filter((r) => r.hook === "setup").map((r) => r.nanny)).toEqual([name]);
      if (restart) {
        // Restarted after the set-up, the worker has the plugin's environment.
        const env = await compute(cluster.url, [{ key: "env-restarted", fn: "builtin.env", args: ["CONF_NANNY_TAG"], annotations: { workers: [name] } }], ["env-restarted"]);
        expect(env.body.value).toBe("foo");
      }
      expect(nanny.stderr.join("")).not.toContain("already connected");
    } finally {
      await nanny.stop();
    }
  } finally {
    await cluster.stop();
  }
}

/**
 * Dask's test_nanny_plugin_register_during_start_failure: a nanny whose worker keeps dying at
 * start-up does not fail a registration made meanwhile; the plugin stays for the healthy nanny.
 */
export async function registerDuringFailingStart(restart: boolean): Promise<void> {
  const out = join(tempDir(), "n.jsonl");
  const cluster = await startCluster({ workers: 0 });
  const healthy = await startNamedWorker(cluster.url, `healthy-${restart}-${suffix}`, [], true);
  try {
    const brokenName = `dying-${restart}-${suffix}`;
    const broken = runCli(["nanny", cluster.url, "--name", brokenName, "--tasks", join(root, "test", "fixtures", "nanny-broken-tasks.ts")], { timeoutMs: 40_000 });
    await until("the broken nanny to connect", async () => ((await api(cluster.url, "/api/v1/info")).body.nannies ?? []).some((n: any) => n.name === brokenName));
    const res = await register(cluster.url, { role: "nanny", use: nannyRecorder, out, tag: "foo", restart });
    expect({ status: res.status, error: res.body?.error }).toEqual({ status: 201, error: undefined });
    expect((await broken).code).toBe(1);
    expect((await api(cluster.url, "/api/v1/plugins")).body.nanny.map((p: any) => p.name)).toEqual(["conf-nanny"]);
    expect(lines(out).some((r) => r.hook === "setup" && r.nanny === `healthy-${restart}-${suffix}`)).toBe(true);
  } finally {
    await healthy.stop();
    await cluster.stop();
  }
}
