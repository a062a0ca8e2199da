/**
 * Small pure helpers of the worker: a task's arguments with `{"$ref": KEY}` replaced by the
 * dependencies' results, and monotonic readings as the wall-clock times Dask's `startstops` use.
 *
 * @module
 */

/** A `performance.now()` reading as unix seconds (Dask's startstops are wall-clock times). */
export function unixSeconds(ms: number): number {
  return (performance.timeOrigin + ms) / 1000;
}

/** Replaces `{"$ref": KEY}` inside a value by the dependency's result. */
export function resolveRefs(value: unknown, deps: Map<string, unknown>): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    const out = new Array(value.length);
    for (let i = 0; i < value.length; i++) out[i] = resolveRefs(value[i], deps);
    return out;
  }
  if (value instanceof Uint8Array) return value;
  const ref = (value as { $ref?: unknown }).$ref;
  if (typeof ref === "string") {
    if (!deps.has(ref)) throw new Error(`Missing dependency "${ref}"`);
    return deps.get(ref);
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = resolveRefs(v, deps);
  return out;
}
