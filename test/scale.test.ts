/**
 * What keeps the scheduler smooth at scale, tested in-process: graphs validated, added and
 * scheduled in slices give what the one-piece path gives and never leave a graph half added;
 * the pipeline of a worker grows with its round trip; queued root tasks go to the worker that
 * freed a slot; the event log makes no object when no one listens.
 */
import { describe, expect, test } from "bun:test";
import { ConflictError } from "../lib/scheduler/errors.ts";
import { EventLog } from "../lib/scheduler/events.ts";
import { validateGraph, validateGraphSliced } from "../lib/scheduler/graph.ts";
import { SchedulerState } from "../lib/scheduler/state.ts";
import { Results } from "../lib/scheduler/results.ts";
import type { WorkerLinks } from "../lib/scheduler/worker-link.ts";

function mapGraph(n: number, prefix = "m") {
  const tasks = Array.from({ length: n }, (_, i) => ({ key: `${prefix}-${i}`, fn: "builtin.inc", args: [i] }));
  return { tasks, keys: tasks.map((t) => t.key) };
}

function treeGraph(leaves: number) {
  const tasks: Array<{ key: string; fn: string; args: unknown[] }> = [];
  let level = Array.from({ length: leaves }, (_, i) => {
    tasks.push({ key: `leaf-${i}`, fn: "builtin.identity", args: [1] });
    return `leaf-${i}`;
  });
  let n = 0;
  while (level.length > 1) {
    const next: string[] = [];
    for (let i = 0; i < level.length; i += 2) {
      if (i + 1 >= level.length) {
        next.push(level[i]);
        continue;
      }
      const key = `add-${n++}`;
      tasks.push({ key, fn: "builtin.add", args: [{ $ref: level[i] }, { $ref: level[i + 1] }] });
      next.push(key);
    }
    level = next;
  }
  return { tasks, keys: [level[0]] };
}

function drive<T>(steps: Generator<unknown, T>, between?: () => void): { value: T; slices: number } {
  let slices = 0;
  for (;;) {
    const next = steps.next();
    between?.();
    if (next.done) return { value: next.value, slices };
    slices++;
  }
}

const context = (state: SchedulerState) => ({ existing: (k: string) => state.tasks.has(k), knownModules: null });

