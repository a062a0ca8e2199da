/**
 * The event log (lib/scheduler/events.ts) in-process: kept per topic class (transitions never
 * push out other events), bounded in bytes as well as count, replay in seq order, and posted
 * events checked against the limits before anyone sees them.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { type ClusterEvent, EventLog } from "../lib/scheduler/events.ts";
import { appendStep, eventStep } from "./_event-steps.ts";
import { defaultLimits, LimitError, resolveLimits } from "../lib/limits.ts";

/** A value nested `depth` deep, built without recursion. */
function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}

describe("kept per topic class", () => {
  test("a flood of transitions does not evict log or plugin events", () => {
    const log = new EventLog(10_000);
    log.append("log", { message: "first" });
    log.append("plugin", { action: "added", plugin: "p" });
    for (let i = 0; i < 100_000; i++) log.appendTransition(`k-${i}`, "waiting", "processing", "s", "w");
    const kept = log.replay(0, new Set(["log", "plugin"]));
    expect(kept.map((e) => e.topic)).toEqual(["log", "plugin"]);
    expect(log.kept.transitions).toBe(10_000);
    const transitions = log.replay(0, new Set(["transition"]));
    expect(transitions.length).toBe(10_000);
    expect(transitions[0].key).toBe("k-90000");
  });

  test("at least 10,000 transitions are kept whatever capacity is asked for", () => {
    const log = new EventLog(5);
    for (let i = 0; i < 20_000; i++) log.appendTransition(`k-${i}`, "a", "b", "s", undefined);
    expect(log.replay(0, null).length).toBe(10_000);
  });

  test("replay merges both classes in seq order and loses nothing still kept", () => {
    const log = new EventLog(10_000, { otherKept: 50 });
    const all: ClusterEvent[] = [];
    let seq = 0;
    for (let i = 0; i < 30_000; i++) {
      if (i % 7 === 0) all.push(log.append("log", { i }));
      else log.appendTransition(`k-${i}`, "a", "b", "s", undefined);
      seq++;
    }
    expect(log.lastSeq).toBe(seq);
    const replay = log.replay(0, null);
    for (let i = 1; i < replay.length; i++) expect(replay[i].seq).toBeGreaterThan(replay[i - 1].seq);
    const logs = replay.filter((e) => e.topic === "log");
    expect(logs).toEqual(all.slice(-50));
    expect(replay.filter((e) => e.topic === "transition").length).toBe(10_000);
    const since = replay[replay.length - 100].seq;
    expect(log.replay(since, null)).toEqual(replay.slice(-99));
  });

  test("the byte budget holds for many 1 MiB events and the newest are kept", () => {
    const log = new EventLog(10_000, { otherBytes: 8 * 1024 * 1024 });
    const big = "x".repeat(1024 * 1024 - 200);
    for (let i = 0; i < 100; i++) log.post("blob", { i, big });
    expect(log.kept.otherBytes).toBeLessThanOrEqual(8 * 1024 * 1024);
    const kept = log.replay(0, null);
    expect(kept.length).toBe(log.kept.others);
    expect(kept.length).toBeGreaterThanOrEqual(7);
    expect(kept.at(-1)!.i).toBe(99);
    expect(kept.map((e) => e.i)).toEqual(kept.map((_, j) => 100 - kept.length + j));
  });

  test("the count bound of other events holds", () => {
    const log = new EventLog(10_000, { otherKept: 100 });
    for (let i = 0; i < 1000; i++) log.append("log", { i });
    expect(log.kept.others).toBe(100);
    expect(log.replay(0, null)[0].i).toBe(900);
  });

  test("json gives each kept event's text once and the same text as JSON.stringify", () => {
    const log = new EventLog(10_000, { otherKept: 10 });
    log.appendTransition("k", "a", "b", "s", "w");
    const other = log.append("log", { message: "hi" });
    const [transition] = log.replay(0, new Set(["transition"]));
    expect(log.json(transition)).toBe(JSON.stringify(transition));
    expect(log.json(transition)).toBe(log.json(transition));
    expect(log.json(other)).toBe(JSON.stringify(other));
    for (let i = 0; i < 20; i++) log.append("log", { i });
    expect(log.json(other)).toBe(JSON.stringify(other));
  });
});

