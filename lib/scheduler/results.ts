/**
 * Results for clients: waiting until keys finish (woken by the finished keys of applied
 * effects), and gathering values from the scheduler's copies or from the workers that hold
 * them, again after a worker with them was lost.
 *
 * @module
 */
import type { SchedulerState } from "./state.ts";
import type { TaskState } from "./task-state.ts";
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

/** Waiters for tasks to finish, and the gathering of results. */
export class Results {
  #state: SchedulerState;
  #workers: WorkerLinks;
  /**
   * How many tasks someone waits for. The waiters are kept on the tasks (`finishWaiters`): a
   * gather of 10,000 keys then costs no table by key to fill and, as they finish, to look up.
   */
  #waitedFor = 0;

  constructor(state: SchedulerState, workers: WorkerLinks) {
    this.#state = state;
    this.#workers = workers;
  }

  /** Whether anyone waits for a task (callers skip `wake` otherwise). */
  get waiting(): boolean {
    return this.#waitedFor > 0;
  }

  /** Wakes whoever waits for these tasks (they reached memory, erred or forgotten). */
  wake(tasks: readonly TaskState[], count = tasks.length): void {
    for (let i = 0; i < count; i++) {
      const waiters = tasks[i].finishWaiters;
      if (waiters !== null) {
        tasks[i].finishWaiters = null;
        this.#waitedFor--;
        if (typeof waiters === "function") waiters();
        else for (const w of waiters) w();
      }
    }
  }

  /** Waits until every key is in memory, erred or gone; false on timeout. */
  async waitForKeys(keys: string[], timeoutMs?: number): Promise<boolean> {
    return (await this.#waitFor(keys, timeoutMs)).done;
  }

  /**
   * Waits as `waitForKeys` does; also gives each key's task as it was found when the wait began
   * (undefined for a key unknown then).
   */
  #waitFor(keys: string[], timeoutMs?: number): Promise<{ done: boolean; tasks: (TaskState | undefined)[] }> {
    const tasks = new Array<TaskState | undefined>(keys.length);
    let pending = 0;
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const registered: TaskState[] = [];
      // One waiter for all the keys of this call (a gather of 10,000 keys makes one, not 10,000).
      const done: KeyWaiter = () => {
        if (--pending === 0) {
          if (timer) clearTimeout(timer);
          resolve({ done: true, tasks });
        }
      };
      for (let i = 0; i < keys.length; i++) {
        const ts = tasks[i] = this.#state.tasks.get(keys[i]);
        if (!ts || isFinished(ts.state)) continue;
        const existing = ts.finishWaiters;
        if (existing === null) {
          ts.finishWaiters = done;
          this.#waitedFor++;
        } else if (existing === done || (typeof existing !== "function" && existing.includes(done))) continue; // a key asked twice
        else if (typeof existing === "function") ts.finishWaiters = [existing, done];
        else existing.push(done);
        pending++;
        if (timeoutMs !== undefined) registered.push(ts);
      }
      if (pending === 0) return resolve({ done: true, tasks });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          for (const ts of registered) {
            const existing = ts.finishWaiters;
            if (existing === done) {
              ts.finishWaiters = null;
              this.#waitedFor--;
            } else if (existing !== null && typeof existing !== "function") {
              const rest = existing.filter((w) => w !== done);
              if (rest.length === 0) {
                ts.finishWaiters = null;
                this.#waitedFor--;
              } else ts.finishWaiters = rest.length === 1 ? rest[0] : rest;
            }
          }
          resolve({ done: false, tasks });
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
      const waited = await this.#waitFor(attempt === 0 ? keys : todo.map((i) => keys[i]));
      // The first wait found every key's task, by index: one that finished in memory or erred is
      // still the key's task (forgetting one makes it `forgotten`), so it is not looked up again.
      const found = attempt === 0 ? waited.tasks : null;
      const remote = new Map<WorkerConn, number[]>();
      const retry: number[] = [];
      for (const i of todo) {
        const key = keys[i];
        let ts = found?.[i];
        if (ts === undefined || (ts.state !== "memory" && ts.state !== "erred")) ts = this.#state.tasks.get(key);
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