describe("graphs in slices", () => {
  test("sliced validation gives the same graph as validation in one piece, and the same errors", async () => {
    const graph = treeGraph(3000);
    const state = new SchedulerState();
    const whole = validateGraph(graph, context(state));
    const sliced = await validateGraphSliced(graph, context(state), 0.01);
    expect(sliced.order).toEqual(whole.order);
    expect(sliced.keys).toEqual(whole.keys);
    expect(sliced.tasks.map((t) => [t.key, t.refs, t.rank])).toEqual(whole.tasks.map((t) => [t.key, t.refs, t.rank]));
    const cyclic = { tasks: [{ key: "a", fn: "builtin.inc", args: [{ $ref: "b" }] }, { key: "b", fn: "builtin.inc", args: [{ $ref: "a" }] }] };
    await expect(validateGraphSliced(cyclic, context(state))).rejects.toThrow(/Cycle/);
    await expect(validateGraphSliced({ tasks: [{ key: "x", fn: "builtin.inc", args: [{ $ref: "nope" }] }] }, context(state))).rejects.toThrow(/unknown key "nope"/);
  });

  test("a tree added and scheduled in slices makes the same transitions as in one piece", () => {
    const run = (sliced: boolean) => {
      const state = new SchedulerState();
      const ws = state.addWorker({ name: "w", address: "", nthreads: 1, nanny: false, modules: [], pid: 1 }, 0);
      state.workerReady(ws, "ready").clear();
      const client = state.addClient("c");
      const graph = validateGraph(treeGraph(5000), context(state));
      const log: string[] = [];
      const take = () => {
        const fx = state.effects;
        for (let i = 0; i < fx.length; i++) log.push(`${fx.tasks[i].key} ${fx.starts[i]}>${fx.finishes[i]}`);
        fx.clear();
      };
      if (sliced) {
        const added = drive(state.addGraphSlices(client, graph, 100));
        expect(added.slices).toBeGreaterThan(10);
        expect(drive(state.scheduleGraphSlices(added.value, "s", 100), take).slices).toBeGreaterThan(10);
      } else {
        state.updateGraph(client, graph, "s");
      }
      take();
      return { log, counts: { ...state.counts } };
    };
    const whole = run(false);
    const sliced = run(true);
    expect(sliced.counts).toEqual(whole.counts);
    expect(sliced.log).toEqual(whole.log);
  });

  test("keys released and a client removed in slices make the same transitions as in one piece", () => {
    const run = (how: "whole" | "sliced", what: "release" | "remove") => {
      const state = new SchedulerState();
      const ws = state.addWorker({ name: "w", address: "", nthreads: 2, nanny: false, modules: [], pid: 1 }, 0);
      state.workerReady(ws, "ready").clear();
      const client = state.addClient("c");
      const map = mapGraph(3000);
      const tree = treeGraph(2000);
      state.updateGraph(client, validateGraph({ tasks: [...map.tasks, ...tree.tasks], keys: [...map.keys, ...tree.keys] }, context(state)), "s").clear();
      // Some results in, so that tasks in memory, processing, queued and waiting are let go.
      for (const ts of [...ws.processingTasks].slice(0, 2)) state.taskFinished(ws, { key: ts.key, nbytes: 8 }, `done-${ts.key}`).clear();
      const log: string[] = [];
      const take = () => {
        const fx = state.effects;
        for (let i = 0; i < fx.length; i++) log.push(`${fx.tasks[i].key} ${fx.starts[i]}>${fx.finishes[i]}`);
        fx.clear();
      };
      const keys = [...map.keys, ...tree.keys];
      if (how === "sliced") {
        const steps = what === "release" ? state.releaseKeysSlices(client, keys, "r", 100) : state.removeClientSlices("c", "r", 100);
        expect(drive(steps, take).slices).toBeGreaterThan(10);
      } else if (what === "release") state.releaseKeys(client, keys, "r");
      else state.removeClient("c", "r");
      take();
      return { log: log.sort(), counts: { ...state.counts }, tasks: state.tasks.size, clients: state.clients.size };
    };
    for (const what of ["release", "remove"] as const) {
      const whole = run("whole", what);
      const sliced = run("sliced", what);
      expect(sliced).toEqual(whole);
      expect(whole.log.length).toBeGreaterThan(5000);
      expect(whole.clients).toBe(what === "remove" ? 0 : 1);
    }
  });

  test("a restart while a graph is added takes back what was added: nothing is half submitted", () => {
    const state = new SchedulerState();
    const client = state.addClient("c");
    const graph = validateGraph(mapGraph(10_000), context(state));
    const steps = state.addGraphSlices(client, graph, 1000);
    for (let i = 0; i < 15; i++) steps.next();
    expect(state.tasks.size).toBeGreaterThan(0);
    state.forgetAll("restart").clear();
    expect(() => {
      for (;;) if (steps.next().done) break;
    }).toThrow(ConflictError);
    expect(state.tasks.size).toBe(0);
    expect(state.counts.released).toBe(0);
  });

  test("whoever waits for a task of a graph taken back is woken, and gathers it as missing", async () => {
    const state = new SchedulerState();
    const results = new Results(state, {} as WorkerLinks);
    const client = state.addClient("c");
    state.updateGraph(client, validateGraph({ tasks: [{ key: "base", fn: "builtin.inc", args: [1] }] }, context(state)), "s").clear();
    const graph = validateGraph({ tasks: [...mapGraph(5000).tasks, { key: "top", fn: "builtin.inc", args: [{ $ref: "base" }] }] }, context(state));
    const steps = state.addGraphSlices(client, graph, 500);
    while (state.tasks.size < 1000) steps.next();
    const key = [...state.tasks.keys()].find((k) => k !== "base")!;
    let woken = false;
    const waited = results.waitForKeys([key]).then((done) => woken = done);
    const gathered = results.gather([key], true);
    expect(results.waiting).toBe(true);
    state.releaseKeys(client, ["base"], "release").clear();
    expect(() => {
      for (;;) if (steps.next().done) break;
    }).toThrow(/forgotten while the graph was added/);
    const fx = state.effects;
    results.wake(fx.finished, fx.finishedCount);
    fx.clear();
    await waited;
    expect(woken).toBe(true);
    expect(results.waiting).toBe(false);
    expect(await gathered).toEqual({ values: [undefined], errors: {}, missing: [key] });
  });

  test("a dependency forgotten while a graph is added fails the graph and takes it back", () => {
    const state = new SchedulerState();
    const client = state.addClient("c");
    state.updateGraph(client, validateGraph({ tasks: [{ key: "base", fn: "builtin.inc", args: [1] }] }, context(state)), "s").clear();
    const graph = validateGraph({ tasks: [...mapGraph(5000).tasks, { key: "top", fn: "builtin.inc", args: [{ $ref: "base" }] }] }, context(state));
    const steps = state.addGraphSlices(client, graph, 500);
    steps.next();
    state.releaseKeys(client, ["base"], "release").clear();
    expect(state.tasks.has("base")).toBe(false);
    expect(() => {
      for (;;) if (steps.next().done) break;
    }).toThrow(/forgotten while the graph was added/);
    expect(state.tasks.size).toBe(0);
  });
});

