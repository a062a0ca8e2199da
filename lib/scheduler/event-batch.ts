/**
 * The events of one tick as subscribers receive them, and their encodings made once.
 *
 * A tick's transition events are not objects: a batch refers to the event log's columns by slot.
 * Its CBOR is written straight from the columns into one buffer (event-cbor.ts), every event's
 * byte range kept, so that a CBOR array and one event's CBOR frame are copied or cut from the
 * same bytes. Its JSON is one `JSON.stringify` of the whole tick as an array (the fastest way to
 * JSON in these runtimes: a third cheaper than one call per event, and one flat text instead of
 * thousands to join; writing the bytes by hand was measured slower), with where each event
 * starts found by its separator `},{"seq":` (which no JSON string holds unescaped, and which is
 * checked to occur exactly once per event: a tick with nested `seq` objects is made one event at a
 * time instead). A JSON array is that text, one event's JSON a slice of it, and the JSON lines of
 * `jsonl` its UTF-8 bytes with the separators' commas turned into newlines. All of it is made once
 * however many subscribers and plugins send it; batches filtered by topic share their tick's
 * encodings. A batch is valid while it is delivered (the log's ring moves on afterwards): take
 * what you need from it then.
 *
 * @module
 */
import { encodeEventItems } from "./event-cbor.ts";
import { arrayHeadRoom, type ClusterEvent, type EncodedItems, type EventItems, spansAt, type TickBuffer, type TransitionColumns } from "./event-types.ts";

export type { ClusterEvent, TransitionColumns };

/** The events of a tick (or a replay), with their encodings made once. */
export class Tick implements EventItems {
  readonly columns: TransitionColumns | null;
  readonly items: ArrayLike<number>;
  readonly others: readonly ClusterEvent[];
  readonly otherJson: readonly (string | undefined)[];
  #json: (string | undefined)[] | undefined;
  #joined: JoinedJson | null | undefined;
  #cbor: EncodedItems | undefined;
  #objects: (ClusterEvent | undefined)[] | undefined;
  readonly #buffer: TickBuffer | null;

  /** `buffer`: where its CBOR is written, reused by the next tick (null: a buffer of its own). */
  constructor(columns: TransitionColumns | null, items: ArrayLike<number>, others: readonly ClusterEvent[], otherJson: readonly (string | undefined)[] = [], buffer: TickBuffer | null = null) {
    this.columns = columns;
    this.items = items;
    this.others = others;
    this.otherJson = otherJson;
    this.#buffer = buffer;
  }

  /** A tick of event objects only (a replay). */
  static of(events: readonly ClusterEvent[]): Tick {
    const items = new Int32Array(events.length);
    for (let i = 0; i < items.length; i++) items[i] = -1 - i;
    return new Tick(null, items, events);
  }

  seqOf(item: number): number {
    return item >= 0 ? this.columns!.seq[item] : this.others[-1 - item].seq;
  }

  topicOf(item: number): string {
    return item >= 0 ? "transition" : this.others[-1 - item].topic;
  }

