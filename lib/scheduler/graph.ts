/**
 * Validation of submitted task graphs: shape, duplicate keys, unknown refs, cycles and unknown
 * functions are rejected as a whole before anything is applied.
 *
 * @module
 */
import { builtins } from "../worker/builtins.ts";
import { checkKeyLength, defaultLimits, LimitError, type Limits, measureValue } from "../limits.ts";

/** One task as submitted. */
export interface TaskSpec {
  key: string;
  fn: string;
  args: unknown[];
  retries: number;
  annotations: Record<string, unknown>;
}

/** A validated graph. `deps` lists each task's referenced keys. */
export interface ValidGraph {
  tasks: TaskSpec[];
  keys: string[];
  deps: Map<string, string[]>;
  /** Task keys in dependency order (dependencies first, depth-first from the wanted keys). */
  order: string[];
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

/**
 * Validates a submitted graph against the keys the scheduler already has.
 *
 * @param graph the decoded JSON or CBOR body
 * @param options.existing whether a key already exists at the scheduler
 * @param options.knownModules task modules some worker has; `null` when unknown (no workers)
 * @param options.limits task count, key length, args depth and size (lib/limits.ts); over one → LimitError
 */
export function validateGraph(
  graph: unknown,
  options: { existing: (key: string) => boolean; knownModules: ReadonlySet<string> | null; limits?: Limits },
): ValidGraph {
  const limits = options.limits ?? defaultLimits;
  if (graph === null || typeof graph !== "object" || Array.isArray(graph)) {
    throw new GraphError("A graph must be an object with \"tasks\" and \"keys\"");
  }
  const { tasks: rawTasks, keys: rawKeys } = graph as { tasks?: unknown; keys?: unknown };
  if (!Array.isArray(rawTasks)) throw new GraphError("\"tasks\" must be an array");
  if (rawTasks.length > limits.maxGraphTasks) throw new LimitError("Graph", "maxGraphTasks", rawTasks.length, limits.maxGraphTasks);
  const tasks: TaskSpec[] = [];
  const knownFns = new Set<string>();
  const deps = new Map<string, string[]>();
  const byKey = new Map<string, TaskSpec>();
  // One array and one callback for every task's refs: a graph of 100,000 tasks makes one, not 100,000.
  const found: string[] = [];
  const onObject = (object: Record<string, unknown>) => refOf(object, found);
  for (let i = 0; i < rawTasks.length; i++) {
    const raw = rawTasks[i] as Record<string, unknown> | null;
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      throw new GraphError(`Task #${i} must be an object`);
    }
    const key = raw.key;
    if (typeof key !== "string" || key === "") throw new GraphError(`Task #${i} needs a non-empty string "key"`);
    checkKeyLength("Task key", key, limits);
    if (byKey.has(key)) throw new GraphError(`Duplicate task key "${key}"`);
    const fn = raw.fn;
    if (typeof fn !== "string") throw new GraphError(`Task "${key}" needs a string "fn"`);
    if (fn.length > limits.maxKeyLength) checkKeyLength(`Fn of task "${key}"`, fn, limits);
    if (!knownFns.has(fn)) {
      checkFn(key, fn, options.knownModules);
      knownFns.add(fn);
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
      measure = measureValue(args, limits.maxArgsDepth, limits.maxArgsBytes, onObject);
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
    const refs = found.length === 0 ? noRefs : found.length === 1 ? [found[0]] : [...new Set(found)];
    found.length = 0;
    const task: TaskSpec = { key, fn, args, retries, annotations: annotations as Record<string, unknown> };
    tasks.push(task);
    byKey.set(key, task);
    deps.set(key, refs);
  }
  for (const [key, refs] of deps) {
    for (const ref of refs) {
      if (ref.length > limits.maxKeyLength) checkKeyLength(`Ref in task "${key}"`, ref, limits);
      if (!byKey.has(ref) && !options.existing(ref)) throw new GraphError(`Task "${key}" refers to unknown key "${ref}"`);
      if (ref === key) throw new GraphError(`Task "${key}" depends on itself`);
    }
  }
  const keys = rawKeys === undefined ? tasks.map((t) => t.key) : rawKeys;
  if (!Array.isArray(keys)) throw new GraphError("\"keys\" must be an array of task keys");
  for (const key of keys) {
    if (typeof key !== "string") throw new GraphError(`"keys" holds a non-string (${key === null ? "null" : typeof key})`);
    checkKeyLength("Wanted key", key, limits);
    if (!byKey.has(key) && !options.existing(key)) throw new GraphError(`Wanted key "${key}" is not in the graph`);
  }
  return { tasks, keys: keys as string[], deps, order: orderTasks(tasks, deps, keys as string[]) };
}

/**
 * Orders the new tasks depth-first from the wanted keys, dependencies before dependents, and
 * detects cycles. Tasks not reachable from a wanted key follow in submission order.
 */
function orderTasks(tasks: TaskSpec[], deps: Map<string, string[]>, keys: string[]): string[] {
  // 0 = unseen, 1 = on the stack, 2 = done
  const mark = new Map<string, number>();
  const order: string[] = [];
  const visit = (root: string) => {
    if (mark.get(root) === 2 || !deps.has(root)) return;
    const stack: Array<[string, number]> = [[root, 0]];
    mark.set(root, 1);
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const refs = deps.get(top[0])!;
      if (top[1] < refs.length) {
        const next = refs[top[1]++];
        if (!deps.has(next)) continue; // an existing task
        const m = mark.get(next);
        if (m === 1) throw new GraphError(`Cycle in the graph through key "${next}"`);
        if (m === 2) continue;
        mark.set(next, 1);
        stack.push([next, 0]);
      } else {
        mark.set(top[0], 2);
        order.push(top[0]);
        stack.pop();
      }
    }
  };
  for (const key of keys) visit(key);
  for (const task of tasks) visit(task.key);
  return order;
}
