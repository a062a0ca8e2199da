/**
 * A task module for tests (load it with `--tasks testkit/tasks.ts`; its functions are
 * `tasks.NAME`): what a test needs a worker to do that no user task should, such as using
 * too much memory on purpose.
 *
 * @module
 */

/** Allocates about `mb` megabytes and holds them for `ms` (trips a nanny's `--memory-limit`). */
export async function alloc(mb: number, ms = 5000): Promise<number> {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < mb; i++) chunks.push(new Uint8Array(1024 * 1024).fill(1));
  await new Promise((r) => setTimeout(r, ms));
  return chunks.length;
}
