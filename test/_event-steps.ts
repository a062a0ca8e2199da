/**
 * What the event log's property tests append: transitions of any texts (some holding the JSON
 * array separator `},{"seq":`), with the scheduler's own compute span or spans of any shape,
 * events of other topics, and events that nest `{"seq": …}` objects. Shared by the tests of the
 * log's encodings (events.test.ts) and of the client's batch reader (client-event-batch.test.ts).
 */
import fc from "fast-check";
import { ComputeSpan } from "../lib/scheduler/event-types.ts";
import type { ClusterEvent, EventLog } from "../lib/scheduler/events.ts";

/** Texts that hold the separator of events in a JSON array (escaped there, so never taken for one). */
export const text = fc.oneof(fc.string({ unit: "binary", maxLength: 40 }), fc.constantFrom('},{"seq":1', '"},{"seq":'));
/** Times and span bounds (cbor-x writes -0 as 0). */
export const time = fc.oneof(fc.constantFrom(1764472000.125, 0, 7, 2 ** 33), fc.double({ noNaN: true }).map((x) => x === 0 ? 0 : x));
/** Spans as workers send them (written by hand) and of other shapes (written by cbor-x). */
const span = fc.oneof(
  fc.record({ action: fc.oneof(fc.constantFrom("compute", "transfer"), text), start: time, stop: time }),
  fc.record({ start: time, stop: time, action: fc.constant("compute") }),
  fc.record({ action: fc.constant("transfer"), start: time, stop: time, source: text }),
  fc.record({ action: fc.constant("compute"), start: fc.constant("x"), stop: time }),
);
/** The scheduler's own lone compute span (kept as two numbers in the columns), or spans as they come. */
const spans = fc.oneof(fc.tuple(time, time).map(([start, stop]) => [new ComputeSpan(start, stop)]), fc.array(span, { maxLength: 25 }));

/** One thing appended to the log. */
export const eventStep = fc.oneof(
  fc.record({
    kind: fc.constant("transition" as const),
    key: text,
    start: fc.constantFrom("released", "waiting", "processing", "memory"),
    finish: fc.constantFrom("waiting", "processing", "memory", "forgotten", "erred"),
    stimulus: fc.oneof(text, fc.constantFrom("task-finished-1", "task-finished-2")),
    worker: fc.option(fc.oneof(text, fc.constantFrom("http://127.0.0.1:1", "w-é")), { nil: undefined }),
    startstops: fc.option(spans, { nil: undefined }),
  }),
  fc.record({ kind: fc.constant("other" as const), topic: fc.constantFrom("log", "worker", "alerts"), message: text }),
  // An event whose JSON holds the separator itself: a tick's JSON is then made event by event.
  fc.record({ kind: fc.constant("nested" as const), topic: fc.constant("alerts"), message: text }),
);

export type EventStep = typeof eventStep extends fc.Arbitrary<infer T> ? T : never;

/** Appends one step to the log; returns the event it made (a transition's as the log replays it). */
export function appendStep(log: EventLog, s: EventStep): ClusterEvent {
  if (s.kind === "transition") {
    log.appendTransition(s.key, s.start, s.finish, s.stimulus, s.worker, s.startstops);
    return log.replay(log.lastSeq - 1, null)[0];
  }
  if (s.kind === "nested") return log.post(s.topic, { list: [{ seq: 1 }, { seq: 2, message: s.message }] });
  return log.append(s.topic, { message: s.message });
}
