/**
 * Unit tests of the worker's state machine, in Dask's style (`test_worker_state_machine.py`):
 * a stimulus goes in, the instructions that come out are asserted. No processes, no sockets,
 * no clock.
 */
import { describe, expect, test } from "bun:test";
import type { DepInfo } from "../lib/messages/worker.ts";
import { type Instruction, type Stimulus, WorkerState } from "../lib/worker/state.ts";

let ids = 0;

function compute(key: string, options: { deps?: DepInfo[]; priority?: number; fn?: string } = {}): Stimulus {
  return {
    op: "compute-task",
    key,
    fn: options.fn ?? "builtin.inc",
    args: [1],
    deps: options.deps ?? [],
    priority: options.priority,
    stimulusId: `compute-${++ids}`,
  };
}

function success(key: string, value: unknown = 1, nbytes = 8): Stimulus {
  return { op: "execute-success", key, value, nbytes, duration: 0.001, stimulusId: `task-finished-${++ids}` };
}

function failure(key: string): Stimulus {
  return { op: "execute-failure", key, exception: "Error: boom", traceback: "at f", duration: 0.001, stimulusId: `task-erred-${++ids}` };
}

function free(...keys: string[]): Stimulus {
  return { op: "free-keys", keys, stimulusId: `free-${++ids}` };
}

/** The keys of the execute instructions, in order. */
function executed(out: Instruction[]): string[] {
  return out.flatMap((i) => (i.op === "execute" ? [i.task.key] : []));
}

/** The messages to the scheduler, in order. */
function sent(out: Instruction[]): Array<Record<string, unknown>> {
  return out.flatMap((i) => (i.op === "send" ? [i.msg as Record<string, unknown>] : []));
}

/** The transitions as "key: start→finish". */
function transitions(out: Instruction[]): string[] {
  return out.flatMap((i) => (i.op === "transition" ? [`${i.key}: ${i.start}→${i.finish}`] : []));
}

describe("execution", () => {
  test("a task without dependencies is executed at once and its result is sent as done", () => {
    const state = new WorkerState({ inlineLimit: 100 });
    const out = state.handleStimulus(compute("a"));
    expect(executed(out)).toEqual(["a"]);
    expect(state.tasks.get("a")!.state).toBe("executing");
    const done = state.handleStimulus(success("a", 2, 8));
    expect(sent(done)).toEqual([
      { op: "done", key: "a", nbytes: 8, value: 2, hasValue: true, duration: 0.001, stimulusId: expect.stringMatching(/^task-finished-/) },
    ]);
    expect(state.data.get("a")).toBe(2);
    expect(state.tasks.get("a")!.state).toBe("memory");
    expect(state.executing).toBe(0);
  });

  test("a result larger than the inline limit is announced without its value", () => {
    const state = new WorkerState({ inlineLimit: 4 });
    state.handleStimulus(compute("a"));
    const [msg] = sent(state.handleStimulus(success("a", "a long value", 100)));
    expect(msg.hasValue).toBeUndefined();
    expect("value" in msg).toBe(false);
    expect(state.data.get("a")).toBe("a long value");
  });

  test("no more tasks execute at once than nthreads, and a finished one starts the next", () => {
    const state = new WorkerState({ nthreads: 2 });
    const started = ["a", "b", "c", "d"].flatMap((k) => executed(state.handleStimulus(compute(k))));
    expect(started).toEqual(["a", "b"]);
    expect(state.executing).toBe(2);
    expect(state.readyCount).toBe(2);
    expect(state.tasks.get("c")!.state).toBe("ready");
    expect(executed(state.handleStimulus(success("b")))).toEqual(["c"]);
    expect(executed(state.handleStimulus(failure("a")))).toEqual(["d"]);
    expect(state.executing).toBe(2);
    expect(state.readyCount).toBe(0);
  });

  test("the ready queue runs the lowest priority first and ties in arrival order", () => {
    const state = new WorkerState({ nthreads: 1 });
    state.handleStimulus(compute("blocker"));
    state.handleStimulus(compute("p5", { priority: 5 }));
    state.handleStimulus(compute("p1-first", { priority: 1 }));
    state.handleStimulus(compute("p3", { priority: 3 }));
    state.handleStimulus(compute("p1-second", { priority: 1 }));
    const order: string[] = [];
    let next = "blocker";
    for (let i = 0; i < 4; i++) {
      [next] = executed(state.handleStimulus(success(next)));
      order.push(next);
    }
    expect(order).toEqual(["p1-first", "p1-second", "p3", "p5"]);
  });

  test("a failing task sends erred with its message and traceback and frees its thread", () => {
    const state = new WorkerState();
    state.handleStimulus(compute("a"));
    const out = state.handleStimulus(failure("a"));
    expect(sent(out)).toEqual([
      { op: "erred", key: "a", exception: "Error: boom", traceback: "at f", duration: 0.001, stimulusId: expect.stringMatching(/^task-erred-/) },
    ]);
    expect(state.tasks.get("a")!.state).toBe("error");
    expect(state.executing).toBe(0);
  });

  test("a failed task computed again (a retry) runs again", () => {
    const state = new WorkerState();
    state.handleStimulus(compute("a"));
    state.handleStimulus(failure("a"));
    expect(executed(state.handleStimulus(compute("a")))).toEqual(["a"]);
    expect(sent(state.handleStimulus(success("a")))[0].op).toBe("done");
  });

  test("a finish for an unknown key is ignored", () => {
    const state = new WorkerState();
    expect(state.handleStimulus(success("ghost"))).toEqual([]);
    expect(state.executing).toBe(0);
  });
});

