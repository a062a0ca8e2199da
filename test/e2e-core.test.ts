/**
 * The core conformance suite against the compiled binary, and what only the binary is asked:
 * data relayed through the scheduler between workers that cannot reach each other, heartbeats,
 * and a subscriber too slow to keep up.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Client } from "../lib/client/mod.ts";
import { api, authHeaders, graphs, startCluster, startDelayProxy, stopAll, waitFor } from "../testkit/mod.ts";
import { authenticate } from "../lib/auth/handshake.ts";
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
      await waitFor("the woken worker to rejoin", async () => (await api(cluster.url, "/api/v1/info")).body.workers.length === 2, {
        timeoutMs: 15_000,
        intervalMs: 100,
      });
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

describe("a stalled scheduler", () => {
  test("a scheduler stopped longer than --worker-ttl keeps its workers: their heartbeats waited in its sockets", async () => {
    const cluster = await startCluster({ workers: 2, schedulerArgs: ["--worker-ttl", "2"] });
    const client = await Client.connect(cluster.url);
    try {
      const before = await client.compute(graphs.map(200, "stall-a"));
      await client.gather(Object.values(before));
      // Timers run before sockets are read: without care, the first check after waking up
      // finds every worker silent and removes them all.
      process.kill(cluster.scheduler.pid, "SIGSTOP");
      await new Promise((r) => setTimeout(r, 4_000));
      process.kill(cluster.scheduler.pid, "SIGCONT");
      const g = graphs.map(500, "stall-b");
      const values = await client.gather(Object.values(await client.compute(g)));
      for (let i = 0; i < 500; i++) expect(values[i]).toBe(i + 1);
      await new Promise((r) => setTimeout(r, 2_500));
      expect(cluster.scheduler.stderr.join("")).not.toContain("missed heartbeats");
      expect((await api(cluster.url, "/api/v1/info")).body.workers.length).toBe(2);
    } finally {
      process.kill(cluster.scheduler.pid, "SIGCONT");
      await client.close();
      await cluster.stop();
    }
  }, 60_000);
});

describe("slow subscribers", () => {
  test("a subscriber that stops reading is closed past its buffer and the scheduler goes on", async () => {
    const cluster = await startCluster({ workers: 2 });
    const client = await Client.connect(cluster.url);
    // A subscriber that authenticates and then never reads a byte: a proxy that stops reading
    // from the scheduler once the handshake is done.
    const proxy = await startDelayProxy({ target: Number(new URL(cluster.url).port), delayMs: 0 });
    const socket = new WebSocket(`ws://127.0.0.1:${proxy.port}/api/v1/events?topic=transition`);
    socket.binaryType = "arraybuffer";
    try {
      await authenticate(socket, { role: "events", token: process.env.CLUSTER_TOKEN, onMessage: () => {} });
      proxy.stall();
      const subscribers = async () => {
        const text = await fetch(`${cluster.url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
        return Number(/cluster_event_subscribers (\d+)/.exec(text)![1]);
      };
      expect(await subscribers()).toBe(1);
      const started = performance.now();
      for (let round = 0; round < 4 && (await subscribers()) > 0; round++) {
        const g = graphs.map(40_000, `slow-sub-${round}`);
        const futures = await client.compute(g);
        const values = await client.gather(Object.values(futures));
        expect(values[39_999]).toBe(40_000);
        await client.release(g.keys);
      }
      expect(await subscribers()).toBe(0);
      // The graphs ran at the usual speed meanwhile (minutes if the scheduler had waited).
      expect(performance.now() - started).toBeLessThan(30_000);
    } finally {
      socket.close();
      await proxy.close();
      await client.close();
      await cluster.stop();
    }
  }, 90_000);
});
