/**
 * The input limits (lib/limits.ts), the safe-path check (lib/safe-path.ts) and Prometheus label
 * escaping (lib/prometheus.ts) as pure functions; then the probes from outside against the
 * binary: each over-limit input is a clear 4xx naming the limit, and the cluster keeps working.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import {
  checkEvent,
  defaultLimits,
  LimitError,
  measureValue,
  readBodyLimited,
  resolveLimits,
  utf8Length,
} from "../lib/limits.ts";
import { resolveInside, safeRelativePath, UnsafePathError } from "../lib/safe-path.ts";
import { escapeLabelValue, formatLabels } from "../lib/prometheus.ts";
import { GraphError, validateGraph } from "../lib/scheduler/graph.ts";
import { UploadFilePlugin } from "../plugins/upload-file.ts";
import { UploadDirectoryPlugin } from "../plugins/upload-directory.ts";
import { Scheduler } from "../lib/scheduler/server.ts";
import { Client } from "../lib/client/mod.ts";
import { api, collectEvents, startCluster, stopAll, type TestCluster } from "../testkit/mod.ts";

afterAll(stopAll);

/** A value nested `depth` deep, built without recursion. */
function nested(depth: number, leaf: unknown = 1): unknown {
  let value: unknown = leaf;
  for (let i = 0; i < depth; i++) value = i % 2 ? [value] : { a: value };
  return value;
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("Expected an error");
}

const noWorkers = { existing: () => false, knownModules: null };

describe("limits", () => {
  test("the defaults are those of the contract and can be replaced one by one", () => {
    expect(defaultLimits.maxBodyBytes).toBe(64 * 1024 * 1024);
    expect(defaultLimits.maxGraphTasks).toBe(1_000_000);
    expect(resolveLimits({ maxEventBytes: 10 })).toEqual({ ...defaultLimits, maxEventBytes: 10 });
    expect(() => resolveLimits({ maxEventBytes: -1 })).toThrow(/Invalid limit "maxEventBytes"/);
    expect(() => resolveLimits({ nonsense: 1 } as never)).toThrow(/Unknown limit "nonsense"/);
  });

  test("a limit error names the limit, the value and the maximum, with a 413 for sizes and a 400 for shape", () => {
    const size = new LimitError("Request body", "maxBodyBytes", 100, 10);
    expect(size.message).toBe('Request body exceeds the limit "maxBodyBytes": 100 bytes, at most 10 bytes');
    expect(size.status).toBe(413);
    expect(size).toBeInstanceOf(RangeError);
    expect(new LimitError("Event", "maxEventDepth", 33, 32).status).toBe(400);
    expect(new LimitError("Task key", "maxKeyLength", 2000, 1024).status).toBe(400);
    expect(new LimitError("Graph", "maxGraphTasks", 2, 1).status).toBe(413);
  });

  test("measuring a value nested 100,000 deep stops at the limit without overflowing the stack", () => {
    expect(measureValue(nested(100_000), 64, Infinity).depth).toBe(65);
    expect(measureValue(nested(3), 64, Infinity)).toEqual({ depth: 3, bytes: expect.any(Number) });
    expect(measureValue("abc", 1, Infinity).depth).toBe(0);
    expect(measureValue([[1], { a: [2] }], 10, Infinity).depth).toBe(3);
  });

  test("the size estimate grows with strings and byte arrays and stops early past the limit", () => {
    expect(measureValue(["x".repeat(1000)], 10, Infinity).bytes).toBeGreaterThan(1000);
    expect(measureValue([new Uint8Array(5000)], 10, Infinity).bytes).toBeGreaterThan(5000);
    const many = Array.from({ length: 1000 }, () => ({ s: "y".repeat(100) }));
    expect(measureValue(many, 10, 500).bytes).toBeLessThan(100 * 1000);
  });

  test("an event is checked for depth before size, by its UTF-8 length", () => {
    expect(checkEvent("t", { a: 1 }, defaultLimits)).toBe('{"a":1}');
    expect((thrown(() => checkEvent("t", nested(100_000), defaultLimits)) as LimitError).limit).toBe("maxEventDepth");
    expect((thrown(() => checkEvent("t", { s: "x".repeat(2 << 20) }, defaultLimits)) as LimitError).limit).toBe("maxEventBytes");
    expect(utf8Length("aé€😀")).toBe(1 + 2 + 3 + 4);
  });

  test("a body is refused by its Content-Length before it is read", async () => {
    let pulled = false;
    const body = new ReadableStream({ pull: () => void (pulled = true) }, { highWaterMark: 0 });
    const request = new Request("http://x/", { method: "POST", body, headers: { "content-length": "2000" }, duplex: "half" } as RequestInit);
    const err = await readBodyLimited(request, 1000).catch((e) => e);
    expect(err).toBeInstanceOf(LimitError);
    expect(err.message).toContain("2000 bytes, at most 1000 bytes");
    expect(pulled).toBe(false);
  });

  test("a body without a length is cut off as soon as it passes the limit", async () => {
    let sent = 0;
    let cancelled = false;
    const body = new ReadableStream({
      pull(controller) {
        sent += 100;
        controller.enqueue(new Uint8Array(100));
        if (sent >= 100_000) controller.close();
      },
      cancel: () => void (cancelled = true),
    });
    const request = new Request("http://x/", { method: "POST", body, duplex: "half" } as RequestInit);
    const err = await readBodyLimited(request, 1000).catch((e) => e);
    expect(err.limit).toBe("maxBodyBytes");
    expect(cancelled).toBe(true);
    expect(sent).toBeLessThan(2000);
    const ok = await readBodyLimited(new Request("http://x/", { method: "POST", body: "hello" }), 1000);
    expect(new TextDecoder().decode(ok)).toBe("hello");
  });
});

