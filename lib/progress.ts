/**
 * `cluster submit`'s progress bar, as Dask's `progress()`: per task prefix (the key up to its
 * last `-`) the tasks done of the total, the erred ones, the time passed and the rate. The model
 * (`Progress`) and the drawing (`renderProgress`) are pure; `ProgressDisplay` redraws on a
 * terminal at most ten times a second and clears its lines at the end, and `followProgress`
 * feeds it from the scheduler's `transition` events.
 *
 * @module
 */

/**
 * The prefix of a key: up to its last `-` (`inc-12` → `inc`), the key itself when it has none.
 *
 * @example
 * ```ts
 * keyPrefix("load-csv-3"); // "load-csv"
 * ```
 */
export function keyPrefix(key: string): string {
  const i = key.lastIndexOf("-");
  return i > 0 ? key.slice(0, i) : key;
}

/** One prefix's counts. */
export interface PrefixProgress {
  prefix: string;
  total: number;
  done: number;
  erred: number;
}

/**
 * Done and erred counts per prefix of a graph's keys; each key counts once.
 *
 * @example
 * ```ts
 * const p = new Progress(["inc-1", "inc-2", "sum"]);
 * p.finished("inc-1", "memory");
 * p.prefixes(); // [{prefix: "inc", total: 2, done: 1, erred: 0}, {prefix: "sum", …}]
 * ```
 */
export class Progress {
  #byKey = new Map<string, PrefixProgress>();
  #prefixes = new Map<string, PrefixProgress>();
  #finished = new Set<string>();
  /** Bumped on every change, so a display redraws only when something moved. */
  version = 0;

