/**
 * The `builtin.*` task functions every worker has.
 *
 * @module
 */

/** A task function: plain values in, a value (or a promise of one) out. */
export type TaskFunction = (...args: never[]) => unknown;

/** The built-in task functions by name. */
export const builtins: Record<string, TaskFunction> = {
  identity: (x: unknown) => x,
  noop: () => null,
  inc: (x: number) => x + 1,
  add: (a: number, b: number) => a + b,
  sum: (list: number[]) => {
    if (!Array.isArray(list)) throw new TypeError(`sum() expects a list, got ${typeof list}`);
    let total = 0;
    for (const x of list) total += x;
    return total;
  },
  sleep: (ms: number, value: unknown = null) => new Promise((resolve) => setTimeout(() => resolve(value), ms)),
  fail: (message: string) => {
    throw new Error(String(message));
  },
  env: (name: string) => process.env[name] ?? null,
  cwd: () => process.cwd(),
  pid: () => process.pid,
  /** Allocates about `mb` megabytes and holds them for `ms` (for memory-limit tests). */
  alloc: async (mb: number, ms = 5000) => {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < mb; i++) chunks.push(new Uint8Array(1024 * 1024).fill(1));
    await new Promise((r) => setTimeout(r, ms));
    return chunks.length;
  },
};
