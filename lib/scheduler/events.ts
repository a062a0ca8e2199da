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
  #subscribers = new Set<SubscriberEntry>();
  /** Events since the last flush (kept only while someone subscribes). */
  #pending: ClusterEvent[] = [];
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
    const seq = ++this.#seq;
    const time = Date.now() / 1000;
    // seq, topic and time come first and cannot be overridden by the fields.
    const event = { seq, topic, time, ...fields } as ClusterEvent;
    event.seq = seq;
    event.topic = topic;
    event.time = time;
    this.#store(event);
    return event;
  }

  /**
   * Appends a `transition` event. One object of one fixed shape per transition: this is the
   * scheduler's hot path.
   */
  appendTransition(key: string, start: string, finish: string, stimulusId: string, worker: string | undefined): void {
    // Without the worker, no `worker: undefined`: JSON.stringify is a third slower on it.
    const seq = ++this.#seq;
    const time = Date.now() / 1000;
    const event: ClusterEvent = worker === undefined
      ? { seq, topic: "transition", time, key, start, finish, stimulusId }
      : { seq, topic: "transition", time, key, start, finish, stimulusId, worker };
    this.#store(event);
  }

  #store(event: ClusterEvent): void {
    const slot = event.seq % this.#capacity;
    this.#ring[slot] = event;
    this.#jsonRing[slot] = undefined;
    if (this.#subscribers.size > 0) {
      this.#pending.push(event);
      this.#scheduleFlush();
    }
    this.onEvent?.(event);
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
    const entry: SubscriberEntry = Object.assign(sub, {
      filterKey: sub.topics === null ? "*" : [...sub.topics].sort().join(","),
      fromSeq: this.#seq,
      replay: since === undefined ? [] : this.replay(since, sub.topics),
    });
    this.#subscribers.add(entry);
    if (entry.replay.length > 0) this.#scheduleFlush();
    return () => {
      this.#subscribers.delete(entry);
      if (this.#subscribers.size === 0) this.#pending = [];
    };
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setTimeout(() => this.flush(), 0);
  }

  /**
   * Delivers pending events to every subscriber now. Subscribers with the same topics receive
   * the same array, so that what is made of it (JSON, CBOR) can be made once.
   */
  flush(): void {
    this.#flushScheduled = false;
    const events = this.#pending;
    this.#pending = [];
    const byFilter = new Map<string, ClusterEvent[]>();
    for (const sub of this.#subscribers) {
      let list: ClusterEvent[];
      if (events.length > 0 && events[0].seq > sub.fromSeq) {
        let shared = byFilter.get(sub.filterKey);
        if (!shared) {
          shared = sub.topics === null ? events : events.filter((e) => sub.topics!.has(e.topic));
          byFilter.set(sub.filterKey, shared);
        }
        list = shared;
      } else {
        // Subscribed in the middle of this batch: only what came after (the rest was replayed).
        list = events.filter((e) => e.seq > sub.fromSeq && (sub.topics === null || sub.topics.has(e.topic)));
      }
      if (sub.replay.length > 0) {
        list = [...sub.replay, ...list];
        sub.replay = [];
      }
      if (list.length === 0) continue;
      try {
        sub.deliver(list);
      } catch {
        this.#subscribers.delete(sub);
      }
    }
  }
}

interface SubscriberEntry extends Subscriber {
  filterKey: string;
  /** The last seq before it subscribed: live delivery starts after it. */
  fromSeq: number;
  replay: ClusterEvent[];
}

/**
 * An event as JSON text. (Hand-written JSON for transitions was tried: it builds rope strings
 * that cost more when flattened for a send or a join than JSON.stringify's flat result.)
 */
export function toJson(event: ClusterEvent): string {
  return JSON.stringify(event);
}
