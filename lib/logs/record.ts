/**
 * The log record as it travels from a worker or nanny to the scheduler and out of
 * `GET /api/v1/logs`, and the order of levels that `level=` filters by.
 *
 * @module
 */
import type { LogLevel } from "../log.ts";

/** One record on the wire (`logs` op): what the process knows about it. */
export interface WireLogRecord {
  /** Unix seconds. */
  time: number;
  level: LogLevel;
  /** The component that logged it: `worker`, `nanny`, `plugin:timer`, `task`. */
  source: string;
  message: string;
  /** The task that logged it (source `task`). */
  key?: string;
}

/** One record as the scheduler keeps and answers it. */
export interface LogRecord extends WireLogRecord {
  /** Counts up by 1 over all records the scheduler received. */
  seq: number;
  /** The name of the worker, or of the nanny, that sent it. */
  worker: string;
  role: "worker" | "nanny";
}

const order: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * A level name as users write it (`WARNING`, `warn`, `err`…) as one of ours, or null.
 *
 * @example
 * ```ts
 * parseLevel("WARNING"); // "warn"
 * ```
 */
export function parseLevel(value: string): LogLevel | null {
  const v = value.trim().toLowerCase();
  if (v === "warning") return "warn";
  if (v === "err" || v === "critical" || v === "fatal") return "error";
  return v in order ? v as LogLevel : null;
}

/** The rank of a level (debug 0 … error 3); an unknown level ranks as info. */
export function levelRank(level: string): number {
  return order[level as LogLevel] ?? 1;
}
