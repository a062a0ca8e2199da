/**
 * Dask conformance: the behaviours of Dask's own plugin tests (test_scheduler_plugin.py,
 * test_worker_plugin.py, test_nanny_plugin.py, and the plugin tests in test_nanny.py and
 * test_worker.py), ported to this cluster's outside: the built binary, the HTTP API and plugin
 * modules that record what they see. Each test name starts with the Dask test it ports;
 * docs/dask-conformance.md maps every Dask test to its test here, to one in another file, or
 * says why it does not apply.
 *
 * @module
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { api, runCli, startCluster, startProcess, stopAll, tempDir } from "../testkit/mod.ts";
import {
  alive,
  compute,
  emptyPlugin,
  lines,
  nannyRecorder,
  register,
  registerDuringFailingStart,
  registerDuringStart,
  schedulerRecorder,
  sleep,
  startNamedWorker,
  until,
  workerNames,
  workerRecorder,
} from "./_conformance.ts";

afterAll(stopAll);

const suffix = String(process.pid);

/** `start>finish` of every worker-side transition of `key` recorded in `out`. */
function workerPath(out: string, key: string): string[] {
  return lines(out).filter((r) => r.hook === "transition" && r.key === key).map((r) => `${r.start}>${r.finish}`);
}

describe("test_scheduler_plugin.py", () => {
  test("test_simple: a counter sees three processing→memory transitions for a chain of three, each with a stimulusId, and unregistering twice answers 404 the second time", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name: "counter", out })).status).toBe(201);
      const res = await compute(cluster.url, [
        { key: "x", fn: "builtin.inc", args: [1] },
        { key: "y", fn: "builtin.inc", args: [{ $ref: "x" }] },
        { key: "z", fn: "builtin.inc", args: [{ $ref: "y" }] },
      ], ["z"]);
      expect(res.body.value).toBe(4);
      const transitions = lines(out).filter((r) => r.hook === "transition");
      expect(transitions.every((r) => typeof r.stimulusId === "string" && r.stimulusId !== "")).toBe(true);
      expect(transitions.filter((r) => r.start === "processing" && r.finish === "memory").length).toBe(3);
      expect((await api(cluster.url, "/api/v1/plugins/scheduler/counter", { method: "DELETE" })).status).toBe(204);
      const again = await api(cluster.url, "/api/v1/plugins/scheduler/counter", { method: "DELETE" });
      expect(again.status).toBe(404);
      expect(again.body.error).toContain("counter");
    } finally {
      await cluster.stop();
    }
  });

  test("test_add_remove_worker: addWorker and removeWorker see two workers join and leave in order, removals carry a stimulusId, and a removed plugin sees nothing", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 0 });
    try {
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, out })).status).toBe(201);
      const [a, b] = [`ca-${suffix}`, `cb-${suffix}`];
      const wa = await startNamedWorker(cluster.url, a);
      await until("a's addWorker", () => lines(out).some((r) => r.hook === "addWorker" && r.worker === a));
      const wb = await startNamedWorker(cluster.url, b);
      await until("b's addWorker", () => lines(out).some((r) => r.hook === "addWorker" && r.worker === b));
      await wa.stop();
      await until("a's removeWorker", () => lines(out).some((r) => r.hook === "removeWorker" && r.worker === a));
      await wb.stop();
      await until("b's removeWorker", () => lines(out).some((r) => r.hook === "removeWorker" && r.worker === b));
      const events = lines(out).filter((r) => r.hook === "addWorker" || r.hook === "removeWorker");
      expect(events.map((r) => [r.hook, r.worker])).toEqual([["addWorker", a], ["addWorker", b], ["removeWorker", a], ["removeWorker", b]]);
      expect(lines(out).filter((r) => r.hook === "addWorker:begin").every((r) => r.same === true)).toBe(true);
      for (const r of events.filter((e) => e.hook === "removeWorker")) expect(r.stimulusId).toBeTruthy();

      expect((await api(cluster.url, "/api/v1/plugins/scheduler/conf-scheduler", { method: "DELETE" })).status).toBe(204);
      const before = lines(out).length;
      const wc = await startNamedWorker(cluster.url, `cc-${suffix}`);
      await wc.stop();
      await sleep(200);
      expect(lines(out).length).toBe(before);
    } finally {
      await cluster.stop();
    }
  });

  test("test_async_add_remove_worker / test_async_and_sync_add_remove_worker: an async addWorker is awaited, in registration order, before the joining worker gets its first task", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 0 });
    try {
      for (const [name, hookDelayMs] of [["before", 0], ["async", 700], ["after", 0]] as const) {
        expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name, tag: name, out, hookDelayMs })).status).toBe(201);
      }
      expect((await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "first", fn: "builtin.inc", args: [1] }], keys: ["first"] } })).status).toBe(202);
      const name = `async-${suffix}`;
      const w = await startNamedWorker(cluster.url, name);
      expect((await api(cluster.url, "/api/v1/results/first?timeout=20")).body.value).toBe(2);
      const recs = lines(out);
      const adds = recs.filter((r) => r.hook === "addWorker" && r.worker === name).map((r) => r.tag);
      expect(adds).toEqual(["before", "async", "after"]);
      const asyncDone = recs.findIndex((r) => r.hook === "addWorker" && r.tag === "async");
      const toProcessing = recs.findIndex((r) => r.hook === "transition" && r.key === "first" && r.finish === "processing");
      expect(toProcessing).toBeGreaterThan(asyncDone);
      await w.stop();
      await until("three removeWorker calls", () => lines(out).filter((r) => r.hook === "removeWorker" && r.worker === name).length === 3);
      expect(lines(out).filter((r) => r.hook === "removeWorker").map((r) => r.tag)).toEqual(["before", "async", "after"]);
    } finally {
      await cluster.stop();
    }
  });

  test("test_failing_async_add_remove_worker / test_failing_sync_add_remove_worker: addWorker and removeWorker that throw, sync or async, are logged with the plugin's name and the worker still joins and works", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 0 });
    try {
      const throwIn = ["addWorker", "removeWorker"];
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name: "MySyncPlugin", out, throwIn })).status).toBe(201);
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name: "MyAsyncPlugin", out, throwIn, hookDelayMs: 50 })).status).toBe(201);
      const w = await startNamedWorker(cluster.url, `failing-${suffix}`);
      expect((await compute(cluster.url, [{ key: "still-works", fn: "builtin.inc", args: [1] }], ["still-works"])).body.value).toBe(2);
      await w.stop();
      const stderr = await until("both removeWorker failures", () => {
        const text = cluster.scheduler.stderr.join("");
        return text.includes('Plugin "MyAsyncPlugin" failed in removeWorker') ? text : "";
      });
      for (const plugin of ["MySyncPlugin", "MyAsyncPlugin"]) {
        for (const hook of ["addWorker", "removeWorker"]) {
          expect(stderr).toContain(`Plugin "${plugin}" failed in ${hook}: conformance recorder throws in ${hook}`);
        }
      }
    } finally {
      await cluster.stop();
    }
  });

  test("test_lifecycle: a plugins.toml plugin is started, then closed once when the scheduler stops", async () => {
    const dir = tempDir();
    const out = join(dir, "s.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[scheduler.plugins]]\nuse = "${schedulerRecorder}"\nout = "${out}"\n`);
    const scheduler = await startProcess(["scheduler", "--port", "0", "--plugins", toml]);
    expect(await scheduler.stop()).toBe(0);
    const hooks = lines(out).map((r) => r.hook).filter((h) => ["start", "beforeClose", "close"].includes(h));
    expect(hooks).toEqual(["start", "beforeClose", "close"]);
    expect(lines(out)[0].address).toBe(scheduler.url);
  });

  test("test_log_event_plugin: an event a worker logs and one posted to the API reach the scheduler plugin's logEvent with topic and message", async () => {
    const out = join(tempDir(), "s.jsonl");
    const wout = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, out })).status).toBe(201);
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, out: wout, logTopic: "foo" })).status).toBe(201);
      expect((await api(cluster.url, "/api/v1/events/bar", { body: { n: 456 } })).status).toBeLessThan(300);
      const foo = await until("the worker's foo event", () => lines(out).find((r) => r.hook === "logEvent" && r.topic === "foo"));
      expect(foo.msg.value).toBe(123);
      const bar = await until("the posted bar event", () => lines(out).find((r) => r.hook === "logEvent" && r.topic === "bar"));
      expect(bar.msg.n).toBe(456);
    } finally {
      await cluster.stop();
    }
  });

  test("test_closing_errors_ok: a plugin whose beforeClose and close throw is logged, and the other plugin's beforeClose and close still run", async () => {
    const dir = tempDir();
    const out = join(dir, "s.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, [
      "[[scheduler.plugins]]", `use = "${schedulerRecorder}"`, `name = "OK"`, `tag = "OK"`, `out = "${out}"`,
      "[[scheduler.plugins]]", `use = "${schedulerRecorder}"`, `name = "Bad"`, `tag = "Bad"`, `out = "${out}"`, `throwIn = ["beforeClose", "close"]`,
    ].join("\n") + "\n");
    const scheduler = await startProcess(["scheduler", "--port", "0", "--plugins", toml]);
    expect(await scheduler.stop()).toBe(0);
    const ok = lines(out).filter((r) => r.tag === "OK").map((r) => r.hook).filter((h) => h === "beforeClose" || h === "close");
    expect(ok).toEqual(["beforeClose", "close"]);
    const stderr = scheduler.stderr.join("");
    // Dask checks that both messages reach the log; the close failure is logged as "teardown".
    expect(stderr).toContain('Plugin "Bad" failed in beforeClose: conformance recorder throws in beforeClose');
    expect(stderr).toMatch(/Plugin "Bad" failed in \w+: conformance recorder throws in close/);
  });

  test("test_update_graph_hook_simple: one graph over HTTP calls updateGraph once with its submitter, the keys, the tasks, no annotations, one priority and the dependencies, before the first transition", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name: "update-graph", out })).status).toBe(201);
      expect((await compute(cluster.url, [{ key: "foo", fn: "builtin.inc", args: [5] }], ["foo"])).body.value).toBe(6);
      const recs = lines(out);
      const graphs = recs.filter((r) => r.hook === "updateGraph");
      expect(graphs.length).toBe(1);
      const g = graphs[0];
      expect(typeof g.client).toBe("string");
      expect(g.keys).toEqual(["foo"]);
      expect(g.tasks).toEqual(["foo"]);
      expect(g.annotations).toEqual({});
      expect(Object.keys(g.priority)).toEqual(["foo"]);
      expect(g.dependencies).toEqual({ foo: [] });
      expect(g.stimulusId).toBeTruthy();
      expect(recs.indexOf(g)).toBeLessThan(recs.findIndex((r) => r.hook === "transition" && r.key === "foo"));
    } finally {
      await cluster.stop();
    }
  });

  test("test_update_graph_hook_simple (with the client): a client's submit and result call updateGraph exactly once, with the client's id", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 1 });
    const client = await Client.connect(cluster.url);
    try {
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name: "update-graph", out })).status).toBe(201);
      expect(await client.submit("builtin.inc", 5).result()).toBe(6);
      const graphs = lines(out).filter((r) => r.hook === "updateGraph");
      expect(graphs.map((g) => g.keys.length)).toEqual([1]);
      expect(graphs[0].client).toBe(client.id);
    } finally {
      await client.close();
      await cluster.stop();
    }
  });

  test("test_update_graph_hook_complex: updateGraph's annotations are keyed by annotation name, then by task, and a priority annotation runs first", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "scheduler", use: schedulerRecorder, name: "update-graph", out })).status).toBe(201);
      const res = await compute(cluster.url, [
        { key: "f1", fn: "builtin.inc", args: [1], annotations: { global_annot: 24 } },
        { key: "f2", fn: "builtin.inc", args: [2], annotations: { global_annot: 24, layer: "explicit", priority: 13 } },
        { key: "f3", fn: "builtin.inc", args: [{ $ref: "f2" }], annotations: { global_annot: 24, len_key: 2 } },
        { key: "sum", fn: "builtin.add", args: [{ $ref: "f1" }, { $ref: "f3" }], annotations: { global_annot: 24 } },
      ], ["sum"]);
      expect(res.body.value).toBe(6);
      const g = lines(out).find((r) => r.hook === "updateGraph");
      expect(g.keys).toEqual(["sum"]);
      expect([...g.tasks].sort()).toEqual(["f1", "f2", "f3", "sum"]);
      expect(g.annotations).toEqual({
        global_annot: { f1: 24, f2: 24, f3: 24, sum: 24 },
        layer: { f2: "explicit" },
        len_key: { f3: 2 },
        priority: { f2: 13 },
      });
      expect(Object.keys(g.priority).length).toBe(4);
      // A higher user priority runs earlier: f2 comes before every other task.
      for (const k of ["f1", "f3", "sum"]) expect(g.priority.f2).toBeLessThan(g.priority[k]);
      expect(g.dependencies.f1).toEqual([]);
      expect(g.dependencies.sum).toEqual(["f1", "f3"]);
    } finally {
      await cluster.stop();
    }
  });

  test("addClient is awaited: a client's first graph reaches updateGraph only after an async addClient finished", async () => {
    const out = join(tempDir(), "s.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      // The recorder's addClient is synchronous; this module's waits 500 ms.
      const source = `import { appendFileSync } from "node:fs";
const out = ${JSON.stringify(out)};
export default {
  name: "slow-client",
  async addClient(_s, client) {
    await new Promise((r) => setTimeout(r, 500));
    appendFileSync(out, JSON.stringify({ hook: "addClient", client }) + "\\n");
  },
  updateGraph(_s, g) {
    appendFileSync(out, JSON.stringify({ hook: "updateGraph", client: g.client }) + "\\n");
  },
};
`;
      expect((await register(cluster.url, { role: "scheduler", use: "./slow-client.ts", source })).status).toBe(201);
      const client = await Client.connect(cluster.url);
      try {
        expect(await client.submit("builtin.inc", 1).result()).toBe(2);
        const recs = lines(out).filter((r) => r.client === client.id);
        expect(recs[0]?.hook).toBe("addClient");
        expect(recs.findIndex((r) => r.hook === "updateGraph")).toBeGreaterThan(0);
      } finally {
        await client.close();
      }
    } finally {
      await cluster.stop();
    }
  });
});

