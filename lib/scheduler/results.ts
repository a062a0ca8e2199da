/**
 * Results for clients: waiting until keys finish (woken by the finished keys of applied
 * effects), and gathering values from the scheduler's copies or from the workers that hold
 * them, again after a worker with them was lost.
 *
 * @module
 */
import type { SchedulerState } from "./state.ts";
import type { WorkerConn, WorkerLinks } from "./worker-link.ts";

/** What `gather` answers: values by key. */
export interface GatherResult {
  values: Record<string, unknown>;
  errors: Record<string, { error: string; traceback: string }>;
  missing: string[];
}

/**
 * What `gather` answers with `list`: the values in the keys' order (a key without one, erred or
 * missing, has `undefined` in its place). An object of 10,000 keys costs the scheduler 0.5 µs a
 * key to build and encode, and a client as much to decode; a list 0.02.
 */
export interface GatherListResult {
  values: unknown[];
  errors: Record<string, { error: string; traceback: string }>;
  missing: string[];
}

type KeyWaiter = () => void;

const isFinished = (state: string) => state === "memory" || state === "erred" || state === "forgotten";

/** Waiters per key and the gathering of results. */
export class Results {
  #state: SchedulerState;
  #workers: WorkerLinks;
  /** Who waits for each key: one waiter (the common case, no set made) or several. */
  #keyWaiters = new Map<string, KeyWaiter | KeyWaiter[]>();

  constructor(state: SchedulerState, workers: WorkerLinks) {
    this.#state = state;
    this.#workers = workers;
  }

  /** Whether anyone waits for a key (callers skip `wake` otherwise). */
  get waiting(): boolean {
    return this.#keyWaiters.size > 0;
  }

  /** Wakes whoever waits for these keys (they reached memory, erred or forgotten). */
  wake(keys: readonly string[], count = keys.length): void {
    for (let i = 0; i < count; i++) {
      const waiters = this.#keyWaiters.get(keys[i]);
      if (waiters !== undefined) {
        this.#keyWaiters.delete(keys[i]);
        if (typeof waiters === "function") waiters();
        else for (const w of waiters) w();
      }
    }
  }

  /** Waits until every key is in memory, erred or gone; false on timeout. */
  waitForKeys(keys: string[], timeoutMs?: number): Promise<boolean> {
    let pending = 0;
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const registered: string[] = [];
      // One waiter for all the keys of this call (a gather of 10,000 keys makes one, not 10,000).
      const done: KeyWaiter = () => {
        if (--pending === 0) {
          if (timer) clearTimeout(timer);
          resolve(true);
        }
      };
      const waiters = this.#keyWaiters;
      for (const key of keys) {
        const ts = this.#state.tasks.get(key);
        if (!ts || isFinished(ts.state)) continue;
        const existing = waiters.get(key);
        if (existing === undefined) waiters.set(key, done);
        else if (existing === done || (typeof existing !== "function" && existing.includes(done))) continue; // a key asked twice
        else if (typeof existing === "function") waiters.set(key, [existing, done]);
        else existing.push(done);
        pending++;
        if (timeoutMs !== undefined) registered.push(key);
      }
      if (pending === 0) return resolve(true);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          for (const key of registered) {
            const existing = waiters.get(key);
            if (existing === done) waiters.delete(key);
            else if (existing !== undefined && typeof existing !== "function") {
              const rest = existing.filter((w) => w !== done);
              if (rest.length === 0) waiters.delete(key);
              else waiters.set(key, rest.length === 1 ? rest[0] : rest);
            }
          }
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  /**
   * The results of finished keys: values (fetched from workers when not kept here), or errors.
   * Waits for the keys first; results lost with a worker are waited for again.
   */
  async gather(keys: string[]): Promise<GatherResult>;
  async gather(keys: string[], list: true): Promise<GatherListResult>;
  async gather(keys: string[], list = false): Promise<GatherResult | GatherListResult> {
    const values = new Array<unknown>(keys.length);
    const has = new Uint8Array(keys.length);
    const errors: Record<string, { error: string; traceback: string }> = {};
    const missing: string[] = [];
    // Indices into `keys` of those not settled yet.
    let todo: number[] = Array.from(keys.keys());
    for (let attempt = 0; todo.length > 0 && attempt < 20; attempt++) {
      await this.waitForKeys(todo.length === keys.length ? keys : todo.map((i) => keys[i]));
      const remote = new Map<WorkerConn, number[]>();
      const retry: number[] = [];
      for (const i of todo) {
        const key = keys[i];
        const ts = this.#state.tasks.get(key);
        if (!ts) {
          missing.push(key);
        } else if (ts.state === "erred") {
          errors[key] = { error: ts.exception ?? "Error", traceback: ts.traceback ?? "" };
        } else if (ts.state === "memory") {
          if (ts.hasValue) {
            values[i] = ts.value;
            has[i] = 1;
          } else {
            let holder: WorkerConn | undefined;
            for (const w of ts.whoHas) if ((holder = this.#workers.connOf(w))) break;
            if (!holder) retry.push(i);
            else {
              let at = remote.get(holder);
              if (!at) remote.set(holder, at = []);
              at.push(i);
            }
          }
        } else {
          retry.push(i);
        }
      }
      await Promise.all([...remote].map(async ([conn, at]) => {
        try {
          const data = await this.#workers.getData(conn, at.map((i) => keys[i]));
          for (const i of at) {
            if (keys[i] in data) {
              values[i] = data[keys[i]];
              has[i] = 1;
            } else retry.push(i);
          }
        } catch {
          retry.push(...at);
        }
      }));
      todo = retry;
      if (todo.length > 0) await new Promise((r) => setTimeout(r, 50));
    }
    for (const i of todo) missing.push(keys[i]);
    if (list) return { values, errors, missing };
    const byKey: Record<string, unknown> = {};
    for (let i = 0; i < keys.length; i++) if (has[i]) byKey[keys[i]] = values[i];
    return { values: byKey, errors, missing };
  }
}