describe("dependencies", () => {
  test("an inline dependency and one held here make the task ready at once", () => {
    const state = new WorkerState();
    state.handleStimulus(compute("x"));
    state.handleStimulus(success("x", 10));
    const out = state.handleStimulus(compute("z", { deps: [{ key: "y", value: 5, nbytes: 8 }, { key: "x", nbytes: 8 }] }));
    expect(executed(out)).toEqual(["z"]);
    const task = state.tasks.get("z")!;
    expect([...task.depValues!]).toEqual([["y", 5], ["x", 10]]);
  });

  test("dependencies held by peers are fetched, one gather per holder, and the task waits for them", () => {
    const state = new WorkerState();
    const out = state.handleStimulus(compute("z", {
      deps: [
        { key: "a", who: ["http://w1"], nbytes: 8 },
        { key: "b", who: ["http://w2"], nbytes: 8 },
        { key: "c", who: ["http://w1", "http://w2"], nbytes: 8 },
      ],
    }));
    expect(executed(out)).toEqual([]);
    const gathers = out.filter((i) => i.op === "gather-dep").map((i) => i.op === "gather-dep" && [i.who, i.keys]);
    expect(gathers).toEqual([["http://w1", ["a", "c"]], ["http://w2", ["b"]]]);
    expect(state.tasks.get("z")!.state).toBe("waiting");
    expect(state.fetching.get("a")!.state).toBe("flight");

    const partial = state.handleStimulus({ op: "gather-dep-success", data: new Map([["a", 1], ["c", 3]]), stimulusId: "g1" });
    expect(executed(partial)).toEqual([]);
    const rest = state.handleStimulus({ op: "gather-dep-success", data: new Map([["b", 2]]), stimulusId: "g2" });
    expect(executed(rest)).toEqual(["z"]);
    expect(Object.fromEntries(state.tasks.get("z")!.depValues!)).toEqual({ a: 1, b: 2, c: 3 });
    expect(state.fetching.size).toBe(0);
  });

  test("two tasks needing the same remote key fetch it once", () => {
    const state = new WorkerState({ nthreads: 2 });
    const first = state.handleStimulus(compute("y", { deps: [{ key: "a", who: ["http://w1"], nbytes: 8 }] }));
    const second = state.handleStimulus(compute("z", { deps: [{ key: "a", who: ["http://w1"], nbytes: 8 }] }));
    expect(first.filter((i) => i.op === "gather-dep")).toHaveLength(1);
    expect(second.filter((i) => i.op === "gather-dep")).toHaveLength(0);
    const out = state.handleStimulus({ op: "gather-dep-success", data: new Map([["a", 1]]), stimulusId: "g" });
    expect(executed(out)).toEqual(["y", "z"]);
  });

  test("a dependency nobody could give sends missing-data and forgets the task until it comes again", () => {
    const state = new WorkerState();
    state.handleStimulus(compute("z", { deps: [{ key: "a", who: ["http://w1"], nbytes: 8 }] }));
    const out = state.handleStimulus({ op: "gather-dep-failure", keys: ["a"], stimulusId: "g" });
    expect(sent(out)).toEqual([{ op: "missing-data", key: "z", dep: "a" }]);
    expect(state.tasks.has("z")).toBe(false);
    expect(state.fetching.size).toBe(0);
    // The scheduler sends it again with the value inline.
    expect(executed(state.handleStimulus(compute("z", { deps: [{ key: "a", value: 1, nbytes: 8 }] })))).toEqual(["z"]);
  });
});

