/**
 * Logging to stderr, one line per message, prefixed with the time and the component. Every
 * record also goes to the sinks added with `addLogSink` (a worker's or nanny's log forwarder,
 * lib/logs/forwarder.ts), so that whatever a process logs can reach the scheduler.
 *
 * @module
 */
import type { Logger } from "./plugins/types.ts";

let debugEnabled = !!process.env.CLUSTER_DEBUG;

/** Turns debug logging on or off (`--debug`). */
export function setDebug(on: boolean): void {
  debugEnabled = on;
}

/** Whether `--debug` is on. */
export function isDebug(): boolean {
  return debugEnabled;
}

/** A logger with a component prefix, e.g. `scheduler` or `plugin:amqp`. */
export interface ComponentLogger extends Logger {
  debug(msg: string): void;
  child(name: string): ComponentLogger;
}

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** What a sink receives for every line written. */
export interface LogEntry {
  /** Unix seconds. */
  time: number;
  level: LogLevel;
  /** The logger's component, e.g. `worker` or `plugin:timer`. */
  component: string;
  message: string;
  /** Fields the logger was made with (a task's `key`). */
  fields?: Record<string, string>;
}

const sinks = new Set<(entry: LogEntry) => void>();

/**
 * Adds a function that receives every record this process logs; returns a function that removes
 * it. A sink must be quick and must not log itself (it would receive its own records).
 *
 * @example
 * ```ts
 * const remove = addLogSink((e) => queue.push(e));
 * ```
 */
export function addLogSink(sink: (entry: LogEntry) => void): () => void {
  sinks.add(sink);
  return () => sinks.delete(sink);
}

/**
 * Creates a logger that writes `TIME LEVEL [component] message` lines to stderr.
 *
 * @example
 * ```ts
 * const log = createLogger("scheduler");
 * log.info("ready");
 * ```
 */
export function createLogger(component: string, fields?: Record<string, string>): ComponentLogger {
  // A task's records show its key: `[task key=inc-1]`.
  const tag = fields ? `${component} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ")}` : component;
  const write = (level: LogLevel, msg: string) => {
    const now = new Date();
    process.stderr.write(`${now.toISOString()} ${level.toUpperCase()} [${tag}] ${msg}\n`);
    if (sinks.size === 0) return;
    const entry: LogEntry = { time: now.getTime() / 1000, level, component, message: String(msg), fields };
    for (const sink of sinks) {
      try {
        sink(entry);
      } catch {
        // A sink never breaks logging (and cannot log its own failure).
      }
    }
  };
  return {
    info: (msg) => write("info", msg),
    warn: (msg) => write("warn", msg),
    error: (msg) => write("error", msg),
    debug: (msg) => debugEnabled && write("debug", msg),
    child: (name) => createLogger(`${component}:${name}`, fields),
  };
}
