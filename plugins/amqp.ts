/**
 * The `amqp` built-in scheduler plugin: publishes every task transition to a RabbitMQ queue, as
 * in the Dask docs' RabbitMQ example, but without slowing the scheduler down.
 *
 * `transition()` only appends `{key, start, finish, worker?, stimulusId, time, seq}` to an
 * in-memory buffer. A pump running on later event-loop turns serializes and publishes it
 * (persistent, `application/json`) on a confirm channel, a few hundred messages per turn,
 * waiting for `drain` when the socket is full. A message leaves the buffer when the broker has
 * confirmed it. When the connection or channel is lost, the plugin reconnects with exponential
 * backoff (100 ms doubling up to 2 s) and publishes again, in order, everything not yet
 * confirmed: delivery is at least once, and consumers de-duplicate on `seq`. Past
 * `maxBuffered` unconfirmed messages the OLDEST are dropped, counted and warned about (at most
 * once a second), so memory stays bounded during a long outage and the newest state survives.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { setImmediate } from "node:timers";
import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel, Options } from "amqplib";
import type {
  Logger,
  PluginContext,
  SchedulerApi,
  SchedulerPlugin,
  SchedulerTaskStateName,
  TransitionInfo,
} from "../lib/plugins/types.ts";
import type { BuiltinPlugin, OptionSpec } from "./mod.ts";

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

/** Counters of an `amqp` plugin, for `/metrics`. */
export interface AmqpStats {
  /** Messages written to a channel, resends included. */
  published: number;
  /** Messages the broker confirmed (or, with `confirm = false`, wrote to the socket). */
  confirmed: number;
  /** Messages not yet confirmed (in flight or waiting). */
  buffered: number;
  /** Messages published and waiting for their confirm. */
  inFlight: number;
  /** Messages dropped: past `maxBuffered`, or left over at `close()`. */
  dropped: number;
  /** Successful reconnections after a lost connection. */
  reconnects: number;
  /** Whether a channel is open now. */
  connected: boolean;
}

/** Messages published per event-loop turn, so a long backlog does not starve the scheduler. */
const BATCH = 500;
/** Published but unconfirmed messages at most; the rest wait in the buffer. */
const MAX_IN_FLIGHT = 5000;
const BACKOFF_START_MS = 100;
const BACKOFF_MAX_MS = 2000;
const CONNECT_TIMEOUT_MS = 5000;
const WARN_INTERVAL_MS = 1000;
/** The broker closes a connection it has not heard from in 2 heartbeats. */
const DEFAULT_HEARTBEAT_S = 10;
const TIME_ORIGIN_MS = performance.timeOrigin;

/** A buffered transition; a class so every entry has one shape and serializes in field order. */
class Entry {
  constructor(
    readonly key: string,
    readonly start: SchedulerTaskStateName,
    readonly finish: SchedulerTaskStateName,
    readonly worker: string | undefined,
    readonly stimulusId: string,
    readonly time: number,
    readonly seq: number,
  ) {}
}

/**
 * Publishes scheduler transitions to RabbitMQ with publisher confirms, buffering (bounded)
 * while the broker is away.
 *
 * @example
 * ```ts
 * const plugin = new AmqpPlugin({ url: "amqp://guest:guest@127.0.0.1:5672", queue: "dask_task_status" }, context);
 * await plugin.start(scheduler);
 * plugin.transition("x", "waiting", "processing", { stimulusId: "s1", worker: "w1" });
 * console.log(plugin.stats());
 * await plugin.close();
 * ```
 */
export class AmqpPlugin implements SchedulerPlugin {
  name = "amqp";
  #url: string;
  /** `host:port`, for messages: never the URL, which may hold a password. */
  #target: string;
  #password: string;
  #user: string;
  #queue: string;
  #exchange: string;
  #routingKey: string;
  #maxBuffered: number;
  #confirm: boolean;
  #closeTimeoutMs: number;
  #log: Logger;
  #scheduler: SchedulerApi | null = null;
  #publishOptions: Options.Publish;
  /** Tells this plugin instance's seqs from those of an earlier one (a restarted scheduler). */
  #instance: string;

  // The buffer holds the unconfirmed messages, seqs #headSeq .. #nextSeq-1, contiguous because
  // messages only leave at the front (confirmed or dropped). #buf[#off] has seq #headSeq.
  #buf: Entry[] = [];
  #off = 0;
  #headSeq = 1;
  #nextSeq = 1;
  /** The next seq to publish on the current channel; below it, published and unconfirmed. */
  #sendSeq = 1;
  /** Seqs confirmed ahead of #headSeq (confirms may come out of order across queues). */
  #ackedAhead = new Set<number>();

