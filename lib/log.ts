/**
 * Logging to stderr, one line per message, prefixed with the time and the component.
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

/**
 * Creates a logger that writes `TIME LEVEL [component] message` lines to stderr.
 *
 * @example
 * ```ts
 * const log = createLogger("scheduler");
 * log.info("ready");
 * ```
 */
export function createLogger(component: string): ComponentLogger {
  const write = (level: string, msg: string) => {
    process.stderr.write(`${new Date().toISOString()} ${level} [${component}] ${msg}\n`);
  };
  return {
    info: (msg) => write("INFO", msg),
    warn: (msg) => write("WARN", msg),
    error: (msg) => write("ERROR", msg),
    debug: (msg) => debugEnabled && write("DEBUG", msg),
    child: (name) => createLogger(`${component}:${name}`),
  };
}