describe("free", () => {
  test("freeing a result drops it", () => {
    const state = new WorkerState();
    state.handleStimulus(compute("a"));
    state.handleStimulus(success("a"));
    expect(state.handleStimulus(free("a"))).toEqual([]);
    expect(state.data.has("a")).toBe(false);
    expect(state.tasks.has("a")).toBe(false);
  });

  test("a task freed while queued never executes", () => {
    const state = new WorkerState({ nthreads: 1 });
    state.handleStimulus(compute("a"));
    state.handleStimulus(compute("b"));
    state.handleStimulus(compute("c"));
    state.handleStimulus(free("b"));
    expect(executed(state.handleStimulus(success("a")))).toEqual(["c"]);
  });

  test("a task freed while waiting for a fetch does not run when the data arrives", () => {
    const state = new WorkerState();
    state.handleStimulus(compute("z", { deps: [{ key: "a", who: ["http://w1"], nbytes: 8 }] }));
    state.handleStimulus(free("z"));
    expect(state.handleStimulus({ op: "gather-dep-success", data: new Map([["a", 1]]), stimulusId: "g" })).toEqual([]);
  });

  test("a task freed while executing has its result dropped, and computed again it keeps running", () => {
    const state = new WorkerState({ nthreads: 1 });
    state.handleStimulus(compute("a"));
    state.handleStimulus(compute("b"));
    state.handleStimulus(free("a"));
    expect(state.tasks.get("a")!.state).toBe("executing");
    // The thread frees up when it returns: the next task starts, nothing is sent.
    const out = state.handleStimulus(success("a"));
    expect(sent(out)).toEqual([]);
    expect(executed(out)).toEqual(["b"]);
    expect(state.data.has("a")).toBe(false);

    state.handleStimulus(free("b"));
    expect(executed(state.handleStimulus(compute("b")))).toEqual([]); // still running: not started twice
    expect(sent(state.handleStimulus(success("b")))[0]).toMatchObject({ op: "done", key: "b" });
  });

  test("after the scheduler was lost, a running task still holds its thread until it returns", () => {
    const state = new WorkerState({ nthreads: 1 });
    state.handleStimulus(compute("a"));
    state.handleStimulus(compute("b"));
    state.reset();
    expect(state.data.size).toBe(0);
    expect(executed(state.handleStimulus(compute("c")))).toEqual([]);
    const out = state.handleStimulus(success("a"));
    expect(sent(out)).toEqual([]);
    expect(executed(out)).toEqual(["c"]);
  });

  test("a closing worker starts no queued task", () => {
    const state = new WorkerState({ nthreads: 1 });
    state.handleStimulus(compute("a"));
    state.handleStimulus(compute("b"));
    state.close();
    const out = state.handleStimulus(success("a"));
    expect(sent(out)).toHaveLength(1);
    expect(executed(out)).toEqual([]);
  });
});