  #conn: ChannelModel | null = null;
  #channel: Channel | ConfirmChannel | null = null;
  /** Bumped on every loss and at close, so late events of an old connection are ignored. */
  #generation = 0;
  #waitingDrain = false;
  #pumpScheduled = false;
  #pumpBound = () => this.#pump();
  #reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  #backoffMs = BACKOFF_START_MS;
  #outageLogged = false;
  #failedAttempts = 0;
  #closing = false;
  #closed = false;
  #flushed: (() => void) | null = null;

  #published = 0;
  #confirmed = 0;
  #dropped = 0;
  #reconnects = 0;
  #dropsToReport = 0;
  #lastWarnAt = 0;
  #warnTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: AmqpOptions, context: Pick<PluginContext, "log">) {
    if (typeof options?.url !== "string") throw new TypeError(`Cannot create plugin "amqp": option "url" must be a string`);
    if (typeof options.queue !== "string" || options.queue === "") {
      throw new TypeError(`Cannot create plugin "amqp": option "queue" must be a non-empty string`);
    }
    const problem = checkAmqpUrl(options.url);
    if (problem) throw new TypeError(`Cannot create plugin "amqp": option "url" ${problem}`);
    const parsed = new URL(options.url);
    this.#target = `${parsed.hostname}:${parsed.port || (parsed.protocol === "amqps:" ? 5671 : 5672)}`;
    this.#user = decodeURIComponent(parsed.username) || "guest";
    this.#password = decodeURIComponent(parsed.password);
    if (!parsed.searchParams.has("heartbeat")) parsed.searchParams.set("heartbeat", String(DEFAULT_HEARTBEAT_S));
    this.#url = parsed.href;
    this.#queue = options.queue;
    this.#exchange = options.exchange ?? "";
    this.#routingKey = this.#exchange ? options.routingKey ?? options.queue : options.queue;
    this.#maxBuffered = options.maxBuffered ?? 100_000;
    if (!Number.isInteger(this.#maxBuffered) || this.#maxBuffered < 1) {
      throw new RangeError(`Cannot create plugin "amqp": option "maxBuffered" must be an integer of at least 1, got ${this.#maxBuffered}`);
    }
    this.#confirm = options.confirm ?? true;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    this.#log = context.log;
    this.#instance = Math.random().toString(36).slice(2, 10);
    this.#publishOptions = { persistent: true, contentType: "application/json", type: "transition", appId: "cluster" };
  }

