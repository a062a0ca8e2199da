/**
 * The client's fast reader of event-stream batches (lib/client/event-batch.ts) against cbor-x:
 * the same events, keys in the same order, for the scheduler's own batches and for any CBOR.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { decodeEventBatch } from "../lib/client/event-batch.ts";
import { decodeCbor, encodeCbor } from "../lib/protocol.ts";
import { ComputeSpan } from "../lib/scheduler/event-types.ts";
import { EventLog } from "../lib/scheduler/events.ts";

/** Decodes with both; both throw, or both give the same JSON text (same values, same key order). */
function same(bytes: Uint8Array): void {
  let want: unknown;
  let wantError: unknown;
  try {
    want = decodeCbor(bytes);
  } catch (err) {
    wantError = err;
  }
  if (wantError !== undefined) {
    expect(() => decodeEventBatch(bytes)).toThrow(SyntaxError);
    return;
  }
  // Key order counts; an altered byte can make a 64-bit integer, which cbor-x gives as a BigInt.
  const text = (value: unknown) => JSON.stringify(value, (_, v) => typeof v === "bigint" ? `${v}n` : v);
  expect(text(decodeEventBatch(bytes))).toBe(text(want));
  expect(decodeEventBatch(bytes)).toEqual(want as unknown[]);
}

const text = fc.string({ unit: "binary", maxLength: 30 });
const time = fc.oneof(fc.constantFrom(1764472000.125, 0, 7, 2 ** 33), fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => x === 0 ? 0 : x));
const span = fc.oneof(
  fc.tuple(time, time).map(([start, stop]) => new ComputeSpan(start, stop)),
  fc.record({ action: fc.oneof(fc.constantFrom("compute", "transfer"), text), start: time, stop: time }),
  fc.record({ start: time, stop: time, action: fc.constant("compute") }),
  fc.record({ action: fc.constant("transfer"), start: time, stop: time, source: text }),
);
const step = fc.oneof(
  fc.record({
    kind: fc.constant("transition" as const),
    key: text,
    start: fc.constantFrom("released", "waiting", "processing", "memory"),
    finish: fc.constantFrom("waiting", "processing", "memory", "forgotten", "erred"),
    stimulus: fc.oneof(text, fc.constantFrom("task-finished-1", "update-graph-2")),
    worker: fc.option(fc.oneof(text, fc.constantFrom("tcp://127.0.0.1:1", "w-é")), { nil: undefined }),
    startstops: fc.option(fc.oneof(fc.tuple(time, time).map(([a, b]) => [new ComputeSpan(a, b)]), fc.array(span, { maxLength: 4 })), { nil: undefined }),
  }),
  fc.record({ kind: fc.constant("other" as const), topic: fc.constantFrom("log", "alerts"), message: text }),
);

type Step = typeof step extends fc.Arbitrary<infer T> ? T : never;

/** The CBOR batches a subscriber of these topics receives for these steps (copies). */
function batches(steps: Step[], topics: ReadonlySet<string> | null): Uint8Array[] {
  const log = new EventLog(10_000);
  const out: Uint8Array[] = [];
  log.subscribe({ topics, deliver: (batch) => out.push(batch.cbor().slice()) });
  for (const s of steps) {
    if (s.kind === "transition") log.appendTransition(s.key, s.start, s.finish, s.stimulus, s.worker, s.startstops);
    else log.append(s.topic, { message: s.message });
  }
  log.flush();
  return out;
}

describe("event batches read by the client", () => {
  test("the scheduler's batches, of transitions alone or mixed with other events, read as cbor-x reads them", () => {
    fc.assert(fc.property(fc.array(step, { maxLength: 25 }), (steps) => {
      for (const topics of [new Set(["transition"]), null]) for (const bytes of batches(steps, topics)) same(bytes);
    }), { numRuns: 300 });
  });

  test("a transition batch takes the fast path: it gives the events the log kept", () => {
    const log = new EventLog(10_000);
    const got: unknown[][] = [];
    log.subscribe({ topics: new Set(["transition"]), deliver: (batch) => got.push(decodeEventBatch(batch.cbor())) });
    log.appendTransition("inc-1", "processing", "memory", "task-finished-1", "w1", [new ComputeSpan(1.5, 2.25)]);
    log.appendTransition("inc-é", "released", "waiting", "update-graph-2", undefined);
    log.flush();
    expect(got[0]).toEqual(log.replay(0, null).map((e) => JSON.parse(JSON.stringify(e))));
  });

  test("any CBOR array, and cut or altered batches, read as cbor-x reads them or fail as it does", () => {
    fc.assert(fc.property(fc.array(fc.dictionary(fc.constantFrom("seq", "topic", "time", "key", "start", "finish", "stimulusId", "worker", "startstops", "x"), fc.oneof(text, time, fc.integer())), { maxLength: 5 }), (events) => {
      same(encodeCbor(events).slice());
    }), { numRuns: 300 });
    fc.assert(fc.property(fc.array(step, { minLength: 1, maxLength: 8 }), fc.nat(), fc.nat(255), (steps, where, value) => {
      for (const bytes of batches(steps, new Set(["transition"]))) {
        same(bytes.subarray(0, where % bytes.length));
        const altered = bytes.slice();
        altered[where % altered.length] = value;
        same(altered);
      }
    }), { numRuns: 300 });
  });
});
