/**
 * The scheduler's state machine, tested directly: no sockets, no processes.
 */
import { describe, expect, test } from "bun:test";
import { validateGraph } from "../lib/scheduler/graph.ts";
import { SchedulerState, type WorkerMessage, type WorkerState } from "../lib/scheduler/state.ts";

function setup() {
  const log: string[] = [];
  const sent: Array<{ worker: string; msg: WorkerMessage }> = [];
  const state = new SchedulerState({
    onTransition: (ts, start, finish, stimulusId) => {
      expect(stimulusId).toBeTruthy();
      log.push(`${ts.key} ${start}>${finish}`);
    },
    sendToWorker: (ws, msg) => sent.push({ worker: ws.name, msg }),
  });
  const client = state.addClient("c1");
  const submit = (graph: unknown) =>
    state.updateGraph(client, validateGraph(graph, { existing: (k) => state.tasks.has(k), knownModules: null }), "test");
  const worker = (name: string, nthreads = 1): WorkerState => {
    const ws = state.addWorker({ name, address: `http://${name}`, nthreads, nanny: false, modules: [], pid: 1 });
    state.workerReady(ws, "ready");
    return ws;
  };
  const computes = (name?: string) => sent.filter((s) => s.msg.op === "compute" && (!name || s.worker === name)).map((s) => (s.msg as { key: string }).key);
  const finish = (ws: WorkerState, key: string, value: unknown = 1, nbytes = 8) =>
    state.taskFinished(ws, { key, nbytes, value, hasValue: nbytes <= 1024 }, `done-${key}`);
  return { state, client, log, sent, submit, worker, computes, finish };
}

describe("transitions", () => {
  test("a chain makes Dask's transitions and releasing its result forgets it all", () => {
    const { state, client, log, submit, worker, finish } = setup();
    const w = worker("a");
    submit({
      tasks: [
        { key: "x", fn: "builtin.inc", args: [1] },
        { key: "y", fn: "builtin.inc", args: [{ $ref: "x" }] },
        { key: "z", fn: "builtin.inc", args: [{ $ref: "y" }] },
      ],
      keys: ["z"],
    });
    finish(w, "x");
    finish(w, "y");
    finish(w, "z");
    state.releaseKeys(client, ["z"], "release");
    expect(log).toEqual([
      "x released>waiting", "x waiting>processing", "y released>waiting", "z released>waiting",
      "x processing>memory", "y waiting>processing", "y processing>memory", "x memory>released",
      "z waiting>processing", "z processing>memory", "y memory>released",
      "z memory>forgotten", "y released>forgotten", "x released>forgotten",
    ]);
    expect(state.tasks.size).toBe(0);
  });

  test("tasks wait in no-worker until a worker arrives", () => {
    const { state, submit, worker, computes } = setup();
    submit({ tasks: [{ key: "a", fn: "builtin.inc", args: [1] }] });
    expect(state.tasks.get("a")!.state).toBe("no-worker");
    worker("late");
    expect(state.tasks.get("a")!.state).toBe("processing");
    expect(computes("late")).toEqual(["a"]);
  });

  test("root tasks are queued at the scheduler when every worker is saturated", () => {
    const { state, submit, worker, finish, computes } = setup();
    const w = worker("a", 1);
    const tasks = Array.from({ length: 5 }, (_, i) => ({ key: `t${i}`, fn: "builtin.inc", args: [i] }));
    submit({ tasks });
    // One thread and no duration known yet: ceil(1 × 1.1) = 2 in flight, the rest queued.
    expect(state.counts.processing).toBe(2);
    expect(state.counts.queued).toBe(3);
    finish(w, computes()[0]);
    expect(state.counts.memory).toBe(1);
    expect(state.counts.processing + state.counts.queued).toBe(4);
    expect(state.counts.processing).toBeGreaterThanOrEqual(2);
  });

  test("a task goes to the worker that holds most bytes of its dependencies", () => {
    const { submit, worker, finish, computes, state } = setup();
    const a = worker("a");
    const b = worker("b");
    submit({
      tasks: [
        { key: "big", fn: "builtin.inc", args: [1], annotations: { workers: ["b"] } },
        { key: "small", fn: "builtin.inc", args: [1], annotations: { workers: ["a"] } },
      ],
      keys: ["big", "small"],
    });
    finish(b, "big", "x", 100_000);
    finish(a, "small", 1, 8);
    submit({ tasks: [{ key: "both", fn: "builtin.add", args: [{ $ref: "big" }, { $ref: "small" }] }], keys: ["both"] });
    expect(computes("b")).toContain("both");
    expect(state.tasks.get("both")!.processingOn!.name).toBe("b");
  });
});

