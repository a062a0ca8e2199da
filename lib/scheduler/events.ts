/**
 * The scheduler's event log: every event gets the next `seq`, the last `capacity` events are kept
 * in a ring for `since=SEQ` replay, and subscribers receive events batched once per tick.
 *
 * @module
 */

/** One event: `{seq, topic, time, ...fields}`. */
export interface ClusterEvent {
  seq: number;
  topic: string;
  time: number;
  [field: string]: unknown;
}

/** A live subscriber; `deliver` receives the events of one tick, in order. */
export interface Subscriber {
  topics: ReadonlySet<string> | null;
  deliver(events: ClusterEvent[]): void;
}

/**
 * A bounded event log with replay and batched fan-out.
 *
 * @example
 * ```ts
 * const log = new EventLog(10_000);
 * log.append("log", { message: "hello" });
 * ```
 */
export class EventLog {
  #ring: (ClusterEvent | undefined)[];
  /** Each kept event's JSON text, made at most once (`json`), by the same slot as the ring. */
  #jsonRing: (string | undefined)[];
  #capacity: number;
  #seq = 0;
  #subscribers = new Set<Subscriber & { pending: ClusterEvent[] }>();
  #flushScheduled = false;
  /** Called synchronously for every appended event (plugins' `logEvent`). */
  onEvent: ((event: ClusterEvent) => void) | null = null;

  constructor(capacity = 20_000) {
    this.#capacity = Math.max(capacity, 10_000);
    this.#ring = new Array(this.#capacity);
    this.#jsonRing = new Array(this.#capacity);
  }

  /** An event's JSON text, made once however many subscribers receive it. */
  json(event: ClusterEvent): string {
    const slot = event.seq % this.#capacity;
    if (this.#ring[slot] === event) {
      let text = this.#jsonRing[slot];
      if (text === undefined) this.#jsonRing[slot] = text = toJson(event);
      return text;
    }
    return toJson(event);
  }

  /** The seq of the newest event (0 before any). */
  get lastSeq(): number {
    return this.#seq;
  }

  /** How many live subscribers there are. */
  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  /** Appends an event; returns it with its `seq` and `time`. */
  append(topic: string, fields: Record<string, unknown>): ClusterEvent {
    const event = { ...fields, seq: ++this.#seq, topic, time: Date.now() / 1000 } as ClusterEvent;
    const slot = event.seq % this.#capacity;
    this.#ring[slot] = event;
    this.#jsonRing[slot] = undefined;
    if (this.#subscribers.size > 0) {
      for (const sub of this.#subscribers) {
        if (sub.topics === null || sub.topics.has(topic)) sub.pending.push(event);
      }
      this.#scheduleFlush();
    }
    this.onEvent?.(event);
    return event;
  }

  /** The kept events after `since`, optionally of some topics only. */
  replay(since: number, topics: ReadonlySet<string> | null): ClusterEvent[] {
    const first = Math.max(since + 1, this.#seq - this.#capacity + 1, 1);
    const out: ClusterEvent[] = [];
    for (let seq = first; seq <= this.#seq; seq++) {
      const event = this.#ring[seq % this.#capacity];
      if (event && event.seq === seq && (topics === null || topics.has(event.topic))) out.push(event);
    }
    return out;
  }

  /** Adds a subscriber; replays the kept events after `since` first. Returns an unsubscribe. */
  subscribe(sub: Subscriber, since?: number): () => void {
    const entry = Object.assign(sub, { pending: since === undefined ? [] : this.replay(since, sub.topics) });
    this.#subscribers.add(entry);
    if (entry.pending.length > 0) this.#scheduleFlush();
    return () => {
      this.#subscribers.delete(entry);
    };
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setTimeout(() => this.flush(), 0);
  }

  /** Delivers pending events to every subscriber now. */
  flush(): void {
    this.#flushScheduled = false;
    for (const sub of this.#subscribers) {
      if (sub.pending.length === 0) continue;
      const events = sub.pending;
      sub.pending = [];
      try {
        sub.deliver(events);
      } catch {
        this.#subscribers.delete(sub);
      }
    }
  }
}

/** An event as JSON text. */
export function toJson(event: ClusterEvent): string {
  return JSON.stringify(event);
}
