/**
 * An example scheduler plugin, Dask's "Accessing Full Task State": it keeps the scheduler it got
 * in `start` and, in the `transition` hook, reads the full task state with
 * `scheduler.tasks.get(key)` — the function, dependencies, the worker, the result size, the
 * error. It logs failed tasks with their error and tallies results by function. It imports
 * nothing from the host at run time.
 *
 * ```toml
 * [[scheduler.plugins]]
 * use = "./plugins/task-state-reader.ts"
 * ```
 *
 * @module
 */
import type {
  Logger,
  PluginContext,
  SchedulerApi,
  SchedulerPlugin,
  SchedulerTaskStateName,
  TransitionInfo,
} from "../../lib/plugins/types.ts";

/** Per-function tallies. */
export interface FunctionStats {
  done: number;
  erred: number;
  nbytes: number;
}

/** Reads full task state on every transition to memory or erred. */
export default class TaskStateReader implements SchedulerPlugin {
  name = "task-state-reader";
  #scheduler: SchedulerApi | null = null;
  #log: Logger;
  #byFunction = new Map<string, FunctionStats>();

  constructor(_options: Record<string, unknown> = {}, context?: PluginContext) {
    this.#log = context?.log ?? console;
  }

  start(scheduler: SchedulerApi): void {
    this.#scheduler = scheduler;
    this.#log = scheduler.log;
  }

  transition(key: string, _start: SchedulerTaskStateName, finish: SchedulerTaskStateName, _info: TransitionInfo): void {
    if (finish !== "memory" && finish !== "erred") return;
    // The full TaskState, as `self.scheduler.tasks[key]` in Dask.
    const ts = this.#scheduler?.tasks.get(key);
    if (!ts) return;
    const stats = this.#byFunction.get(ts.fn) ?? { done: 0, erred: 0, nbytes: 0 };
    this.#byFunction.set(ts.fn, stats);
    if (finish === "memory") {
      stats.done++;
      stats.nbytes += ts.nbytes;
    } else {
      stats.erred++;
      const deps = ts.dependencies.size ? ` (depends on ${[...ts.dependencies].join(", ")})` : "";
      this.#log.warn(`task "${key}" (${ts.fn}) erred on ${ts.worker ?? "?"}${deps}: ${ts.exception ?? "?"}`);
    }
  }

  close(): void {
    for (const [fn, s] of this.#byFunction) {
      this.#log.info(`task-state-reader: ${fn}: ${s.done} done (${s.nbytes} bytes), ${s.erred} erred`);
    }
  }

  /** Tallies by function name. */
  stats(): Map<string, FunctionStats> {
    return new Map(this.#byFunction);
  }
}
