/**
 * Graph builders shared by the tests and the benchmarks: a map, a binary tree sum and a chain,
 * all of `builtin.*` functions, with a key prefix so that runs do not collide.
 *
 * @module
 */

/** A graph as `POST /api/v1/graph` and `Client.compute` take it. */
export interface Graph {
  tasks: any[];
  keys: string[];
}

/** Graph builders used by tests and benchmarks. */
export const graphs = {
  /** `n` independent `builtin.inc(i)`; every key is wanted. */
  map(n: number, prefix = "inc"): Graph {
    const tasks = [];
    for (let i = 0; i < n; i++) tasks.push({ key: `${prefix}-${i}`, fn: "builtin.inc", args: [i] });
    return { tasks, keys: tasks.map((t) => t.key) };
  },
  /** A binary tree of `builtin.add` over `n` leaves of `builtin.identity(1)`; the root is wanted. */
  treeSum(n: number, prefix = "tree"): Graph {
    const tasks: Graph["tasks"] = [];
    let level: string[] = [];
    for (let i = 0; i < n; i++) {
      tasks.push({ key: `${prefix}-leaf-${i}`, fn: "builtin.identity", args: [1] });
      level.push(`${prefix}-leaf-${i}`);
    }
    let depth = 0;
    while (level.length > 1) {
      const next: string[] = [];
      for (let i = 0; i < level.length; i += 2) {
        if (i + 1 === level.length) {
          next.push(level[i]);
          continue;
        }
        const key = `${prefix}-${depth}-${i}`;
        tasks.push({ key, fn: "builtin.add", args: [{ $ref: level[i] }, { $ref: level[i + 1] }] });
        next.push(key);
      }
      level = next;
      depth++;
    }
    return { tasks, keys: [level[0]] };
  },
  /** `n` `builtin.inc` each on the one before (the first on 0); the last is wanted. */
  chain(n: number, prefix = "chain"): Graph {
    const tasks: Graph["tasks"] = [{ key: `${prefix}-0`, fn: "builtin.inc", args: [0] }];
    for (let i = 1; i < n; i++) tasks.push({ key: `${prefix}-${i}`, fn: "builtin.inc", args: [{ $ref: `${prefix}-${i - 1}` }] });
    return { tasks, keys: [`${prefix}-${n - 1}`] };
  },
};