  /** The i-th item's JSON text, made once. */
  json(i: number): string {
    const joined = this.joined();
    if (joined !== null) return joined.text.slice(joined.starts[i], joined.starts[i + 1] - 1);
    const texts = this.#json ??= new Array(this.items.length);
    const text = texts[i];
    if (text !== undefined) return text;
    const item = this.items[i];
    return texts[i] = item < 0 ? this.otherJson[-1 - item] ?? JSON.stringify(this.others[-1 - item]) : JSON.stringify(this.#objects?.[i] ?? this.#make(item));
  }

  /**
   * Every item as one JSON array, with where each item starts, made once; `null` when the
   * separators cannot be told from the events' own text (an event that nests `{"seq": …}`
   * objects in an array) or an event does not encode: then each item is made alone.
   */
  joined(): JoinedJson | null {
    if (this.#joined !== undefined) return this.#joined;
    const n = this.items.length;
    const objects = new Array<ClusterEvent>(n);
    for (let i = 0; i < n; i++) objects[i] = this.object(i);
    let text: string;
    try {
      text = JSON.stringify(objects);
    } catch {
      return this.#joined = null;
    }
    // Item i is text[starts[i], starts[i + 1] - 1): each ends one character (a comma, or the
    // array's closing bracket) before the next one starts.
    const starts = new Uint32Array(n + 1);
    starts[0] = 1;
    starts[n] = text.length;
    let k = 1;
    for (let at = text.indexOf(separator, 1); at >= 0; at = text.indexOf(separator, at + 2)) {
      if (k >= n) return this.#joined = null; // one too many: some event nests a `seq` object
      starts[k++] = at + 2;
    }
    if (n > 0 && k !== n) return this.#joined = null; // an event that does not start with `seq`
    return this.#joined = { text, starts };
  }

  /** Every item's CBOR, written once. */
  cbor(): EncodedItems {
    return this.#cbor ??= encodeEventItems(this, this.#buffer);
  }

  /** The i-th item as an object (made once, for the few who want objects). */
  object(i: number): ClusterEvent {
    const objects = this.#objects ??= new Array(this.items.length);
    return objects[i] ??= this.#make(this.items[i]);
  }

  #make(item: number): ClusterEvent {
    if (item < 0) return this.others[-1 - item];
    const c = this.columns!;
    const event = transitionEvent(c.seq[item], c.time[item], c.key[item], c.start[item], c.finish[item], c.stimulus[item], c.worker[item]);
    const startstops = spansAt(c, item);
    if (startstops !== undefined) event.startstops = startstops;
    return event;
  }
}

/**
 * The events of one tick (or of a replay) for one topic filter: `select` picks the tick's items
 * (all when null). Encodings are made at most once.
 */
export class EventBatch {
  readonly #tick: Tick;
  readonly #select: number[] | null;
  #lines: string | undefined;
  #array: string | undefined;
  #cbor: Uint8Array | undefined;
  #events: ClusterEvent[] | undefined;

  constructor(tick: Tick, select: number[] | null = null) {
    this.#tick = tick;
    this.#select = select;
  }

  /** A batch of these event objects. */
  static of(events: readonly ClusterEvent[]): EventBatch {
    return new EventBatch(Tick.of(events));
  }

  /** How many events. */
  get length(): number {
    return this.#select === null ? this.#tick.items.length : this.#select.length;
  }

  /** The seq of the first event (`Infinity` for none). */
  get firstSeq(): number {
    return this.length === 0 ? Infinity : this.#tick.seqOf(this.#tick.items[this.#index(0)]);
  }

  /** The events as objects, in seq order (made on demand: the encodings need none). */
  get events(): readonly ClusterEvent[] {
    if (this.#events) return this.#events;
    const out = new Array<ClusterEvent>(this.length);
    for (let i = 0; i < out.length; i++) out[i] = this.#tick.object(this.#index(i));
    return this.#events = out;
  }

  /** The events that are not transitions, as objects (no transition is made into one). */
  nonTransitions(): ClusterEvent[] {
    const tick = this.#tick;
    const out: ClusterEvent[] = [];
    for (let i = 0; i < this.length; i++) {
      const index = this.#index(i);
      const item = tick.items[index];
      if (tick.topicOf(item) !== "transition") out.push(tick.object(index));
    }
    return out;
  }

  #index(i: number): number {
    return this.#select === null ? i : this.#select[i];
  }

  /** The JSON text of the i-th event. */
  jsonAt(i: number): string {
    return this.#tick.json(this.#index(i));
  }

  /** The events as one JSON array. */
  jsonArray(): string {
    if (this.#array !== undefined) return this.#array;
    const joined = this.#select === null ? this.#tick.joined() : null;
    return this.#array = joined !== null ? joined.text : `[${this.#texts().join(",")}]`;
  }

  /** The events as JSON lines, each ending in a newline. */
  jsonLines(): string {
    return this.#lines ??= this.#texts().join("\n") + "\n";
  }

  /**
   * The events as JSON lines in UTF-8, each ending in a newline (what `jsonl` appends): the
   * tick's JSON array encoded once, its separators' commas and its closing bracket turned into
   * newlines in place (where the text is ASCII, so that characters and bytes line up).
   */
  jsonLinesBytes(): Uint8Array {
    const joined = this.#select === null ? this.#tick.joined() : null;
    if (joined !== null && joined.text.length > 2) {
      const { text, starts } = joined;
      const bytes = textEncoder.encode(text);
      if (bytes.length === text.length) {
        const n = starts.length - 1;
        for (let i = 1; i < n; i++) bytes[starts[i] - 1] = 0x0a;
        bytes[bytes.length - 1] = 0x0a;
        return bytes.subarray(1);
      }
    }
    return textEncoder.encode(this.jsonLines());
  }

  #texts(): string[] {
    const out = new Array<string>(this.length);
    for (let i = 0; i < out.length; i++) out[i] = this.jsonAt(i);
    return out;
  }

