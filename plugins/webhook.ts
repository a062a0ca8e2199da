/**
 * The `webhook` built-in scheduler plugin: POSTs events as JSON `{"events": [...]}` in batches.
 * `logEvent` only buffers; a full batch is sent at once, a partial one after `intervalMs`. A
 * failed POST (network error or non-2xx) is retried with exponential backoff, keeping the order,
 * so a receiver that is briefly away loses nothing; past `maxBuffered` the oldest events are
 * dropped and counted. `close()` sends what is left, for at most `closeTimeoutMs`.
 *
 * @module
 */
import { errorMessage } from "../lib/errors.ts";
import { integerAtLeast, tableOfStrings } from "../lib/plugins/options.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { Logger, PluginContext, SchedulerPlugin } from "../lib/plugins/types.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** Options of the `webhook` plugin. */
export interface WebhookOptions {
  /** Where to POST. */
  url: string;
  /** Only these topics. @default all topics */
  topics?: string[];
  /** Events per POST at most. @default 100 */
  batchSize?: number;
  /** How long a partial batch waits. @default 1000 */
  intervalMs?: number;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Events kept while the receiver is away; past it the oldest are dropped. @default 100000 */
  maxBuffered?: number;
  /** Timeout of one POST. @default 10000 */
  timeoutMs?: number;
  /** How long `close()` keeps trying to deliver what is left. @default 5000 */
  closeTimeoutMs?: number;
}

/** Counters of a webhook plugin. */
export interface WebhookStats {
  /** Events delivered. */
  sent: number;
  /** Batches delivered. */
  batches: number;
  /** POSTs that failed (and were retried). */
  failedAttempts: number;
  /** Events waiting to be sent. */
  buffered: number;
  /** Events dropped: past `maxBuffered`, unserializable, or left at close. */
  dropped: number;
}

const BACKOFF_START_MS = 100;
const BACKOFF_MAX_MS = 4000;

/**
 * POSTs events to a URL in batches, retrying with backoff.
 *
 * @example
 * ```ts
 * const plugin = new WebhookPlugin({ url: "http://127.0.0.1:9000/events" }, context);
 * plugin.logEvent("transition", { seq: 1, key: "a", start: "waiting", finish: "processing" });
 * await plugin.close();
 * ```
 */
export class WebhookPlugin implements SchedulerPlugin {
  name = "webhook";
  readonly url: string;
  #topics: Set<string> | null;
  #batchSize: number;
  #intervalMs: number;
  #maxBuffered: number;
  #timeoutMs: number;
  #closeTimeoutMs: number;
  #headers: Record<string, string>;
  #log: Logger;
  /** Serialized events; the live ones start at `#head`. */
  #queue: string[] = [];
  #head = 0;
  /** Sequence number of `#queue[#head]`, so a batch can be acknowledged after drops. */
  #headSeq = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #due = false;
  #pumping: Promise<void> | null = null;
  /** Aborts the POST in flight and the backoff sleep when `close()` runs out of time. */
  #abort = new AbortController();
  #wakeUp: (() => void) | null = null;
  #closing = false;
  #closed = false;
  #failing = false;
  #overflowed = 0;
  #stats = { sent: 0, batches: 0, failedAttempts: 0, dropped: 0 };

  constructor(options: WebhookOptions, context: Pick<PluginContext, "log">) {
    this.url = options.url;
    this.#topics = options.topics ? new Set(options.topics) : null;
    this.#batchSize = options.batchSize ?? 100;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#maxBuffered = options.maxBuffered ?? 100_000;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    this.#headers = { ...options.headers, "content-type": "application/json" };
    this.#log = context.log;
  }

  /** Buffers one event; never waits. */
  logEvent(topic: string, msg: Record<string, unknown>): void {
    if (this.#closed || (this.#topics && !this.#topics.has(topic))) return;
    let json: string;
    try {
      json = JSON.stringify(msg.topic === topic ? msg : { topic, time: Date.now() / 1000, ...msg });
    } catch {
      this.#stats.dropped++;
      return;
    }
    this.#queue.push(json);
    if (this.#buffered > this.#maxBuffered) this.#dropOldest(this.#buffered - this.#maxBuffered);
    if (this.#buffered >= this.#batchSize) this.#kick();
    else this.#arm();
  }

  /** Sends what is buffered, giving up after `closeTimeoutMs`; what is left is counted as dropped. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#closing = true;
    const abort = this.#abort;
    const deadline = setTimeout(() => {
      abort.abort(new Error("close timeout"));
      this.#wakeUp?.();
    }, this.#closeTimeoutMs);
    try {
      // A pump sleeping in a backoff goes on after it, now sending partial batches too.
      while (this.#buffered > 0 && !abort.signal.aborted) {
        this.#kick();
        await this.#pumping;
      }
      await this.#pumping;
    } finally {
      clearTimeout(deadline);
    }
    const left = this.#buffered;
    if (left > 0) {
      this.#stats.dropped += left;
      this.#queue = [];
      this.#head = 0;
      this.#log.warn(`dropped ${left} events not delivered to ${this.url} before close`);
    }
  }

  /** Counters: events sent, failed POSTs, events buffered and dropped. */
  stats(): WebhookStats {
    return { ...this.#stats, buffered: this.#buffered };
  }

  get #buffered(): number {
    return this.#queue.length - this.#head;
  }

  #dropOldest(count: number): void {
    if (this.#overflowed === 0 || this.#overflowed % 10_000 < count) {
      this.#log.warn(
        `buffer full (maxBuffered ${this.#maxBuffered}): dropping the oldest events (${this.#overflowed + count} so far)`,
      );
    }
    this.#overflowed += count;
    this.#stats.dropped += count;
    this.#head += count;
    this.#headSeq += count;
    this.#compact();
  }

  #compact(): void {
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #arm(): void {
    if (this.#timer || this.#pumping || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#due = true;
      this.#kick();
    }, this.#intervalMs);
  }

