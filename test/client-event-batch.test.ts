/**
 * The client's fast reader of event-stream batches (lib/client/event-batch.ts) against cbor-x:
 * the same events, keys in the same order, for the scheduler's own batches and for any CBOR.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { decodeEventBatch } from "../lib/client/event-batch.ts";
import { decodeCbor, encodeCbor } from "../lib/protocol.ts";
import { ComputeSpan } from "../lib/scheduler/event-types.ts";
import { appendStep, type EventStep, eventStep, text, time } from "./_event-steps.ts";
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
  const json = (value: unknown) => JSON.stringify(value, (_, v) => typeof v === "bigint" ? `${v}n` : v);
  expect(json(decodeEventBatch(bytes))).toBe(json(want));
  expect(decodeEventBatch(bytes)).toEqual(want as unknown[]);
}

/** The CBOR batches a subscriber of these topics receives for these steps (copies). */
function batches(steps: EventStep[], topics: ReadonlySet<string> | null): Uint8Array[] {
  const log = new EventLog(10_000);
  const out: Uint8Array[] = [];
  log.subscribe({ topics, deliver: (batch) => out.push(batch.cbor().slice()) });
  for (const s of steps) appendStep(log, s);
  log.flush();
  return out;
}

describe("event batches read by the client", () => {
  test("the scheduler's batches, of transitions alone or mixed with other events, read as cbor-x reads them", () => {
    fc.assert(fc.property(fc.array(eventStep, { maxLength: 25 }), (steps) => {
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
    fc.assert(fc.property(fc.array(eventStep, { minLength: 1, maxLength: 8 }), fc.nat(), fc.nat(255), (steps, where, value) => {
      for (const bytes of batches(steps, new Set(["transition"]))) {
        same(bytes.subarray(0, where % bytes.length));
        const altered = bytes.slice();
        altered[where % altered.length] = value;
        same(altered);
      }
    }), { numRuns: 300 });
  });
});
