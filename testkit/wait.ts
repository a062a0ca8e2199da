/**
 * Waiting in tests and benchmarks: one `waitFor` that polls a check until it holds, and `sleep`.
 *
 * @module
 */

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How long `waitFor` polls, and how often. A number is the timeout in milliseconds. */
export type WaitOptions = number | { timeoutMs?: number; intervalMs?: number };

/**
 * Calls `check` every `intervalMs` (default 25) until it returns a truthy value, and resolves
 * with that value; throws `Timed out after N ms waiting for WHAT` after `timeoutMs` (default
 * 20 s). The check may be async; an error it throws ends the wait at once.
 *
 * @example
 * ```ts
 * const pid = await waitFor("the new worker", async () => (await workerPids()).get(name), 10_000);
 * ```
 */
export async function waitFor<T>(
  what: string,
  check: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  options: WaitOptions = {},
): Promise<T> {
  const { timeoutMs = 20_000, intervalMs = 25 } = typeof options === "number" ? { timeoutMs: options } : options;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