describe("graph limits", () => {
  const small = resolveLimits({ maxGraphTasks: 3, maxArgsDepth: 4, maxArgsBytes: 1000, maxKeyLength: 20 });
  const task = (key: string, args: unknown[] = []) => ({ key, fn: "builtin.identity", args });

  test("a graph over the task count is refused as a whole", () => {
    const tasks = ["a", "b", "c", "d"].map((k) => task(k));
    expect((thrown(() => validateGraph({ tasks }, { ...noWorkers, limits: small })) as LimitError).limit).toBe("maxGraphTasks");
  });

  test("a long key, fn, wanted key or ref is refused", () => {
    const long = "k".repeat(21);
    expect(thrown(() => validateGraph({ tasks: [task(long)] }, { ...noWorkers, limits: small })).message).toContain("maxKeyLength");
    expect(thrown(() => validateGraph({ tasks: [{ key: "a", fn: `m.${long}` }] }, { ...noWorkers, limits: small })).message).toContain("maxKeyLength");
    expect(thrown(() => validateGraph({ tasks: [task("a")], keys: [long] }, { ...noWorkers, limits: small })).message).toContain("maxKeyLength");
    expect(thrown(() => validateGraph({ tasks: [task("a", [{ $ref: long }])] }, { ...noWorkers, limits: small })).message).toContain("maxKeyLength");
  });

  test("args nested 100,000 deep are refused without overflowing the stack", () => {
    const err = thrown(() => validateGraph({ tasks: [task("a", [nested(100_000)])] }, noWorkers)) as LimitError;
    expect(err.limit).toBe("maxArgsDepth");
    expect(err.message).toContain('Args of task "a"');
    expect(err.status).toBe(400);
  });

  test("args or annotations over the size limit are refused with a 413", () => {
    const err = thrown(() => validateGraph({ tasks: [task("a", ["x".repeat(2000)])] }, { ...noWorkers, limits: small })) as LimitError;
    expect([err.limit, err.status]).toEqual(["maxArgsBytes", 413]);
    const tasks = [{ ...task("a"), annotations: { big: "y".repeat(2000) } }];
    expect((thrown(() => validateGraph({ tasks }, { ...noWorkers, limits: small })) as LimitError).limit).toBe("maxArgsBytes");
  });

  test("refs are still found at any depth within the limit, and a ref's own fields are not walked", () => {
    const graph = validateGraph({
      tasks: [task("a"), task("b"), task("c", [{ x: [{ $ref: "a" }] }, { $ref: "b", nested: { $ref: "zzz" } }, { $ref: "a" }])],
    }, noWorkers);
    expect(graph.spec("c")!.refs).toEqual(["a", "b"]);
    expect(thrown(() => validateGraph({ tasks: [task("a", [{ $ref: { deep: 1 } }])] }, noWorkers))).toBeInstanceOf(GraphError);
  });
});