describe("failures", () => {
  test("an erred task errs its dependents with its exception", () => {
    const { state, submit, worker } = setup();
    const w = worker("a");
    submit({ tasks: [{ key: "a", fn: "builtin.fail", args: ["x"] }, { key: "b", fn: "builtin.inc", args: [{ $ref: "a" }] }], keys: ["b"] });
    state.taskErred(w, { key: "a", exception: "Error: x", traceback: "tb" }, "err");
    expect(state.tasks.get("a")!.state).toBe("erred");
    expect(state.tasks.get("b")!.state).toBe("erred");
    expect(state.tasks.get("b")!.exception).toBe("Error: x");
  });

  test("retries send the task back to waiting before it errs", () => {
    const { state, submit, worker, log } = setup();
    const w = worker("a");
    submit({ tasks: [{ key: "a", fn: "builtin.fail", args: ["x"], retries: 1 }] });
    state.taskErred(w, { key: "a", exception: "Error: x", traceback: "" }, "e1");
    expect(state.tasks.get("a")!.state).toBe("processing");
    state.taskErred(w, { key: "a", exception: "Error: x", traceback: "" }, "e2");
    expect(state.tasks.get("a")!.state).toBe("erred");
    expect(log.filter((l) => l === "a waiting>processing").length).toBe(2);
  });

  test("a task whose workers die three times is erred with KilledWorker", () => {
    const { state, submit, worker } = setup();
    submit({ tasks: [{ key: "k", fn: "builtin.sleep", args: [1000] }] });
    for (let i = 0; i < 3; i++) {
      worker(`w${i}`);
      expect(state.tasks.get("k")!.state).toBe("processing");
      state.removeWorker(`w${i}`, `lost-${i}`);
    }
    const ts = state.tasks.get("k")!;
    expect(ts.state).toBe("erred");
    expect(ts.exception).toContain("KilledWorker");
  });

  test("a worker that leaves gracefully does not count against the tasks it was running", () => {
    const { state, submit, worker } = setup();
    submit({ tasks: [{ key: "k", fn: "builtin.sleep", args: [1000] }] });
    for (let i = 0; i < 4; i++) {
      worker(`w${i}`);
      state.removeWorker(`w${i}`, `left-${i}`, { graceful: true });
    }
    const ts = state.tasks.get("k")!;
    expect(ts.suspicious).toBe(0);
    expect(ts.state).toBe("no-worker");
  });

  test("results lost with a worker are recomputed from their inputs, small ones kept by the scheduler survive", () => {
    const { state, submit, worker, finish, computes } = setup();
    const a = worker("a");
    submit({
      tasks: [
        { key: "small", fn: "builtin.inc", args: [1] },
        { key: "large", fn: "builtin.inc", args: [1] },
        { key: "sum", fn: "builtin.add", args: [{ $ref: "small" }, { $ref: "large" }] },
      ],
      keys: ["sum"],
    });
    finish(a, "small", 2, 8);
    finish(a, "large", "x".repeat(10), 2_000_000);
    expect(state.tasks.get("sum")!.state).toBe("processing");
    const b = worker("b");
    state.removeWorker("a", "lost");
    expect(state.tasks.get("small")!.state).toBe("memory");
    expect(state.tasks.get("large")!.state).toBe("processing");
    expect(state.tasks.get("sum")!.state).toBe("waiting");
    expect(computes("b")).toEqual(["large"]);
    finish(b, "large", "x", 2_000_000);
    expect(state.tasks.get("sum")!.state).toBe("processing");
  });

  test("forgetAll forgets every task", () => {
    const { state, submit, worker, finish } = setup();
    const w = worker("a");
    submit({ tasks: [{ key: "a", fn: "builtin.inc", args: [1] }, { key: "b", fn: "builtin.inc", args: [{ $ref: "a" }] }] });
    finish(w, "a");
    state.forgetAll("restart");
    expect(state.tasks.size).toBe(0);
    expect(Object.entries(state.counts).filter(([, n]) => n !== 0)).toEqual([]);
  });
});

describe("graph validation", () => {
  const opts = { existing: () => false, knownModules: new Set(["tasks"]) };
  test("refs, duplicates, cycles and unknown functions are rejected naming the key", () => {
    expect(() => validateGraph({ tasks: [{ key: "a", fn: "builtin.inc", args: [{ $ref: "b" }] }] }, opts)).toThrow('"b"');
    expect(() => validateGraph({ tasks: [{ key: "a", fn: "builtin.inc" }, { key: "a", fn: "builtin.inc" }] }, opts)).toThrow('"a"');
    expect(() => validateGraph({
      tasks: [{ key: "a", fn: "builtin.inc", args: [{ $ref: "b" }] }, { key: "b", fn: "builtin.inc", args: [{ $ref: "a" }] }],
    }, opts)).toThrow("Cycle");
    expect(() => validateGraph({ tasks: [{ key: "a", fn: "other.run" }] }, opts)).toThrow('"a"');
    expect(validateGraph({ tasks: [{ key: "a", fn: "tasks.run" }] }, opts).keys).toEqual(["a"]);
  });

  test("dependencies are ordered before dependents", () => {
    const g = validateGraph({
      tasks: [
        { key: "c", fn: "builtin.add", args: [{ $ref: "a" }, { $ref: "b" }] },
        { key: "b", fn: "builtin.inc", args: [1] },
        { key: "a", fn: "builtin.inc", args: [1] },
      ],
      keys: ["c"],
    }, opts);
    expect(g.order.indexOf("c")).toBe(2);
  });
});
