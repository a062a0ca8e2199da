/**
 * The `amqp` plugin as the scheduler runs it: an `AmqpPlugin` (plugins/amqp-publisher.ts) in a
 * thread of its own (plugins/amqp-thread.ts). Publishing (framing, confirms, reconnecting) costs
 * amqplib about 15 µs a message; on the scheduler's thread that would halve its throughput. Here
 * the `transition` hook only appends to an array, and once a tick the batch goes to the thread
 * as one JSON string. `start` and `close` are requests with the one request helper
 * (lib/rpc.ts): a thread that dies rejects them instead of leaving them waiting.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { Logger, PluginContext, SchedulerApi, SchedulerPlugin, SchedulerTaskStateName, TransitionInfo } from "../lib/plugins/types.ts";
import { Requests } from "../lib/rpc.ts";
import {
  type AmqpClosedReply,
  type AmqpHostMessage,
  type AmqpOptions,
  type AmqpStats,
  type AmqpThreadMessage,
  type AmqpTransitionTuple,
  checkAmqpOptions,
  emptyStats,
} from "./amqp-types.ts";

const TIME_ORIGIN_MS = performance.timeOrigin;
/** Connecting and declaring take at most a few seconds each; this is the outer bound. */
const START_TIMEOUT_MS = 60_000;

/** Where the thread's module is: in the compiled binary, an extra entry point of the build. */
function threadUrl(): string {
  return import.meta.url.includes("$bunfs") ? "./plugins/amqp-thread.ts" : new URL("./amqp-thread.ts", import.meta.url).href;
}

/**
 * The scheduler's side of the publishing thread.
 *
 * @example
 * ```ts
 * const plugin = new AmqpThreadPlugin({ url: "amqp://guest:guest@127.0.0.1:5672", queue: "q" }, { log });
 * await plugin.start(scheduler);
 * ```
 */
export class AmqpThreadPlugin implements SchedulerPlugin {
  name = "amqp";
  #options: AmqpOptions;
  #log: Logger;
  #closeTimeoutMs: number;
  #worker: Worker | null = null;
  #scheduler: SchedulerApi | null = null;
  #pending: AmqpTransitionTuple[] = [];
  #flushScheduled = false;
  #flushBound = () => this.#flush();
  /** Transitions posted to the thread, and how many it had taken at its last report. */
  #sent = 0;
  #received = 0;
  #stats: AmqpStats = emptyStats();
  #requests = new Requests({ peer: "the RabbitMQ publishing thread", timeoutMs: START_TIMEOUT_MS });
  #closed = false;

  constructor(options: AmqpOptions, context: Pick<PluginContext, "log">) {
    // The same checks and errors as the plugin in the thread, before any thread starts.
    checkAmqpOptions(options);
    this.#options = options;
    this.#log = context.log;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
  }

  /** Starts the thread, which connects; throws the thread's error (naming `host:port`). */
  async start(scheduler: SchedulerApi): Promise<void> {
    this.#scheduler = scheduler;
    const worker = new Worker(threadUrl(), { type: "module" });
    this.#worker = worker;
    worker.onmessage = (event: MessageEvent<AmqpThreadMessage>) => this.#onMessage(event.data);
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault?.();
      this.#log.error(`the RabbitMQ publishing thread failed: ${event.message}`);
      this.#requests.rejectAll(event.message, { final: true });
    };
    try {
      await this.#requests.send((id) => this.#post({ op: "start", id, options: this.#options }));
    } catch (err) {
      worker.terminate();
      this.#worker = null;
      throw new Error(err instanceof Error ? err.message.replace(/^Lost the RabbitMQ publishing thread: /, "") : String(err));
    }
  }

  /** Appends one transition; the batch leaves for the thread once per tick. */
  transition(key: string, start: SchedulerTaskStateName, finish: SchedulerTaskStateName, info: TransitionInfo): void {
    if (this.#closed) return;
    this.#pending.push([key, start, finish, info.stimulusId, info.worker, (TIME_ORIGIN_MS + performance.now()) / 1000]);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushBound);
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#pending.length === 0 || !this.#worker) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#sent += batch.length;
    this.#post({ op: "transitions", batch: JSON.stringify(batch) });
  }

  /** Delivers what is buffered (at most `closeTimeoutMs`), then stops the thread. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    const worker = this.#worker;
    if (!worker) return;
    try {
      const reply = await this.#requests.send((id) => this.#post({ op: "close", id }), { timeoutMs: this.#closeTimeoutMs + 5000 });
      this.#stats = (reply as AmqpClosedReply).stats;
      this.#received = (reply as AmqpClosedReply).received;
    } catch {
      this.#log.warn("the RabbitMQ publishing thread did not close in time; stopping it");
    }
    worker.terminate();
    this.#worker = null;
  }

  /**
   * The thread's counters, with what is still on its way to the thread counted as taken and
   * buffered, so the books balance on this side too.
   */
  stats(): AmqpStats {
    const inTransit = this.#sent - this.#received + this.#pending.length;
    return { ...this.#stats, published: this.#stats.published + inTransit, buffered: this.#stats.buffered + inTransit };
  }

  #post(msg: AmqpHostMessage): void {
    this.#worker!.postMessage(msg);
  }

  #onMessage(msg: AmqpThreadMessage): void {
    switch (msg.op) {
      case "stats":
        this.#stats = msg.stats;
        this.#received = msg.received;
        return;
      case "event":
        this.#scheduler?.logEvent(msg.topic, msg.msg);
        return;
      case "log":
        this.#log[msg.level](msg.message);
        return;
      case "reply":
        this.#requests.settle(msg);
        return;
    }
  }
}