describe("placement at scale", () => {
  test("a worker behind a slow link gets a deeper pipeline than a near one", () => {
    const state = new SchedulerState();
    const near = state.addWorker({ name: "near", address: "", nthreads: 1, nanny: false, modules: [], pid: 1 }, 0);
    const far = state.addWorker({ name: "far", address: "", nthreads: 1, nanny: false, modules: [], pid: 2 }, 0);
    for (let i = 0; i < 500; i++) state.placement.recordDuration(0.0005);
    far.rttSeconds = 0.05;
    near.rttSeconds = 0.0005;
    expect(state.placement.capacity(near)).toBeLessThanOrEqual(5);
    expect(state.placement.capacity(far)).toBeGreaterThanOrEqual(100);
  });

  test("with 100 workers, a finished task refills only its own worker from the queue", () => {
    const state = new SchedulerState();
    const workers = Array.from({ length: 100 }, (_, i) => {
      const ws = state.addWorker({ name: `w${i}`, address: "", nthreads: 1, nanny: false, modules: [], pid: i }, 0);
      state.workerReady(ws, "ready").clear();
      return ws;
    });
    const client = state.addClient("c");
    state.updateGraph(client, validateGraph(mapGraph(100_000), context(state)), "s").clear();
    const cap = state.placement.capacity(workers[0]);
    for (const ws of workers) expect(ws.processingTasks.size).toBe(cap);
    expect(state.counts.queued).toBe(100_000 - 100 * cap);
    const ws = workers[42];
    const [first] = ws.processingTasks;
    const fx = state.taskFinished(ws, { key: first.key, nbytes: 8, value: 2, hasValue: true }, "done");
    const recipients = new Set(fx.recipients.slice(0, fx.messageCount).map((w) => w.name));
    expect([...recipients]).toEqual(["w42"]);
    expect(ws.processingTasks.size).toBe(cap);
    fx.clear();
  });

  test("a burst of root tasks on 100 workers is placed evenly, looking at a few workers per task", () => {
    const state = new SchedulerState();
    const workers = Array.from({ length: 100 }, (_, i) => {
      const ws = state.addWorker({ name: `w${i}`, address: "", nthreads: 1 + (i % 2), nanny: false, modules: [], pid: i }, 0);
      state.workerReady(ws, "ready").clear();
      return ws;
    });
    for (let i = 0; i < 500; i++) state.placement.recordDuration(0.00001);
    const placement = state.placement;
    let looks = 0;
    const capacity = placement.capacity.bind(placement);
    placement.capacity = (ws) => (looks++, capacity(ws));
    const client = state.addClient("c");
    // Fewer tasks than free slots: every task goes straight to a worker, the least busy one.
    state.updateGraph(client, validateGraph(mapGraph(15_000), context(state)), "s").clear();
    expect(state.counts.processing).toBe(15_000);
    const loads = workers.map((ws) => ws.processingTasks.size / ws.nthreads);
    expect(Math.max(...loads) - Math.min(...loads)).toBeLessThanOrEqual(1);
    // A pass over all 100 workers per task would be 1,500,000 looks.
    expect(looks).toBeLessThan(15_000 * 4);
  });

  test("a worker with tasks queued is refilled once a batch of slots is free, not per finished task", () => {
    const state = new SchedulerState();
    const ws = state.addWorker({ name: "w", address: "", nthreads: 1, nanny: false, modules: [], pid: 1 }, 0);
    state.workerReady(ws, "ready").clear();
    for (let i = 0; i < 500; i++) state.placement.recordDuration(0.00001);
    const client = state.addClient("c");
    state.updateGraph(client, validateGraph(mapGraph(2_000), context(state)), "s").clear();
    const cap = state.placement.capacity(ws);
    const batch = state.placement.refillBatch(ws);
    expect(ws.processingTasks.size).toBe(cap);
    expect(batch).toBeGreaterThan(1);
    let computes = 0;
    let frames = 0;
    for (let i = 0; i < batch; i++) {
      const [first] = ws.processingTasks;
      const fx = state.taskFinished(ws, { key: first.key, nbytes: 8, value: 2, hasValue: true, duration: 0.00001 }, `done-${i}`);
      const sent = fx.messages.slice(0, fx.messageCount).filter((m) => m.op === "compute").length;
      if (sent > 0) frames++;
      computes += sent;
      fx.clear();
    }
    expect(frames).toBe(1);
    expect(computes).toBe(batch);
    expect(ws.processingTasks.size).toBe(cap);
  });
});