describe("transitions for plugins", () => {
  test("are reported only when asked for", () => {
    const state = new WorkerState();
    expect(transitions(state.handleStimulus(compute("a")))).toEqual([]);
  });

  test("a failing task goes released→waiting→ready→executing→error, then error→released→forgotten when freed (Dask)", () => {
    const state = new WorkerState();
    state.recordTransitions = true;
    const all = [
      ...state.handleStimulus(compute("a")),
      ...state.handleStimulus(failure("a")),
      ...state.handleStimulus(free("a")),
    ];
    expect(transitions(all)).toEqual([
      "a: released→waiting",
      "a: waiting→ready",
      "a: ready→executing",
      "a: executing→error",
      "a: error→released",
      "a: released→forgotten",
    ]);
    const erred = all.find((i) => i.op === "transition" && i.finish === "error");
    expect(erred).toMatchObject({ info: { exception: "Error: boom", traceback: "at f" } });
    expect(state.tasks.size).toBe(0);
  });

  test("a successful task goes to memory with its size, and a fetched dependency through fetch and flight", () => {
    const state = new WorkerState();
    state.recordTransitions = true;
    const all = [
      ...state.handleStimulus(compute("z", { deps: [{ key: "a", who: ["http://w1"], nbytes: 8 }] })),
      ...state.handleStimulus({ op: "gather-dep-success", data: new Map([["a", 1]]), stimulusId: "g" }),
      ...state.handleStimulus(success("z", 2, 8)),
      ...state.handleStimulus(free("z")),
    ];
    expect(transitions(all)).toEqual([
      "z: released→waiting",
      "a: released→fetch",
      "a: fetch→flight",
      "a: flight→memory",
      "z: waiting→ready",
      "z: ready→executing",
      "z: executing→memory",
      "z: memory→released",
      "z: released→forgotten",
    ]);
    expect(all.find((i) => i.op === "transition" && i.key === "z" && i.finish === "memory")).toMatchObject({ info: { nbytes: 8 } });
  });

  test("a computed task reports its dependency transfer and its compute as startstops, in done and to plugins", () => {
    const state = new WorkerState();
    state.recordTransitions = true;
    state.handleStimulus(compute("z", { deps: [{ key: "a", who: ["http://w1"], nbytes: 8 }] }));
    state.handleStimulus({ op: "gather-dep-success", data: new Map([["a", 1]]), stimulusId: "g", start: 100, stop: 100.5 });
    const out = state.handleStimulus({ ...success("z", 2, 8), start: 101, stop: 102 } as Stimulus);
    const spans = [{ action: "transfer", start: 100, stop: 100.5 }, { action: "compute", start: 101, stop: 102 }];
    expect(out.find((i) => i.op === "transition" && i.finish === "memory")).toMatchObject({ info: { startstops: spans } });
    expect(out.find((i) => i.op === "send")).toMatchObject({ msg: { op: "done", key: "z", startstops: spans } });
    state.handleStimulus(compute("bad"));
    const failed = state.handleStimulus({ op: "execute-failure", key: "bad", exception: "E", traceback: "", duration: 1, stimulusId: "f", start: 5, stop: 6 });
    expect(failed.find((i) => i.op === "send")).toMatchObject({ msg: { op: "erred", startstops: [{ action: "compute", start: 5, stop: 6 }] } });
  });

  test("a transition comes before the message it leads to", () => {
    const state = new WorkerState();
    state.recordTransitions = true;
    state.handleStimulus(compute("a"));
    const out = state.handleStimulus(success("a"));
    expect(out.map((i) => i.op)).toEqual(["transition", "send"]);
  });
});

describe("speed", () => {
  test("100,000 tasks go through compute, execute and free at tens of thousands per second or more", () => {
    const state = new WorkerState({ nthreads: 4, inlineLimit: 64 * 1024 });
    const n = 100_000;
    const started = performance.now();
    const running: string[] = [];
    for (let i = 0; i < n; i++) {
      for (const ins of state.handleStimulus(compute(`t-${i}`))) if (ins.op === "execute") running.push(ins.task.key);
    }
    for (let i = 0; i < running.length; i++) {
      for (const ins of state.handleStimulus(success(running[i], i))) if (ins.op === "execute") running.push(ins.task.key);
    }
    const keys: string[] = [];
    for (let i = 0; i < n; i++) keys.push(`t-${i}`);
    state.handleStimulus(free(...keys));
    const rate = n / ((performance.now() - started) / 1000);
    expect(running).toHaveLength(n);
    expect(state.tasks.size).toBe(0);
    // About 300,000/s on an idle machine; the bound leaves room for a loaded one.
    expect(rate).toBeGreaterThan(30_000);
  });
});
