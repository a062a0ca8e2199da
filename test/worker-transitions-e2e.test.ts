/**
 * Dask parity of a worker plugin's `transition` hook against the real binary
 * (`test_worker_plugin.py::test_failing_task_transitions_called`): a failing task goes
 * released→waiting→ready→executing→error on its worker, then error→released→forgotten once the
 * client releases the key; and a retried task runs again on its worker.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { api, replayEvents, root, startCluster, stopAll } from "../testkit/mod.ts";

const recorder = join(root, "test", "fixtures", "plugins-worker-recorder.ts");

afterAll(async () => {
  await stopAll();
});

/** The worker plugin's transitions of `key`, as "start>finish", once `until` of them arrived. */
async function transitionsOf(url: string, key: string, until: number): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  let path: string[] = [];
  while (Date.now() < deadline) {
    const events = await replayEvents(url, "wplugin");
    path = events.filter((e) => e.hook === "transition" && e.key === key).map((e) => `${e.start}>${e.finish}`);
    if (path.length >= until) break;
  }
  return path;
}

test("a failing task's worker transitions end with error→released→forgotten after DELETE of the key", async () => {
  const cluster = await startCluster({ workers: 1 });
  try {
    expect((await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: recorder, tag: "t" } })).status).toBe(201);
    const key = "parity-fail";
    expect((await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key, fn: "builtin.fail", args: ["nope"] }], keys: [key] } })).status).toBe(202);
    expect((await api(cluster.url, `/api/v1/results/${key}?timeout=10`)).body.error).toContain("nope");
    expect(await transitionsOf(cluster.url, key, 4)).toEqual(["released>waiting", "waiting>ready", "ready>executing", "executing>error"]);
    expect((await api(cluster.url, `/api/v1/tasks/${key}`, { method: "DELETE" })).status).toBe(204);
    expect(await transitionsOf(cluster.url, key, 6)).toEqual([
      "released>waiting",
      "waiting>ready",
      "ready>executing",
      "executing>error",
      "error>released",
      "released>forgotten",
    ]);
  } finally {
    await cluster.stop();
  }
}, 30_000);

test("a task with retries that keeps failing runs once per attempt on its worker and is freed between", async () => {
  const cluster = await startCluster({ workers: 1 });
  try {
    expect((await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: recorder, tag: "r" } })).status).toBe(201);
    const key = "parity-retry";
    await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key, fn: "builtin.fail", args: ["again"], retries: 2 }], keys: [key] } });
    expect((await api(cluster.url, `/api/v1/results/${key}?timeout=10`)).body.error).toContain("again");
    const path = await transitionsOf(cluster.url, key, 16);
    expect(path.filter((t) => t === "ready>executing")).toHaveLength(3);
    expect(path.filter((t) => t === "error>released")).toHaveLength(2);
    expect(path.at(-1)).toBe("executing>error");
  } finally {
    await cluster.stop();
  }
}, 30_000);