describe("events nobody listens to", () => {
  test("transitions are kept and replayed without a listener, and delivered once one subscribes", async () => {
    const log = new EventLog(10_000);
    for (let i = 0; i < 100; i++) log.appendTransition(`k-${i}`, "waiting", "processing", "s", i % 2 ? "w" : undefined);
    const replay = log.replay(0, null);
    expect(replay.length).toBe(100);
    expect(replay[1]).toEqual({ seq: 2, topic: "transition", time: replay[1].time, key: "k-1", start: "waiting", finish: "processing", stimulusId: "s", worker: "w" });
    expect("worker" in replay[0]).toBe(false);
    const batches: string[] = [];
    log.subscribe({ topics: new Set(["transition"]), deliver: (b) => batches.push(b.jsonLines()) });
    log.appendTransition("late", "processing", "memory", "s2", "w");
    log.append("log", { message: "not a transition" });
    await new Promise((r) => setTimeout(r, 10));
    expect(batches.join("").trim().split("\n").map((l) => JSON.parse(l).key)).toEqual(["late"]);
  });
});

describe("event batches as CBOR", () => {
  test("the hand-written CBOR of a batch decodes to the same events as cbor-x's, mixed with other events", async () => {
    const { decodeCbor } = await import("../lib/protocol.ts");
    const log = new EventLog(10_000);
    const got: unknown[] = [];
    log.subscribe({ topics: null, deliver: (b) => got.push(decodeCbor(b.cbor()), b.events.map((e) => ({ ...e }))) });
    log.appendTransition("k-é-1", "released", "waiting", "s-1", undefined);
    log.append("log", { nested: { a: [1, 2, "x"] } });
    log.appendTransition("k".repeat(300), "processing", "memory", "task-finished-9", "worker-ü");
    log.post("transition", { posted: true });
    await new Promise((r) => setTimeout(r, 10));
    expect(got.length).toBe(2);
    expect(got[0]).toEqual(got[1]);
  });
});

describe("big CBOR bodies decoded in slices", () => {
  test("a 1 MB+ graph decodes in slices to exactly what decodeCbor gives, and malformed input is a SyntaxError", async () => {
    const { decodeCbor, encodeCbor } = await import("../lib/protocol.ts");
    const { decodeCborSliced } = await import("../lib/scheduler/cbor-slices.ts");
    const tasks = Array.from({ length: 30_000 }, (_, i) => ({
      key: `k-é-${i}`, fn: "builtin.inc", args: [i, -i, i / 3, null, true, { $ref: `k-${i - 1}` }, new Uint8Array([1, 2, 3])],
      ...(i % 1000 === 0 ? { annotations: { big: "x".repeat(300_000) } } : {}),
    }));
    const value = { tasks, keys: tasks.map((t) => t.key), nested: { deep: [1, [2, [3]]] } };
    const bytes = encodeCbor(value).slice();
    expect(bytes.length).toBeGreaterThan(1_000_000);
    const sliced = await decodeCborSliced(bytes, 1);
    expect(sliced).toEqual(decodeCbor(bytes));
    await expect(decodeCborSliced(bytes.subarray(0, bytes.length - 10))).rejects.toThrow(SyntaxError);
    const extra = new Uint8Array(bytes.length + 1);
    extra.set(bytes);
    await expect(decodeCborSliced(extra)).rejects.toThrow(SyntaxError);
  });

  test("a client's frame (one message holding the graph) is walked too: the loop runs between its runs of tasks", async () => {
    const { decodeCbor, encodeFrame } = await import("../lib/protocol.ts");
    const { decodeCborSliced } = await import("../lib/scheduler/cbor-slices.ts");
    const tasks = Array.from({ length: 40_000 }, (_, i) => ({ key: `f-${i}`, fn: "builtin.inc", args: [i] }));
    const bytes = encodeFrame([{ op: "graph", id: 7, graph: { tasks, keys: tasks.map((t) => t.key) } }]).slice();
    let turns = 0;
    let done = false;
    const tick = () => {
      turns++;
      if (!done) setTimeout(tick, 0);
    };
    tick();
    const sliced = await decodeCborSliced(bytes, 0);
    done = true;
    expect(sliced).toEqual(decodeCbor(bytes));
    // 40,000 tasks and as many keys: about 40 runs of 2,048, each followed by a turn of the loop.
    expect(turns).toBeGreaterThan(20);
  });
});

