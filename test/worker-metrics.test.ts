/**
 * Worker metrics: heartbeats carry CPU and memory; `GET /api/v1/info` shows them with tasks
 * executing and held and a bounded history per worker; `/metrics` has one gauge of each per
 * worker. The history ring and the CPU meter in process; the rest against the binary.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { historyLength, WorkerMetrics } from "../lib/scheduler/worker-metrics.ts";
import { cpuMeter } from "../lib/worker/cpu.ts";
import { api, authHeaders, root, startCluster, stopAll, waitFor } from "../testkit/mod.ts";

afterAll(stopAll);

describe("the history ring and the CPU meter", () => {
  test("a worker's history keeps its newest samples in order, and a worker that left is forgotten", () => {
    const m = new WorkerMetrics();
    for (let i = 0; i < historyLength + 30; i++) m.record("w", { time: i, cpu: i, rss: 1, executing: 0, held: 0 });
    const h = m.history("w");
    expect(h.length).toBe(historyLength);
    expect(h[0].time).toBe(30);
    expect(h[h.length - 1].time).toBe(historyLength + 29);
    expect(m.latest("w")?.time).toBe(historyLength + 29);
    expect(m.infoFields("w")).toMatchObject({ cpu: historyLength + 29, executing: 0 });
    m.delete("w");
    expect(m.history("w")).toEqual([]);
    expect(m.infoFields("w")).toEqual({ cpu: 0, executing: 0, history: [] });
  });

  test("the CPU meter reads a busy loop well above a sleep", async () => {
    // Up to 100 % on an idle machine; on a loaded one the loop gets only its share of a core.
    const cpu = cpuMeter();
    const end = Date.now() + 300;
    while (Date.now() < end) { /* busy */ }
    const busy = cpu();
    await new Promise((r) => setTimeout(r, 300));
    const idle = cpu();
    expect(busy).toBeGreaterThan(5);
    expect(busy).toBeLessThanOrEqual(200);
    expect(idle).toBeLessThan(busy);
  });
});

describe("a real worker's metrics", () => {
  test("info and /metrics show each worker's CPU, memory, tasks executing and held, with a history", async () => {
    const cluster = await startCluster({ workers: 1, workerArgs: ["--tasks", join(root, "test", "fixtures", "log-tasks.ts")] });
    try {
      const workerOf = async () => (await api(cluster.url, "/api/v1/info")).body.workers[0];
      const first = await waitFor("a heartbeat", async () => {
        const w = await workerOf();
        return w.history.length > 0 ? w : undefined;
      }, 10_000);
      expect(first.rss).toBeGreaterThan(10_000_000);
      expect(typeof first.cpu).toBe("number");
      expect(first).toMatchObject({ memory: 0, held: 0, executing: 0 });
      expect(Object.keys(first.history[0]).sort()).toEqual(["cpu", "executing", "held", "rss", "time"]);

      // A task keeps the CPU busy: the heartbeat after it shows it (a loaded machine gives it less than a core).
      await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "spin-1", fn: "log-tasks.spin", args: [1500] }], keys: ["spin-1"] } });
      await waitFor("a busy sample", async () => (await workerOf()).history.some((s: { cpu: number }) => s.cpu > 5), 15_000);

      // One task sleeping (executing), one result held.
      await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "nap", fn: "builtin.sleep", args: [4000] }], keys: ["nap"] } });
      const busy = await waitFor("executing 1, held 1", async () => {
        const w = await workerOf();
        return w.executing === 1 && w.held === 1 ? w : undefined;
      }, 10_000);
      expect(busy.memory).toBe(1);
      const name = busy.name;
      const text = await fetch(`${cluster.url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
      for (const metric of ["cluster_worker_cpu", "cluster_worker_memory_bytes", "cluster_worker_executing", "cluster_worker_held"]) {
        expect(text).toContain(`# TYPE ${metric} gauge`);
        expect(text).toMatch(new RegExp(`^${metric}\\{worker="${name}"\\} [0-9.e+]+$`, "m"));
      }
      expect(text).toMatch(new RegExp(`^cluster_worker_held\\{worker="${name}"\\} 1$`, "m"));
      expect(Number(new RegExp(`^cluster_worker_memory_bytes\\{worker="${name}"\\} (\\S+)$`, "m").exec(text)![1])).toBeGreaterThan(10_000_000);
    } finally {
      await cluster.stop();
    }
  });
});
