/**
 * A `Map` and a `Set` that split into 16 smaller ones when they grow big, for the scheduler's
 * tables that reach a million entries (tasks by key, a worker's held tasks, a client's wanted
 * tasks). A runtime's `Map` grows by rehashing every entry at once: at 786,432 entries that is
 * one 60–65 ms pause (and shrinking after deletes another 30–40 ms), long enough to stall every
 * socket. Sixteen shards grow one at a time, each pause a sixteenth as long. Until a table
 * passes 32,768 entries it stays one table (a lookup there costs a length check more); past it
 * a lookup costs a few character reads more (a set of tasks shards them by key too). Iteration
 * goes shard by shard, not in insertion order.
 *
 * @module
 */

/** 16: `shardOf` takes the top four bits. */
const shardCount = 16;

/**
 * A key's shard: its last four characters and its middle one (where keys differ: `inc-1`,
 * `('x', 7)`, `x-3-12`), mixed by a multiplication so that numbered keys spread evenly (uneven
 * shards would grow their tables early and hold more memory). Missing characters count as 0.
 */
function shardOf(key: string): number {
  const n = key.length;
  const h = key.charCodeAt(n - 1) ^ (key.charCodeAt(n - 2) << 7) ^ (key.charCodeAt(n - 3) << 14) ^ (key.charCodeAt(n - 4) << 21) ^
    (key.charCodeAt(n >> 1) << 11);
  return Math.imul(h, 0x9e3779b1) >>> 28;
}

/**
 * A table splits into shards once it holds more than this many entries: below, one table's
 * rehash takes a millisecond or two, and a lookup needs no shard. Small enough that the split
 * itself (a few milliseconds) stays short when several tables that grow together (the tasks and
 * a client's wanted tasks) split in the same step.
 */
const splitAbove = 1 << 15;

/**
 * A map from strings: one `Map` up to `splitAbove` entries, 16 past it (back to one when emptied).
 *
 * @example
 * ```ts
 * const tasks = new ShardedMap<number>();
 * tasks.set("inc-1", 1);
 * tasks.get("inc-1"); // 1
 * ```
 */
export class ShardedMap<V> implements ReadonlyMap<string, V> {
  #shards: Map<string, V>[] = [new Map()];
  #size = 0;

  #shard(key: string): Map<string, V> {
    const shards = this.#shards;
    return shards[shards.length === 1 ? 0 : shardOf(key)];
  }
  get size(): number {
    return this.#size;
  }
  get(key: string): V | undefined {
    return this.#shard(key).get(key);
  }
  has(key: string): boolean {
    return this.#shard(key).has(key);
  }
  set(key: string, value: V): this {
    const shard = this.#shard(key);
    const before = shard.size;
    shard.set(key, value);
    this.#size += shard.size - before;
    if (this.#size > splitAbove && this.#shards.length === 1) {
      const shards = Array.from({ length: shardCount }, () => new Map<string, V>());
      for (const [k, v] of shard) shards[shardOf(k)].set(k, v);
      this.#shards = shards;
    }
    return this;
  }
  delete(key: string): boolean {
    const deleted = this.#shard(key).delete(key);
    if (deleted && --this.#size === 0 && this.#shards.length > 1) this.#shards = [new Map()];
    return deleted;
  }
  clear(): void {
    this.#shards = [new Map()];
    this.#size = 0;
  }
  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const shard of this.#shards) for (const [key, value] of shard) fn(value, key, this);
  }
  *entries(): MapIterator<[string, V]> {
    for (const shard of this.#shards) yield* shard.entries();
  }
  *keys(): MapIterator<string> {
    for (const shard of this.#shards) yield* shard.keys();
  }
  *values(): MapIterator<V> {
    for (const shard of this.#shards) yield* shard.values();
  }
  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }
}

/** What a `ShardedSet` holds: objects with a key, fixed for their life (tasks). */
export interface Keyed {
  readonly key: string;
}

/**
 * A set of objects with a key: one `Set` up to `splitAbove` members, then 16 by the key (as
 * `ShardedMap`'s), so no object needs a field more.
 *
 * @example
 * ```ts
 * const held = new ShardedSet<{ key: string }>();
 * held.add({ key: "inc-1" });
 * ```
 */
export class ShardedSet<T extends Keyed> implements Iterable<T> {
  #shards: Set<T>[] = [new Set()];
  #size = 0;

  #shard(value: T): Set<T> {
    const shards = this.#shards;
    return shards[shards.length === 1 ? 0 : shardOf(value.key)];
  }
  get size(): number {
    return this.#size;
  }
  has(value: T): boolean {
    return this.#shard(value).has(value);
  }
  add(value: T): this {
    const shard = this.#shard(value);
    const before = shard.size;
    shard.add(value);
    this.#size += shard.size - before;
    if (this.#size > splitAbove && this.#shards.length === 1) {
      const shards = Array.from({ length: shardCount }, () => new Set<T>());
      for (const v of shard) shards[shardOf(v.key)].add(v);
      this.#shards = shards;
    }
    return this;
  }
  delete(value: T): boolean {
    const deleted = this.#shard(value).delete(value);
    if (deleted && --this.#size === 0 && this.#shards.length > 1) this.#shards = [new Set()];
    return deleted;
  }
  clear(): void {
    this.#shards = [new Set()];
    this.#size = 0;
  }
  forEach(fn: (value: T, again: T, set: ShardedSet<T>) => void): void {
    for (const shard of this.#shards) for (const value of shard) fn(value, value, this);
  }
  *values(): SetIterator<T> {
    for (const shard of this.#shards) yield* shard;
  }
  keys(): SetIterator<T> {
    return this.values();
  }
  *entries(): SetIterator<[T, T]> {
    for (const value of this.values()) yield [value, value];
  }
  [Symbol.iterator](): SetIterator<T> {
    return this.values();
  }
}
