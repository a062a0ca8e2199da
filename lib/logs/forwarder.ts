/**
 * A worker's or nanny's log forwarder (Dask's `ForwardLogging`, on by default): every record the
 * process logs is queued here and taken once a second to travel to the scheduler in one `logs`
 * message. The queue is bounded; past the bound the oldest records are dropped and counted, and
 * the next batch says how many, so logging never blocks or grows a worker without limit.
 *
 * @module
 */
import { addLogSink, type LogEntry } from "../log.ts";
import type { WireLogRecord } from "./record.ts";

/** Options of a forwarder. */
export interface ForwarderOptions {
  /** Records queued at most between two takes. @default 1000 */
  maxQueued?: number;
  /** Characters of one message kept at most. @default 4000 */
  maxMessageChars?: number;
  /**
   * The process's own component, dropped from the front of sources: the record says its role
   * already, so a worker's `worker:plugin:timer` travels as `plugin:timer`.
   */
  role?: string;
}

/**
 * Queues log records for the scheduler.
 *
 * @example
 * ```ts
 * const forwarder = new LogForwarder();
 * forwarder.attach(); // every createLogger() record of this process
 * setInterval(() => send({ op: "logs", records: forwarder.take() }), 1000);
 * ```
 */
export class LogForwarder {
  #queue: WireLogRecord[] = [];
  #head = 0;
  #dropped = 0;
  #max: number;
  #maxChars: number;
  #detach: (() => void) | null = null;
  #role: string | undefined;

  constructor(options: ForwarderOptions = {}) {
    this.#max = Math.max(1, options.maxQueued ?? 1000);
    this.#maxChars = options.maxMessageChars ?? 4000;
    this.#role = options.role;
  }

  /** Records dropped since the start because the queue was full. */
  droppedTotal = 0;

  /** Forwards every record this process logs from now on (until `detach`). */
  attach(): void {
    this.#detach ??= addLogSink((entry) => this.push(fromEntry(entry, this.#role)));
  }

  /** Stops forwarding this process's records. */
  detach(): void {
    this.#detach?.();
    this.#detach = null;
  }

  /** Queues one record; the oldest queued one goes when the queue is full. */
  push(record: WireLogRecord): void {
    if (record.message.length > this.#maxChars) record.message = `${record.message.slice(0, this.#maxChars)}… (truncated)`;
    this.#queue.push(record);
    if (this.#queue.length - this.#head > this.#max) {
      this.#head++;
      this.#dropped++;
      this.droppedTotal++;
      // Compact now and then rather than shift() on every drop.
      if (this.#head > this.#max) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
    }
  }

  /** Records queued now. */
  get size(): number {
    return this.#queue.length - this.#head;
  }

  /**
   * Takes the queued records (oldest first), then, if some were dropped, one that says how many:
   * last, so that a receiver keeping only the newest records keeps that one too.
   */
  take(): WireLogRecord[] {
    const out = this.#head === 0 ? this.#queue : this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    if (this.#dropped > 0) {
      out.push({ time: Date.now() / 1000, level: "warn", source: "logs", message: `${this.#dropped} earlier log records dropped (forwarding queue full)` });
      this.#dropped = 0;
    }
    return out;
  }
}

function fromEntry(entry: LogEntry, role: string | undefined): WireLogRecord {
  const own = role !== undefined && entry.component.startsWith(`${role}:`);
  const source = own ? entry.component.slice(role!.length + 1) : entry.component;
  const record: WireLogRecord = { time: entry.time, level: entry.level, source, message: entry.message };
  if (entry.fields?.key !== undefined) record.key = entry.fields.key;
  return record;
}
