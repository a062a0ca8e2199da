/**
 * An example worker plugin: counts and times task executions on one worker through the
 * `transition` hook (executing → memory / error), logs tasks slower than `slowMs`, and logs a
 * summary at teardown. It imports nothing from the host at run time, so the scheduler can ship
 * its source to workers.
 *
 * ```toml
 * [[worker.plugins]]
 * use = "./plugins/timer.ts"
 * slowMs = 1000
 * ```
 *
 * @module
 */
import type {
  Logger,
  PluginContext,
  TransitionInfo,
  WorkerApi,
  WorkerPlugin,
  WorkerTaskStateName,
} from "../../lib/plugins/types.ts";

/** Options of the timer plugin. */
export interface TimerOptions {
  /** Log every task that runs longer than this. @default 1000 */
  slowMs?: number;
}

/** Counts and times task executions on a worker. */
export default class TaskTimer implements WorkerPlugin {
  name = "task-timer";
  #slowMs: number;
  #log: Logger;
  #worker = "?";
  /** Start time of each executing task. */
  #started = new Map<string, number>();
  #counts = { memory: 0, error: 0, other: 0 };
  #totalMs = 0;
  #maxMs = 0;
  #maxKey = "";

  constructor(options: TimerOptions = {}, context?: PluginContext) {
    this.#slowMs = typeof options.slowMs === "number" ? options.slowMs : 1000;
    this.#log = context?.log ?? console;
  }

  setup(worker: WorkerApi): void {
    this.#worker = worker.name;
    this.#log = worker.log;
  }

  transition(key: string, start: WorkerTaskStateName, finish: WorkerTaskStateName, _info: TransitionInfo): void {
    if (finish === "executing") {
      this.#started.set(key, performance.now());
      return;
    }
    if (start !== "executing") return;
    const t0 = this.#started.get(key);
    this.#started.delete(key);
    if (t0 === undefined) return;
    const ms = performance.now() - t0;
    if (finish === "memory") this.#counts.memory++;
    else if (finish === "error") this.#counts.error++;
    else this.#counts.other++;
    this.#totalMs += ms;
    if (ms > this.#maxMs) {
      this.#maxMs = ms;
      this.#maxKey = key;
    }
    if (ms > this.#slowMs) this.#log.warn(`task "${key}" ran ${ms.toFixed(0)} ms on ${this.#worker} (${finish})`);
  }

  teardown(): void {
    const { memory, error, other } = this.#counts;
    const n = memory + error + other;
    const mean = n ? this.#totalMs / n : 0;
    this.#log.info(
      `task-timer on ${this.#worker}: ${n} executions (${memory} ok, ${error} failed, ${other} other), ` +
        `mean ${mean.toFixed(1)} ms, max ${this.#maxMs.toFixed(1)} ms${this.#maxKey ? ` ("${this.#maxKey}")` : ""}`,
    );
  }

  /** The counters so far (for tests and other plugins). */
  summary(): { executions: number; ok: number; failed: number; totalMs: number; maxMs: number } {
    const { memory, error, other } = this.#counts;
    return { executions: memory + error + other, ok: memory, failed: error, totalMs: this.#totalMs, maxMs: this.#maxMs };
  }
}
