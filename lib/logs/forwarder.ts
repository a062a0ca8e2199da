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

  constructor(options: ForwarderOptions = {}) {
    this.#max = Math.max(1, options.maxQueued ?? 1000);
    this.#maxChars = options.maxMessageChars ?? 4000;
  }

  /** Records dropped since the start because the queue was full. */
  droppedTotal = 0;

  /** Forwards every record this process logs from now on (until `detach`). */
  attach(): void {
    this.#detach ??= addLogSink((entry) => this.push(fromEntry(entry)));
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

  /** Takes the queued records (oldest first), with one saying how many were dropped, if any. */
  take(): WireLogRecord[] {
    const out = this.#head === 0 ? this.#queue : this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    if (this.#dropped > 0) {
      const first = out[0]?.time ?? Date.now() / 1000;
      out.unshift({ time: first, level: "warn", source: "logs", message: `${this.#dropped} log records dropped (forwarding queue full)` });
      this.#dropped = 0;
    }
    return out;
  }
}

function fromEntry(entry: LogEntry): WireLogRecord {
  const record: WireLogRecord = { time: entry.time, level: entry.level, source: entry.component, message: entry.message };
  if (entry.fields?.key !== undefined) record.key = entry.fields.key;
  return record;
}
