/**
 * Live views for the objects plugins receive: a field that reads the owner's current value.
 *
 * @module
 */

/**
 * Defines enumerable getters on `target` that read the same-named fields of `source` each time,
 * so that a plugin holding the scheduler, worker or nanny object sees, say, an address set after
 * the object was made.
 *
 * @example
 * ```ts
 * const api = withLiveFields({ role: "worker" }, worker, ["name", "address"]);
 * ```
 */
export function withLiveFields<T extends object, S extends object, K extends keyof S>(
  target: T,
  source: S,
  keys: readonly K[],
): T & Pick<S, K> {
  for (const key of keys) {
    Object.defineProperty(target, key, { get: () => source[key], enumerable: true });
  }
  return target as T & Pick<S, K>;
}