  /** Connects and declares the queue (and exchange); throws naming `host:port` and the reason. */
  async start(scheduler: SchedulerApi): Promise<void> {
    this.#scheduler = scheduler;
    if (this.#conn || this.#closed) return;
    await this.#open();
    this.#log.info(`publishing transitions to queue "${this.#queue}" at "${this.#target}"`);
    if (this.#nextSeq > this.#sendSeq) this.#schedulePump();
  }

  /** Buffers one transition. Synchronous, allocation-light, never throws, never waits. */
  transition(
    key: string,
    start: SchedulerTaskStateName,
    finish: SchedulerTaskStateName,
    info: TransitionInfo,
  ): void {
    this.transitionAt(key, start, finish, info, (TIME_ORIGIN_MS + performance.now()) / 1000);
  }

  /** `transition` with the time it happened (unix seconds), for transitions made elsewhere. */
  transitionAt(
    key: string,
    start: SchedulerTaskStateName,
    finish: SchedulerTaskStateName,
    info: TransitionInfo,
    time: number,
  ): void {
    if (this.#closed) return;
    try {
      const seq = this.#nextSeq++;
      this.#buf.push(new Entry(key, start, finish, info?.worker, info?.stimulusId, time, seq));
      if (seq - this.#headSeq >= this.#maxBuffered) this.#dropOldest();
      if (!this.#pumpScheduled) this.#schedulePump();
    } catch {
      // A hook must not fail the scheduler; an entry that could not be buffered is lost.
    }
  }

  /** Delivers what is buffered for at most `closeTimeoutMs`, then closes the connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closing = true;
    if (this.#buffered > 0 && this.#closeTimeoutMs > 0) {
      if (!this.#conn && !this.#reconnectTimer) this.#scheduleReconnect(0);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => resolve(), this.#closeTimeoutMs);
        this.#flushed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#flushed = null;
    }
    this.#closed = true;
    this.#generation++;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    if (this.#warnTimer) {
      clearTimeout(this.#warnTimer);
      this.#warnDrops();
    }
    const left = this.#buffered;
    if (left > 0) {
      this.#dropped += left;
      this.#log.warn(`dropped ${left} transitions not confirmed by RabbitMQ at "${this.#target}" before close`);
    }
    this.#buf = [];
    this.#off = 0;
    this.#headSeq = this.#sendSeq = this.#nextSeq;
    const conn = this.#conn;
    this.#conn = null;
    this.#channel = null;
    if (conn) await withTimeout(conn.close(), 2000).catch(() => {});
  }

  /** Counters for `/metrics`: published, confirmed, buffered, in flight, dropped, reconnects. */
  stats(): AmqpStats {
    return {
      published: this.#published,
      confirmed: this.#confirmed,
      buffered: this.#buffered,
      inFlight: this.#sendSeq - this.#headSeq,
      dropped: this.#dropped,
      reconnects: this.#reconnects,
      connected: this.#channel !== null,
    };
  }

  get #buffered(): number {
    return this.#nextSeq - this.#headSeq;
  }

  #schedulePump(): void {
    this.#pumpScheduled = true;
    setImmediate(this.#pumpBound);
  }

  /** Publishes up to BATCH messages, then yields to the event loop. */
  #pump(): void {
    this.#pumpScheduled = false;
    const channel = this.#channel;
    if (!channel || this.#waitingDrain) return;
    const generation = this.#generation;
    const exchange = this.#exchange;
    const routingKey = this.#routingKey;
    const base = this.#publishOptions;
    const prefix = `${this.#instance}:`;
    let count = 0;
    while (this.#sendSeq < this.#nextSeq && count < BATCH && this.#sendSeq - this.#headSeq < MAX_IN_FLIGHT) {
      const seq = this.#sendSeq;
      const entry = this.#buf[this.#off + seq - this.#headSeq];
      let ok: boolean;
      try {
        const body = Buffer.from(JSON.stringify(entry));
        const options = { ...base, messageId: prefix + seq };
        ok = this.#confirm
          ? (channel as ConfirmChannel).publish(exchange, routingKey, body, options, (err) =>
            this.#onConfirm(generation, seq, err))
          : channel.publish(exchange, routingKey, body, options);
      } catch (err) {
        // The channel closed under us (its 'close' event may not have fired yet).
        this.#lost(generation, err);
        return;
      }
      this.#sendSeq++;
      this.#published++;
      count++;
      if (!this.#confirm) this.#onConfirm(generation, seq, null);
      if (!ok) {
        this.#waitingDrain = true;
        channel.once("drain", () => {
          if (generation !== this.#generation) return;
          this.#waitingDrain = false;
          if (!this.#pumpScheduled) this.#schedulePump();
        });
        return;
      }
    }
    if (this.#sendSeq < this.#nextSeq && this.#sendSeq - this.#headSeq < MAX_IN_FLIGHT) this.#schedulePump();
  }

  #onConfirm(generation: number, seq: number, err: unknown): void {
    if (generation !== this.#generation) return;
    if (err) {
      // A nack, or the channel closed with this message unconfirmed: start over on a new channel.
      this.#lost(generation, err);
      return;
    }
    this.#confirmed++;
    if (seq === this.#headSeq) {
      this.#advance();
      while (this.#ackedAhead.size > 0 && this.#ackedAhead.delete(this.#headSeq)) this.#advance();
      this.#compact();
    } else if (seq > this.#headSeq) {
      this.#ackedAhead.add(seq);
    }
    if (this.#buffered === 0) this.#flushed?.();
    else if (!this.#pumpScheduled && !this.#waitingDrain && this.#sendSeq < this.#nextSeq) this.#schedulePump();
  }

  #advance(): void {
    this.#headSeq++;
    this.#off++;
  }

  #compact(): void {
    if (this.#off > 4096 && this.#off * 2 > this.#buf.length) {
      this.#buf = this.#buf.slice(this.#off);
      this.#off = 0;
    }
  }

  #dropOldest(): void {
    const count = this.#nextSeq - this.#headSeq - this.#maxBuffered;
    this.#headSeq += count;
    this.#off += count;
    if (this.#sendSeq < this.#headSeq) this.#sendSeq = this.#headSeq;
    this.#dropped += count;
    this.#dropsToReport += count;
    if (this.#ackedAhead.size > 0) {
      for (const seq of this.#ackedAhead) if (seq < this.#headSeq) this.#ackedAhead.delete(seq);
    }
    this.#compact();
    if (!this.#warnTimer) {
      const wait = Math.max(0, this.#lastWarnAt + WARN_INTERVAL_MS - Date.now());
      this.#warnTimer = setTimeout(() => this.#warnDrops(), wait);
    }
  }

  /** Reports drops outside the transition hook, at most once per WARN_INTERVAL_MS. */
  #warnDrops(): void {
    this.#warnTimer = null;
    this.#lastWarnAt = Date.now();
    const count = this.#dropsToReport;
    this.#dropsToReport = 0;
    if (count === 0) return;
    const message = `Cannot deliver transitions to RabbitMQ at "${this.#target}" fast enough: buffer full ` +
      `(maxBuffered ${this.#maxBuffered}), dropped the ${count} oldest (${this.#dropped} in all)`;
    this.#log.warn(message);
    try {
      this.#scheduler?.logEvent("plugin", {
        plugin: this.name,
        level: "warning",
        message,
        dropped: this.#dropped,
        droppedNow: count,
        buffered: this.#buffered,
      });
    } catch (err) {
      this.#log.error(`cannot log event: ${describe(err, "")}`);
    }
  }

  /** Connects, opens a channel and declares the queue; throws an Error naming host:port. */
  async #open(): Promise<void> {
    let conn: ChannelModel;
    try {
      conn = await amqp.connect(this.#url, {
        timeout: CONNECT_TIMEOUT_MS,
        clientProperties: { connection_name: `cluster scheduler plugin "${this.name}"` },
      });
    } catch (err) {
      throw new Error(`Cannot connect to RabbitMQ at "${this.#target}": ${this.#describe(err)}`, { cause: err });
    }
    let lastError: unknown = null;
    // Without an 'error' listener an EventEmitter throws, which would crash the scheduler.
    conn.on("error", (err: unknown) => (lastError = err));
    let channel: Channel | ConfirmChannel;
    try {
      channel = this.#confirm ? await conn.createConfirmChannel() : await conn.createChannel();
      channel.on("error", (err: unknown) => (lastError = err));
      await channel.assertQueue(this.#queue, { durable: true });
      if (this.#exchange) {
        await channel.assertExchange(this.#exchange, "direct", { durable: true });
        await channel.bindQueue(this.#queue, this.#exchange, this.#routingKey);
      }
    } catch (err) {
      conn.close().catch(() => {});
      const what = this.#exchange ? `queue "${this.#queue}" and exchange "${this.#exchange}"` : `queue "${this.#queue}"`;
      throw new Error(`Cannot declare ${what} at RabbitMQ "${this.#target}": ${this.#describe(err)}`, { cause: err });
    }
    if (this.#closed) {
      conn.close().catch(() => {});
      return;
    }
    const generation = ++this.#generation;
    this.#conn = conn;
    this.#channel = channel;
    this.#sendSeq = this.#headSeq;
    this.#ackedAhead.clear();
    this.#waitingDrain = false;
    conn.on("close", (err?: unknown) => this.#lost(generation, err ?? lastError ?? new Error("connection closed")));
    channel.on("close", () => this.#lost(generation, lastError ?? new Error("channel closed")));
    conn.on("blocked", (reason: string) => this.#log.warn(`RabbitMQ at "${this.#target}" blocked publishing: ${reason}`));
    conn.on("unblocked", () => this.#log.info(`RabbitMQ at "${this.#target}" unblocked publishing`));
  }

  /** Forgets the connection of `generation` and reconnects; everything unconfirmed is resent. */
  #lost(generation: number, err: unknown): void {
    if (generation !== this.#generation || this.#closed) return;
    this.#generation++;
    const conn = this.#conn;
    this.#conn = null;
    this.#channel = null;
    this.#waitingDrain = false;
    this.#sendSeq = this.#headSeq;
    this.#ackedAhead.clear();
    // A channel error leaves the connection open: close it, one reconnect path serves both.
    conn?.close().catch(() => {});
    if (!this.#outageLogged) {
      this.#outageLogged = true;
      this.#log.warn(
        `lost connection to RabbitMQ at "${this.#target}": ${this.#describe(err)}; reconnecting, ` +
          `${this.#buffered} transitions buffered`,
      );
    }
    this.#scheduleReconnect(this.#backoffMs);
  }

  #scheduleReconnect(delayMs: number): void {
    if (this.#closed || this.#reconnectTimer) return;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      this.#reconnect();
    }, delayMs);
  }

  async #reconnect(): Promise<void> {
    try {
      await this.#open();
    } catch (err) {
      if (this.#closed) return;
      if (++this.#failedAttempts % 15 === 1) {
        this.#log.info(`${errorText(err)} (attempt ${this.#failedAttempts}); retrying every ${BACKOFF_MAX_MS} ms at most`);
      }
      this.#scheduleReconnect(this.#jitter(this.#backoffMs));
      this.#backoffMs = Math.min(this.#backoffMs * 2, BACKOFF_MAX_MS);
      return;
    }
    if (this.#closed) return;
    this.#reconnects++;
    this.#failedAttempts = 0;
    this.#backoffMs = BACKOFF_START_MS;
    this.#outageLogged = false;
    this.#log.info(`reconnected to RabbitMQ at "${this.#target}"; resending ${this.#buffered} transitions`);
    if (this.#buffered > 0 && !this.#pumpScheduled) this.#schedulePump();
  }

  #jitter(ms: number): number {
    return Math.min(BACKOFF_MAX_MS, Math.round(ms * (0.8 + Math.random() * 0.4)));
  }

  #describe(err: unknown): string {
    return describe(err, this.#user, this.#password);
  }
}

/** A short reason for a connection error, without the password. */
function describe(err: unknown, user: string, password = ""): string {
  const code = (err as { code?: unknown })?.code;
  const message = errorText(err);
  let reason: string;
  if (code === "ECONNREFUSED" || /ECONNREFUSED/.test(message)) reason = "connection refused";
  else if (code === "ETIMEDOUT" || /ETIMEDOUT/.test(message)) reason = `timed out after ${CONNECT_TIMEOUT_MS} ms`;
  else if (code === "ENOTFOUND" || code === "EAI_AGAIN" || /ENOTFOUND|EAI_AGAIN/.test(message)) reason = "host not found";
  else if (code === "EHOSTUNREACH" || code === "ENETUNREACH") reason = "host unreachable";
  else if (code === "ECONNRESET" || /ECONNRESET/.test(message)) reason = "connection reset";
  else if (/ACCESS_REFUSED|ACCESS-REFUSED/.test(message)) reason = `access refused for user "${user}" (wrong user name or password?)`;
  else if (/Socket closed abruptly during opening handshake/.test(message)) {
    reason = "connection closed during the AMQP handshake (not a RabbitMQ port, or login refused)";
  } else {
    // Our own words above hold no password; a broker's or library's message might echo one.
    reason = password ? message.split(password).join("***") : message;
  }
  return reason;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms))),
  ]);
}

/** What is wrong with an AMQP URL, or nothing. */
function checkAmqpUrl(value: unknown): string | undefined {
  try {
    const url = new URL(value as string);
    if (url.protocol !== "amqp:" && url.protocol !== "amqps:") return `must start with "amqp://" or "amqps://"`;
    if (!url.hostname) return "must name a host";
    return undefined;
  } catch {
    return `must be an AMQP URL like "amqp://user:password@host:5672/vhost"`;
  }
}

/** An option spec with the extra check the options validator applies. */
interface AmqpOptionSpec extends OptionSpec {
  check?(value: unknown): string | undefined;
}

const atLeast = (min: number) => (value: unknown): string | undefined =>
  Number.isInteger(value) && (value as number) >= min ? undefined : `must be an integer of at least ${min}`;

const options: Record<string, AmqpOptionSpec> = {
  url: { type: "string", required: true, description: "the broker, amqp://user:password@host:port/vhost", check: checkAmqpUrl },
  queue: {
    type: "string",
    required: true,
    description: "the queue receiving transitions (declared durable)",
    check: (value) => (value === "" ? "must not be empty" : undefined),
  },
  exchange: { type: "string", description: "a durable direct exchange to publish to, bound to the queue" },
  routingKey: { type: "string", description: "routing key with exchange (default: the queue name)" },
  maxBuffered: {
    type: "number",
    default: 100_000,
    description: "unconfirmed messages kept while the broker is away; past it the oldest are dropped",
    check: atLeast(1),
  },
  confirm: { type: "boolean", default: true, description: "wait for publisher confirms" },
  closeTimeoutMs: {
    type: "number",
    default: 5000,
    description: "how long close keeps delivering what is buffered",
    check: atLeast(0),
  },
};

/** Messages between `AmqpThreadPlugin` and its thread (plugins/amqp-thread.ts). */
export type AmqpThreadMessage =
  | { op: "start"; options: AmqpOptions }
  | { op: "transitions"; batch: string }
  | { op: "close" }
  | { op: "started"; error?: string }
  | { op: "stats"; stats: AmqpStats; received: number }
  | { op: "closed"; stats: AmqpStats; received: number }
  | { op: "event"; topic: string; msg: Record<string, unknown> }
  | { op: "log"; level: "info" | "warn" | "error"; message: string };

/** A transition as it travels to the thread: key, start, finish, stimulusId, worker, time. */
export type AmqpTransitionTuple = [string, string, string, string, string | null | undefined, number];

/** Where the thread's module is: in the compiled binary, an extra entry point of the build. */
function threadUrl(): string {
  return import.meta.url.includes("$bunfs") ? "./plugins/amqp-thread.ts" : new URL("./amqp-thread.ts", import.meta.url).href;
}

/**
 * The `amqp` plugin as the scheduler runs it: an `AmqpPlugin` in a thread of its own. Publishing
 * (framing, confirms, reconnecting) costs amqplib about 15 µs a message; on the scheduler's thread
 * that would halve its throughput. Here the `transition` hook only appends to an array, and once
 * a tick the batch goes to the thread as one JSON string.
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
  #stats: AmqpStats = { published: 0, confirmed: 0, buffered: 0, inFlight: 0, dropped: 0, reconnects: 0, connected: false };
  #waiters = new Map<string, (msg: AmqpThreadMessage) => void>();
  #closed = false;

  constructor(options: AmqpOptions, context: Pick<PluginContext, "log">) {
    // The same checks and errors as the plugin in the thread, before any thread starts.
    new AmqpPlugin(options, context);
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
      for (const resolve of this.#waiters.values()) resolve({ op: "started", error: event.message });
      this.#waiters.clear();
    };
    const reply = await this.#ask({ op: "start", options: this.#options }, "started");
    if (reply.op === "started" && reply.error) {
      worker.terminate();
      this.#worker = null;
      throw new Error(reply.error);
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
    this.#worker.postMessage({ op: "transitions", batch: JSON.stringify(batch) } satisfies AmqpThreadMessage);
  }

  /** Delivers what is buffered (at most `closeTimeoutMs`), then stops the thread. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    const worker = this.#worker;
    if (!worker) return;
    const reply = await Promise.race([
      this.#ask({ op: "close" }, "closed"),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), this.#closeTimeoutMs + 5000)),
    ]);
    if (reply === null) this.#log.warn("the RabbitMQ publishing thread did not close in time; stopping it");
    worker.terminate();
    this.#worker = null;
  }

  /** The thread's counters, with what is still on its way to the thread counted as buffered. */
  stats(): AmqpStats {
    const inTransit = this.#sent - this.#received + this.#pending.length;
    return { ...this.#stats, buffered: this.#stats.buffered + inTransit };
  }

  #ask(msg: AmqpThreadMessage, reply: string): Promise<AmqpThreadMessage> {
    return new Promise((resolve) => {
      this.#waiters.set(reply, resolve);
      this.#worker!.postMessage(msg);
    });
  }

  #onMessage(msg: AmqpThreadMessage): void {
    switch (msg.op) {
      case "stats":
      case "closed":
        this.#stats = msg.stats;
        this.#received = msg.received;
        break;
      case "event":
        this.#scheduler?.logEvent(msg.topic, msg.msg);
        return;
      case "log":
        this.#log[msg.level](msg.message);
        return;
    }
    const waiter = this.#waiters.get(msg.op);
    if (waiter) {
      this.#waiters.delete(msg.op);
      waiter(msg);
    }
  }
}

/** The `amqp` entry of `builtinPlugins`: the plugin in a thread of its own where threads exist. */
export const amqpPlugin: BuiltinPlugin = {
  role: "scheduler",
  description: "publishes every transition to a RabbitMQ queue, buffering while the broker is away",
  options,
  create: (opts, context) =>
    typeof Worker === "function"
      ? new AmqpThreadPlugin(opts as unknown as AmqpOptions, context)
      : new AmqpPlugin(opts as unknown as AmqpOptions, context),
};

export default amqpPlugin;
