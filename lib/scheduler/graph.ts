/**
 * Validation of submitted task graphs: shape, duplicate keys, unknown refs, cycles and unknown
 * functions are rejected as a whole before anything is applied.
 *
 * @module
 */
import { builtins } from "../worker/builtins.ts";
import { ShardedMap } from "./sharded.ts";
import { checkKeyLength, defaultLimits, LimitError, type Limits, measureValue } from "../limits.ts";

/** One task as submitted. */
export interface TaskSpec {
  key: string;
  fn: string;
  args: unknown[];
  retries: number;
  annotations: Record<string, unknown>;
  /** The keys its args refer to (`{"$ref": KEY}`), each once (set by validation). */
  refs?: string[];
  /** Its place in `tasks` (set by validation). */
  index?: number;
  /** Its place in the graph's dependency order (set by validation). */
  rank?: number;
}

/**
 * A validated graph. Each task's refs, place and rank sit on its spec: a graph of a million
 * tasks makes one map of its keys (`spec`), not one per thing to look up.
 */
export interface ValidGraph {
  tasks: TaskSpec[];
  keys: string[];
  /** Task keys in dependency order (dependencies first, depth-first from the wanted keys). */
  order: string[];
  /** The task of this graph with this key. */
  spec(key: string): TaskSpec | undefined;
  /** A task's place in `order` (without a map of a million keys). */
  rank(task: TaskSpec): number;
}

/** A graph that cannot be accepted; answered with 400. */
export class GraphError extends Error {
  override name = "GraphError";
  readonly code = "E_GRAPH";
}

/** Names of the built-in task functions (`builtin.NAME`). */
export const builtinNames: ReadonlySet<string> = new Set(Object.keys(builtins));

/** Shared by every task without annotations (a graph of 100,000 tasks makes one, not 100,000). */
const noAnnotations: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>;
const noRefs: string[] = Object.freeze([]) as unknown as string[];

/** Checks that `fn` names a built-in, or a module some worker has. */
function checkFn(key: string, fn: string, knownModules: ReadonlySet<string> | null): void {
  const dot = fn.indexOf(".");
  if (dot <= 0 || dot === fn.length - 1) throw new GraphError(`Task "${key}" has an invalid fn "${fn}": expected MODULE.NAME`);
  const prefix = fn.slice(0, dot);
  if (prefix === "builtin") {
    if (!builtinNames.has(fn.slice(dot + 1))) throw new GraphError(`Task "${key}" uses an unknown built-in "${fn}"`);
  } else if (knownModules && !knownModules.has(prefix)) {
    throw new GraphError(`Task "${key}" uses an unknown fn prefix "${prefix}" in "${fn}"`);
  }
}

/** Collects the keys referenced by `{"$ref": KEY}` anywhere inside a value (iteratively: no depth limit). */
export function collectRefs(value: unknown, out: string[]): void {
  measureValue(value, Infinity, Infinity, (object) => refOf(object, out));
}

/** Adds an object's `$ref` to `out`; true when it is a ref (its fields are not walked into). */
function refOf(object: Record<string, unknown>, out: string[]): boolean {
  const ref = object.$ref;
  if (ref === undefined) return false;
  if (typeof ref !== "string") throw new GraphError(`"$ref" must be a string, got ${ref === null ? "null" : typeof ref}`);
  out.push(ref);
  return true;
}

/** What `validateGraph` checks against. */
export interface GraphContext {
  /** Whether a key already exists at the scheduler. */
  existing: (key: string) => boolean;
  /** Task modules some worker has; `null` when unknown (no workers). */
  knownModules: ReadonlySet<string> | null;
  /** Task count, key length, args depth and size (lib/limits.ts); over one → LimitError. */
  limits?: Limits;
}

/**
 * Validates a submitted graph against the keys the scheduler already has, all at once.
 *
 * @param graph the decoded JSON or CBOR body
 */
export function validateGraph(graph: unknown, options: GraphContext): ValidGraph {
  const validation = new GraphValidation(graph, options);
  while (!validation.step(Infinity));
  return validation.result();
}

/**
 * Validates like {@linkcode validateGraph}, in slices of about `sliceMs` of work with the event
 * loop free in between, so that a graph of a million tasks does not stall the scheduler.
 * Nothing is applied here: the whole graph is valid or this throws.
 */
export async function validateGraphSliced(graph: unknown, options: GraphContext, sliceMs = 10): Promise<ValidGraph> {
  const validation = new GraphValidation(graph, options);
  for (;;) {
    const t0 = performance.now();
    while (performance.now() - t0 < sliceMs) {
      if (validation.step(1024)) return validation.result();
    }
    await yieldToLoop();
  }
}

/** Lets the event loop run (timers, sockets) before going on. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * One graph's validation as resumable steps: the tasks, then their refs, then the wanted keys,
 * then the dependency order (which also finds cycles).
 */
