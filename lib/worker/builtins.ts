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
};
