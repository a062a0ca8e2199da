/**
 * The `amqp` plugin's options, message body, counters and the typed messages between the
 * scheduler's thread (plugins/amqp-host.ts) and the publishing thread (plugins/amqp-thread.ts).
 * Pure: no amqplib here, so the registry entry (plugins/amqp.ts) loads nothing heavy.
 *
 * @module
 */
import type { ReplyMessage } from "../lib/rpc.ts";
import type { SchedulerTaskStateName } from "../lib/plugins/types.ts";

/** Options of the `amqp` plugin. */
export interface AmqpOptions {
  /** The broker, e.g. `amqp://guest:guest@127.0.0.1:5672/vhost`. */
  url: string;
  /** The queue that receives the transitions; declared durable. */
  queue: string;
  /** An exchange to publish to, declared durable (type `direct`) and bound to `queue`. @default the default exchange */
  exchange?: string;
  /** The routing key used with `exchange` (and for the binding). @default the queue name */
  routingKey?: string;
  /** Unconfirmed messages kept while the broker is away or slow; past it the oldest are dropped. @default 100000 */
  maxBuffered?: number;
  /** Wait for publisher confirms before forgetting a message. @default true */
  confirm?: boolean;
  /** How long `close()` keeps delivering what is buffered, in milliseconds. @default 5000 */
  closeTimeoutMs?: number;
}

/** One message body, as JSON: a scheduler transition. */
export interface AmqpTransitionMessage {
  key: string;
  start: SchedulerTaskStateName;
  finish: SchedulerTaskStateName;
  /** The worker the task runs on (→processing) or is held by (→memory). */
  worker?: string;
  stimulusId: string;
  /** Unix time in seconds, with a fraction. */
  time: number;
  /** 1, 2, 3, ... per plugin instance; a gap means messages were dropped, a repeat is a resend. */
  seq: number;
}

/**
 * Counters of an `amqp` plugin, for `/metrics`. Every transition the plugin took is in exactly
 * one of four places, so `published = confirmed + buffered + inFlight + dropped` always holds.
 */
export interface AmqpStats {
  /** Transitions the plugin took (each counted once, however often it was sent). */
  published: number;
  /** Transitions the broker confirmed as stored in a queue (or, with `confirm = false`, written to the socket). */
  confirmed: number;
  /** Transitions waiting to be sent (the broker away, or a resend pending). */
  buffered: number;
  /** Transitions sent on the current channel and waiting for their confirm. */
  inFlight: number;
  /** Transitions given up: past `maxBuffered`, or left over at `close()`. */
  dropped: number;
  /** Messages written to a channel, resends included. */
  sent: number;
  /** Messages the broker returned as routed to no queue (sent again after re-declaring it). */
  returned: number;
  /** Reconnections that found the queue missing (deleted, or lost by the broker) and declared it again. */
  queueMissing: number;
  /** Successful reconnections after a lost connection. */
  reconnects: number;
  /** Whether a channel is open now. */
  connected: boolean;
}

/** Counters before anything happened. */
export function emptyStats(): AmqpStats {
  return { published: 0, confirmed: 0, buffered: 0, inFlight: 0, dropped: 0, sent: 0, returned: 0, queueMissing: 0, reconnects: 0, connected: false };
}

/** A transition as it travels to the thread: key, start, finish, stimulusId, worker, time. */
export type AmqpTransitionTuple = [string, string, string, string, string | null | undefined, number];

/** Scheduler's thread → publishing thread. `start` and `close` are requests (lib/rpc.ts). */
export type AmqpHostMessage =
  | { op: "start"; id: number; options: AmqpOptions }
  | { op: "transitions"; batch: string }
  | { op: "close"; id: number };

/** The reply to `close`: the final counters. */
export interface AmqpClosedReply extends ReplyMessage {
  stats: AmqpStats;
  received: number;
}

/** Publishing thread → scheduler's thread. */
export type AmqpThreadMessage =
  | ReplyMessage
  | { op: "stats"; stats: AmqpStats; received: number }
  | { op: "event"; topic: string; msg: Record<string, unknown> }
  | { op: "log"; level: "info" | "warn" | "error"; message: string };

/** What is wrong with an AMQP URL, or nothing. */
export function checkAmqpUrl(value: unknown): string | undefined {
  try {
    const url = new URL(value as string);
    if (url.protocol !== "amqp:" && url.protocol !== "amqps:") return `must start with "amqp://" or "amqps://"`;
    if (!url.hostname) return "must name a host";
    return undefined;
  } catch {
    return `must be an AMQP URL like "amqp://user:password@host:5672/vhost"`;
  }
}

/** Checks options given without the option validator (direct use); throws naming the option. */
export function checkAmqpOptions(options: AmqpOptions): void {
  if (typeof options?.url !== "string") throw new TypeError(`Cannot create plugin "amqp": option "url" must be a string`);
  if (typeof options.queue !== "string" || options.queue === "") {
    throw new TypeError(`Cannot create plugin "amqp": option "queue" must be a non-empty string`);
  }
  const problem = checkAmqpUrl(options.url);
  if (problem) throw new TypeError(`Cannot create plugin "amqp": option "url" ${problem}`);
  const maxBuffered = options.maxBuffered ?? 100_000;
  if (!Number.isInteger(maxBuffered) || maxBuffered < 1) {
    throw new RangeError(`Cannot create plugin "amqp": option "maxBuffered" must be an integer of at least 1, got ${maxBuffered}`);
  }
}