describe("safe paths", () => {
  const refused = [
    "/etc/passwd", "../x", "a/../../x", "a\\..\\..\\x", "a\\b", "C:x", "c:\\x", "D:/x", "a\0b", "", ".", "./", "a/..", "..",
    "\\\\server\\share\\x",
  ];
  for (const name of refused) {
    test(`the name ${JSON.stringify(name)} is refused`, () => {
      expect(() => safeRelativePath(name)).toThrow(UnsafePathError);
      expect(() => resolveInside("/base", name)).toThrow(UnsafePathError);
    });
  }

  test("plain relative names are normalised and resolved inside the base", () => {
    expect(safeRelativePath("a/./b//c.ts")).toBe("a/b/c.ts");
    expect(safeRelativePath("..a/b..")).toBe("..a/b..");
    const base = mkdtempSync(join(tmpdir(), "safe-path-"));
    expect(resolveInside(base, "x/y.ts")).toBe(join(base, "x", "y.ts"));
    expect(resolveInside(base + sep, "y.ts")).toBe(join(base, "y.ts"));
  });

  test("upload-file refuses a backslash path that would climb out of the worker's directory", () => {
    const files = { "a\\..\\..\\x": new Uint8Array(1) };
    expect(() => new UploadFilePlugin({ path: "a\\..\\..\\x" }, { files })).toThrow(/backslash/);
    expect(() => new UploadFilePlugin({ path: "/tmp/abs.ts" }, { files: { "abs.ts": new Uint8Array(1) } })).toThrow(/absolute/);
    expect(new UploadFilePlugin({ path: "sub/t.txt" }, { files: { "sub/t.txt": new Uint8Array(1) } }).relativePath).toBe("sub/t.txt");
  });

  test("upload-directory refuses names that leave the directory and writes the others inside it", async () => {
    for (const name of ["../x", "a\\..\\..\\x", "/abs", "C:x"]) {
      expect(() => new UploadDirectoryPlugin({ path: "d" }, { files: { [name]: new Uint8Array(1) } })).toThrow(UnsafePathError);
    }
    const local = mkdtempSync(join(tmpdir(), "upload-dir-"));
    const plugin = new UploadDirectoryPlugin({ path: "d" }, { files: { "x/y.txt": new TextEncoder().encode("y") } });
    await plugin.setup({ localDirectory: local, taskPaths: [] } as never);
    expect(readdirSync(join(local, "d", "x"))).toEqual(["y.txt"]);
  });
});

describe("Prometheus labels", () => {
  test("backslash, double quote and newline are escaped as the text format says", () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    expect(escapeLabelValue("plain")).toBe("plain");
  });

  test("a plugin name with a newline cannot inject a line", () => {
    const name = 'evil"} 1\ninjected_metric 666\n#';
    const line = `cluster_plugin_errors${formatLabels({ plugin: name })} 1`;
    expect(line.split("\n")).toHaveLength(1);
    expect(line).toBe('cluster_plugin_errors{plugin="evil\\"} 1\\ninjected_metric 666\\n#"} 1');
  });
});

describe("limits from scheduler options", () => {
  test("the scheduler's limits option sets each limit and the HTTP API answers with it", async () => {
    const scheduler = await Scheduler.start({
      port: 0,
      limits: { maxBodyBytes: 2000, maxGraphTasks: 2, maxEventBytes: 100, maxEventDepth: 3, maxKeyLength: 8 },
    });
    try {
      const url = scheduler.address;
      const big = await api(url, "/api/v1/graph", { body: { tasks: [{ key: "a", fn: "builtin.identity", args: ["x".repeat(3000)] }] } });
      expect(big.status).toBe(413);
      expect(big.body.error).toMatch(/^Request body exceeds the limit "maxBodyBytes": 30\d\d bytes, at most 2000 bytes$/);
      const many = await api(url, "/api/v1/graph", { body: { tasks: ["a", "b", "c"].map((key) => ({ key, fn: "builtin.identity" })) } });
      expect([many.status, many.body.error]).toEqual([413, 'Graph exceeds the limit "maxGraphTasks": 3 tasks, at most 2 tasks']);
      const key = await api(url, "/api/v1/graph", { body: { tasks: [{ key: "123456789", fn: "builtin.identity" }] } });
      expect([key.status, key.body.error]).toMatchObject([400, expect.stringContaining("maxKeyLength")]);
      const deep = await api(url, "/api/v1/events/t", { body: { a: { b: { c: {} } } } });
      expect([deep.status, deep.body.error]).toEqual([400, 'Event on topic "t" exceeds the limit "maxEventDepth": 4 levels, at most 3 levels']);
      const large = await api(url, "/api/v1/events/t", { body: { s: "x".repeat(200) } });
      expect([large.status, large.body.error]).toMatchObject([413, expect.stringContaining("maxEventBytes")]);
      expect((await api(url, "/api/v1/events/t", { body: { ok: 1 } })).status).toBe(200);
      // The client link answers the same limits with the same status.
      const client = await Client.connect(url);
      try {
        const err = await client.logEvent("t", { a: { b: { c: {} } } }).catch((e) => e);
        expect([err.status, err.message]).toEqual([400, 'Event on topic "t" exceeds the limit "maxEventDepth": 4 levels, at most 3 levels']);
        const graphErr = await client.compute({ tasks: ["a", "b", "c"].map((key) => ({ key, fn: "builtin.identity" })) } as never).catch((e) => e);
        expect([graphErr.status, graphErr.message]).toEqual([413, 'Graph exceeds the limit "maxGraphTasks": 3 tasks, at most 2 tasks']);
        await client.logEvent("t", { ok: 1 });
      } finally {
        await client.close();
      }
    } finally {
      await scheduler.close();
    }
  });
});