  #kick(): void {
    if (this.#pumping) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#pumping = this.#pump().finally(() => {
      this.#pumping = null;
      if (this.#buffered > 0 && !this.#closed) this.#arm();
    });
  }

  async #pump(): Promise<void> {
    let backoff = BACKOFF_START_MS;
    while (this.#buffered > 0) {
      if (this.#buffered < this.#batchSize && !this.#due && !this.#closing) return;
      if (this.#abort.signal.aborted) return;
      const count = Math.min(this.#batchSize, this.#buffered);
      const endSeq = this.#headSeq + count;
      const body = `{"events":[${this.#queue.slice(this.#head, this.#head + count).join(",")}]}`;
      const error = await this.#post(body);
      if (error === undefined) {
        // Events dropped while the POST was in flight are already gone from the head.
        const done = Math.max(0, endSeq - this.#headSeq);
        this.#head += done;
        this.#headSeq += done;
        this.#compact();
        this.#stats.sent += count;
        this.#stats.batches++;
        if (count < this.#batchSize) this.#due = false;
        backoff = BACKOFF_START_MS;
        if (this.#failing) {
          this.#failing = false;
          this.#log.info(`delivering to ${this.url} again`);
        }
        continue;
      }
      this.#stats.failedAttempts++;
      if (!this.#failing) {
        this.#failing = true;
        this.#log.warn(`cannot POST events to ${this.url} (${error}); retrying with backoff`);
      }
      await this.#sleep(backoff * (0.8 + Math.random() * 0.4));
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  /** POSTs one batch; returns what went wrong, or undefined. */
  async #post(body: string): Promise<string | undefined> {
    const signals = [AbortSignal.timeout(this.#timeoutMs), this.#abort.signal];
    try {
      const res = await fetch(this.url, {
        method: "POST",
        headers: this.#headers,
        body,
        signal: AbortSignal.any(signals),
      });
      // Read the body so the connection can be reused.
      await res.arrayBuffer().catch(() => {});
      return res.ok ? undefined : `HTTP ${res.status}`;
    } catch (err) {
      return errorMessage(err);
    }
  }

  /** Waits, but not past the close deadline. */
  #sleep(ms: number): Promise<void> {
    if (this.#abort.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#wakeUp?.(), ms);
      this.#wakeUp = () => {
        clearTimeout(timer);
        this.#wakeUp = null;
        resolve();
      };
    });
  }
}

const options: Record<string, CheckedOptionSpec> = {
  url: { type: "string", required: true, description: "where to POST", check: httpUrl },
  topics: { type: "string[]", description: "only these topics (default: all)" },
  batchSize: { type: "number", default: 100, description: "events per POST at most", check: integerAtLeast(1) },
  intervalMs: { type: "number", default: 1000, description: "how long a partial batch waits", check: integerAtLeast(1) },
  headers: { type: "table", description: "extra request headers", check: tableOfStrings },
  maxBuffered: {
    type: "number",
    default: 100_000,
    description: "events kept while the receiver is away",
    check: integerAtLeast(1),
  },
  timeoutMs: { type: "number", default: 10_000, description: "timeout of one POST", check: integerAtLeast(1) },
  closeTimeoutMs: {
    type: "number",
    default: 5000,
    description: "how long close keeps delivering",
    check: integerAtLeast(0),
  },
};

function httpUrl(value: unknown): string | undefined {
  try {
    const url = new URL(value as string);
    return url.protocol === "http:" || url.protocol === "https:" ? undefined : "must be an http(s) URL";
  } catch {
    return "must be an http(s) URL";
  }
}

/** The `webhook` entry of `builtinPlugins`. */
export const webhook: BuiltinPlugin = {
  role: "scheduler",
  description: "POSTs batches of events, retrying with backoff",
  options,
  create: (opts, context) => new WebhookPlugin(opts as unknown as WebhookOptions, context),
};
