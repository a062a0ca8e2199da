/**
 * An example task module: its exports become task functions `tasks.double` and `tasks.greet`
 * (the module's file name, then the export) on workers started with
 * `cluster worker URL --tasks examples/tasks.ts`, or shipped with the `upload-file` plugin.
 * Functions receive plain values (the results of their `$ref`s) and may be async.
 *
 * @module
 */

/** Twice `x`. */
export function double(x: number): number {
  return 2 * x;
}

/** A greeting, after `ms` milliseconds. */
export async function greet(name: string, ms = 0): Promise<string> {
  await new Promise((resolve) => setTimeout(resolve, ms));
  return `hello, ${name}`;
}