describe("posted events are checked before anyone sees them", () => {
  test("an event nested 100,000 deep is refused and the subscriber still receives the next event", async () => {
    const log = new EventLog();
    const received: ClusterEvent[][] = [];
    log.subscribe({ topics: null, deliver: (batch) => received.push(batch.events.map((_, i) => JSON.parse(batch.jsonAt(i)))) });
    let error: unknown;
    try {
      log.post("deep", nested(100_000));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(LimitError);
    expect((error as LimitError).limit).toBe("maxEventDepth");
    expect((error as LimitError).status).toBe(400);
    log.post("after", { ok: true });
    await new Promise((r) => setTimeout(r, 10));
    expect(received.flat().map((e) => e.topic)).toEqual(["after"]);
    expect(log.lastSeq).toBe(1);
  });

  test("six 50 MB events are refused by size and keep nothing", () => {
    const log = new EventLog();
    const big = "x".repeat(50 * 1024 * 1024);
    for (let i = 0; i < 6; i++) {
      expect(() => log.post("big", { big })).toThrow(/maxEventBytes/);
    }
    expect(log.kept.others).toBe(0);
    expect(log.kept.otherBytes).toBe(0);
  });

  test("the event size counts UTF-8 bytes", () => {
    const log = new EventLog(10_000, { limits: resolveLimits({ maxEventBytes: 100 }) });
    log.post("t", { s: "é".repeat(40) });
    expect(() => log.post("t", { s: "é".repeat(60) })).toThrow(/maxEventBytes.*at most 100 bytes/);
  });

  test("a value that is not an object is kept as {value} and a BigInt is refused as not JSON", () => {
    const log = new EventLog();
    expect(log.post("t", [1, 2]).value).toEqual([1, 2]);
    expect(log.post("t", "text").value).toBe("text");
    expect(() => log.post("t", { n: 1n })).toThrow(/cannot be encoded as JSON/);
  });

  test("a topic longer than the key limit is refused", () => {
    const log = new EventLog();
    expect(() => log.post("t".repeat(defaultLimits.maxKeyLength + 1), {})).toThrow(/maxKeyLength/);
  });
});

describe("replay matches a model of what is kept", () => {
  test("for random interleavings of transitions, scheduler events and posted events", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant("t"), fc.constant("l"), fc.integer({ min: 0, max: 3000 })), { maxLength: 400 }),
        fc.nat(),
        (ops, sinceSeed) => {
          const log = new EventLog(10_000, { otherKept: 20, otherBytes: 4000 });
          // The model: other events evicted oldest first until the new one fits in 20 and 4000 bytes.
          const others: Array<{ event: ClusterEvent; bytes: number }> = [];
          let otherBytes = 0;
          let transitions = 0;
          for (const op of ops) {
            if (op === "t") {
              log.appendTransition("k", "a", "b", "s", undefined);
              transitions++;
              continue;
            }
            const event = op === "l" ? log.append("log", { m: 1 }) : log.post("blob", { s: "x".repeat(op) });
            const bytes = JSON.stringify(event).length;
            while (others.length >= 20 || (others.length > 0 && otherBytes + bytes > 4000)) otherBytes -= others.shift()!.bytes;
            others.push({ event, bytes });
            otherBytes += bytes;
          }
          const since = sinceSeed % (log.lastSeq + 1);
          const got = log.replay(since, null);
          for (let i = 1; i < got.length; i++) if (got[i].seq <= got[i - 1].seq) return false;
          const gotOthers = got.filter((e) => e.topic !== "transition");
          const expectedOthers = others.map((o) => o.event).filter((e) => e.seq > since);
          if (gotOthers.length !== expectedOthers.length || gotOthers.some((e, i) => e !== expectedOthers[i])) return false;
          const all = log.replay(0, null);
          return all.filter((e) => e.topic === "transition").length === transitions && log.kept.otherBytes === otherBytes;
        },
      ),
      { numRuns: 300, interruptAfterTimeLimit: 15_000 },
    );
  });
});

