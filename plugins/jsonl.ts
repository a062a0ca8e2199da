/**
 * The `jsonl` built-in scheduler plugin: appends every event (or those of chosen topics) to a
 * file, one JSON object a line. The `logEvent` hook only buffers the line; a timer appends the
 * buffer every ~50 ms (or at once past ~1 MiB), and `close()` writes what is left.
 *
 * @module
 */
import { mkdir, open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { errorMessage } from "../lib/errors.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { Logger, PluginContext, SchedulerApi, SchedulerPlugin } from "../lib/plugins/types.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** Options of the `jsonl` plugin. */
export interface JsonlOptions {
  /** The file to append to; relative paths resolve against the plugins.toml directory. */
  path: string;
  /** Only these topics. @default all topics */
  topics?: string[];
}

const FLUSH_DELAY_MS = 50;
const FLUSH_BYTES = 1 << 20;

/**
 * Appends events to a JSON Lines file.
 *
 * @example
 * ```ts
 * const plugin = new JsonlPlugin({ path: "events.jsonl" }, context);
 * plugin.logEvent("transition", { seq: 1, key: "a", start: "waiting", finish: "processing" });
 * await plugin.close();
 * ```
 */
export class JsonlPlugin implements SchedulerPlugin {
  name = "jsonl";
  /** The absolute path of the file. */
  readonly path: string;
  #topics: Set<string> | null;
  #log: Logger;
  #lines: string[] = [];
  #bytes = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #writing: Promise<void> | null = null;
  #file: FileHandle | null = null;
  #opening: Promise<FileHandle> | null = null;
  #written = 0;
  #lost = 0;
  #closed = false;

  constructor(options: JsonlOptions, context: Pick<PluginContext, "baseDir" | "log">) {
    this.path = resolve(context.baseDir, options.path);
    this.#topics = options.topics ? new Set(options.topics) : null;
    this.#log = context.log;
  }

  /** Opens the file now, so a bad path fails the registration rather than the first flush. */
  async start(scheduler?: SchedulerApi): Promise<void> {
    // The scheduler's JSON of an event is made once, shared with event-stream subscribers.
    if (scheduler?.eventJson) this.#eventJson = scheduler.eventJson;
    await this.#open();
  }

  #eventJson: (event: Record<string, unknown>) => string = JSON.stringify;

  /** Buffers one event; never waits. */
  logEvent(topic: string, msg: Record<string, unknown>): void {
    if (this.#closed || (this.#topics && !this.#topics.has(topic))) return;
    const line = eventLine(topic, msg, this.#eventJson);
    if (line === undefined) {
      this.#lost++;
      return;
    }
    this.#lines.push(line);
    this.#bytes += line.length + 1;
    if (this.#bytes >= FLUSH_BYTES) this.#flushSoon(0);
    else this.#flushSoon(FLUSH_DELAY_MS);
  }

  /** Writes everything buffered and closes the file. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.flush();
    const file = this.#file;
    this.#file = null;
    await file?.close();
    if (this.#lost) this.#log.warn(`${this.#lost} events could not be written to "${this.path}"`);
  }

  /** Writes everything buffered so far. */
  async flush(): Promise<void> {
    while (this.#writing || this.#lines.length) {
      if (!this.#writing) this.#startWriting();
      await this.#writing;
    }
  }

  /** How many lines were written and how many events were lost (unserializable or I/O errors). */
  stats(): { written: number; buffered: number; lost: number } {
    return { written: this.#written, buffered: this.#lines.length, lost: this.#lost };
  }

  #flushSoon(delay: number): void {
    if (this.#writing) return; // the write loop picks the new lines up
    if (delay === 0) {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = null;
      this.#startWriting();
    } else if (!this.#timer) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        if (!this.#writing) this.#startWriting();
      }, delay);
    }
  }

  #startWriting(): void {
    this.#writing = this.#writeLoop().finally(() => {
      this.#writing = null;
      // Lines that arrived during the last write wait for the next tick of the timer.
      if (this.#lines.length && !this.#closed) this.#flushSoon(FLUSH_DELAY_MS);
    });
  }

  async #writeLoop(): Promise<void> {
    while (this.#lines.length) {
      const lines = this.#lines;
      this.#lines = [];
      this.#bytes = 0;
      try {
        const file = await this.#open();
        await file.write(lines.join("\n") + "\n");
        this.#written += lines.length;
      } catch (err) {
        this.#lost += lines.length;
        this.#log.error(`cannot append ${lines.length} events to "${this.path}": ${errorMessage(err)}`);
      }
    }
  }

  #open(): Promise<FileHandle> {
    if (this.#file) return Promise.resolve(this.#file);
    this.#opening ??= (async () => {
      await mkdir(dirname(this.path), { recursive: true });
      this.#file = await open(this.path, "a");
      return this.#file;
    })().finally(() => {
      this.#opening = null;
    });
    return this.#opening;
  }
}

/** One event as a JSON line: the scheduler's event as it is, or `{topic, time, ...msg}`. */
function eventLine(
  topic: string,
  msg: Record<string, unknown>,
  eventJson: (event: Record<string, unknown>) => string,
): string | undefined {
  try {
    return msg.topic === topic ? eventJson(msg) : JSON.stringify({ topic, time: Date.now() / 1000, ...msg });
  } catch {
    return undefined;
  }
}

const options: Record<string, CheckedOptionSpec> = {
  path: { type: "string", required: true, description: "the file to append to (relative to plugins.toml)" },
  topics: { type: "string[]", description: "only these topics (default: all)" },
};

/** The `jsonl` entry of `builtinPlugins`. */
export const jsonl: BuiltinPlugin = {
  role: "scheduler",
  description: "appends events to a file, one JSON object a line",
  options,
  create: (opts, context) => new JsonlPlugin(opts as unknown as JsonlOptions, context),
};