describe("test_worker_plugin.py", () => {
  test("test_create_with_client: a worker plugin registered before any worker is set up with its options on a worker that joins, and torn down when the worker closes", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 0 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, out, data: 123 })).status).toBe(201);
      const name = `create-${suffix}`;
      const w = await startNamedWorker(cluster.url, name);
      expect(lines(out)).toEqual([{ hook: "setup", worker: name, pid: w.pid, data: 123 }]);
      await w.stop();
      expect(lines(out).map((r) => r.hook)).toEqual(["setup", "teardown"]);
    } finally {
      await cluster.stop();
    }
  });

  test("test_remove_with_client / test_remove_with_client_raises: unregistering one of two worker plugins tears down only that one, and an unknown name answers 404 naming it", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 0 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, name: "foo", tag: "foo", out, data: 123 })).status).toBe(201);
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, name: "bar", tag: "bar", out, data: 546 })).status).toBe(201);
      const w = await startNamedWorker(cluster.url, `remove-${suffix}`);
      try {
        expect(lines(out).filter((r) => r.hook === "setup").map((r) => r.tag)).toEqual(["foo", "bar"]);
        expect((await api(cluster.url, "/api/v1/plugins/worker/foo", { method: "DELETE" })).status).toBe(204);
        await until("foo's teardown", () => lines(out).some((r) => r.hook === "teardown" && r.tag === "foo"));
        expect(lines(out).filter((r) => r.hook === "teardown").map((r) => r.tag)).toEqual(["foo"]);
        expect((await api(cluster.url, "/api/v1/plugins")).body.worker.map((p: any) => p.name)).toEqual(["bar"]);
        expect((await api(cluster.url, "/api/v1/plugins/worker/bar", { method: "DELETE" })).status).toBe(204);
        await until("bar's teardown", () => lines(out).some((r) => r.hook === "teardown" && r.tag === "bar"));
        expect((await api(cluster.url, "/api/v1/plugins")).body.worker).toEqual([]);
        const missing = await api(cluster.url, "/api/v1/plugins/worker/bar", { method: "DELETE" });
        expect(missing.status).toBe(404);
        expect(missing.body.error).toContain("bar");
        // No plugin left: the worker's next tasks reach no transition hook.
        const before = lines(out).length;
        expect((await compute(cluster.url, [{ key: "quiet", fn: "builtin.inc", args: [1] }], ["quiet"])).body.value).toBe(2);
        expect(lines(out).length).toBe(before);
      } finally {
        await w.stop();
      }
    } finally {
      await cluster.stop();
    }
  });

  test("test_create_on_construction: a worker started with its own --plugins sets the plugin up before it is ready and the plugin sees its tasks", async () => {
    const dir = tempDir();
    const out = join(dir, "w.jsonl");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[worker.plugins]]\nuse = "${workerRecorder}"\nout = "${out}"\ndata = 5\n`);
    const cluster = await startCluster({ workers: 0 });
    try {
      const name = `construct-${suffix}`;
      const w = await startNamedWorker(cluster.url, name, ["--plugins", toml]);
      expect(lines(out)).toEqual([{ hook: "setup", worker: name, pid: w.pid, data: 5 }]);
      expect((await compute(cluster.url, [{ key: "on-construction", fn: "builtin.inc", args: [1] }], ["on-construction"])).body.value).toBe(2);
      expect(workerPath(out, "on-construction")).toContain("executing>memory");
      await w.stop();
    } finally {
      await cluster.stop();
    }
  });

  test("test_normal_task_transitions_called: a task goes released→waiting→ready→executing→memory on the worker, then memory→released→forgotten once released", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, out })).status).toBe(201);
      expect((await compute(cluster.url, [{ key: "task", fn: "builtin.identity", args: [1] }], ["task"])).body.value).toBe(1);
      expect((await api(cluster.url, "/api/v1/tasks/task", { method: "DELETE" })).status).toBe(204);
      await until("task forgotten on the worker", () => workerPath(out, "task").includes("released>forgotten"));
      expect(workerPath(out, "task")).toEqual([
        "released>waiting", "waiting>ready", "ready>executing", "executing>memory", "memory>released", "released>forgotten",
      ]);
    } finally {
      await cluster.stop();
    }
  });

  test("test_dependent_tasks: a task and its dependency on one worker run in order, and both are released and forgotten", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, out })).status).toBe(201);
      const res = await compute(cluster.url, [
        { key: "dep", fn: "builtin.identity", args: [1] },
        { key: "task", fn: "builtin.inc", args: [{ $ref: "dep" }] },
      ], ["task"], "task");
      expect(res.body.value).toBe(2);
      expect((await api(cluster.url, "/api/v1/tasks/task", { method: "DELETE" })).status).toBe(204);
      await until("both forgotten", () => workerPath(out, "task").includes("released>forgotten") && workerPath(out, "dep").includes("released>forgotten"));
      const run = ["released>waiting", "waiting>ready", "ready>executing", "executing>memory", "memory>released", "released>forgotten"];
      expect(workerPath(out, "dep")).toEqual(run);
      expect(workerPath(out, "task")).toEqual(run);
      const recs = lines(out).filter((r) => r.hook === "transition");
      const depDone = recs.findIndex((r) => r.key === "dep" && r.finish === "memory");
      const taskRuns = recs.findIndex((r) => r.key === "task" && r.finish === "executing");
      expect(taskRuns).toBeGreaterThan(depDone);
    } finally {
      await cluster.stop();
    }
  });

  test("test_empty_plugin / test_default_name: a module with no hooks registers under its file's name and tasks still run", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const res = await register(cluster.url, { role: "worker", use: emptyPlugin });
      expect(res.status).toBe(201);
      expect(res.body.name).toBe("empty");
      expect((await api(cluster.url, "/api/v1/plugins")).body.worker.map((p: any) => p.name)).toEqual(["empty"]);
      expect((await compute(cluster.url, [{ key: "after-empty", fn: "builtin.inc", args: [1] }], ["after-empty"])).body.value).toBe(2);
    } finally {
      await cluster.stop();
    }
  });

  test("test_WorkerPlugin_overwrite: a worker plugin registered again under its name is torn down first, and only the new one sees later tasks", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, name: "custom", tag: "foo", out })).status).toBe(201);
      expect((await compute(cluster.url, [{ key: "one", fn: "builtin.inc", args: [0] }], ["one"])).body.value).toBe(1);
      expect(lines(out).some((r) => r.tag === "foo" && r.key === "one")).toBe(true);
      const again = await register(cluster.url, { role: "worker", use: workerRecorder, name: "custom", tag: "bar", out });
      expect(again.status).toBe(201);
      expect(again.body.result).toBe("replaced");
      const hooks = lines(out).filter((r) => r.hook !== "transition").map((r) => `${r.hook}:${r.tag}`);
      expect(hooks).toEqual(["setup:foo", "teardown:foo", "setup:bar"]);
      expect((await compute(cluster.url, [{ key: "two", fn: "builtin.inc", args: [0] }], ["two"])).body.value).toBe(1);
      const two = lines(out).filter((r) => r.key === "two");
      expect(two.length).toBeGreaterThan(0);
      expect(two.every((r) => r.tag === "bar")).toBe(true);
    } finally {
      await cluster.stop();
    }
  });

  test("test_failing_task_transitions_called: a failing task goes released→waiting→ready→executing→error on the worker, then error→released→forgotten once released", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, out })).status).toBe(201);
      const res = await compute(cluster.url, [{ key: "task", fn: "builtin.fail", args: ["CustomError"] }], ["task"]);
      expect(res.status).toBe(409);
      expect((await api(cluster.url, "/api/v1/tasks/task", { method: "DELETE" })).status).toBe(204);
      await until("task forgotten on the worker", () => workerPath(out, "task").includes("released>forgotten"), 5_000).catch(() => {});
      expect(workerPath(out, "task")).toEqual([
        "released>waiting", "waiting>ready", "ready>executing", "executing>error", "error>released", "released>forgotten",
      ]);
    } finally {
      await cluster.stop();
    }
  });
});

describe("test_worker.py", () => {
  test("test_plugin_exception: a worker whose own plugins.toml plugin fails in setup does not start, naming the plugin and the message", async () => {
    const dir = tempDir();
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[worker.plugins]]\nuse = "${workerRecorder}"\nname = "MyPlugin"\nout = "${join(dir, "w.jsonl")}"\nfailSetup = "Setup failed"\n`);
    const cluster = await startCluster({ workers: 0 });
    try {
      const result = await runCli(["worker", cluster.url, "--name", `broken-${suffix}`, "--plugins", toml], { timeoutMs: 20_000 });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toContain('"MyPlugin"');
      expect(result.stderr).toContain("Setup failed");
      expect(result.stdout).not.toContain("listening at");
      expect(await workerNames(cluster.url)).toEqual([]);
    } finally {
      await cluster.stop();
    }
  });

  test("test_package_install_failing_does_not_restart_on_nanny: a package-install with restartWorkers that fails answers 422 and leaves the nanny's worker running as it was", async () => {
    // No registry is reachable: only the missing local package is tried.
    const offline = { NPM_CONFIG_REGISTRY: "http://127.0.0.1:1/", BUN_CONFIG_REGISTRY: "http://127.0.0.1:1/" };
    const cluster = await startCluster({ workers: 1, nanny: true, env: offline });
    try {
      const before = await until("the nanny's worker", async () => (await api(cluster.url, "/api/v1/info")).body.workers.find((w: any) => w.status === "running"));
      const res = await register(cluster.url, {
        role: "worker", use: "package-install", packages: [`file:${join(tempDir(), "no-such-package")}`], restartWorkers: true,
      });
      expect(res.status).toBe(422);
      await sleep(1_000);
      const after = (await api(cluster.url, "/api/v1/info")).body.workers;
      expect(after.map((w: any) => [w.name, w.pid, w.status])).toEqual([[before.name, before.pid, "running"]]);
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("test_plugin_internal_exception: a worker plugin module that does not parse keeps the worker from starting and names the file", async () => {
    const dir = tempDir();
    const bad = join(dir, "corrupt-plugin.ts");
    writeFileSync(bad, "export default {{{ not a module\n");
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[worker.plugins]]\nuse = "${bad}"\n`);
    const cluster = await startCluster({ workers: 0 });
    try {
      const result = await runCli(["worker", cluster.url, "--name", `corrupt-${suffix}`, "--plugins", toml], { timeoutMs: 20_000 });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toContain("corrupt-plugin.ts");
      expect(result.stdout).not.toContain("listening at");
    } finally {
      await cluster.stop();
    }
  });

  test("test_plugin_multiple_exceptions: a worker whose two plugins both fail in setup logs both messages", async () => {
    const dir = tempDir();
    const toml = join(dir, "plugins.toml");
    const out = join(dir, "w.jsonl");
    writeFileSync(toml, [
      "[[worker.plugins]]", `use = "${workerRecorder}"`, `name = "MyPlugin1"`, `out = "${out}"`, `failSetup = "MyPlugin1 Error"`,
      "[[worker.plugins]]", `use = "${workerRecorder}"`, `name = "MyPlugin2"`, `out = "${out}"`, `failSetup = "MyPlugin2 Error"`,
    ].join("\n") + "\n");
    const cluster = await startCluster({ workers: 0 });
    try {
      const result = await runCli(["worker", cluster.url, "--name", `multi-${suffix}`, "--plugins", toml], { timeoutMs: 20_000 });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toContain("MyPlugin1 Error");
      expect(result.stderr).toContain("MyPlugin2 Error");
    } finally {
      await cluster.stop();
    }
  });

  test("test_plugin_exception (exit code): a worker plugin from the worker's own plugins.toml that fails in setup exits 2, as the plugin docs promise for config files", async () => {
    const dir = tempDir();
    const toml = join(dir, "plugins.toml");
    writeFileSync(toml, `[[worker.plugins]]\nuse = "${workerRecorder}"\nname = "MyPlugin"\nout = "${join(dir, "w.jsonl")}"\nfailSetup = "Setup failed"\n`);
    const cluster = await startCluster({ workers: 0 });
    try {
      const result = await runCli(["worker", cluster.url, "--name", `exit2-${suffix}`, "--plugins", toml], { timeoutMs: 20_000 });
      expect(result.code).toBe(2);
    } finally {
      await cluster.stop();
    }
  });
});

describe("test_nanny_plugin.py and test_nanny.py", () => {
  test("test_nanny_plugin_simple: a nanny plugin is set up on the running nanny and on a nanny that joins later, whose worker starts with its environment", async () => {
    const out = join(tempDir(), "n.jsonl");
    const cluster = await startCluster({ workers: 0 });
    const first = `n1-${suffix}`;
    const second = `n2-${suffix}`;
    const n1 = await startNamedWorker(cluster.url, first, [], true);
    try {
      await until("the first nanny's worker", async () => (await workerNames(cluster.url)).includes(first));
      expect((await register(cluster.url, { role: "nanny", use: nannyRecorder, out, tag: "foo" })).status).toBe(201);
      expect(lines(out).map((r) => `${r.hook}:${r.nanny}`)).toEqual([`setup:${first}`]);
      const n2 = await startNamedWorker(cluster.url, second, [], true);
      try {
        await until("the second nanny's worker", async () => (await workerNames(cluster.url)).includes(second));
        expect(lines(out).map((r) => `${r.hook}:${r.nanny}`)).toEqual([`setup:${first}`, `setup:${second}`]);
        const env = await compute(cluster.url, [{ key: "env-n2", fn: "builtin.env", args: ["CONF_NANNY_TAG"], annotations: { workers: [second] } }], ["env-n2"]);
        expect(env.body.value).toBe("foo");
      } finally {
        await n2.stop();
      }
    } finally {
      await n1.stop();
      await cluster.stop();
    }
  }, 60_000);

  test("test_register_idempotent_plugin / test_register_non_idempotent_plugin: an idempotent nanny plugin registered again keeps the first; otherwise the first is torn down and the second set up", async () => {
    const out = join(tempDir(), "n.jsonl");
    const cluster = await startCluster({ workers: 0 });
    const n = await startNamedWorker(cluster.url, `idem-${suffix}`, [], true);
    try {
      const reg = (name: string, tag: string, idempotent: boolean) =>
        register(cluster.url, { role: "nanny", use: nannyRecorder, name, tag, out, idempotent });
      expect((await reg("idempotentplugin", "first", true)).status).toBe(201);
      const kept = await reg("idempotentplugin", "second", true);
      expect(kept.body.result).toBe("kept");
      expect(lines(out).map((r) => `${r.hook}:${r.tag}`)).toEqual(["setup:first"]);

      expect((await reg("nonidempotentplugin", "first", false)).status).toBe(201);
      const replaced = await reg("nonidempotentplugin", "second", false);
      expect(replaced.body.result).toBe("replaced");
      expect(lines(out).map((r) => `${r.hook}:${r.tag}`)).toEqual(["setup:first", "setup:first", "teardown:first", "setup:second"]);
      expect((await api(cluster.url, "/api/v1/plugins")).body.nanny.map((p: any) => p.name)).toEqual(["idempotentplugin", "nonidempotentplugin"]);
    } finally {
      await n.stop();
      await cluster.stop();
    }
  }, 60_000);

  test("test_plugin_with_broken_setup_on_new_nanny_logs: a nanny plugin that fails on a nanny joining later is logged with its name and message", async () => {
    const cluster = await startCluster({ workers: 0 });
    try {
      const res = await register(cluster.url, { role: "nanny", use: nannyRecorder, name: "TestPlugin1", out: join(tempDir(), "n.jsonl"), failSetup: "test error" });
      expect(res.status).toBe(201);
      const nanny = await startNamedWorker(cluster.url, `late-broken-${suffix}`, [], true);
      try {
        await sleep(500);
        const logs = cluster.scheduler.stderr.join("") + nanny.stderr.join("");
        expect(logs).toMatch(/TestPlugin1.*test error/);
      } finally {
        await nanny.stop();
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("test_nanny_plugin_register_during_start_success[restart=false]: a nanny plugin registered while the nanny's first worker starts answers 201, is set up on that nanny, and the nanny becomes ready with one worker", async () => {
    await registerDuringStart(false);
  }, 60_000);

  test("test_nanny_plugin_register_during_start_failure[restart=false]: a nanny whose worker keeps failing to start does not fail a registration made meanwhile, and the plugin stays for the nannies that remain", async () => {
    await registerDuringFailingStart(false);
  }, 90_000);

  test("test_close_joins: a worker plugin whose teardown never finishes does not keep its nanny from closing, and the worker process is gone", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 0 });
    try {
      expect((await register(cluster.url, { role: "worker", use: workerRecorder, out, teardownHangs: true })).status).toBe(201);
      const name = `joins-${suffix}`;
      const n = await startNamedWorker(cluster.url, name, [], true);
      await until("the nanny's worker set up", () => lines(out).some((r) => r.hook === "setup" && r.worker === name));
      const workerPid = lines(out).find((r) => r.hook === "setup").pid as number;
      const started = Date.now();
      process.kill(n.pid, "SIGTERM");
      const code = await n.exited;
      const took = Date.now() - started;
      expect(lines(out).some((r) => r.hook === "teardown")).toBe(true);
      expect(code).toBe(0);
      // The nanny waits its grace period (10 s) for the worker, then kills it.
      expect(took).toBeLessThan(20_000);
      await until("the worker process to be gone", () => !alive(workerPid), 5_000);
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("test_register_plugin_with_broken_setup_to_existing_nanny_raises: the 422 is also logged, naming the plugin and its message", async () => {
    const cluster = await startCluster({ workers: 0 });
    const nanny = await startNamedWorker(cluster.url, `broken-${suffix}`, [], true);
    try {
      const res = await register(cluster.url, { role: "nanny", use: nannyRecorder, name: "TestPlugin1", out: join(tempDir(), "n.jsonl"), failSetup: "test error" });
      expect(res.status).toBe(422);
      expect(res.body.error).toContain("test error");
      await sleep(300);
      const logs = cluster.scheduler.stderr.join("") + nanny.stderr.join("");
      expect(logs).toMatch(/TestPlugin1.*test error/);
    } finally {
      await nanny.stop();
      await cluster.stop();
    }
  }, 60_000);

  test("test_nanny_plugin_register_during_start_success[restart=true]: a nanny plugin with restart registered while the nanny's first worker starts answers 201, and the nanny becomes ready with one worker that has the plugin's environment", async () => {
    await registerDuringStart(true);
  }, 60_000);

  test("test_nanny_plugin_register_during_start_failure[restart=true]: a nanny whose worker keeps failing to start does not fail a registration with restart, and the plugin stays for the nannies that remain", async () => {
    await registerDuringFailingStart(true);
  }, 90_000);

  for (const restart of [true, false]) {
    test(`test_nanny_plugin_register_nanny_killed[restart=${restart}]: a nanny killed during a registration does not fail it, and the plugin stays for the nanny that remains and one that comes`, async () => {
      const out = join(tempDir(), "n.jsonl");
      const cluster = await startCluster({ workers: 0 });
      const staying = await startNamedWorker(cluster.url, `stays-${restart}-${suffix}`, [], true);
      const leaving = await startNamedWorker(cluster.url, `killed-${restart}-${suffix}`, [], true);
      try {
        const registering = register(cluster.url, { role: "nanny", use: nannyRecorder, out, tag: "foo", restart, setupDelayMs: 1_500 });
        await sleep(300);
        process.kill(leaving.pid, "SIGKILL");
        const res = await registering;
        expect({ status: res.status, error: res.body?.error }).toEqual({ status: 201, error: undefined });
        expect((await api(cluster.url, "/api/v1/plugins")).body.nanny.map((p: any) => p.name)).toEqual(["conf-nanny"]);
        const comes = await startNamedWorker(cluster.url, `comes-${restart}-${suffix}`, [], true);
        try {
          await until("the new nanny's setup", () => lines(out).some((r) => r.hook === "setup" && r.nanny === `comes-${restart}-${suffix}`));
        } finally {
          await comes.stop();
        }
      } finally {
        await leaving.stop("SIGKILL");
        await staying.stop();
        await cluster.stop();
      }
    }, 90_000);
  }
});

describe("our own guarantees (docs/plugins.md), as Dask's issues #4106 and #7035 ask", () => {
  test("a worker that joins while a slow worker plugin is being set up gets the plugin before any task", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      const registering = register(cluster.url, { role: "worker", use: workerRecorder, out, setupDelayMs: 3_000 });
      await sleep(500);
      const joiner = `joiner-${suffix}`;
      const w = await startNamedWorker(cluster.url, joiner);
      try {
        expect((await registering).status).toBe(201);
        const res = await compute(cluster.url, [{ key: "on-joiner", fn: "builtin.inc", args: [1], annotations: { workers: [joiner] } }], ["on-joiner"]);
        expect(res.body.value).toBe(2);
        const recs = lines(out).filter((r) => r.worker === joiner);
        expect(recs[0]?.hook).toBe("setup");
        expect(recs.some((r) => r.key === "on-joiner")).toBe(true);
      } finally {
        await w.stop();
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("a worker whose plugin fails to set up when it joins is quarantined, listed with the failure, and gets no task", async () => {
    // The setup fails on workers whose name starts with "q-".
    const source = `export default { name: "picky", setup(worker) {
      if (worker.name.startsWith("q-")) throw new Error("picky refuses " + worker.name);
    } };`;
    const cluster = await startCluster({ workers: 1 });
    try {
      expect((await register(cluster.url, { role: "worker", use: "./picky.ts", source })).status).toBe(201);
      const name = `q-${suffix}`;
      const w = await startNamedWorker(cluster.url, name);
      try {
        const info = await until("the quarantined worker", async () =>
          (await api(cluster.url, "/api/v1/info")).body.workers.find((x: any) => x.name === name && x.status === "quarantined"), 10_000);
        expect(JSON.stringify(info)).toContain(`picky refuses ${name}`);
        const listed = (await api(cluster.url, "/api/v1/plugins")).body.worker.find((p: any) => p.name === "picky");
        expect(JSON.stringify(listed)).toContain("failed: ");
        const tasks = Array.from({ length: 6 }, (_, i) => ({ key: `anywhere-${i}`, fn: "builtin.pid" }));
        await compute(cluster.url, tasks, tasks.map((t) => t.key));
        for (const t of tasks) {
          expect((await api(cluster.url, `/api/v1/results/${t.key}?timeout=20`)).status).toBe(200);
          expect((await api(cluster.url, `/api/v1/tasks/${t.key}`)).body.worker).not.toBe(name);
        }
      } finally {
        await w.stop();
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);
});
