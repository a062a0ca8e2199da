/**
 * The task table as scheduler plugins see it (`scheduler.tasks`): read-only views of the state
 * machine's `TaskState` records with Dask's names — `prefix` and `group` (Dask's `key_split`
 * and task-group name), `whoWants` as client ids, `whoHas` as worker names, `startstops`.
 * A view is made only when a plugin asks for a task (one per task, kept while the task lives),
 * so the state machine's hot path pays nothing for it.
 *
 * @module
 */
import type { SchedulerTaskStateName, Startstop, TaskStateView } from "../plugins/types.ts";
import type { TaskState } from "./task-state.ts";

const hex8 = /^[a-f]+$/;
const hex32 = /^[a-f0-9]{32}$/;

/**
 * Dask's `key_split`: the name of a key's task prefix. Words after the first are kept while they
 * are alphabetic and not an 8-letter hex-looking token; a 32-digit hex key is `data`.
 *
 * @example
 * ```ts
 * keySplit("x-y-3"); // "x-y"
 * keySplit("inc-1a2b3c4d-0"); // "inc"
 * keySplit("('sum-abc', 0)"); // "sum"
 * ```
 */
export function keySplit(key: string): string {
  if (key === "") return "Other";
  const words = key.split("-");
  let result = /^[A-Za-z]/.test(words[0]) ? words[0] : words[0].split(",")[0].replace(/^[_'()"]+|[_'()"]+$/g, "");
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (/^[A-Za-z]+$/.test(word) && !(word.length === 8 && hex8.test(word))) result += "-" + word;
    else break;
  }
  if (result.length === 32 && hex32.test(result)) return "data";
  if (result.startsWith("<")) result = result.replace(/^<+|>+$/g, "").split(/\s/)[0].split(".").pop() ?? result;
  return result || "Other";
}

/**
 * The task group of a key: the key without its last `-N` index, as Dask groups the tuple keys
 * `("name-token", i)`; a key with no index is its own group.
 *
 * @example
 * ```ts
 * keyGroup("inc-1a2b3c4d-7"); // "inc-1a2b3c4d"
 * keyGroup("total"); // "total"
 * ```
 */
export function keyGroup(key: string): string {
  const m = /^(.+)-\d+$/.exec(key);
  return m ? m[1] : key;
}

const noStartstops: readonly Startstop[] = Object.freeze([]);

/** One task as a plugin sees it: live fields read through to the state machine's record. */
export class TaskView implements TaskStateView {
  #ts: TaskState;
  #prefix: string | null = null;
  #group: string | null = null;
  constructor(ts: TaskState) {
    this.#ts = ts;
  }
  get key(): string {
    return this.#ts.key;
  }
  get state(): SchedulerTaskStateName {
    return this.#ts.state;
  }
  get fn(): string {
    return this.#ts.fn;
  }
  get args(): unknown[] {
    return this.#ts.args;
  }
  get dependencies(): ReadonlySet<string> {
    return this.#ts.dependencies;
  }
  get dependents(): ReadonlySet<string> {
    return this.#ts.dependents;
  }
  get worker(): string | null {
    return this.#ts.worker;
  }
  get processingOn(): string | null {
    return this.#ts.processingOn?.name ?? null;
  }
  get whoHas(): ReadonlySet<string> {
    return new Set([...this.#ts.whoHas].map((w) => w.name));
  }
  get whoWants(): ReadonlySet<string> {
    return new Set([...this.#ts.whoWants].map((c) => c.id));
  }
  get nbytes(): number {
    return this.#ts.nbytes;
  }
  get exception(): string | null {
    return this.#ts.exception;
  }
  get traceback(): string | null {
    return this.#ts.traceback;
  }
  get annotations(): Record<string, unknown> {
    return this.#ts.annotations;
  }
  get priority(): number {
    return this.#ts.priority;
  }
  get retries(): number {
    return this.#ts.retries;
  }
  get suspicious(): number {
    return this.#ts.suspicious;
  }
  get startstops(): readonly Startstop[] {
    return this.#ts.startstops ?? noStartstops;
  }
  get prefix(): string {
    return this.#prefix ??= keySplit(this.#ts.key);
  }
  get group(): string {
    return this.#group ??= keyGroup(this.#ts.key);
  }
  /** The same shape as `GET /api/v1/tasks/KEY`. */
  toJSON(): Record<string, unknown> {
    return this.#ts.toJSON();
  }
}

/**
 * `scheduler.tasks` as plugins see it: the task table, plus the task whose transition hooks run
 * now — a task forgotten by the stimulus is still there (state `forgotten`) for the hooks of its
 * own transitions, as when hooks ran inside the transition.
 */
export class TasksView implements ReadonlyMap<string, TaskStateView> {
  /** The task whose transition is being applied. */
  current: TaskState | null = null;
  #tasks: ReadonlyMap<string, TaskState>;
  #views = new WeakMap<TaskState, TaskView>();
  constructor(tasks: ReadonlyMap<string, TaskState>) {
    this.#tasks = tasks;
  }
  #view(ts: TaskState): TaskView {
    let view = this.#views.get(ts);
    if (view === undefined) this.#views.set(ts, view = new TaskView(ts));
    return view;
  }
  get(key: string): TaskStateView | undefined {
    const ts = this.#tasks.get(key) ?? (this.current !== null && this.current.key === key ? this.current : undefined);
    return ts === undefined ? undefined : this.#view(ts);
  }
  has(key: string): boolean {
    return this.#tasks.has(key) || (this.current !== null && this.current.key === key);
  }
  get size(): number {
    return this.#tasks.size;
  }
  forEach(fn: (value: TaskStateView, key: string, map: ReadonlyMap<string, TaskStateView>) => void): void {
    for (const [key, ts] of this.#tasks) fn(this.#view(ts), key, this);
  }
  *entries(): MapIterator<[string, TaskStateView]> {
    for (const [key, ts] of this.#tasks) yield [key, this.#view(ts)];
  }
  keys(): MapIterator<string> {
    return this.#tasks.keys();
  }
  *values(): MapIterator<TaskStateView> {
    for (const ts of this.#tasks.values()) yield this.#view(ts);
  }
  [Symbol.iterator](): MapIterator<[string, TaskStateView]> {
    return this.entries();
  }
}
