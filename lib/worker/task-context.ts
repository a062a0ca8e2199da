/**
 * What a task function receives as `this`: its key, its worker's name, `logEvent(topic, data)`
 * (an event in the scheduler's event log, as Dask's `get_worker().log_event`) and
 * `log.info/warn/error` (records on the worker's stderr, forwarded to the scheduler with source
 * `task` and the key). A task module imports nothing from the host at run time; it declares the
 * type only:
 *
 * ```ts
 * import type { TaskContext } from "../lib/worker/task-context.ts"; // the path to this file
 * export function work(this: TaskContext, n: number) {
 *   this.log.info(`working on ${n}`);
 *   this.logEvent("progress", { n });
 *   return n * 2;
 * }
 * ```
 *
 * Arrow functions have no `this` of their own: use `function`. Tasks run in a `process-pool`
 * executor get no context.
 *
 * @module
 */
import { createLogger } from "../log.ts";
import type { Logger } from "../plugins/types.ts";

/** The `this` of a task function. */
export interface TaskContext {
  /** The task's key. */
  readonly key: string;
  /** The name of the worker running it. */
  readonly worker: string;
  /** Logs an event to a topic of the scheduler's event log; `"log"` also reaches the scheduler's stderr. */
  logEvent(topic: string, data: Record<string, unknown>): void;
  /** Log records with source `task` and this key, forwarded to the scheduler. */
  readonly log: Logger;
}

/** What contexts need of their worker. */
export interface TaskContextHost {
  readonly name: string;
  logEvent(topic: string, data: Record<string, unknown>): void;
}

/**
 * The context of one task run; the logger is made only when the task logs.
 *
 * @example
 * ```ts
 * fn.call(new TaskContextImpl("inc-1", worker.api), ...args);
 * ```
 */
export class TaskContextImpl implements TaskContext {
  readonly key: string;
  #host: TaskContextHost;
  #log: Logger | null = null;

  constructor(key: string, host: TaskContextHost) {
    this.key = key;
    this.#host = host;
  }

  get worker(): string {
    return this.#host.name;
  }

  get log(): Logger {
    return this.#log ??= createLogger("task", { key: this.key });
  }

  logEvent(topic: string, data: Record<string, unknown>): void {
    if (typeof topic !== "string" || topic === "") throw new TypeError("logEvent() needs a topic");
    const msg = data !== null && typeof data === "object" && !Array.isArray(data) ? data : { value: data };
    this.#host.logEvent(topic, "key" in msg ? msg : { ...msg, key: this.key });
  }
}