  constructor(keys: Iterable<string>) {
    for (const key of keys) {
      if (this.#byKey.has(key)) continue;
      const prefix = keyPrefix(key);
      let p = this.#prefixes.get(prefix);
      if (!p) this.#prefixes.set(prefix, p = { prefix, total: 0, done: 0, erred: 0 });
      p.total++;
      this.#byKey.set(key, p);
    }
  }

  /** A transition of a key into `finish`: `memory` counts as done, `erred` as erred. */
  finished(key: string, finish: string): void {
    if (finish !== "memory" && finish !== "erred") return;
    const p = this.#byKey.get(key);
    if (!p || this.#finished.has(key)) return;
    this.#finished.add(key);
    if (finish === "memory") p.done++;
    else p.erred++;
    this.version++;
  }

  /** Every prefix, in the order first seen. */
  prefixes(): PrefixProgress[] {
    return [...this.#prefixes.values()];
  }

  /** Tasks finished (done or erred) and in all. */
  get counts(): { finished: number; total: number } {
    return { finished: this.#finished.size, total: this.#byKey.size };
  }
}

/** Prefixes shown at most; the rest are summed on one line. */
const maxLines = 12;

/**
 * The lines of the progress display: one bar per prefix, then elapsed time and rate.
 *
 * @example
 * ```ts
 * renderProgress(progress, { elapsedMs: 1500, width: 80 });
 * // ["inc  [##########----------]  5/10", "elapsed 1.5 s  3.3 tasks/s"]
 * ```
 */
export function renderProgress(progress: Progress, options: { elapsedMs: number; width?: number }): string[] {
  const width = Math.max(40, options.width ?? 80);
  let rows = progress.prefixes();
  if (rows.length > maxLines) {
    const rest = rows.slice(maxLines - 1);
    const sum: PrefixProgress = { prefix: `(${rest.length} more)`, total: 0, done: 0, erred: 0 };
    for (const r of rest) {
      sum.total += r.total;
      sum.done += r.done;
      sum.erred += r.erred;
    }
    rows = [...rows.slice(0, maxLines - 1), sum];
  }
  const nameWidth = Math.min(24, Math.max(...rows.map((r) => r.prefix.length), 4));
  const doneWidth = Math.max(...rows.map((r) => `${r.total}`.length));
  const counts = rows.map((r) => `${String(r.done + r.erred).padStart(doneWidth)}/${r.total}${r.erred > 0 ? ` (${r.erred} erred)` : ""}`);
  // One bar width for every row, so that the bars line up.
  const barWidth = Math.max(10, Math.min(40, width - nameWidth - Math.max(...counts.map((c) => c.length)) - 4));
  const lines = rows.map((r, i) => {
    const filled = r.total === 0 ? barWidth : Math.floor(((r.done + r.erred) / r.total) * barWidth);
    const erred = r.total === 0 ? 0 : Math.min(filled, Math.ceil((r.erred / r.total) * barWidth));
    const bar = "#".repeat(filled - erred) + "x".repeat(erred) + "-".repeat(barWidth - filled);
    const name = r.prefix.length > nameWidth ? `${r.prefix.slice(0, nameWidth - 1)}…` : r.prefix.padEnd(nameWidth);
    return `${name} [${bar}] ${counts[i]}`.slice(0, width);
  });
  const seconds = options.elapsedMs / 1000;
  const { finished, total } = progress.counts;
  const rate = seconds > 0 ? finished / seconds : 0;
  lines.push(`${finished}/${total} tasks  elapsed ${seconds.toFixed(1)} s  ${rate >= 100 ? Math.round(rate) : rate.toFixed(1)} tasks/s`);
  return lines;
}

/** Where a display draws: a terminal stream (process.stderr). */
export interface ProgressStream {
  write(text: string): unknown;
  columns?: number;
}

/**
 * Draws a `Progress` on a terminal: redrawn in place at most every `intervalMs`, cleared by `stop`.
 *
 * @example
 * ```ts
 * const display = new ProgressDisplay(progress, process.stderr);
 * display.start();
 * await work();
 * display.stop();
 * ```
 */
export class ProgressDisplay {
  #progress: Progress;
  #stream: ProgressStream;
  #intervalMs: number;
  #timer: ReturnType<typeof setInterval> | null = null;
  #started = performance.now();
  #drawnLines = 0;
  #drawnVersion = -1;
  #drawnSecond = -1;

  constructor(progress: Progress, stream: ProgressStream, options: { intervalMs?: number } = {}) {
    this.#progress = progress;
    this.#stream = stream;
    this.#intervalMs = options.intervalMs ?? 100;
  }

  /** Starts redrawing. */
  start(): void {
    this.#started = performance.now();
    this.#timer ??= setInterval(() => this.draw(), this.#intervalMs);
    // The timer must not keep a finished command alive.
    (this.#timer as { unref?: () => void }).unref?.();
    this.draw();
  }

  /** Redraws when a count moved or a second passed (the elapsed time). */
  draw(): void {
    const elapsed = performance.now() - this.#started;
    const second = Math.floor(elapsed / 1000);
    if (this.#progress.version === this.#drawnVersion && second === this.#drawnSecond) return;
    this.#drawnVersion = this.#progress.version;
    this.#drawnSecond = second;
    const lines = renderProgress(this.#progress, { elapsedMs: elapsed, width: (this.#stream.columns ?? 80) - 1 });
    // Up over the previous drawing, then each line cleared and rewritten.
    let out = this.#drawnLines > 0 ? `\r\x1b[${this.#drawnLines}A` : "\r";
    for (const line of lines) out += `\x1b[2K${line}\n`;
    if (lines.length < this.#drawnLines) out += "\x1b[J";
    this.#drawnLines = lines.length;
    this.#stream.write(out);
  }

  /** Stops and erases the display. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#drawnLines > 0) this.#stream.write(`\r\x1b[${this.#drawnLines}A\x1b[J`);
    this.#drawnLines = 0;
  }
}

/** What `followProgress` needs of a client (lib/client/mod.ts's `Client`). */
export interface ProgressSource {
  info(): Promise<Record<string, unknown>>;
  subscribe(topic: string, handler: (event: Record<string, unknown>) => void, options?: { since?: number }): () => void;
}

/**
 * Shows the progress of a graph's keys on `stream` until the returned `stop` is called. It asks
 * for the event log's last seq first and subscribes from there, so no transition is missed
 * however quickly the graph runs.
 *
 * @example
 * ```ts
 * const stop = await followProgress(client, graph.tasks.map((t) => t.key), process.stderr);
 * await client.results(keys);
 * stop();
 * ```
 */
export async function followProgress(source: ProgressSource, keys: string[], stream: ProgressStream): Promise<() => void> {
  const progress = new Progress(keys);
  const info = await source.info();
  const since = Number((info.events as { lastSeq?: number } | undefined)?.lastSeq ?? 0);
  const unsubscribe = source.subscribe("transition", (e) => progress.finished(String(e.key), String(e.finish)), { since });
  const display = new ProgressDisplay(progress, stream);
  display.start();
  return () => {
    unsubscribe();
    display.stop();
  };
}