describe("reading transitions from the columns", () => {
  test("forEachTransition visits the kept transitions after a seq, in order, without the other events", () => {
    const log = new EventLog(10_000);
    log.appendTransition("a-1", "released", "waiting", "s", undefined);
    log.append("log", { message: "between" });
    log.appendTransition("a-1", "processing", "memory", "s", "w1", [{ action: "compute", start: 1, stop: 2 }]);
    const seen: unknown[][] = [];
    const last = log.forEachTransition(0, (key, start, finish, worker, _time, seq, startstops) => seen.push([key, start, finish, worker, seq, startstops]));
    expect(seen).toEqual([["a-1", "released", "waiting", undefined, 1, undefined], ["a-1", "processing", "memory", "w1", 3, [{ action: "compute", start: 1, stop: 2 }]]]);
    expect(last).toBe(3);
    expect(log.forEachTransition(last, () => seen.push([]))).toBe(3);
    expect(log.transitionCount).toBe(2);
  });

  test("a watching reader is called every half ring, so that it reads every transition before it is pushed out", () => {
    const log = new EventLog(10_000);
    let since = 0;
    let read = 0;
    const unwatch = log.watchTransitions(() => {
      since = log.forEachTransition(since, () => read++);
    });
    for (let i = 0; i < 100_000; i++) log.appendTransition(`k-${i}`, "waiting", "processing", "s", "w");
    since = log.forEachTransition(since, () => read++);
    expect(read).toBe(100_000);
    unwatch();
    for (let i = 0; i < 30_000; i++) log.appendTransition(`k-${i}`, "processing", "memory", "s", "w");
    let after = 0;
    log.forEachTransition(since, () => after++);
    expect(after).toBe(10_000); // the ring wrapped: what is kept, the rest is gone
  });

  test("a subscriber that takes no transitions gets the other events live and no transition", async () => {
    const log = new EventLog(10_000);
    const got: string[] = [];
    const off = log.subscribe({ topics: null, transitions: false, deliver: (batch) => got.push(...batch.events.map((e) => e.topic)) }, 0);
    log.appendTransition("k", "released", "waiting", "s", undefined);
    log.append("worker", { action: "add" });
    await new Promise((r) => setTimeout(r, 5));
    expect(got).toEqual(["worker"]);
    off();
  });
});

describe("a tick's encodings, written from the columns", () => {
  /** What a transition event is as an object, in the order its fields are written. */
  function expected(seq: number, time: number, key: string, start: string, finish: string, stimulusId: string, worker: string | undefined, startstops: unknown[] | undefined): ClusterEvent {
    const e: ClusterEvent = { seq, topic: "transition", time, key, start, finish, stimulusId };
    if (worker !== undefined) e.worker = worker;
    if (startstops !== undefined) e.startstops = startstops;
    return e;
  }
  test("JSON texts, arrays, lines and CBOR (whole and per event) are the events as JSON.stringify and cbor-x see them, for every topic filter", async () => {
    const { decodeCbor } = await import("../lib/protocol.ts");
    fc.assert(fc.property(fc.array(eventStep, { maxLength: 30 }), (steps) => {
      const log = new EventLog(10_000);
      const filters: Array<ReadonlySet<string> | null> = [null, new Set(["transition"]), new Set(["log", "alerts"])];
      const got = filters.map(() => [] as Array<() => void>);
      const all: ClusterEvent[] = [];
      filters.forEach((topics, f) =>
        log.subscribe({
          topics,
          deliver: (batch) => {
            const want = all.filter((e) => topics === null || topics.has(e.topic));
            // Checked while it is delivered: a batch is valid then.
            expect(batch.length).toBe(want.length);
            for (let i = 0; i < batch.length; i++) {
              expect(batch.jsonAt(i)).toBe(JSON.stringify(want[i]));
              expect(decodeCbor(batch.cborAt(i).slice())).toEqual(want[i]);
            }
            expect(JSON.parse(batch.jsonArray())).toEqual(JSON.parse(JSON.stringify(want)));
            expect(batch.jsonLines()).toBe(want.map((e) => JSON.stringify(e) + "\n").join(""));
            expect(new TextDecoder().decode(batch.jsonLinesBytes())).toBe(batch.jsonLines());
            expect(decodeCbor(batch.cbor())).toEqual(want);
            expect(batch.events).toEqual(want);
            expect(batch.nonTransitions()).toEqual(want.filter((e) => e.topic !== "transition"));
            got[f].push(() => {});
          },
        })
      );
      for (const s of steps) {
        const event = appendStep(log, s);
        // A transition as it was appended (its spans as given), not as the log gives it back.
        all.push(s.kind === "transition" ? expected(event.seq, event.time, s.key, s.start, s.finish, s.stimulus, s.worker, s.startstops) : event);
      }
      log.flush();
      for (let f = 0; f < filters.length; f++) {
        const want = all.filter((e) => filters[f] === null || filters[f]!.has(e.topic)).length;
        expect(got[f].length).toBe(want > 0 ? 1 : 0);
      }
    }), { numRuns: 300 });
  });

  test("a tick longer than half the ring is delivered before its first transitions could be pushed out", () => {
    const log = new EventLog(10_000);
    let delivered = 0;
    let firstKey = "";
    log.subscribe({
      topics: null,
      deliver: (batch) => {
        if (delivered === 0) firstKey = JSON.parse(batch.jsonAt(0)).key;
        delivered += batch.length;
      },
    });
    for (let i = 0; i < 25_000; i++) log.appendTransition(`k-${i}`, "waiting", "processing", "s", "w");
    log.flush();
    expect(delivered).toBe(25_000);
    expect(firstKey).toBe("k-0");
  });
});
