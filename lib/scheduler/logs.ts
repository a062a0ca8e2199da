/**
 * The scheduler's store of forwarded log records: a bounded ring per worker and per nanny (so a
 * chatty one cannot push out the others), every record numbered by one global `seq`, queried by
 * `GET /api/v1/logs?worker=&since=&level=`. Also the scheduler's own stderr line for `log`
 * topic events (a plugin's or a task's `logEvent("log", …)`).
 *
 * @module
 */
import type { ComponentLogger } from "../log.ts";
import { levelRank, type LogRecord, parseLevel, type WireLogRecord } from "../logs/record.ts";
import type { ClusterEvent } from "./events.ts";

/** A query of `GET /api/v1/logs`. */
export interface LogQuery {
  /** Only this worker's (and its nanny's) records. */
  worker?: string;
  /** Only records after this seq. */
  since?: number;
  /** Only this level and above. */
  level?: string;
  /** At most this many, the newest. @default 10000 */
  limit?: number;
}

/** Records kept per worker or nanny. */
const defaultPerSource = 1000;
/** Characters of messages kept per worker or nanny: the ring is bounded in bytes too. */
const charsPerSource = 1024 * 1024;
/** Characters of one record's message kept at most. */
const maxMessageChars = 8000;
/** Senders kept, at most: past it, the one that wrote least recently goes (one that left, usually). */
const maxSources = 128;

interface Ring {
  /** Kept from `head` on, oldest first. */
  records: LogRecord[];
  head: number;
  chars: number;
}

/**
 * Forwarded log records, kept per sender.
 *
 * @example
 * ```ts
 * const logs = new LogStore();
 * logs.add("worker", "w1", [{ time: 1, level: "info", source: "worker", message: "hi" }]);
 * logs.query({ worker: "w1", level: "info" });
 * ```
 */
export class LogStore {
  #rings = new Map<string, Ring>();
  #perSource: number;
  #seq = 0;

  constructor(options: { perSource?: number } = {}) {
    this.#perSource = Math.max(1, options.perSource ?? defaultPerSource);
  }

  /** The seq of the newest record (0 when none yet). */
  get lastSeq(): number {
    return this.#seq;
  }

  /** Keeps records that a worker or nanny sent; malformed ones are skipped. */
  add(role: "worker" | "nanny", name: string, records: readonly WireLogRecord[]): void {
    const id = `${role}\u0000${name}`;
    let ring = this.#rings.get(id);
    if (ring) {
      // Most recently written last, so that the first is the one to evict.
      this.#rings.delete(id);
    } else {
      if (this.#rings.size >= maxSources) this.#rings.delete(this.#rings.keys().next().value!);
      ring = { records: [], head: 0, chars: 0 };
    }
    this.#rings.set(id, ring);
    for (const r of records) {
      if (r === null || typeof r !== "object" || typeof r.message !== "string") continue;
      const record: LogRecord = {
        seq: ++this.#seq,
        time: typeof r.time === "number" ? r.time : Date.now() / 1000,
        level: parseLevel(String(r.level ?? "info")) ?? "info",
        source: typeof r.source === "string" ? r.source : role,
        worker: name,
        role,
        // Our workers cut messages at 4,000 characters.
        message: r.message.length > maxMessageChars ? `${r.message.slice(0, maxMessageChars)}… (truncated)` : r.message,
      };
      if (typeof r.key === "string") record.key = r.key;
      ring.records.push(record);
      ring.chars += record.message.length;
    }
    while (ring.records.length - ring.head > this.#perSource || (ring.chars > charsPerSource && ring.records.length - ring.head > 1)) {
      ring.chars -= ring.records[ring.head++].message.length;
    }
    if (ring.head > this.#perSource) {
      ring.records = ring.records.slice(ring.head);
      ring.head = 0;
    }
  }

  /** The kept records that match, oldest first. */
  query(q: LogQuery = {}): LogRecord[] {
    const since = q.since ?? 0;
    const min = q.level === undefined ? 0 : levelRank(q.level);
    const out: LogRecord[] = [];
    for (const ring of this.#rings.values()) {
      const r = ring.records;
      if (r.length === ring.head) continue;
      if (q.worker !== undefined && r[ring.head].worker !== q.worker) continue;
      for (let i = ring.head; i < r.length; i++) {
        const record = r[i];
        if (record.seq > since && levelRank(record.level) >= min) out.push(record);
      }
    }
    out.sort((a, b) => a.seq - b.seq);
    const limit = q.limit ?? 10_000;
    return out.length > limit ? out.slice(out.length - limit) : out;
  }
}

/**
 * Writes a `log` topic event to the scheduler's own log: its `message` (or the event as JSON) at
 * its `level`, naming who sent it.
 *
 * @example
 * ```ts
 * events.onEvent = (e) => { if (e.topic === "log") logTopicEvent(log, e); };
 * ```
 */
export function logTopicEvent(log: ComponentLogger, event: ClusterEvent): void {
  const { seq: _seq, topic: _topic, time: _time, level, message, ...rest } = event;
  const from = ["worker", "nanny", "plugin", "key"].filter((k) => typeof rest[k] === "string").map((k) => `${k}=${rest[k]}`);
  let text = typeof message === "string" ? message : JSON.stringify(rest);
  if (from.length > 0) text = `${text} (${from.join(" ")})`;
  // Anyone with the submit scope may post a `log` event: one line, of bounded length.
  text = text.replace(/[\r\n]+/g, "\\n");
  if (text.length > 2000) text = `${text.slice(0, 2000)}… (truncated)`;
  const rank = parseLevel(String(level ?? "info")) ?? "info";
  const write = rank === "error" ? log.error : rank === "warn" ? log.warn : rank === "debug" ? log.debug : log.info;
  write(`event: ${text}`);
}