  /** The events as one CBOR array. */
  cbor(): Uint8Array {
    if (this.#cbor) return this.#cbor;
    const all = this.#tick.cbor();
    const { bytes, offsets } = this.#select === null ? all : pick(all, this.#select);
    const n = this.length;
    // The head goes into the room left before the items: the same bytes for every batch of the
    // whole tick, so batches sharing a tick's buffer may each write it.
    const at = offsets[0] - arrayHeadRoom;
    bytes[at] = 0x9a; // an array with a 4-byte count
    bytes[at + 1] = (n >>> 24) & 0xff;
    bytes[at + 2] = (n >>> 16) & 0xff;
    bytes[at + 3] = (n >>> 8) & 0xff;
    bytes[at + 4] = n & 0xff;
    return this.#cbor = bytes.subarray(at, offsets[n]);
  }

  /** The i-th event's CBOR (a view on the batch's bytes: send it, do not keep it). */
  cborAt(i: number): Uint8Array {
    const { bytes, offsets } = this.#tick.cbor();
    const item = this.#index(i);
    return bytes.subarray(offsets[item], offsets[item + 1]);
  }

  /** A batch of the events of these topics after seq `after`, sharing this one's encodings. */
  only(topics: ReadonlySet<string> | null, after = 0): EventBatch {
    const tick = this.#tick;
    const n = this.length;
    // A whole tick of transitions only, all after `after`, for a filter that takes transitions:
    // all of it, without a look at each event.
    if (this.#select === null && tick.others.length === 0 && (topics === null || topics.has("transition")) && (n === 0 || this.firstSeq > after)) return this;
    let all = true;
    for (let i = 0; i < n && all; i++) {
      const item = tick.items[this.#index(i)];
      all = tick.seqOf(item) > after && (topics === null || topics.has(tick.topicOf(item)));
    }
    if (all) return this; // the usual case (a tick of transitions for transition subscribers): no copy
    const select: number[] = [];
    for (let i = 0; i < n; i++) {
      const index = this.#index(i);
      const item = tick.items[index];
      if (tick.seqOf(item) > after && (topics === null || topics.has(tick.topicOf(item)))) select.push(index);
    }
    return new EventBatch(tick, select);
  }

  /** The events after seq `after` (all topics). */
  after(after: number): EventBatch {
    return this.only(null, after);
  }
}

/** A tick's items as one JSON array, and where each starts (`starts[n]` is the text's length). */
export interface JoinedJson {
  readonly text: string;
  readonly starts: Uint32Array;
}

/** What stands between two events in a JSON array of them: each starts with its `seq`. */
const separator = '},{"seq":';

const textEncoder = new TextEncoder();

/** The chosen items' bytes, copied one after the other. */
function pick(all: EncodedItems, select: readonly number[]): EncodedItems {
  let size = arrayHeadRoom;
  for (const i of select) size += all.offsets[i + 1] - all.offsets[i];
  const bytes = new Uint8Array(size);
  const offsets = new Uint32Array(select.length + 1);
  let p = arrayHeadRoom;
  for (let k = 0; k < select.length; k++) {
    const i = select[k];
    offsets[k] = p;
    bytes.set(all.bytes.subarray(all.offsets[i], all.offsets[i + 1]), p);
    p += all.offsets[i + 1] - all.offsets[i];
  }
  offsets[select.length] = p;
  return { bytes, offsets };
}

/** A transition event object, of one fixed shape (no `worker: undefined`: JSON.stringify is a third slower on it). */
export function transitionEvent(seq: number, time: number, key: string, start: string, finish: string, stimulusId: string, worker: string | undefined): ClusterEvent {
  return worker === undefined
    ? { seq, topic: "transition", time, key, start, finish, stimulusId }
    : { seq, topic: "transition", time, key, start, finish, stimulusId, worker };
}
