/**
 * The `jsonl` built-in scheduler plugin: appends every event (or those of chosen topics) to a
 * file, one JSON object a line. On a scheduler it takes the event log's batches (one per tick) and
 * appends their JSON lines as they are — UTF-8 bytes made from the same JSON text every
 * event-stream subscriber shares, made once — so it makes no JSON of its own per event;
 * elsewhere (a plain `logEvent` caller) it buffers one line per call. A timer appends the
 * buffer every ~50 ms (or at once past ~1 MiB), a tick's lines a write, and `close()` writes
 * what is left.
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
  /** Chunks of whole lines in UTF-8, each ending in a newline, and how many lines each holds. */
  #chunks: Uint8Array[] = [];
  #chunkLines: number[] = [];
  #bytes = 0;
  #unsubscribe: (() => void) | null = null;
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
    await this.#open();
    if (scheduler?.subscribeEvents) {
      // Batches of the event log instead of one `logEvent` call per event: without the hook, the
      // scheduler makes no event object for this plugin.
      this.#unsubscribe = scheduler.subscribeEvents(this.#topics, (batch) => this.#add(batch.jsonLinesBytes(), batch.length));
      (this as { logEvent?: unknown }).logEvent = undefined;
    } else if (scheduler?.eventJson) {
      this.#eventJson = scheduler.eventJson;
    }
  }

  #eventJson: (event: Record<string, unknown>) => string = JSON.stringify;

  /** Buffers one event; never waits. */
  logEvent(topic: string, msg: Record<string, unknown>): void {
    if (this.#topics && !this.#topics.has(topic)) return;
    const line = eventLine(topic, msg, this.#eventJson);
    if (line === undefined) {
      this.#lost++;
      return;
    }
    this.#add(textEncoder.encode(line + "\n"), 1);
  }

  /** Buffers whole lines (`bytes` end in a newline). */
  #add(bytes: Uint8Array, lines: number): void {
    if (this.#closed) return;
    this.#chunks.push(bytes);
    this.#chunkLines.push(lines);
    this.#bytes += bytes.length;
    if (this.#bytes >= FLUSH_BYTES) this.#flushSoon(0);
    else this.#flushSoon(FLUSH_DELAY_MS);
  }

  /** Writes everything buffered and closes the file. */
  async close(): Promise<void> {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
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
    while (this.#writing || this.#chunks.length) {
      if (!this.#writing) this.#startWriting();
      await this.#writing;
    }
  }

  /** How many lines were written and how many events were lost (unserializable or I/O errors). */
  stats(): { written: number; buffered: number; lost: number } {
    let buffered = 0;
    for (const n of this.#chunkLines) buffered += n;
    return { written: this.#written, buffered, lost: this.#lost };
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
      if (this.#chunks.length && !this.#closed) this.#flushSoon(FLUSH_DELAY_MS);
    });
  }

  async #writeLoop(): Promise<void> {
    while (this.#chunks.length) {
      const chunks = this.#chunks;
      const chunkLines = this.#chunkLines;
      this.#chunks = [];
      this.#chunkLines = [];
      this.#bytes = 0;
      // One write a chunk (a tick's lines): joining them first would copy every byte once more.
      let lost = 0;
      let error: unknown;
      for (let i = 0; i < chunks.length; i++) {
        try {
          const file = await this.#open();
          await file.write(chunks[i]);
          this.#written += chunkLines[i];
        } catch (err) {
          lost += chunkLines[i];
          error ??= err;
        }
      }
      if (lost > 0) {
        this.#lost += lost;
        this.#log.error(`cannot append ${lost} events to "${this.path}": ${errorMessage(error)}`);
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

const textEncoder = new TextEncoder();

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
