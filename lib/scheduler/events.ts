/**
 * The scheduler's event log: every event gets the next `seq`; the kept events are replayed for
 * `since=SEQ`, and subscribers receive events batched once per tick.
 *
 * What is kept is bounded per topic class, so that one class cannot push out another:
 * `transition` events (the scheduler's hot path, one fixed shape) sit in a ring bounded by count;
 * every other event (`log`, `plugin`, `worker`, posted topics) sits in a second ring bounded by
 * count and by the bytes of its JSON text. Events posted from outside (`post`) are checked
 * against the event limits (lib/limits.ts) before they are numbered or reach anyone.
 *
 * @module
 */
import { checkEvent, defaultLimits, type Limits } from "../limits.ts";

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

/** Options of `EventLog` beyond the transitions kept. */
export interface EventLogOptions {
  /** Events other than transitions kept, at most. @default 20000 */
  otherKept?: number;
  /** Bytes (of JSON text) of the events other than transitions kept, at most. @default 67108864 (64 MiB) */
  otherBytes?: number;
  /** The size and depth limits of posted events. @default defaultLimits */
  limits?: Limits;
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
  // Transitions: slot = (n-th transition) % capacity. Each kept event's JSON text, made at most
  // once (`json`), sits in the same slot of #transitionJson.
  #transitions: (ClusterEvent | undefined)[];
  #transitionJson: (string | undefined)[];
  #transitionCapacity: number;
  #transitionCount = 0;
  // Other events: kept from absolute index #otherHead to #otherCount (exclusive), slot = index % capacity.
  #others: (ClusterEvent | undefined)[];
  #otherJson: (string | undefined)[];
  #otherCapacity: number;
  #otherHead = 0;
  #otherCount = 0;
  #otherBytes = 0;
  #otherBudget: number;
  #limits: Limits;
  #seq = 0;
  #subscribers = new Set<SubscriberEntry>();
  /** Events since the last flush (kept only while someone subscribes). */
  #pending: ClusterEvent[] = [];
  #flushScheduled = false;
  /** Called synchronously for every appended event (plugins' `logEvent`). */
  onEvent: ((event: ClusterEvent) => void) | null = null;

  constructor(capacity = 20_000, options: EventLogOptions = {}) {
    this.#transitionCapacity = Math.max(capacity, 10_000);
    this.#transitions = new Array(this.#transitionCapacity);
    this.#transitionJson = new Array(this.#transitionCapacity);
    this.#otherCapacity = Math.max(options.otherKept ?? 20_000, 1);
    this.#others = new Array(this.#otherCapacity);
    this.#otherJson = new Array(this.#otherCapacity);
    this.#otherBudget = options.otherBytes ?? 64 * 1024 * 1024;
    this.#limits = options.limits ?? defaultLimits;
  }

