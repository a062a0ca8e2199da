/**
 * End-to-end tests of the plugin system against real processes, derived from Dask's own plugin
 * tests: hook order and arguments, errors that do not spread, registration routes, replacement,
 * and worker plugins that reach workers joining later.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { api, authHeaders, collectEvents, graphs, replayEvents, root, runCli, sleep, startCluster, startProcess, stopAll, tempDir, waitFor } from "../testkit/mod.ts";

const fixtures = join(root, "test", "fixtures");
const recorder = join(fixtures, "plugins-recorder.ts");
const workerRecorder = join(fixtures, "plugins-worker-recorder.ts");

afterAll(stopAll);

function lines(path: string): any[] {
  try {
    return readFileSync(path, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

const replay = (url: string, topic: string) => replayEvents(url, topic, 250);

describe("scheduler plugins from plugins.toml", () => {
  test("a counting plugin sees every transition with a stimulusId, and worker and client hooks in order", async () => {
    const dir = tempDir();
    const out = join(dir, "rec.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[scheduler.plugins]]\nuse = "${recorder}"\nout = "${out}"\ntag = "one"\n`);
    const cluster = await startCluster({ workers: 1, schedulerArgs: ["--plugins", toml] });
    try {
      const client = await Client.connect(cluster.url);
      const futures = await client.compute({
        tasks: [
          { key: "c-a", fn: "builtin.inc", args: [1], annotations: { team: "x" } },
          { key: "c-b", fn: "builtin.inc", args: [{ $ref: "c-a" }] },
          { key: "c-c", fn: "builtin.inc", args: [{ $ref: "c-b" }] },
        ],
        keys: ["c-c"],
      });
      expect(await futures["c-c"].result()).toBe(4);
      const recs = lines(out);
      expect(recs[0].hook).toBe("start");
      const toMemory = recs.filter((r) => r.hook === "transition" && r.start === "processing" && r.finish === "memory");
      expect(toMemory.map((r) => r.key)).toEqual(["c-a", "c-b", "c-c"]);
      for (const r of toMemory) {
        expect(r.info.stimulusId).toBeTruthy();
        expect(typeof r.info.worker).toBe("string");
        expect(typeof r.info.nbytes).toBe("number");
      }
      // updateGraph: once, after the tasks exist, before their first transition.
      const ug = recs.filter((r) => r.hook === "updateGraph");
      expect(ug.length).toBe(1);
      expect(ug[0].client).toBe(client.id);
      expect(ug[0].keys).toEqual(["c-c"]);
      expect(ug[0].tasks).toEqual(["c-a", "c-b", "c-c"]);
      expect(ug[0].annotations).toEqual({ team: { "c-a": "x" } });
      expect(Object.keys(ug[0].priority).sort()).toEqual(["c-a", "c-b", "c-c"]);
      expect(ug[0].states).toEqual(["released", "released", "released"]);
      const ugIndex = recs.indexOf(ug[0]);
      const firstTransition = recs.findIndex((r) => r.hook === "transition" && r.key === "c-a");
      expect(ugIndex).toBeLessThan(firstTransition);
      expect(recs.some((r) => r.hook === "addClient" && r.client === client.id)).toBe(true);
      await client.close();
      await waitFor("the removeClient hook", () => lines(out).some((r) => r.hook === "removeClient"), 10_000);

      // addWorker before the worker gets tasks; removeWorker after it left.
      const w2 = await cluster.addWorker();
      const name2 = (await api(cluster.url, "/api/v1/info")).body.workers.find((w: any) => w.pid === w2.pid)?.name;
      await waitFor("the second addWorker hook", () => lines(out).some((r) => r.hook === "addWorker" && r.worker === name2), 10_000);
      await w2.stop();
      await waitFor("the removeWorker hook", () => lines(out).some((r) => r.hook === "removeWorker" && r.worker === name2), 10_000);
      const hooks = lines(out).filter((r) => r.worker === name2).map((r) => r.hook);
      expect(hooks).toEqual(["addWorker", "removeWorker"]);

      // After unregistering, hooks stop and close runs.
      expect((await api(cluster.url, "/api/v1/plugins/scheduler/recorder", { method: "DELETE" })).status).toBe(204);
      const after = lines(out).length;
      expect(lines(out).slice(-2).map((r) => r.hook)).toEqual(["beforeClose", "close"]);
      const w3 = await cluster.addWorker();
      await w3.stop();
      await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "quiet", fn: "builtin.noop" }] } });
      await sleep(200);
      expect(lines(out).length).toBe(after);
      expect((await api(cluster.url, "/api/v1/plugins/scheduler/recorder", { method: "DELETE" })).status).toBe(404);
    } finally {
      await cluster.stop();
    }
  });

  test("hooks run in registration order, an async start awaited before the next plugin starts", async () => {
    const dir = tempDir();
    const out = join(dir, "rec.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, [
      "[[scheduler.plugins]]", `use = "${recorder}"`, `name = "first"`, `out = "${out}"`, `tag = "A"`, "startDelayMs = 300",
      "[[scheduler.plugins]]", `use = "${recorder}"`, `name = "second"`, `out = "${out}"`, `tag = "B"`,
    ].join("\n") + "\n");
    const cluster = await startCluster({ workers: 1, schedulerArgs: ["--plugins", toml] });
    try {
      const client = await Client.connect(cluster.url);
      expect(await client.gather(client.map("builtin.inc", [1, 2, 3]))).toEqual([2, 3, 4]);
      await client.close();
      const recs = lines(out);
      expect(recs.filter((r) => r.hook === "start").map((r) => r.tag)).toEqual(["A", "B"]);
      const transitions = recs.filter((r) => r.hook === "transition");
      expect(transitions.length % 2).toBe(0);
      for (let i = 0; i < transitions.length; i += 2) {
        expect([transitions[i].tag, transitions[i + 1].tag]).toEqual(["A", "B"]);
        expect(transitions[i + 1].key).toBe(transitions[i].key);
        expect(transitions[i + 1].finish).toBe(transitions[i].finish);
      }
    } finally {
      await cluster.stop();
    }
  });

  test("throwing hooks are logged with the plugin's name, counted and published, and the work completes", async () => {
    const dir = tempDir();
    const out = join(dir, "rec.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, [
      "[[scheduler.plugins]]", `use = "${recorder}"`, `name = "thrower"`, `out = "${out}"`,
      `throwIn = ["transition", "addWorker", "logEvent", "updateGraph"]`,
      "[[worker.plugins]]", `use = "${workerRecorder}"`, `name = "wthrower"`, `throwIn = ["transition", "teardown"]`,
    ].join("\n") + "\n");
    // A worker plugin whose setup throws quarantines its worker (no task): test/rollout.test.ts.
    const cluster = await startCluster({ workers: 1, schedulerArgs: ["--plugins", toml] });
    try {
      const client = await Client.connect(cluster.url);
      const xs = client.map("builtin.inc", [1, 2, 3]);
      expect(await client.gather(xs)).toEqual([2, 3, 4]);
      await api(cluster.url, "/api/v1/events/custom", { body: { hello: 1 } });
      await client.close();
      await cluster.workers[0].stop();
      const stderr = await waitFor("the failures of wthrower and teardown in the log", () => {
        const text = cluster.scheduler.stderr.join("");
        return text.includes("wthrower") && text.includes("teardown") ? text : false;
      }, 10_000);
      for (const hook of ["transition", "addWorker", "logEvent", "updateGraph"]) {
        expect(stderr).toContain(`Plugin "thrower" failed in ${hook}: recorder throws in ${hook}`);
      }
      expect(stderr).toMatch(/Plugin ".*wthrower" failed in transition/);
      const metrics = await fetch(`${cluster.url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
      const total = Number(/cluster_plugin_errors_total (\d+)/.exec(metrics)![1]);
      expect(total).toBeGreaterThan(10);
      expect(metrics).toContain('cluster_plugin_errors{plugin="thrower"}');
      const pluginEvents = await replay(cluster.url, "plugin");
      expect(pluginEvents.some((e) => e.action === "error" && e.plugin === "thrower" && e.hook === "transition")).toBe(true);
    } finally {
      await cluster.stop();
    }
  });

  test("beforeClose then close run once, even when shutdowns come at the same time", async () => {
    const dir = tempDir();
    const out = join(dir, "rec.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[scheduler.plugins]]\nuse = "${recorder}"\nout = "${out}"\n`);
    const scheduler = await startProcess(["scheduler", "--port", "0", "--plugins", toml]);
    process.kill(scheduler.pid, "SIGTERM");
    process.kill(scheduler.pid, "SIGINT");
    process.kill(scheduler.pid, "SIGTERM");
    expect(await scheduler.exited).toBe(0);
    const hooks = lines(out).map((r) => r.hook);
    expect(hooks.filter((h) => h === "beforeClose").length).toBe(1);
    expect(hooks.filter((h) => h === "close").length).toBe(1);
    expect(hooks.indexOf("beforeClose")).toBeLessThan(hooks.indexOf("close"));
  });

  test("a plugins.toml plugin whose start throws stops the scheduler with exit code 2 naming it", async () => {
    const result = await runCli(["scheduler", "--port", "0", "--plugins", join(fixtures, "plugins-bad-start.toml")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("broken");
    expect(result.stderr).toContain("cannot start: no database");
    expect(result.stderr.trim().split("\n").filter((l) => l.startsWith("cluster:")).length).toBe(1);
  });

  test("plugins.toml errors exit with code 2 and name FILE:LINE", async () => {
    const dir = tempDir();
    const cases: Array<[string, string[]]> = [
      ["[[scheduler.plugins]\nuse = 1\n", ["plugins.toml:1"]],
      ["\n[[scheduler.plugins]]\nuse = \"amqpp\"\n", ["plugins.toml:3", "amqpp"]],
      ["[[worker.plugins]]\nuse = \"./nowhere.ts\"\n", ["plugins.toml:2", "nowhere.ts"]],
      ["[[scheduler.plugins]]\nuse = \"jsonl\"\npath = \"${CLUSTER_TEST_UNSET_VAR:?set the path}\"\n", ["plugins.toml:3", "set the path"]],
    ];
    for (const [text, expected] of cases) {
      const file = join(dir, "plugins.toml");
      writeFileSync(file, text);
      const result = await runCli(["scheduler", "--port", "0", "--plugins", file]);
      expect(result.code).toBe(2);
      for (const e of expected) expect(result.stderr).toContain(e);
    }
    const missing = await runCli(["scheduler", "--port", "0", "--plugins", join(dir, "absent.toml")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("absent.toml");
  });
});

describe("registration over the API", () => {
  test("a failing start or setup answers 422 with the plugin's message and the plugin is not listed", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const bad = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "scheduler", use: recorder, name: "bad-start", out: "/dev/null", failStart: "no way" },
      });
      expect(bad.status).toBe(422);
      expect(bad.body.error).toContain("no way");
      const badSetup = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: workerRecorder, name: "bad-setup", failSetup: "setup exploded" },
      });
      expect(badSetup.status).toBe(422);
      expect(badSetup.body.error).toContain("setup exploded");
      const listed = await api(cluster.url, "/api/v1/plugins");
      expect(listed.body).toEqual({ scheduler: [], worker: [], nanny: [] });
      const unknown = await api(cluster.url, "/api/v1/plugins", { body: { role: "scheduler", use: "nope-plugin" } });
      expect(unknown.status).toBe(400);
      expect((await api(cluster.url, "/api/v1/plugins/worker/ghost", { method: "DELETE" })).status).toBe(404);
    } finally {
      await cluster.stop();
    }
  });

  test("idempotent re-registration keeps the first; otherwise the old one is torn down before the new one starts", async () => {
    const dir = tempDir();
    const out = join(dir, "rec.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      const reg = (tag: string, idempotent: boolean) =>
        api(cluster.url, "/api/v1/plugins", { body: { role: "scheduler", use: recorder, out, tag, idempotent } });
      expect((await reg("first", true)).status).toBe(201);
      expect((await reg("second", true)).body.result).toBe("kept");
      expect(lines(out).filter((r) => r.hook === "start").map((r) => r.tag)).toEqual(["first"]);
      expect((await reg("third", false)).body.result).toBe("replaced");
      const order = lines(out).filter((r) => ["start", "beforeClose", "close"].includes(r.hook)).map((r) => `${r.hook}:${r.tag}`);
      expect(order).toEqual(["start:first", "beforeClose:first", "close:first", "start:third"]);

      // The same for worker plugins: teardown of the old before setup of the new, on the worker.
      const wreg = (tag: string, idempotent = false) =>
        api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: workerRecorder, tag, idempotent } });
      expect((await wreg("w1")).status).toBe(201);
      expect((await wreg("w2")).body.result).toBe("replaced");
      expect((await wreg("w3", true)).body.result).toBe("kept");
      const wevents = (await replay(cluster.url, "wplugin")).filter((e) => e.hook !== "transition").map((e) => `${e.hook}:${e.tag}`);
      expect(wevents).toEqual(["setup:w1", "teardown:w1", "setup:w2"]);
      expect((await api(cluster.url, "/api/v1/plugins")).body.worker).toMatchObject([{ name: "wrecorder", use: workerRecorder }]);
      expect((await api(cluster.url, "/api/v1/info")).body.plugins).toEqual({ scheduler: ["recorder"], worker: ["wrecorder"], nanny: [] });
      expect((await api(cluster.url, "/api/v1/plugins/worker/wrecorder", { method: "DELETE" })).status).toBe(204);
      await sleep(200);
      const last = (await replay(cluster.url, "wplugin")).filter((e) => e.hook === "teardown").map((e) => e.tag);
      expect(last).toEqual(["w1", "w2"]);
    } finally {
      await cluster.stop();
    }
  });

  test("a module plugin sent as source loads on workers that have no copy of the file", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const source = readFileSync(workerRecorder, "utf8");
      const res = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "./only-on-the-client/recorder.ts", name: "shipped", tag: "shipped", source },
      });
      expect(res.status).toBe(201);
      const setups = (await replay(cluster.url, "wplugin")).filter((e) => e.hook === "setup" && e.tag === "shipped");
      expect(setups.length).toBe(1);
    } finally {
      await cluster.stop();
    }
  });

  test("the client registers and unregisters plugins, reading module source locally", async () => {
    const dir = tempDir();
    const out = join(dir, "rec.jsonl");
    const cluster = await startCluster({ workers: 1 });
    const client = await Client.connect(cluster.url);
    try {
      const { name } = await client.registerPlugin({ role: "scheduler", use: recorder, out, tag: "client" });
      expect(name).toBe("recorder");
      await client.registerPlugin({ role: "worker", use: workerRecorder, tag: "via-client" });
      expect((await api(cluster.url, "/api/v1/plugins")).body.worker.map((p: any) => p.name)).toEqual(["wrecorder"]);
      await client.unregisterPlugin("scheduler", "recorder");
      const hooks = lines(out).map((r) => r.hook);
      expect(hooks[0]).toBe("start");
      expect(hooks.slice(-2)).toEqual(["beforeClose", "close"]);
      await expect(client.unregisterPlugin("worker", "nope")).rejects.toThrow("nope");
    } finally {
      await client.close();
      await cluster.stop();
    }
  });
});

describe("worker plugins", () => {
  test("a worker plugin registered before any worker exists is set up on a joining worker before it runs a task, and again after it restarts", async () => {
    const cluster = await startCluster({ workers: 0 });
    try {
      const res = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: workerRecorder, tag: "early", setupDelayMs: 300 } });
      expect(res.status).toBe(201);
      await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "early-task", fn: "builtin.pid" }] } });
      const stream = collectEvents(cluster.url, "since=0&topic=wplugin&topic=transition", (evs) =>
        evs.some((e) => e.key === "early-task" && e.finish === "memory" && e.topic === "transition"));
      const w = await cluster.addWorker();
      const events = await stream.done;
      const setupIndex = events.findIndex((e) => e.topic === "wplugin" && e.hook === "setup");
      const processingIndex = events.findIndex((e) => e.topic === "transition" && e.key === "early-task" && e.finish === "processing");
      expect(setupIndex).toBeGreaterThanOrEqual(0);
      expect(processingIndex).toBeGreaterThan(setupIndex);
      expect(events[setupIndex].pid).toBe(w.pid);
      // A restart: the worker process is replaced and set up again.
      await w.stop();
      const w2 = await cluster.addWorker();
      await sleep(200);
      const setups = (await replay(cluster.url, "wplugin")).filter((e) => e.hook === "setup");
      expect(setups.map((e) => e.pid)).toEqual([w.pid, w2.pid]);
    } finally {
      await cluster.stop();
    }
  });

  test("worker-side transitions are Dask's, for computed, failing and fetched tasks", async () => {
    const cluster = await startCluster({ workers: 2 });
    try {
      expect((await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: workerRecorder, tag: "t" } })).status).toBe(201);
      const info = (await api(cluster.url, "/api/v1/info")).body;
      const [w1, w2] = info.workers.map((w: any) => w.name);
      const client = await Client.connect(cluster.url);
      const futures = await client.compute({
        tasks: [
          { key: "wt-ok", fn: "builtin.inc", args: [1], annotations: { workers: [w1] } },
          { key: "wt-fail", fn: "builtin.fail", args: ["nope"], annotations: { workers: [w1] } },
          // A result larger than the inline limit is fetched from the peer.
          { key: "wt-big", fn: "builtin.identity", args: ["x".repeat(200_000)], annotations: { workers: [w1] } },
          { key: "wt-use", fn: "builtin.identity", args: [{ $ref: "wt-big" }], annotations: { workers: [w2] } },
        ],
        keys: ["wt-ok", "wt-fail", "wt-use"],
      });
      expect(await futures["wt-ok"].result()).toBe(2);
      expect((await futures["wt-use"].result() as string).length).toBe(200_000);
      await expect(futures["wt-fail"].result()).rejects.toThrow("nope");
      await sleep(300);
      const events = await replay(cluster.url, "wplugin");
      const path = (key: string, worker: string) =>
        events.filter((e) => e.hook === "transition" && e.key === key && e.worker === worker).map((e) => `${e.start}>${e.finish}`);
      expect(path("wt-ok", w1)).toEqual(["released>waiting", "waiting>ready", "ready>executing", "executing>memory"]);
      expect(path("wt-fail", w1)).toEqual(["released>waiting", "waiting>ready", "ready>executing", "executing>error"]);
      expect(path("wt-big", w2)).toEqual(["released>fetch", "fetch>flight", "flight>memory"]);
      expect(path("wt-use", w2).slice(0, 4)).toEqual(["released>waiting", "waiting>ready", "ready>executing", "executing>memory"]);
      await client.close();
    } finally {
      await cluster.stop();
    }
  });

  test("the Dask docs' task-state reader sees full task state through scheduler.tasks", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const res = await api(cluster.url, "/api/v1/plugins", { body: { role: "scheduler", use: join(fixtures, "plugins-task-state.ts") } });
      expect(res.status).toBe(201);
      const client = await Client.connect(cluster.url);
      const f = await client.compute({ tasks: [{ key: "ts-a", fn: "builtin.inc", args: [1] }, { key: "ts-b", fn: "builtin.inc", args: [{ $ref: "ts-a" }] }], keys: ["ts-b"] });
      await f["ts-b"].result();
      await client.release(["ts-b"]);
      await client.close();
      await sleep(200);
      const events = await replay(cluster.url, "task-state");
      const b = events.find((e) => e.key === "ts-b" && e.finish === "memory");
      expect(b).toMatchObject({ state: "memory", deps: ["ts-a"] });
      expect(typeof b.worker).toBe("string");
      const forgotten = events.find((e) => e.key === "ts-b" && e.finish === "forgotten");
      expect(forgotten.state).toBe("forgotten");
    } finally {
      await cluster.stop();
    }
  });
});

describe("preload", () => {
  test("--preload runs clusterSetup on the scheduler and on workers, and clusterTeardown at close", async () => {
    const preload = join(fixtures, "plugins-preload.ts");
    const cluster = await startCluster({ workers: 1, schedulerArgs: ["--preload", preload], workerArgs: ["--preload", preload] });
    try {
      await sleep(200);
      const events = await replay(cluster.url, "preload");
      expect(events.map((e) => `${e.role}:${e.hook}`).sort()).toEqual(["scheduler:clusterSetup", "worker:clusterSetup"]);
      await cluster.workers[0].stop();
      await sleep(200);
      const after = await replay(cluster.url, "preload");
      expect(after.some((e) => e.role === "worker" && e.hook === "clusterTeardown")).toBe(true);
    } finally {
      await cluster.stop();
    }
  });
});

describe("the scheduler object", () => {
  test("scheduler.addPlugin registers a plugin object, and scheduler.removePlugin takes it away", async () => {
    const cluster = await startCluster({ workers: 1, schedulerArgs: ["--preload", join(fixtures, "plugins-adder.ts")] });
    try {
      expect((await api(cluster.url, "/api/v1/plugins")).body.scheduler.map((p: { name: string }) => p.name)).toContain("inner");
      const client = await Client.connect(cluster.url);
      expect(await client.gather(client.map("builtin.inc", [1, 2]))).toEqual([2, 3]);
      await sleep(100);
      expect((await replay(cluster.url, "inner")).length).toBe(2);
      await api(cluster.url, "/api/v1/events/remove-inner", { body: {} });
      await sleep(200);
      expect((await api(cluster.url, "/api/v1/plugins")).body.scheduler.map((p: { name: string }) => p.name)).not.toContain("inner");
      expect(await client.gather(client.map("builtin.inc", [3]))).toEqual([4]);
      await sleep(100);
      expect((await replay(cluster.url, "inner")).length).toBe(2);
      await client.close();
    } finally {
      await cluster.stop();
    }
  });
});

describe("runtimes", () => {
  for (const flavor of ["bun", "deno"] as const) {
    test(`the same module plugin loads when the scheduler runs under ${flavor}`, async () => {
      const dir = tempDir();
      const out = join(dir, "rec.jsonl");
      const toml = join(dir, "plugins.toml");
      writeFileSync(toml, `[[scheduler.plugins]]\nuse = "${recorder}"\nout = "${out}"\n[[worker.plugins]]\nuse = "${workerRecorder}"\ntag = "${flavor}"\n`);
      const scheduler = await startProcess(["scheduler", "--port", "0", "--plugins", toml], { flavor, timeoutMs: 60_000 });
      const worker = await startProcess(["worker", scheduler.url, "--name", `rt-${flavor}`], { flavor: "binary" });
      try {
        const client = await Client.connect(scheduler.url);
        expect(await client.submit("builtin.add", 2, 3).result()).toBe(5);
        await client.close();
        expect(lines(out).some((r) => r.hook === "transition" && r.finish === "memory")).toBe(true);
        const setups = (await replay(scheduler.url, "wplugin")).filter((e) => e.hook === "setup");
        expect(setups.map((e) => e.tag)).toEqual([flavor]);
      } finally {
        await worker.stop();
        await scheduler.stop();
      }
    }, 90_000);
  }
});

describe("the jsonl built-in on a scheduler", () => {
  // Each line must be the very text the event stream sends for the same event, none missing, in
  // order, all there once the scheduler has exited.
  for (const flavor of ["binary", "deno"] as const) {
    test(`every event is a line, in seq order, the same JSON as the event stream's (${flavor})`, async () => {
      const dir = tempDir();
      const path = join(dir, "events", "all.jsonl");
      const toml = join(dir, "plugins.toml");
      writeFileSync(toml, `[[scheduler.plugins]]\nuse = "jsonl"\npath = "${path}"\n`);
      const cluster = await startCluster({ workers: 2, flavor, workerFlavor: "binary", plugins: toml });
      let streamed: any[] = [];
      try {
        const client = await Client.connect(cluster.url);
        const graph = graphs.map(3000, "jl");
        await client.compute(graph);
        await api(cluster.url, "/api/v1/events/deploys", { method: "POST", body: { version: "0.2.0", note: "é ✓" } });
        expect(await client.gather(graph.keys.slice(0, 3))).toEqual([1, 2, 3]);
        await client.gather(graph.keys);
        const failing = await client.compute({ tasks: [{ key: "jl-fail", fn: "builtin.fail", args: ["boom"] }], keys: ["jl-fail"] });
        await expect(failing["jl-fail"].result()).rejects.toThrow("boom");
        await client.close();
        streamed = await replay(cluster.url, "transition");
      } finally {
        await cluster.stop();
      }
      const text = readFileSync(path, "utf8");
      expect(text.endsWith("\n")).toBe(true);
      const rows = text.trimEnd().split("\n");
      const events = rows.map((l) => JSON.parse(l));
      // No seq missing between the first and the last line.
      for (let i = 1; i < events.length; i++) expect(events[i].seq).toBe(events[i - 1].seq + 1);
      const transitions = events.filter((e) => e.topic === "transition");
      expect(transitions.filter((e) => e.finish === "memory" && e.key.startsWith("jl-")).length).toBe(3000);
      const done = transitions.find((e) => e.finish === "memory");
      expect(done.startstops[0]).toMatchObject({ action: "compute" });
      expect(typeof done.worker).toBe("string");
      expect(events.find((e) => e.topic === "deploys")).toMatchObject({ version: "0.2.0", note: "é ✓" });
      expect(transitions.some((e) => e.key === "jl-fail" && e.finish === "erred")).toBe(true);
      // The stream's JSON of the same events, text for text.
      const bySeq = new Map(events.map((e, i) => [e.seq, rows[i]]));
      expect(streamed.length).toBeGreaterThan(100);
      for (const e of streamed) expect(bySeq.get(e.seq)).toBe(JSON.stringify(e));
    }, 90_000);
  }
});
