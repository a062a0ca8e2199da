/**
 * A set that holds its first member in a field and makes a `Set` only for a second one. A task
 * is held by one worker and wanted by one client nearly always, and a JavaScript `Set` with one
 * member takes about 256 bytes (its hash table starts at several buckets): two of them were a
 * fifth of a held task's memory at the scheduler.
 *
 * @module
 */

/**
 * The part of `Set` the scheduler uses (`has`, `add`, `delete`, `clear`, `size`, iteration),
 * storing one member without a hash table.
 *
 * @example
 * ```ts
 * const holders = new SmallSet<string>();
 * holders.add("a");
 * holders.add("b"); // now backed by a Set
 * console.log(holders.size, [...holders]); // 2 ["a", "b"]
 * ```
 */
export class SmallSet<T> implements Iterable<T> {
  // `undefined` is never a member: the scheduler's members are workers, clients and tasks.
  #one: T | undefined = undefined;
  #many: Set<T> | null = null;

  get size(): number {
    if (this.#many !== null) return this.#many.size;
    return this.#one === undefined ? 0 : 1;
  }

  has(value: T): boolean {
    if (this.#many !== null) return this.#many.has(value);
    return this.#one === value && value !== undefined;
  }

  add(value: T): this {
    if (value === undefined) throw new TypeError("SmallSet cannot hold undefined");
    if (this.#many !== null) this.#many.add(value);
    else if (this.#one === undefined || this.#one === value) this.#one = value;
    else {
      this.#many = new Set([this.#one, value]);
      this.#one = undefined;
    }
    return this;
  }

  delete(value: T): boolean {
    const many = this.#many;
    if (many !== null) {
      if (!many.delete(value)) return false;
      // Back to one member: the Set goes.
      if (many.size === 1) {
        for (const last of many) this.#one = last;
        this.#many = null;
      }
      return true;
    }
    if (this.#one !== value || value === undefined) return false;
    this.#one = undefined;
    return true;
  }

  clear(): void {
    this.#one = undefined;
    this.#many = null;
  }

  /** The first member (in insertion order), or `undefined` when empty. */
  first(): T | undefined {
    if (this.#many === null) return this.#one;
    for (const value of this.#many) return value;
    return undefined;
  }

  [Symbol.iterator](): Iterator<T> {
    return this.#many !== null ? this.#many.values() : new OneIterator(this.#one);
  }
}

/** Iterates over zero or one value. */
class OneIterator<T> implements Iterator<T> {
  #value: T | undefined;
  constructor(value: T | undefined) {
    this.#value = value;
  }
  next(): IteratorResult<T> {
    const value = this.#value;
    if (value === undefined) return { done: true, value: undefined };
    this.#value = undefined;
    return { done: false, value };
  }
}
