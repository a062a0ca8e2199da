/**
 * Many workers against the real binary: 100 single-threaded workers started at once all
 * register, every one of them is given tasks of a map, and a tree sum moves results between
 * them; then they all leave cleanly.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Client } from "../lib/client/mod.ts";
import { api, graphs, type Proc, readMetric, startProcess, startWorker, stopAll, waitFor } from "../testkit/mod.ts";

afterAll(() => stopAll());

const workerCount = 100;

describe("many workers", () => {
  test(`${workerCount} workers started at once register, all compute a map, and a tree sum moves results between them`, async () => {
    const scheduler = await startProcess(["scheduler", "--port", "0"]);
    const workers: Proc[] = [];
    try {
      const started = performance.now();
      const starting = Array.from({ length: workerCount }, () => startWorker(scheduler.url, { args: ["--nthreads", "1"], timeoutMs: 60_000 }));
      for (const p of await Promise.allSettled(starting)) {
        if (p.status === "fulfilled") workers.push(p.value);
        else throw p.reason;
      }
      await waitFor("every worker to register", async () => (await readMetric(scheduler.url, "cluster_workers")) === workerCount, {
        timeoutMs: 30_000,
      });
      const registerSeconds = (performance.now() - started) / 1000;
      console.log(`${workerCount} workers registered ${registerSeconds.toFixed(1)} s after the first was started`);

      const client = await Client.connect(scheduler.url);
      try {
        const map = graphs.map(20_000, "many-map");
        const values = await client.gather(Object.values(await client.compute(map)));
        for (let i = 0; i < values.length; i += 997) expect(values[i]).toBe(i + 1);
        expect(values.length).toBe(20_000);
        // The results stay held where they were computed: every worker computed some.
        const info = (await api(scheduler.url, "/api/v1/info")).body;
        expect(info.workers.length).toBe(workerCount);
        const idle = info.workers.filter((w: { memory: number }) => w.memory === 0).map((w: { name: string }) => w.name);
        expect(idle).toEqual([]);
        await client.release(map.keys);

        const tree = graphs.treeSum(2_000, "many-tree");
        const [sum] = await client.gather(Object.values(await client.compute(tree)));
        expect(sum).toBe(2_000);
      } finally {
        await client.close();
      }
      // Every worker leaves cleanly: no death counted, none left behind.
      await Promise.all(workers.map((w) => w.stop()));
      await waitFor("every worker to leave", async () => (await readMetric(scheduler.url, "cluster_workers")) === 0, { timeoutMs: 20_000 });
      expect(scheduler.stderr.join("")).not.toContain("missed heartbeats");
    } finally {
      await Promise.all(workers.map((w) => w.stop("SIGKILL")));
      await scheduler.stop();
    }
  }, 120_000);
});