  /** An event's JSON text, made once however many subscribers receive it. */
  json(event: ClusterEvent): string {
    if (event.topic === "transition") {
      const first = Math.max(this.#transitionCount - this.#transitionCapacity, 0);
      const index = findSeq(this.#transitions, this.#transitionCapacity, first, this.#transitionCount, event.seq);
      if (index >= 0 && this.#transitions[index % this.#transitionCapacity] === event) {
        const slot = index % this.#transitionCapacity;
        return this.#transitionJson[slot] ??= toJson(event);
      }
    }
    const index = findSeq(this.#others, this.#otherCapacity, this.#otherHead, this.#otherCount, event.seq);
    if (index >= 0 && this.#others[index % this.#otherCapacity] === event) return this.#otherJson[index % this.#otherCapacity]!;
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

  /** What is kept now: transitions, other events, and the other events' bytes of JSON. */
  get kept(): { transitions: number; others: number; otherBytes: number } {
    return {
      transitions: Math.min(this.#transitionCount, this.#transitionCapacity),
      others: this.#otherCount - this.#otherHead,
      otherBytes: this.#otherBytes,
    };
  }

  /**
   * Appends an event made by the scheduler itself; returns it with its `seq` and `time`.
   * Events from outside go through `post`, which checks them first.
   */
  append(topic: string, fields: Record<string, unknown>): ClusterEvent {
    const seq = ++this.#seq;
    const time = Date.now() / 1000;
    // seq, topic and time come first and cannot be overridden by the fields.
    const event = { seq, topic, time, ...fields } as ClusterEvent;
    event.seq = seq;
    event.topic = topic;
    event.time = time;
    this.#storeOther(event);
    return event;
  }

  /**
   * Appends an event posted from outside (HTTP, a client, a worker, a plugin's `logEvent`):
   * refused with a `LimitError` (topic length, size, depth) or an `InputError` (not JSON) before
   * it is numbered or reaches anyone. A value that is not an object is kept as `{value}`.
   *
   * @example
   * ```ts
   * log.post("alerts", { level: "high" }); // throws LimitError for a 2 MiB one
   * ```
   */
  post(topic: string, fields: unknown, extra?: Record<string, unknown>): ClusterEvent {
    const object = fields !== null && typeof fields === "object" && !Array.isArray(fields) && !ArrayBuffer.isView(fields)
      ? fields as Record<string, unknown>
      : { value: fields };
    checkEvent(topic, object, this.#limits);
    return this.append(topic, extra ? { ...object, ...extra } : object);
  }

  /**
   * Appends a `transition` event. One object of one fixed shape per transition: this is the
   * scheduler's hot path.
   */
  appendTransition(key: string, start: string, finish: string, stimulusId: string, worker: string | undefined, startstops?: unknown[]): void {
    // Without the worker, no `worker: undefined`: JSON.stringify is a third slower on it.
    const seq = ++this.#seq;
    const time = Date.now() / 1000;
    const event: ClusterEvent = worker === undefined
      ? { seq, topic: "transition", time, key, start, finish, stimulusId }
      : { seq, topic: "transition", time, key, start, finish, stimulusId, worker };
    // Dask's transition kwargs: the measured spans of a task that reached memory or erred.
    if (startstops !== undefined) event.startstops = startstops;
    const slot = this.#transitionCount++ % this.#transitionCapacity;
    this.#transitions[slot] = event;
    this.#transitionJson[slot] = undefined;
    this.#deliver(event);
  }

  #storeOther(event: ClusterEvent): void {
    let json: string;
    try {
      json = toJson(event);
    } catch (err) {
      // A scheduler-made event always encodes; should one not, it is kept as a note, not lost silently.
      json = JSON.stringify({ seq: event.seq, topic: event.topic, time: event.time, error: `Cannot encode event: ${(err as Error).message}` });
    }
    const capacity = this.#otherCapacity;
    // Evict the oldest until this one fits in count and bytes (a single event over the budget is
    // still kept, alone: only posted events are refused by size, scheduler-made ones are small).
    while (this.#otherCount - this.#otherHead >= capacity || (this.#otherCount > this.#otherHead && this.#otherBytes + json.length > this.#otherBudget)) {
      const slot = this.#otherHead++ % capacity;
      this.#otherBytes -= this.#otherJson[slot]!.length;
      this.#others[slot] = undefined;
      this.#otherJson[slot] = undefined;
    }
    const slot = this.#otherCount++ % capacity;
    this.#others[slot] = event;
    this.#otherJson[slot] = json;
    this.#otherBytes += json.length;
    this.#deliver(event);
  }

  #deliver(event: ClusterEvent): void {
    if (this.#subscribers.size > 0) {
      this.#pending.push(event);
      this.#scheduleFlush();
    }
    this.onEvent?.(event);
  }

  /** The kept events after `since`, optionally of some topics only, in seq order. */
  replay(since: number, topics: ReadonlySet<string> | null): ClusterEvent[] {
    const tCap = this.#transitionCapacity;
    const oCap = this.#otherCapacity;
    const tEnd = this.#transitionCount;
    const oEnd = this.#otherCount;
    let t = firstAfter(this.#transitions, tCap, Math.max(tEnd - tCap, 0), tEnd, since);
    let o = firstAfter(this.#others, oCap, this.#otherHead, oEnd, since);
    const out: ClusterEvent[] = [];
    while (t < tEnd || o < oEnd) {
      let event: ClusterEvent;
      if (o >= oEnd || (t < tEnd && this.#transitions[t % tCap]!.seq < this.#others[o % oCap]!.seq)) {
        event = this.#transitions[t++ % tCap]!;
      } else {
        event = this.#others[o++ % oCap]!;
      }
      if (topics === null || topics.has(event.topic)) out.push(event);
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

/** The absolute index in `[from, to)` of a ring whose events have this seq, or -1. */
function findSeq(ring: (ClusterEvent | undefined)[], capacity: number, from: number, to: number, seq: number): number {
  const index = firstAfter(ring, capacity, from, to, seq - 1);
  return index < to && ring[index % capacity]!.seq === seq ? index : -1;
}

/** The first absolute index in `[from, to)` of a ring (seqs ascending) whose seq is after `since`. */
function firstAfter(ring: (ClusterEvent | undefined)[], capacity: number, from: number, to: number, since: number): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = lo + ((hi - lo) >> 1);
    if (ring[mid % capacity]!.seq <= since) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * An event as JSON text. (Hand-written JSON for transitions was tried: it builds rope strings
 * that cost more when flattened for a send or a join than JSON.stringify's flat result.)
 */
export function toJson(event: ClusterEvent): string {
  return JSON.stringify(event);
}