describe("probes from outside against the binary", () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startCluster({ workers: 1 });
  });
  afterAll(() => cluster?.stop());

  /** A small graph that must finish with the right result, before and after each probe. */
  async function graphStillRuns(tag: string): Promise<void> {
    const tasks = [
      { key: `ok-${tag}-a`, fn: "builtin.inc", args: [1] },
      { key: `ok-${tag}-b`, fn: "builtin.add", args: [{ $ref: `ok-${tag}-a` }, 10] },
    ];
    expect((await api(cluster.url, "/api/v1/graph", { body: { tasks } })).status).toBe(202);
    const result = await api(cluster.url, `/api/v1/results/ok-${tag}-b?timeout=20`);
    expect(result.body.value).toBe(12);
  }

  test("a 100 MB argument is refused with a 413 before it is read, and the cluster keeps working", async () => {
    await graphStillRuns("before-100mb");
    const big = JSON.stringify({ tasks: [{ key: "huge", fn: "builtin.identity", args: ["x".repeat(100 << 20)] }] });
    const res = await api(cluster.url, "/api/v1/graph", { raw: big, contentType: "application/json" }).catch((e) => ({ status: 0, body: String(e) }));
    // The scheduler may close the connection after answering without reading the rest.
    if (res.status !== 0) expect([res.status, res.body.error]).toEqual([413, expect.stringContaining('"maxBodyBytes"')]);
    expect((await api(cluster.url, "/health")).status).toBe(200);
    expect((await api(cluster.url, "/api/v1/tasks/huge")).status).toBe(404);
    await graphStillRuns("after-100mb");
  }, 60_000);

  test("a 20 MB argument in a body under the body limit is refused by the args limit", async () => {
    const res = await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "big-arg", fn: "builtin.identity", args: ["x".repeat(20 << 20)] }, { key: "small", fn: "builtin.inc", args: [1] }] } });
    expect([res.status, res.body.error]).toEqual([413, expect.stringContaining('Args of task "big-arg" exceeds the limit "maxArgsBytes"')]);
    expect((await api(cluster.url, "/api/v1/tasks/small")).status).toBe(404);
    await graphStillRuns("after-20mb");
  }, 60_000);

  test("an event nested 100,000 deep is refused and subscribers keep receiving events", async () => {
    const sub = collectEvents(cluster.url, "topic=probe", (events) => events.some((e) => e.n === 2));
    await sub.ready;
    expect((await api(cluster.url, "/api/v1/events/probe", { body: { n: 1 } })).status).toBe(200);
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    const res = await api(cluster.url, "/api/v1/events/probe", { raw: `{"x":${deep}}`, contentType: "application/json" });
    expect([res.status, res.body.error]).toEqual([400, expect.stringContaining('"maxEventDepth"')]);
    expect((await api(cluster.url, "/api/v1/events/probe", { body: { n: 2 } })).status).toBe(200);
    const events = await sub.done;
    expect(events.map((e) => e.n)).toEqual([1, 2]);
    await graphStillRuns("after-deep");
  }, 60_000);

  test("a 50 MB event is refused by the event size limit", async () => {
    const res = await api(cluster.url, "/api/v1/events/huge", { body: { s: "x".repeat(50 << 20) } });
    expect([res.status, res.body.error]).toEqual([413, expect.stringContaining('"maxEventBytes"')]);
    expect((await api(cluster.url, "/health")).status).toBe(200);
  }, 60_000);

  test("a 2,000-character key is refused with a 400 naming the limit", async () => {
    const res = await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "k".repeat(2000), fn: "builtin.inc", args: [1] }] } });
    expect([res.status, res.body.error]).toEqual([400, expect.stringContaining('"maxKeyLength": 2000 characters, at most 1024 characters')]);
  });
});
