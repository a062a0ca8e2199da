/**
 * What workers report with their heartbeats (CPU, memory, tasks executing and ready), the latest
 * per worker and a bounded history of samples for the dashboard's charts. Held tasks are known
 * to the scheduler itself and sampled here with the rest.
 *
 * @module
 */

/** One heartbeat's sample. */
export interface WorkerSample {
  /** Unix seconds. */
  time: number;
  /** Process CPU % since the previous heartbeat (100 = one core busy). */
  cpu: number;
  /** Resident set size, bytes. */
  rss: number;
  executing: number;
  /** Tasks whose results the worker holds. */
  held: number;
}

/** Samples kept per worker: two minutes at one heartbeat a second. */
export const historyLength = 120;

/**
 * The latest sample and the history of every connected worker.
 *
 * @example
 * ```ts
 * const metrics = new WorkerMetrics();
 * metrics.record("w1", { time: 1, cpu: 12.5, rss: 5e7, executing: 1, held: 3 });
 * metrics.latest("w1")?.cpu; // 12.5
 * ```
 */
export class WorkerMetrics {
  #byWorker = new Map<string, { samples: WorkerSample[]; next: number }>();

  /** Adds a worker's sample; the oldest goes past `historyLength`. */
  record(worker: string, sample: WorkerSample): void {
    let entry = this.#byWorker.get(worker);
    if (!entry) this.#byWorker.set(worker, entry = { samples: [], next: 0 });
    if (entry.samples.length < historyLength) {
      entry.samples.push(sample);
    } else {
      entry.samples[entry.next] = sample;
      entry.next = (entry.next + 1) % historyLength;
    }
  }

  /** The newest sample of a worker. */
  latest(worker: string): WorkerSample | undefined {
    const entry = this.#byWorker.get(worker);
    if (!entry || entry.samples.length === 0) return undefined;
    const n = entry.samples.length;
    return entry.samples[n < historyLength ? n - 1 : (entry.next + n - 1) % n];
  }

  /** A worker's samples, oldest first. */
  history(worker: string): WorkerSample[] {
    const entry = this.#byWorker.get(worker);
    if (!entry) return [];
    const s = entry.samples;
    return s.length < historyLength ? s.slice() : [...s.slice(entry.next), ...s.slice(0, entry.next)];
  }

  /** What `GET /api/v1/info` shows of a worker: the latest CPU % and tasks executing, and the history. */
  infoFields(worker: string): { cpu: number; executing: number; history: WorkerSample[] } {
    const sample = this.latest(worker);
    return { cpu: sample?.cpu ?? 0, executing: sample?.executing ?? 0, history: this.history(worker) };
  }

  /** Forgets a worker that left. */
  delete(worker: string): void {
    this.#byWorker.delete(worker);
  }
}
