/**
 * The `amqp` plugin's publisher: takes scheduler transitions and publishes them to a RabbitMQ
 * queue, as in the Dask docs' RabbitMQ example, without slowing the scheduler down.
 *
 * `transition()` only appends `{key, start, finish, worker?, stimulusId, time, seq}` to an
 * in-memory buffer. A pump running on later event-loop turns serializes and publishes it
 * (persistent, `mandatory`, `application/json`) on a confirm channel, a few hundred messages per
 * turn, waiting for `drain` when the socket is full. A message leaves the buffer when the broker
 * has confirmed it. A message the broker returns (routed to no queue: the queue was deleted) is
 * not delivered: the plugin re-declares the queue on a new channel and sends it again. When the
 * connection or channel is lost, the plugin reconnects with exponential backoff (100 ms doubling
 * up to 2 s), re-declares the queue, and publishes again, in order, everything not yet
 * confirmed: delivery is at least once, and consumers de-duplicate on `seq`. Past `maxBuffered`
 * unconfirmed messages the OLDEST are dropped, counted and warned about (at most once a second),
 * so memory stays bounded during a long outage and the newest state survives.
 *
 * The books: every seq taken is confirmed, buffered, in flight or dropped, exactly one of them
 * (`AmqpStats`); the tests check `published = confirmed + buffered + inFlight + dropped`.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { setImmediate } from "node:timers";
import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from "amqplib";
import type {
  Logger,
  PluginContext,
  SchedulerApi,
  SchedulerPlugin,
  SchedulerTaskStateName,
  TransitionInfo,
} from "../lib/plugins/types.ts";
import { type AmqpOptions, type AmqpStats, checkAmqpOptions } from "./amqp-types.ts";

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
  /**
   * Seqs confirmed ahead of #headSeq (confirms may come out of order across queues). They are
   * delivered: kept across a reconnect and not sent again.
   */
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

  #confirmed = 0;
  #sent = 0;
  #returned = 0;
  #queueMissing = 0;
  /** Whether a connection was ever opened (the next one is a reconnect). */
  #opened = false;
  #dropped = 0;
  #reconnects = 0;
  #dropsToReport = 0;
  #lastWarnAt = 0;
  #warnTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: AmqpOptions, context: Pick<PluginContext, "log">) {
    checkAmqpOptions(options);
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
    this.#confirm = options.confirm ?? true;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    this.#log = context.log;
    this.#instance = Math.random().toString(36).slice(2, 10);
    // `mandatory`: a message routed to no queue comes back (`return`) instead of being confirmed
    // and silently thrown away by the broker.
    this.#publishOptions = { persistent: true, mandatory: true, contentType: "application/json", type: "transition", appId: "cluster" };
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
    if (this.#unconfirmed > 0 && this.#closeTimeoutMs > 0) {
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
    const left = this.#unconfirmed;
    this.#ackedAhead.clear();
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

  /** Counters for `/metrics`; `published = confirmed + buffered + inFlight + dropped`. */
  stats(): AmqpStats {
    const inFlight = this.#inFlight;
    return {
      published: this.#nextSeq - 1,
      confirmed: this.#confirmed,
      buffered: this.#unconfirmed - inFlight,
      inFlight,
      dropped: this.#dropped,
      sent: this.#sent,
      returned: this.#returned,
      queueMissing: this.#queueMissing,
      reconnects: this.#reconnects,
      connected: this.#channel !== null,
    };
  }

  /** Seqs neither confirmed nor dropped: buffered or in flight. */
  get #unconfirmed(): number {
    return this.#nextSeq - this.#headSeq - this.#ackedAhead.size;
  }

  /** Unconfirmed seqs sent on the current channel. */
  get #inFlight(): number {
    if (this.#channel === null) return 0;
    let acked = 0;
    for (const seq of this.#ackedAhead) if (seq < this.#sendSeq) acked++;
    return this.#sendSeq - this.#headSeq - acked;
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
      if (this.#ackedAhead.has(seq)) {
        // Confirmed on an earlier channel: delivered, not sent again.
        this.#sendSeq++;
        continue;
      }
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
      this.#sent++;
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
    if (seq === this.#headSeq) {
      this.#confirmed++;
      this.#advance();
      while (this.#ackedAhead.size > 0 && this.#ackedAhead.delete(this.#headSeq)) this.#advance();
      this.#compact();
    } else if (seq > this.#headSeq && !this.#ackedAhead.has(seq)) {
      this.#confirmed++;
      this.#ackedAhead.add(seq);
    }
    if (this.#unconfirmed === 0) this.#flushed?.();
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
    let count = this.#nextSeq - this.#headSeq - this.#maxBuffered;
    this.#headSeq += count;
    this.#off += count;
    if (this.#sendSeq < this.#headSeq) this.#sendSeq = this.#headSeq;
    if (this.#ackedAhead.size > 0) {
      // Confirmed ones among them were delivered, not dropped.
      for (const seq of this.#ackedAhead) {
        if (seq < this.#headSeq) {
          this.#ackedAhead.delete(seq);
          count--;
        }
      }
    }
    this.#dropped += count;
    this.#dropsToReport += count;
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
        buffered: this.#unconfirmed,
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
    let missing = false;
    try {
      // After a reconnect: was the queue still there? A deleted queue, or one the broker lost in
      // a crash, took what the broker had confirmed into it; say so, then declare it again.
      if (this.#opened) missing = !(await queueExists(conn, this.#queue));
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
    this.#opened = true;
    if (missing) this.#queueWasMissing();
    this.#conn = conn;
    this.#channel = channel;
    this.#sendSeq = this.#headSeq;
    this.#waitingDrain = false;
    channel.on("return", (msg: ConsumeMessage) => this.#onReturn(generation, msg));
    conn.on("close", (err?: unknown) => this.#lost(generation, err ?? lastError ?? new Error("connection closed")));
    channel.on("close", () => this.#lost(generation, lastError ?? new Error("channel closed")));
    conn.on("blocked", (reason: string) => this.#log.warn(`RabbitMQ at "${this.#target}" blocked publishing: ${reason}`));
    conn.on("unblocked", () => this.#log.info(`RabbitMQ at "${this.#target}" unblocked publishing`));
  }

  #queueWasMissing(): void {
    this.#queueMissing++;
    const message = `queue "${this.#queue}" was missing at RabbitMQ "${this.#target}" after reconnecting ` +
      `(deleted, or lost by the broker): declared it again; transitions the broker had confirmed into it are gone with it`;
    this.#log.warn(message);
    try {
      this.#scheduler?.logEvent("plugin", { plugin: this.name, level: "warning", message, queue: this.#queue });
    } catch (err) {
      this.#log.error(`cannot log event: ${describe(err, "")}`);
    }
  }

  /**
   * A message routed to no queue (the queue was deleted, or the binding): the broker returns it
   * before confirming it. Starting over on a new channel ignores that confirm, re-declares the
   * queue, and sends the message (and those after it) again.
   */
  #onReturn(generation: number, msg: ConsumeMessage): void {
    if (generation !== this.#generation || this.#closed) return;
    this.#returned++;
    const { replyCode, replyText } = msg.fields as unknown as { replyCode?: number; replyText?: string };
    this.#lost(generation, new Error(`message returned by the broker (${replyCode ?? "?"} ${replyText ?? "unroutable"}): queue "${this.#queue}" is missing`));
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
    // A channel error leaves the connection open: close it, one reconnect path serves both.
    conn?.close().catch(() => {});
    if (!this.#outageLogged) {
      this.#outageLogged = true;
      this.#log.warn(
        `lost connection to RabbitMQ at "${this.#target}": ${this.#describe(err)}; reconnecting, ` +
          `${this.#unconfirmed} transitions buffered`,
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
    this.#log.info(`reconnected to RabbitMQ at "${this.#target}"; resending ${this.#unconfirmed} transitions`);
    if (this.#unconfirmed > 0 && !this.#pumpScheduled) this.#schedulePump();
  }

  #jitter(ms: number): number {
    return Math.min(BACKOFF_MAX_MS, Math.round(ms * (0.8 + Math.random() * 0.4)));
  }

  #describe(err: unknown): string {
    return describe(err, this.#user, this.#password);
  }
}

/** Whether `queue` exists, asked on a channel of its own (a missing queue closes the channel). */
async function queueExists(conn: ChannelModel, queue: string): Promise<boolean> {
  const probe = await conn.createChannel();
  probe.on("error", () => {});
  try {
    await probe.checkQueue(queue);
    await probe.close().catch(() => {});
    return true;
  } catch (err) {
    if (/NOT_FOUND|404/.test(errorText(err))) return false;
    throw err;
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