describe("big JSON bodies parsed in slices", () => {
  const encode = (text: string) => new TextEncoder().encode(text);
  /** What the one-piece path gives: a value, or the error's class. */
  const whole = (bytes: Uint8Array) => {
    try {
      return { value: JSON.parse(new TextDecoder().decode(bytes)) };
    } catch (err) {
      return { error: (err as Error).name };
    }
  };
  /** Texts and runs of at least `wholeBytes` are walked, shorter runs parsed whole. */
  const sliced = async (bytes: Uint8Array, wholeBytes: number) => {
    const { parseJsonSliced } = await import("../lib/scheduler/json-slices.ts");
    try {
      return { value: await parseJsonSliced(bytes, { wholeBytes, runItems: 3, sliceMs: 2 }) };
    } catch (err) {
      return { error: (err as Error).name };
    }
  };

  test("a 1 MB+ graph parses in slices to exactly what JSON.parse gives, and malformed input is a SyntaxError", async () => {
    const { parseJsonSliced } = await import("../lib/scheduler/json-slices.ts");
    const tasks = Array.from({ length: 30_000 }, (_, i) => ({
      key: `k-é-"\\-${i}`, fn: "builtin.inc", args: [i, -i, i / 3, null, true, { $ref: `k-${i - 1}` }, "]},[{"],
      ...(i % 1000 === 0 ? { annotations: { big: "x".repeat(300_000) } } : {}),
    }));
    const value = { tasks, keys: tasks.map((t) => t.key), nested: { deep: [1, [2, [3]]] }, __proto__: [1] };
    const text = ` \n\uFEFF${JSON.stringify(value)}\t`.replace("\uFEFF", "");
    const bytes = encode(`\uFEFF${text}`);
    expect(bytes.length).toBeGreaterThan(1_000_000);
    const parsed = await parseJsonSliced(bytes, { sliceMs: 1 });
    expect(parsed).toEqual(JSON.parse(text));
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
    expect(Object.hasOwn(parsed as object, "__proto__")).toBe(Object.hasOwn(JSON.parse(text), "__proto__"));
    await expect(parseJsonSliced(bytes.subarray(0, bytes.length - 10))).rejects.toThrow(SyntaxError);
    await expect(parseJsonSliced(encode(`${text},`))).rejects.toThrow(SyntaxError);
    await expect(parseJsonSliced(encode(text.replace(']},{"key"', '}},{"key"')))).rejects.toThrow(SyntaxError);
  });

  test("any text, valid or mutated, parses in slices as JSON.parse does or fails as it does", async () => {
    const fc = (await import("fast-check")).default;
    const cuts = ["", ",", "]", "}", "[", "{", '"', "\\", " ", ":", "\uFEFF", "1", "nul"];
    await fc.assert(fc.asyncProperty(
      fc.jsonValue({ maxDepth: 4 }),
      fc.array(fc.tuple(fc.nat(), fc.constantFrom(...cuts), fc.nat(3)), { maxLength: 3 }),
      fc.nat(300),
      async (value, edits, wholeBytes) => {
        let text = JSON.stringify({ tasks: [value, [value, value], value, { a: value }], x: value }, null, edits.length % 2 ? 1 : undefined);
        for (const [at, insert, drop] of edits) {
          const i = at % (text.length + 1);
          text = text.slice(0, i) + insert + text.slice(i + drop);
        }
        const bytes = encode(text);
        expect(await sliced(bytes, wholeBytes)).toEqual(whole(bytes));
      },
    ), { numRuns: 600 });
  }, 60_000);

  test("a value nested 200,000 deep is judged by one JSON.parse, not walked level by level", async () => {
    for (const text of ["[".repeat(200_000) + "]".repeat(200_000), `{"tasks":[${'{"a":'.repeat(100_000)}1${"}".repeat(100_000)}]}`]) {
      const bytes = encode(text);
      const t0 = performance.now();
      const outcome = await sliced(bytes, 256 * 1024);
      expect(performance.now() - t0).toBeLessThan(5_000);
      expect(outcome.error ?? "parsed").toBe(whole(bytes).error ?? "parsed");
    }
  });

  test("the answer listing a million keys streams as the JSON JSON.stringify makes", async () => {
    const { jsonArrayStream } = await import("../lib/scheduler/json-slices.ts");
    for (const keys of [[], ["a"], Array.from({ length: 100_001 }, (_, i) => `k-"${i}`)]) {
      const text = await new Response(jsonArrayStream("keys", keys, 1000)).text();
      expect(text).toBe(JSON.stringify({ keys }));
    }
  });
});
