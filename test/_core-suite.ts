/**
 * The core conformance suite: graphs, results, the transition stream, failures, bad input and
 * worker death, run against a cluster of any flavor (the binary, Deno, or mixed runtimes).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client } from "../lib/client/mod.ts";
import { encodeCbor } from "../lib/protocol.ts";
import { authenticate } from "../lib/auth/handshake.ts";
import { api, authHeaders, collectEvents, type Flavor, graphs, sleep, startCluster, stopAll, type TestCluster } from "../testkit/mod.ts";

/** Registers the suite for a scheduler flavor and a worker flavor. */
export function coreSuite(name: string, options: { flavor: Flavor; workerFlavor: Flavor }): void {
  let cluster: TestCluster;
  let client: Client;

  beforeAll(async () => {
    cluster = await startCluster({ workers: 2, flavor: options.flavor, workerFlavor: options.workerFlavor });
    client = await Client.connect(cluster.url);
  }, 120_000);

  afterAll(async () => {
    await client?.close();
    await cluster?.stop();
    await stopAll();
  });

  describe(name, () => {

    describe("graphs", () => {
      test("a 10,000-task map of builtin.inc submitted over HTTP returns every correct result", async () => {
        const g = graphs.map(10_000, "http-map");
        const res = await api(cluster.url, "/api/v1/graph", { body: g });
        expect(res.status).toBe(202);
        expect(res.body.keys.length).toBe(10_000);
        const values = await client.gather(g.keys);
        for (let i = 0; i < 10_000; i++) expect(values[i]).toBe(i + 1);
        const one = await api(cluster.url, "/api/v1/results/http-map-41?timeout=5");
        expect(one.status).toBe(200);
        expect(one.body).toEqual({ key: "http-map-41", value: 42 });
      });

      test("a tree sum over 10,000 leaves returns 10,000", async () => {
        const g = graphs.treeSum(10_000);
        const futures = await client.compute(g);
        expect(await futures[g.keys[0]].result()).toBe(10_000);
      });

      test("a chain of 2,000 dependent tasks returns 2,000", async () => {
        const g = graphs.chain(2_000);
        const futures = await client.compute(g);
        expect(await futures[g.keys[0]].result()).toBe(2_000);
      });

      test("a graph can be sent as CBOR", async () => {
        const g = { tasks: [{ key: "cbor-a", fn: "builtin.add", args: [2, 3] }], keys: ["cbor-a"] };
        const res = await api(cluster.url, "/api/v1/graph", { raw: encodeCbor(g) as BodyInit, contentType: "application/cbor" });
        expect(res.status).toBe(202);
        const result = await api(cluster.url, "/api/v1/results/cbor-a?timeout=10");
        expect(result.body.value).toBe(5);
      });

      test("nested $refs are replaced by results", async () => {
        const futures = await client.compute({
          tasks: [
            { key: "n-a", fn: "builtin.inc", args: [1] },
            { key: "n-b", fn: "builtin.identity", args: [{ list: [{ $ref: "n-a" }, { deep: { $ref: "n-a" } }] }] },
          ],
          keys: ["n-b"],
        });
        expect(await futures["n-b"].result()).toEqual({ list: [2, { deep: 2 }] });
      });

      test("client.submit and map make dependencies from futures", async () => {
        const xs = client.map("builtin.inc", [1, 2, 3]);
        const total = client.submit("builtin.sum", xs);
        expect(await total.result()).toBe(9);
      });
    });

    describe("transitions", () => {
      test("a chain x→y→z with only z wanted makes Dask's transitions, and releasing z forgets all", async () => {
        const stream = collectEvents(cluster.url, "topic=transition", (events) => events.filter((e) => e.key?.startsWith("tr-")).length >= 14);
        await stream.ready;
        await sleep(50);
        const g = {
          tasks: [
            { key: "tr-x", fn: "builtin.inc", args: [1] },
            { key: "tr-y", fn: "builtin.inc", args: [{ $ref: "tr-x" }] },
            { key: "tr-z", fn: "builtin.inc", args: [{ $ref: "tr-y" }] },
          ],
          keys: ["tr-z"],
        };
        expect((await api(cluster.url, "/api/v1/graph", { body: g })).status).toBe(202);
        const result = await api(cluster.url, "/api/v1/results/tr-z?timeout=10");
        expect(result.body.value).toBe(4);
        const task = await api(cluster.url, "/api/v1/tasks/tr-z");
        expect(task.body.state).toBe("memory");
        expect(task.body.dependencies).toEqual(["tr-y"]);
        expect((await api(cluster.url, "/api/v1/tasks/tr-z", { method: "DELETE" })).status).toBe(204);
        const events = (await stream.done).filter((e) => e.key?.startsWith("tr-"));
        const seen = events.map((e) => `${e.key.slice(3)} ${e.start}>${e.finish}`);
        expect(seen).toEqual([
          "x released>waiting",
          "x waiting>processing",
          "y released>waiting",
          "z released>waiting",
          "x processing>memory",
          "y waiting>processing",
          "y processing>memory",
          "x memory>released",
          "z waiting>processing",
          "z processing>memory",
          "y memory>released",
          "z memory>forgotten",
          "y released>forgotten",
          "x released>forgotten",
        ]);
        for (const e of events) {
          expect(typeof e.stimulusId).toBe("string");
          expect(typeof e.seq).toBe("number");
          expect(e.topic).toBe("transition");
        }
        for (let i = 1; i < events.length; i++) expect(events[i].seq).toBeGreaterThan(events[i - 1].seq);
        expect((await api(cluster.url, "/api/v1/tasks/tr-z")).status).toBe(404);
      });

      test("since=SEQ replays the kept events before going live", async () => {
        const posted = await api(cluster.url, "/api/v1/events/replay-test", { body: { n: 1 } });
        const seq = posted.body.seq;
        await api(cluster.url, "/api/v1/events/replay-test", { body: { n: 2 } });
        const stream = collectEvents(cluster.url, `topic=replay-test&since=${seq - 1}`, (events) => events.length >= 3);
        await stream.ready;
        await api(cluster.url, "/api/v1/events/replay-test", { body: { n: 3 } });
        const events = await stream.done;
        expect(events.map((e) => e.n)).toEqual([1, 2, 3]);
        expect(events[0].seq).toBe(seq);
        expect(events[1].seq).toBe(seq + 1);
      });
    });

    describe("errors", () => {
      test("a task that throws is erred with message and stack, and so are its dependents", async () => {
        const g = {
          tasks: [
            { key: "err-a", fn: "builtin.fail", args: ["boom"] },
            { key: "err-b", fn: "builtin.inc", args: [{ $ref: "err-a" }] },
          ],
          keys: ["err-b"],
        };
        await api(cluster.url, "/api/v1/graph", { body: g });
        const res = await api(cluster.url, "/api/v1/results/err-b?timeout=10");
        expect(res.status).toBe(409);
        expect(res.body.error).toContain("boom");
        expect(res.body.traceback).toContain("Error");
        const a = await api(cluster.url, "/api/v1/tasks/err-a");
        expect(a.body.state).toBe("erred");
        expect(a.body.exception).toBe("Error: boom");
      });

      test("the client's gather and results tell values, erred keys and unknown keys apart, in the keys' order", async () => {
        const g = {
          tasks: [
            { key: "mixed-ok", fn: "builtin.inc", args: [1] },
            { key: "mixed-bad", fn: "builtin.fail", args: ["nope"] },
            { key: "toString", fn: "builtin.identity", args: [null] },
          ],
        };
        await client.compute(g);
        const keys = ["mixed-bad", "mixed-ok", "mixed-unknown", "toString", "mixed-ok"];
        const skipped = await client.gather(keys, { errors: "skip" });
        expect(skipped).toEqual([undefined, 2, undefined, null, 2]);
        expect(Object.keys(skipped)).toEqual(["0", "1", "2", "3", "4"]); // no holes
        await expect(client.gather(["mixed-ok", "mixed-bad"])).rejects.toThrow("nope");
        await expect(client.gather(["mixed-ok", "mixed-unknown"])).rejects.toThrow('Key "mixed-unknown" was lost or released');
        const { values, errors } = await client.results(keys);
        expect(Object.entries(values).sort()).toEqual([["mixed-ok", 2], ["toString", null]]);
        expect(Object.keys(errors)).toEqual(["mixed-bad"]);
        expect(errors["mixed-bad"].error).toContain("nope");
        await client.release(["mixed-ok", "mixed-bad", "toString"]);
      });

      test("retries are honoured before a task is erred", async () => {
        const events = collectEvents(cluster.url, "topic=transition", (evs) => evs.some((e) => e.key === "retry-a" && e.finish === "erred"));
        await events.ready;
        await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "retry-a", fn: "builtin.fail", args: ["again"], retries: 2 }] } });
        const all = (await events.done).filter((e) => e.key === "retry-a");
        expect(all.filter((e) => e.start === "waiting" && e.finish === "processing").length).toBe(3);
        expect((await api(cluster.url, "/api/v1/results/retry-a?timeout=1")).status).toBe(409);
      });

      test("results answer 408 while running and 404 for unknown keys", async () => {
        await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "slow", fn: "builtin.sleep", args: [1500, "done"] }] } });
        expect((await api(cluster.url, "/api/v1/results/slow?timeout=0.1")).status).toBe(408);
        expect((await api(cluster.url, "/api/v1/results/nope")).status).toBe(404);
        expect((await api(cluster.url, "/api/v1/tasks/nope")).status).toBe(404);
        expect((await api(cluster.url, "/api/v1/results/slow?timeout=10")).body.value).toBe("done");
      });

      test("bad graphs are rejected whole with 400 naming the key, and nothing is half-submitted", async () => {
        const cases: Array<[unknown, string]> = [
          [{ tasks: [{ key: "c1", fn: "builtin.inc", args: [{ $ref: "c2" }] }, { key: "c2", fn: "builtin.inc", args: [{ $ref: "c1" }] }] }, "Cycle"],
          [{ tasks: [{ key: "u1", fn: "builtin.inc", args: [{ $ref: "missing" }] }] }, "\"missing\""],
          [{ tasks: [{ key: "d1", fn: "builtin.inc", args: [1] }, { key: "d1", fn: "builtin.inc", args: [2] }] }, "Duplicate task key \"d1\""],
          [{ tasks: [{ key: "f1", fn: "nomodule.run", args: [] }] }, "\"f1\""],
          [{ tasks: [{ key: "f2", fn: "builtin.nothere", args: [] }] }, "\"f2\""],
          [{ tasks: "no" }, "tasks"],
        ];
        for (const [graph, message] of cases) {
          const res = await api(cluster.url, "/api/v1/graph", { body: graph });
          expect(res.status).toBe(400);
          expect(res.body.error).toContain(message);
        }
        for (const key of ["c1", "c2", "u1", "d1", "f1"]) expect((await api(cluster.url, `/api/v1/tasks/${key}`)).status).toBe(404);
        const bad = await fetch(`${cluster.url}/api/v1/graph`, { method: "POST", body: "{not json", headers: { ...authHeaders(), "content-type": "application/json" } });
        expect(bad.status).toBe(400);
        const badCbor = await fetch(`${cluster.url}/api/v1/graph`, { method: "POST", body: new Uint8Array([0xff, 0x00, 0x12]), headers: { ...authHeaders(), "content-type": "application/cbor" } });
        expect(badCbor.status).toBe(400);
        const ok = await client.compute({ tasks: [{ key: "after-bad", fn: "builtin.inc", args: [1] }] });
        expect(await ok["after-bad"].result()).toBe(2);
      });

      test("a frame larger than the limit closes that socket with a reason and the scheduler goes on", async () => {
      const ws = new WebSocket(cluster.url.replace("http", "ws") + "/api/v1/client");
      const closed = new Promise<CloseEvent>((r) => (ws.onclose = r));
      await new Promise((r) => (ws.onopen = r));
      ws.send(new Uint8Array(65 * 1024 * 1024));
      const event = await closed;
      // Bun closes with 1009 "message too big"; Deno's server drops such a connection (1006).
      expect(options.flavor === "deno" ? [1006, 1007, 1009] : [1009]).toContain(event.code);
      const ok = await client.compute({ tasks: [{ key: "after-huge", fn: "builtin.inc", args: [41] }] });
      expect(await ok["after-huge"].result()).toBe(42);
    }, 60_000);

    test("malformed CBOR frames close only that socket and the scheduler goes on", async () => {
        // Authenticated first (the handshake refuses anything else with 4401), then malformed.
        const open = async (path: string, role: "client" | "worker") => {
          const ws = new WebSocket(cluster.url.replace("http", "ws") + path);
          ws.binaryType = "arraybuffer";
          await authenticate(ws, { role, token: process.env.CLUSTER_TOKEN, onMessage: () => {} });
          return ws;
        };
        for (const [path, role] of [["/api/v1/client", "client"], ["/api/v1/worker", "worker"]] as const) {
          const ws = await open(path, role);
          const closed = new Promise<CloseEvent>((r) => (ws.onclose = r));
          ws.send(new Uint8Array([0x9f, 0xff, 0xff, 0x1c, 0x00]));
          const event = await closed;
          expect(event.code).toBe(1007);
        }
        // A well-formed frame with nonsense messages on the worker socket.
        const ws = await open("/api/v1/worker", "worker");
        const closed = new Promise<CloseEvent>((r) => (ws.onclose = r));
        ws.send(encodeCbor([{ op: "done", key: "x" }]));
        expect((await closed).code).toBe(4002);
        const ok = await client.compute({ tasks: [{ key: "after-frames", fn: "builtin.add", args: [1, 1] }] });
        expect(await ok["after-frames"].result()).toBe(2);
      });
    });

    describe("info and metrics", () => {
      test("/health, /api/v1/info and /metrics describe the cluster", async () => {
        const health = await api(cluster.url, "/health");
        expect(health.body).toMatchObject({ status: "ok", role: "scheduler" });
        const info = await api(cluster.url, "/api/v1/info");
        expect(info.body.workers.length).toBe(2);
        expect(info.body.workers[0]).toMatchObject({ nthreads: 1, status: "running", nanny: false });
        expect(typeof info.body.tasks.memory).toBe("number");
        expect(info.body.plugins).toEqual({ scheduler: [], worker: [], nanny: [] });
        const metrics = await fetch(`${cluster.url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
        expect(metrics).toContain("cluster_tasks{state=\"memory\"}");
        expect(metrics).toMatch(/cluster_transitions_total \d+/);
        expect(metrics).toContain("cluster_workers 2");
        expect(metrics).toContain("cluster_plugin_errors_total 0");
        expect(metrics).toContain("cluster_event_subscribers");
        const workerHealth = await api(info.body.workers[0].address, "/health");
        expect(workerHealth.body.role).toBe("worker");
      });
    });

    describe("worker death", () => {
      test("killing a worker in the middle of a 10,000-task graph still completes every result", async () => {
        const extra = await cluster.addWorker();
        const g = { tasks: [] as any[], keys: [] as string[] };
        for (let i = 0; i < 10_000; i++) g.tasks.push({ key: `kill-${i}`, fn: "builtin.sleep", args: [0, i * 2] });
        g.keys = g.tasks.map((t) => t.key);
        const futures = await client.compute(g);
        await sleep(100);
        process.kill(extra.pid, "SIGKILL");
        await extra.exited;
        const values = await client.gather(Object.values(futures));
        for (let i = 0; i < 10_000; i++) expect(values[i]).toBe(i * 2);
        const info = await api(cluster.url, "/api/v1/info");
        expect(info.body.workers.length).toBe(2);
      }, 60_000);
    });
  });
}