class GraphValidation {
  #options: GraphContext;
  #limits: Limits;
  #rawTasks: unknown[];
  #rawKeys: unknown;
  #phase = 0;
  #i = 0;
  #tasks: TaskSpec[] = [];
  /** Each fn checked, as its first task spelled it: later tasks share that one string. */
  #knownFns = new Map<string, string>();
  #byKey = new ShardedMap<TaskSpec>();
  // One array and one callback for every task's refs: a graph of 100,000 tasks makes one, not 100,000.
  #found: string[] = [];
  #onObject = (object: Record<string, unknown>) => refOf(object, this.#found);
  #keys: string[] = [];
  #anyRefs = false;
  #order: TaskOrder | null = null;

  constructor(graph: unknown, options: GraphContext) {
    this.#options = options;
    const limits = this.#limits = options.limits ?? defaultLimits;
    if (graph === null || typeof graph !== "object" || Array.isArray(graph)) {
      throw new GraphError("A graph must be an object with \"tasks\" and \"keys\"");
    }
    const { tasks: rawTasks, keys: rawKeys } = graph as { tasks?: unknown; keys?: unknown };
    if (!Array.isArray(rawTasks)) throw new GraphError("\"tasks\" must be an array");
    if (rawTasks.length > limits.maxGraphTasks) throw new LimitError("Graph", "maxGraphTasks", rawTasks.length, limits.maxGraphTasks);
    this.#rawTasks = rawTasks;
    this.#rawKeys = rawKeys;
  }

