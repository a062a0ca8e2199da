/**
 * The thread that runs the `amqp` plugin's publishing (see plugins/amqp-host.ts): it holds an
 * `AmqpPlugin`, takes batches of transitions from the scheduler's thread, answers its `start`
 * and `close` requests with the one reply op, and reports its counters, logs and `plugin`
 * events back. The compiled binary carries it as an extra entry point of the build.
 *
 * @module
 */
import type { Logger, SchedulerApi, SchedulerTaskStateName } from "../lib/plugins/types.ts";
import type { ReplyMessage } from "../lib/rpc.ts";
import { AmqpPlugin } from "./amqp-publisher.ts";
import { type AmqpClosedReply, type AmqpHostMessage, type AmqpThreadMessage, type AmqpTransitionTuple, emptyStats } from "./amqp-types.ts";

declare const self: {
  onmessage: ((event: MessageEvent<AmqpHostMessage>) => void) | null;
  postMessage(msg: AmqpThreadMessage): void;
};

/** How often changed counters are reported (ms). */
const STATS_INTERVAL_MS = 50;

let plugin: AmqpPlugin | null = null;
let received = 0;
let lastReport = "";

const post = (msg: AmqpThreadMessage) => self.postMessage(msg);

const log: Logger = {
  info: (message) => post({ op: "log", level: "info", message }),
  warn: (message) => post({ op: "log", level: "warn", message }),
  error: (message) => post({ op: "log", level: "error", message }),
};

// The plugin only logs events through its scheduler; the real one lives on the other thread.
const scheduler = {
  logEvent: (topic: string, msg: Record<string, unknown>) => post({ op: "event", topic, msg }),
} as unknown as SchedulerApi;

function report(force = false): void {
  if (!plugin) return;
  const stats = plugin.stats();
  const text = `${JSON.stringify(stats)}/${received}`;
  if (!force && text === lastReport) return;
  lastReport = text;
  post({ op: "stats", stats, received });
}

const timer = setInterval(() => report(), STATS_INTERVAL_MS);

self.onmessage = async (event) => {
  const msg = event.data;
  switch (msg.op) {
    case "start":
      try {
        plugin = new AmqpPlugin(msg.options, { log });
        await plugin.start(scheduler);
        post({ op: "reply", id: msg.id } satisfies ReplyMessage);
        report(true);
      } catch (err) {
        post({ op: "reply", id: msg.id, error: err instanceof Error ? err.message : String(err) } satisfies ReplyMessage);
      }
      break;
    case "transitions": {
      const batch = JSON.parse(msg.batch) as AmqpTransitionTuple[];
      for (const [key, start, finish, stimulusId, worker, time] of batch) {
        plugin?.transitionAt(
          key,
          start as SchedulerTaskStateName,
          finish as SchedulerTaskStateName,
          // JSON turns a missing worker into null.
          worker == null ? { stimulusId } : { stimulusId, worker },
          time,
        );
      }
      received += batch.length;
      break;
    }
    case "close":
      await plugin?.close();
      clearInterval(timer);
      post({ op: "reply", id: msg.id, stats: plugin?.stats() ?? emptyStats(), received } satisfies AmqpClosedReply);
      break;
  }
};
