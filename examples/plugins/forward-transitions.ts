/**
 * An example scheduler plugin, Dask's transition forwarder (the RabbitMQ example of the Dask
 * "Plugins" docs) rewritten: every transition becomes a small message `{key, start, finish,
 * worker?, stimulusId}` that is re-logged on an event topic, logged when `verbose`, and POSTed
 * to `url` when one is set (fire and forget; failures are counted, not retried — the `webhook`
 * and `amqp` built-ins do it properly). It imports nothing from the host at run time.
 *
 * ```toml
 * [[scheduler.plugins]]
 * use = "./plugins/forward-transitions.ts"
 * topic = "forwarded-transitions"
 * verbose = false
 * # url = "http://127.0.0.1:9000/transitions"
 * ```
 *
 * @module
 */
import type {
  Logger,
  PluginContext,
  SchedulerApi,
  SchedulerPlugin,
  SchedulerTaskStateName,
  TransitionInfo,
} from "../../lib/plugins/types.ts";

/** Options of the forwarder. */
export interface ForwardOptions {
  /** The event topic the messages are logged on; "" to not log them as events. @default "forwarded-transitions" */
  topic?: string;
  /** Also log every message to stderr. @default false */
  verbose?: boolean;
  /** POST every message as JSON here. */
  url?: string;
}

/** Forwards every scheduler transition. */
export default class ForwardTransitions implements SchedulerPlugin {
  name = "forward-transitions";
  #topic: string;
  #verbose: boolean;
  #url: string | undefined;
  #log: Logger;
  #scheduler: SchedulerApi | null = null;
  #forwarded = 0;
  #failedPosts = 0;
  #inFlight = new Set<Promise<void>>();

  constructor(options: ForwardOptions = {}, context?: PluginContext) {
    this.#topic = typeof options.topic === "string" ? options.topic : "forwarded-transitions";
    this.#verbose = options.verbose === true;
    this.#url = typeof options.url === "string" && options.url ? options.url : undefined;
    this.#log = context?.log ?? console;
  }

  start(scheduler: SchedulerApi): void {
    this.#scheduler = scheduler;
  }

  transition(key: string, start: SchedulerTaskStateName, finish: SchedulerTaskStateName, info: TransitionInfo): void {
    const message = { key, start, finish, worker: info.worker, stimulusId: info.stimulusId };
    this.#forwarded++;
    if (this.#verbose) this.#log.info(`${key}: ${start} -> ${finish}${info.worker ? ` on ${info.worker}` : ""}`);
    if (this.#topic) this.#scheduler?.logEvent(this.#topic, message);
    if (this.#url) {
      // The hook is synchronous: the POST runs on its own and close() waits for it.
      const post = fetch(this.#url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(message),
      })
        .then((res) => res.body?.cancel())
        .catch(() => {
          this.#failedPosts++;
        })
        .finally(() => this.#inFlight.delete(post));
      this.#inFlight.add(post);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#inFlight);
    const failed = this.#failedPosts ? `, ${this.#failedPosts} POSTs failed` : "";
    this.#log.info(`forward-transitions: ${this.#forwarded} transitions forwarded${failed}`);
  }

  /** How many transitions were forwarded. */
  get forwarded(): number {
    return this.#forwarded;
  }
}