  /** Does up to `budget` items of work; true once the graph is fully validated. */
  step(budget: number): boolean {
    if (this.#phase === 0) {
      const end = Math.min(this.#rawTasks.length, this.#i + budget);
      for (; this.#i < end; this.#i++) this.#task(this.#i);
      if (this.#i < this.#rawTasks.length) return false;
      this.#phase = 1;
      this.#i = 0;
      return false;
    }
    if (this.#phase === 1) {
      const tasks = this.#tasks;
      const end = Math.min(tasks.length, this.#i + budget);
      for (; this.#i < end; this.#i++) this.#refs(tasks[this.#i]);
      if (this.#i < tasks.length) return false;
      const keys = this.#rawKeys === undefined ? tasks.map((t) => t.key) : this.#rawKeys;
      if (!Array.isArray(keys)) throw new GraphError("\"keys\" must be an array of task keys");
      this.#keys = keys;
      this.#phase = 2;
      this.#i = 0;
      return false;
    }
    if (this.#phase === 2) {
      const keys = this.#keys as unknown[];
      const end = Math.min(keys.length, this.#i + budget);
      for (; this.#i < end; this.#i++) this.#wanted(keys[this.#i]);
      if (this.#i < keys.length) return false;
      this.#order = new TaskOrder(this.#tasks, this.#byKey, this.#keys, this.#rawKeys === undefined && !this.#anyRefs);
      this.#phase = 3;
      return false;
    }
    return this.#order!.step(budget);
  }

  result(): ValidGraph {
    const byKey = this.#byKey;
    return { tasks: this.#tasks, keys: this.#keys, order: this.#order!.order, spec: (key) => byKey.get(key), rank: (task) => task.rank! };
  }

  #task(i: number): void {
    const limits = this.#limits;
    const raw = this.#rawTasks[i] as Record<string, unknown> | null;
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      throw new GraphError(`Task #${i} must be an object`);
    }
    const key = raw.key;
    if (typeof key !== "string" || key === "") throw new GraphError(`Task #${i} needs a non-empty string "key"`);
    checkKeyLength("Task key", key, limits);
    if (this.#byKey.has(key)) throw new GraphError(`Duplicate task key "${key}"`);
    const rawFn = raw.fn;
    if (typeof rawFn !== "string") throw new GraphError(`Task "${key}" needs a string "fn"`);
    if (rawFn.length > limits.maxKeyLength) checkKeyLength(`Fn of task "${key}"`, rawFn, limits);
    // A decoder makes a string per task for the same fn: the tasks keep one (50 bytes a task).
    let fn = this.#knownFns.get(rawFn);
    if (fn === undefined) {
      checkFn(key, rawFn, this.#options.knownModules);
      this.#knownFns.set(rawFn, fn = rawFn);
    }
    const args = raw.args === undefined ? [] : raw.args;
    if (!Array.isArray(args)) throw new GraphError(`Task "${key}": "args" must be an array`);
    const retries = raw.retries === undefined ? 0 : raw.retries;
    if (typeof retries !== "number" || !Number.isInteger(retries) || retries < 0) {
      throw new GraphError(`Task "${key}": "retries" must be a non-negative integer`);
    }
    const annotations = raw.annotations === undefined ? noAnnotations : raw.annotations;
    if (annotations === null || typeof annotations !== "object" || Array.isArray(annotations)) {
      throw new GraphError(`Task "${key}": "annotations" must be an object`);
    }
    // One iterative walk checks the args' depth and size (lib/limits.ts) and collects the refs.
    let measure;
    try {
      measure = measureValue(args, limits.maxArgsDepth, limits.maxArgsBytes, this.#onObject);
    } catch (err) {
      throw new GraphError(`Task "${key}": ${(err as Error).message}`);
    }
    if (measure.depth > limits.maxArgsDepth) throw new LimitError(`Args of task "${key}"`, "maxArgsDepth", measure.depth, limits.maxArgsDepth);
    if (measure.bytes > limits.maxArgsBytes) throw new LimitError(`Args of task "${key}"`, "maxArgsBytes", measure.bytes, limits.maxArgsBytes);
    if (annotations !== noAnnotations) {
      const m = measureValue(annotations, limits.maxArgsDepth, limits.maxArgsBytes);
      if (m.depth > limits.maxArgsDepth) throw new LimitError(`Annotations of task "${key}"`, "maxArgsDepth", m.depth, limits.maxArgsDepth);
      if (m.bytes > limits.maxArgsBytes) throw new LimitError(`Annotations of task "${key}"`, "maxArgsBytes", m.bytes, limits.maxArgsBytes);
    }
    const found = this.#found;
    const refs = found.length === 0 ? noRefs : found.length === 1 ? [found[0]] : [...new Set(found)];
    if (refs.length > 0) {
      this.#anyRefs = true;
      // Only when it holds something: setting an array's length is a slow path in JSC.
      found.length = 0;
    }
    const task: TaskSpec = { key, fn, args, retries, annotations: annotations as Record<string, unknown>, refs, index: i, rank: -1 };
    this.#tasks.push(task);
    this.#byKey.set(key, task);
  }

  #refs(task: TaskSpec): void {
    const limits = this.#limits;
    const key = task.key;
    for (const ref of task.refs!) {
      if (ref.length > limits.maxKeyLength) checkKeyLength(`Ref in task "${key}"`, ref, limits);
      if (!this.#byKey.has(ref) && !this.#options.existing(ref)) throw new GraphError(`Task "${key}" refers to unknown key "${ref}"`);
      if (ref === key) throw new GraphError(`Task "${key}" depends on itself`);
    }
  }

  #wanted(key: unknown): void {
    if (typeof key !== "string") throw new GraphError(`"keys" holds a non-string (${key === null ? "null" : typeof key})`);
    checkKeyLength("Wanted key", key, this.#limits);
    if (!this.#byKey.has(key) && !this.#options.existing(key)) throw new GraphError(`Wanted key "${key}" is not in the graph`);
  }
}

/**
 * Orders the new tasks depth-first from the wanted keys, dependencies before dependents, and
 * detects cycles; resumable. Tasks not reachable from a wanted key follow in submission order.
 * A task's mark (unseen, on the stack, done) is its rank: -1, -2, then its place in the order.
 */
class TaskOrder {
  readonly order: string[] = [];
  #byKey: ReadonlyMap<string, TaskSpec>;
  #roots: string[];
  #tasks: TaskSpec[];
  #next = 0;
  #stack: Array<[TaskSpec, number]> = [];

  /** `flat`: no task depends on another and every one is wanted: submission order it is. */
  constructor(tasks: TaskSpec[], byKey: ReadonlyMap<string, TaskSpec>, keys: string[], flat: boolean) {
    this.#tasks = tasks;
    this.#byKey = byKey;
    this.#roots = keys;
    // Done a slice at a time by `step` (a million tasks take tens of ms).
    if (flat) this.#next = -1;
  }

  /** Does up to `budget` steps; true once every task is ordered. */
  step(budget: number): boolean {
    if (this.#next < 0) return this.#flat(budget);
    const byKey = this.#byKey;
    const stack = this.#stack;
    for (let n = 0; n < budget; n++) {
      if (stack.length === 0) {
        // The next root: the wanted keys, then every task in submission order.
        const total = this.#roots.length + this.#tasks.length;
        if (this.#next >= total) return true;
        const i = this.#next++;
        const root = i < this.#roots.length ? byKey.get(this.#roots[i]) : this.#tasks[i - this.#roots.length];
        if (root === undefined || root.rank! >= 0) continue; // an existing task, or ordered
        stack.push([root, 0]);
        root.rank = onStack;
        continue;
      }
      const top = stack[stack.length - 1];
      const refs = top[0].refs!;
      if (top[1] < refs.length) {
        const next = byKey.get(refs[top[1]++]);
        if (next === undefined) continue; // an existing task
        if (next.rank === onStack) throw new GraphError(`Cycle in the graph through key "${next.key}"`);
        if (next.rank! >= 0) continue;
        next.rank = onStack;
        stack.push([next, 0]);
      } else {
        top[0].rank = this.order.length;
        this.order.push(top[0].key);
        stack.pop();
      }
    }
    return false;
  }

  #flat(budget: number): boolean {
    const tasks = this.#tasks;
    const order = this.order;
    const end = Math.min(tasks.length, order.length + budget);
    for (let i = order.length; i < end; i++) {
      tasks[i].rank = i;
      order.push(tasks[i].key);
    }
    return order.length === tasks.length;
  }
}

/** The rank of a task on the ordering's stack (-1: not seen yet). */
const onStack = -2;
