/**
 * The core conformance suite against the compiled binary, and what only the binary is asked:
 * data relayed through the scheduler between workers that cannot reach each other.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Client } from "../lib/client/mod.ts";
import { api, graphs, startCluster, stopAll } from "./_cluster.ts";
import { coreSuite } from "./_core-suite.ts";

coreSuite("binary", { flavor: "binary", workerFlavor: "binary" });

afterAll(stopAll);

describe("relay", () => {
  test("workers that cannot reach each other's data endpoints exchange data through the scheduler", async () => {
    // Both workers announce an address nobody listens on, as behind NAT.
    const cluster = await startCluster({ workers: 2, workerArgs: ["--contact-address", "http://127.0.0.1:9"] });
    try {
      const [w1, w2] = (await api(cluster.url, "/api/v1/info")).body.workers.map((w: { name: string }) => w.name);
      const client = await Client.connect(cluster.url);
      const big = "y".repeat(300_000);
      const futures = await client.compute({
        tasks: [
          { key: "nat-big", fn: "builtin.identity", args: [big], annotations: { workers: [w1] } },
          { key: "nat-copy", fn: "builtin.identity", args: [{ $ref: "nat-big" }], annotations: { workers: [w2] } },
        ],
        keys: ["nat-copy"],
      });
      expect(await futures["nat-copy"].result()).toBe(big);
      await client.close();
    } finally {
      await cluster.stop();
    }
  }, 60_000);
});

describe("heartbeats", () => {
  test("a worker that stops answering is removed after --worker-ttl, its tasks finish elsewhere, and it rejoins when it wakes up", async () => {
    const cluster = await startCluster({ workers: 2, schedulerArgs: ["--worker-ttl", "2"] });
    const client = await Client.connect(cluster.url);
    const sleeper = cluster.workers[0];
    try {
      process.kill(sleeper.pid, "SIGSTOP");
      const g = graphs.map(500, "ttl");
      const futures = await client.compute(g);
      const values = await client.gather(Object.values(futures));
      for (let i = 0; i < 500; i++) expect(values[i]).toBe(i + 1);
      const during = await api(cluster.url, "/api/v1/info");
      expect(during.body.workers.length).toBe(1);
      process.kill(sleeper.pid, "SIGCONT");
      const deadline = Date.now() + 15_000;
      let count = 1;
      while (count < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        count = (await api(cluster.url, "/api/v1/info")).body.workers.length;
      }
      expect(count).toBe(2);
    } finally {
      try {
        process.kill(sleeper.pid, "SIGCONT");
      } catch {
        // gone already
      }
      await client.close();
      await cluster.stop();
    }
  }, 60_000);
});
