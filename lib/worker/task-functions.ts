/**
 * The functions a worker can run, by name: `builtin.*`, and `MODULE.EXPORT` for each function a
 * task module exports (`--tasks`, or `upload-file`). A module loaded again after its file
 * changed replaces its functions.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { copyFile, readFile } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { builtins, type TaskFunction } from "./builtins.ts";

/**
 * A worker's task functions.
 *
 * @example
 * ```ts
 * const functions = new TaskFunctions();
 * const { name } = await functions.load("./tasks.ts"); // "tasks"
 * functions.get("tasks.double");
 * ```
 */
export class TaskFunctions {
  #functions = new Map<string, TaskFunction>();
  /** Module name → the file it was loaded from. */
  #modules = new Map<string, string>();
  #hashes = new Map<string, string>();

  constructor() {
    for (const [name, fn] of Object.entries(builtins)) this.#functions.set(`builtin.${name}`, fn);
  }

  /** The function named `fn`, if any. */
  get(fn: string): TaskFunction | undefined {
    return this.#functions.get(fn);
  }

  /** The names of the loaded task modules. */
  moduleNames(): string[] {
    return [...this.#modules.keys()];
  }

  /** The files of the loaded task modules (what a process-pool child loads too). */
  modulePaths(): string[] {
    return [...this.#modules.values()];
  }

  /** Loads a module whose exported functions become `MODULE.EXPORT`; throws when it has none. */
  async load(path: string): Promise<{ name: string; count: number }> {
    const abs = resolve(path);
    const name = basename(abs, extname(abs));
    // Runtimes cache modules by path: a changed file is imported from a copy named by its hash.
    const hash = createHash("sha256").update(await readFile(abs)).digest("hex").slice(0, 12);
    const previous = this.#hashes.get(abs);
    let target = abs;
    if (previous !== undefined && previous !== hash) {
      target = join(dirname(abs), `.${name}.${hash}${extname(abs)}`);
      await copyFile(abs, target);
    }
    this.#hashes.set(abs, hash);
    const mod = await import(pathToFileURL(target).href) as Record<string, unknown>;
    for (const key of [...this.#functions.keys()]) if (key.startsWith(`${name}.`)) this.#functions.delete(key);
    let count = 0;
    for (const [exportName, value] of Object.entries(mod)) {
      if (typeof value === "function") {
        this.#functions.set(`${name}.${exportName}`, value as TaskFunction);
        count++;
      }
    }
    if (count === 0) throw new Error(`Task module "${path}" exports no functions`);
    this.#modules.set(name, abs);
    return { name, count };
  }
}
