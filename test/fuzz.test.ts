/**
 * Property-based fuzzing (fast-check), bounded in time: random and mutated graphs (JSON and
 * CBOR), frames on the worker, nanny and client WebSocket links, events, and plugins.toml text.
 * The network properties run against the binary with one real worker; after every property the
 * scheduler still answers `/health` and a graph submitted before and after finishes with the
 * right values. Each property stops after at most `budgetMs`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { encodeCbor, encodeFrame } from "../lib/protocol.ts";
import { parsePluginsToml } from "../lib/plugins/config.ts";
import { ConfigError } from "../lib/errors.ts";
import { authenticate } from "../lib/auth/handshake.ts";
import { api, authHeaders, startCluster, stopAll, type TestCluster } from "../testkit/mod.ts";

afterAll(stopAll);

/** Time budget per network property; with six of them and the loader, well under a minute. */
const budgetMs = 7_000;

let cluster: TestCluster;
/** Statuses the scheduler answered over the whole file, to report what was exercised. */
const seen = new Map<string, Set<number>>();
/** Any answer ≥ 500, with the input that caused it (a bug to fix or report). */
const serverErrors: string[] = [];

beforeAll(async () => {
  cluster = await startCluster({ workers: 1 });
  await sentinel("start");
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/** Submits a small graph and checks its values: the cluster still computes correctly. */
async function sentinel(tag: string): Promise<void> {
  const a = `sentinel-${tag}-a`;
  const b = `sentinel-${tag}-b`;
  const tasks = [
    { key: a, fn: "builtin.inc", args: [41] },
    { key: b, fn: "builtin.add", args: [{ $ref: a }, { $ref: a }] },
  ];
  const submitted = await api(cluster.url, "/api/v1/graph", { body: { tasks } });
  expect(submitted.status).toBe(202);
  const result = await api(cluster.url, `/api/v1/results/${b}?timeout=30`);
  expect(result.body).toEqual({ key: b, value: 84 });
}

/** After a property: the scheduler serves, computes, and answered no 5xx. */
async function stillServing(tag: string): Promise<void> {
  const health = await api(cluster.url, "/health");
  expect(health.status).toBe(200);
  await sentinel(tag);
  expect(serverErrors).toEqual([]);
  // A handler that threw is caught by the runtime and logged: the frame's other messages are lost.
  const thrown = cluster.scheduler.stderr.join("").split("\n").filter((l) => /unhandled|^\w*Error: /.test(l));
  expect(thrown).toEqual([]);
}

function record(kind: string, status: number, input: () => string): void {
  let set = seen.get(kind);
  if (!set) seen.set(kind, set = new Set());
  set.add(status);
  if (status >= 500 || status === 0) serverErrors.push(`${kind} → ${status}: ${input().slice(0, 300)}`);
}

async function post(path: string, body: BodyInit, contentType: string): Promise<number> {
  try {
    const res = await fetch(cluster.url + path, { method: "POST", body, headers: { ...authHeaders(), "content-type": contentType } });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

const safeFns = ["builtin.inc", "builtin.add", "builtin.identity", "builtin.sum", "builtin.noop", "builtin.fail", "nomodule.x", "builtin.nope", "", "x"];
const keyPool = ["fz-a", "fz-b", "fz-c", "fz-d", "sentinel-start-a"];

/** Values of every JSON kind, sometimes of the wrong type for the field they land in. */
const anyValue = fc.oneof(
  { maxDepth: 3 },
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(...keyPool),
  fc.record({ $ref: fc.oneof(fc.constantFrom(...keyPool), fc.integer(), fc.constant(null)) }),
);

/** A task: mostly well-formed with random fields, sometimes any value at all. */
const taskArb = fc.oneof(
  fc.record(
    {
      key: fc.oneof(fc.constantFrom(...keyPool).map((k) => `${k}-${Math.random().toString(36).slice(2, 8)}`), fc.string(), fc.integer(), fc.constant(null)),
      fn: fc.oneof(fc.constantFrom(...safeFns), fc.string(), fc.integer()),
      args: fc.oneof(fc.array(anyValue, { maxLength: 4 }), anyValue),
      retries: fc.oneof(fc.nat(3), fc.integer(), fc.double(), fc.string()),
      annotations: fc.oneof(fc.dictionary(fc.string(), anyValue, { maxKeys: 3 }), anyValue),
    },
    { requiredKeys: [] },
  ),
  anyValue,
);

const graphArb = fc.oneof(
  fc.record({ tasks: fc.array(taskArb, { maxLength: 6 }), keys: fc.option(fc.array(fc.oneof(fc.constantFrom(...keyPool), anyValue), { maxLength: 3 }), { nil: undefined }) }, { requiredKeys: ["tasks"] }),
  anyValue,
);

/**
 * Deeply nested or large values as JSON text (a 200,000-deep value cannot go through
 * JSON.stringify, nor fast-check's reporting of it, so it is made as text).
 */
const hostileJson = fc.oneof(
  fc.tuple(fc.integer({ min: 50, max: 200_000 }), fc.boolean()).map(([depth, objects]) =>
    objects ? '{"a":'.repeat(depth) + "1" + "}".repeat(depth) : "[".repeat(depth) + "]".repeat(depth)
  ),
  fc.integer({ min: 1, max: 3 }).map((mb) => JSON.stringify({ s: "z".repeat(mb << 20) })),
);

/** CBOR text string (short ones only: what these tests need). */
function cborText(text: string): number[] {
  const bytes = [...new TextEncoder().encode(text)];
  return bytes.length < 24 ? [0x60 + bytes.length, ...bytes] : [0x78, bytes.length, ...bytes];
}

/** A value nested `depth` deep as CBOR bytes, made by hand for the same reason. */
function deepCbor(depth: number): number[] {
  const out: number[] = new Array(depth).fill(0x81);
  out.push(0x01);
  return out;
}

/** One client-link frame: `[{op: "event", topic: "t", msg: DEEP}]`. */
function deepEventFrame(depth: number): Uint8Array {
  return new Uint8Array([0x81, 0xa3, ...cborText("op"), ...cborText("event"), ...cborText("topic"), ...cborText("t"), ...cborText("msg"), ...deepCbor(depth)]);
}

describe("fuzzing the graph API", () => {
  test("random and mutated graphs as JSON are answered with 202 or a 4xx, and the cluster keeps computing", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(
        { weight: 8, arbitrary: graphArb.map((g) => JSON.stringify(g)) },
        { weight: 1, arbitrary: hostileJson.map((v) => `{"tasks":[{"key":"h","fn":"builtin.identity","args":[${v}]}]}`) },
      ), async (body) => {
        record("graph-json", await post("/api/v1/graph", body, "application/json"), () => body);
      }),
      { interruptAfterTimeLimit: budgetMs, numRuns: 10_000 },
    );
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: "binary", maxLength: 200 }), async (text) => {
        record("graph-json-text", await post("/api/v1/graph", text, "application/json"), () => JSON.stringify(text));
      }),
      { interruptAfterTimeLimit: 2_000, numRuns: 10_000 },
    );
    await stillServing("graph-json");
  }, 60_000);

  test("random and mutated graphs as CBOR, and random bytes, are answered with 202 or a 4xx", async () => {
    const cborValue = fc.oneof(graphArb, fc.uint8Array({ maxLength: 64 }), fc.bigInt(), fc.date(), fc.constant(undefined));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          cborValue.map((v) => encodeCbor(v)),
          fc.tuple(graphArb.map((v) => encodeCbor(v)), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([bytes, at, byte]) => {
            const copy = bytes.slice();
            if (copy.length > 0) copy[at % copy.length] = byte;
            return copy;
          }),
          fc.uint8Array({ maxLength: 256 }),
          fc.integer({ min: 50, max: 200_000 }).map((depth) =>
            new Uint8Array([0xa1, ...cborText("tasks"), 0x81, 0xa3, ...cborText("key"), ...cborText("h"), ...cborText("fn"), ...cborText("builtin.identity"), ...cborText("args"), 0x81, ...deepCbor(depth)])
          ),
        ),
        async (bytes) => {
          record("graph-cbor", await post("/api/v1/graph", bytes, "application/cbor"), () => Buffer.from(bytes).toString("hex"));
        },
      ),
      { interruptAfterTimeLimit: budgetMs, numRuns: 10_000 },
    );
    await stillServing("graph-cbor");
  }, 60_000);
});

/** Opens a link, sends the frames, waits briefly for the scheduler's answer or close, closes. */
async function sendFrames(path: string, frames: Array<Uint8Array | string>, waitMs = 15): Promise<void> {
  const ws = new WebSocket(`${cluster.url.replace(/^http/, "ws")}${path}`);
  ws.binaryType = "arraybuffer";
  const closed = new Promise<void>((r) => ws.addEventListener("close", () => r()));
  const opened = await new Promise<boolean>((r) => {
    ws.addEventListener("open", () => r(true));
    ws.addEventListener("error", () => r(false));
  });
  if (!opened) return;
  // Past the handshake first (tokens never travel; a link proves it in-band): the fuzzed frames
  // then reach the link's own protocol, not only its gate.
  const role = path.startsWith("/api/v1/worker") ? "worker" : path.startsWith("/api/v1/nanny") ? "nanny" : path.startsWith("/api/v1/client") ? "client" : "events";
  const authed = await Promise.race([
    authenticate(ws, { role, token: process.env.CLUSTER_TOKEN, onMessage: () => {} }).then(() => true, () => false),
    closed.then(() => false),
  ]);
  if (!authed) return;
  for (const frame of frames) {
    if (ws.readyState !== WebSocket.OPEN) break;
    ws.send(frame);
  }
  await Promise.race([closed, new Promise((r) => setTimeout(r, waitMs))]);
  ws.close();
  await Promise.race([closed, new Promise((r) => setTimeout(r, 1000))]);
}

/** A message of one of `ops` whose fields are random, often of the wrong type. */
function messageArb(ops: string[], fields: string[]): fc.Arbitrary<Record<string, unknown>> {
  const fieldArb = fc.oneof(anyValue, fc.constantFrom(...keyPool), fc.array(fc.constantFrom(...keyPool), { maxLength: 3 }), fc.integer());
  return fc.record({
    op: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...ops) }, { weight: 1, arbitrary: anyValue }),
    fields: fc.dictionary(fc.constantFrom(...fields), fieldArb, { maxKeys: fields.length }),
  }).map(({ op, fields }) => ({ ...fields, op }));
}

/** Frames: CBOR arrays of messages, sometimes a bare message, bytes, or text. */
function framesArb(first: fc.Arbitrary<Record<string, unknown>>, rest: fc.Arbitrary<Record<string, unknown>>) {
  const frame = fc.oneof(
    { weight: 6, arbitrary: fc.array(rest, { minLength: 1, maxLength: 4 }).map((msgs) => encodeFrame(msgs) as Uint8Array | string) },
    { weight: 1, arbitrary: rest.map((m) => encodeCbor(m) as Uint8Array | string) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 1, arbitrary: fc.string({ maxLength: 64 }) },
    { weight: 1, arbitrary: fc.integer({ min: 50, max: 200_000 }).map((depth) => deepEventFrame(depth) as Uint8Array | string) },
  );
  return fc.tuple(first, fc.array(frame, { maxLength: 5 })).map(([hello, more]) => [encodeFrame([hello]) as Uint8Array | string, ...more]);
}

const workerFields = ["name", "nthreads", "address", "nanny", "pid", "modules", "restarts", "version", "key", "nbytes", "duration", "value", "hasValue", "stimulusId", "exception", "traceback", "dep", "rss", "executing", "ready", "id", "keys", "plugin", "hook", "error", "topic", "msg", "data", "status"];

describe("fuzzing the WebSocket links", () => {
  test("random and wrongly typed messages on the worker link leave the scheduler serving", async () => {
    const register = fc.record({
      op: fc.constant("register"),
      name: fc.oneof(fc.string({ maxLength: 10 }).map((s) => `fz-w-${s}`), fc.integer(), anyValue),
      nthreads: fc.oneof(fc.integer({ min: -2, max: 4 }), anyValue),
      address: fc.oneof(fc.constant("http://127.0.0.1:9"), anyValue),
      nanny: fc.oneof(fc.boolean(), anyValue),
      pid: fc.oneof(fc.nat(), anyValue),
      modules: fc.oneof(fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }), anyValue),
      restarts: fc.oneof(fc.nat(), anyValue),
      version: fc.oneof(fc.constant("0.1.0"), anyValue),
    }, { requiredKeys: ["op"] });
    const ops = ["ready", "done", "erred", "missing-data", "heartbeat", "relay", "plugin-error", "modules", "event", "closing", "reply", "ack", "data", "register"];
    await fc.assert(
      fc.asyncProperty(framesArb(register, messageArb(ops, workerFields)), async (frames) => {
        await sendFrames("/api/v1/worker", frames);
        record("worker-link", (await api(cluster.url, "/health")).status, () => JSON.stringify(frames.map(String)));
      }),
      { interruptAfterTimeLimit: budgetMs, numRuns: 10_000 },
    );
    await stillServing("worker-link");
  }, 60_000);

  test("random and wrongly typed messages on the nanny link leave the scheduler serving", async () => {
    const register = fc.record({
      op: fc.constant("register"),
      name: fc.oneof(fc.string({ maxLength: 10 }).map((s) => `fz-n-${s}`), anyValue),
      address: fc.oneof(fc.constant("http://127.0.0.1:9"), anyValue),
      pid: fc.oneof(fc.nat(), anyValue),
    }, { requiredKeys: ["op"] });
    const ops = ["worker", "plugin-error", "event", "reply", "register"];
    const fields = ["worker", "restarts", "pid", "plugin", "hook", "error", "topic", "msg", "id", "status", "name"];
    await fc.assert(
      fc.asyncProperty(framesArb(register, messageArb(ops, fields)), async (frames) => {
        await sendFrames("/api/v1/nanny", frames);
        record("nanny-link", (await api(cluster.url, "/health")).status, () => JSON.stringify(frames.map(String)));
      }),
      { interruptAfterTimeLimit: budgetMs, numRuns: 10_000 },
    );
    await stillServing("nanny-link");
  }, 60_000);

  test("random and wrongly typed messages on the client link leave the scheduler serving", async () => {
    // No register-plugin with a real built-in: a random spec must not install packages or call out.
    const spec = fc.oneof(anyValue, fc.record({ role: fc.constantFrom("worker", "scheduler", "nanny", "x"), use: fc.constantFrom("upload-file", "nonexistent", ""), path: fc.constantFrom("a\\..\\..\\x", "../x", "/etc/x"), files: fc.constant({}) }));
    const message = fc.oneof(
      messageArb(["graph", "gather", "release", "event", "unregister-plugin", "info", "nonsense"], ["id", "graph", "keys", "topic", "msg", "role", "name"]),
      fc.record({ op: fc.constant("graph"), id: fc.nat(), graph: graphArb }),
      fc.record({ op: fc.constant("register-plugin"), id: fc.nat(), spec }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(
        { weight: 6, arbitrary: fc.array(message, { minLength: 1, maxLength: 3 }).map((m) => encodeFrame(m) as Uint8Array | string) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
        { weight: 1, arbitrary: fc.string({ maxLength: 32 }) },
        { weight: 1, arbitrary: fc.integer({ min: 50, max: 200_000 }).map((depth) => deepEventFrame(depth)) },
      ), { minLength: 1, maxLength: 4 }), async (frames) => {
        await sendFrames("/api/v1/client", frames, 30);
        record("client-link", (await api(cluster.url, "/health")).status, () => JSON.stringify(frames.map(String)));
      }),
      { interruptAfterTimeLimit: budgetMs, numRuns: 10_000 },
    );
    await stillServing("client-link");
  }, 60_000);
});

describe("fuzzing the event API", () => {
  test("random, deep and large events and random subscriptions leave subscribers receiving events", async () => {
    const ws = new WebSocket(`${cluster.url.replace(/^http/, "ws")}/api/v1/events?topic=fz-canary`);
    ws.binaryType = "arraybuffer";
    const canaries: number[] = [];
    await authenticate(ws, {
      role: "events",
      token: process.env.CLUSTER_TOKEN,
      onMessage: (e) => typeof e.data === "string" && canaries.push(JSON.parse(e.data).n),
    });
    const topic = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom("transition", "log", "plugin", "fz-canary", "t".repeat(2000)));
    const body = fc.oneof(
      { weight: 6, arbitrary: anyValue.map((v) => ({ bytes: JSON.stringify(v) ?? "null", type: "application/json" })) },
      { weight: 2, arbitrary: hostileJson.map((v) => ({ bytes: v, type: "application/json" })) },
      { weight: 1, arbitrary: fc.oneof(anyValue, fc.uint8Array({ maxLength: 32 }), fc.bigInt()).map((v) => ({ bytes: encodeCbor(v) as BodyInit, type: "application/cbor" })) },
      { weight: 1, arbitrary: fc.string({ maxLength: 64 }).map((s) => ({ bytes: s, type: "application/json" })) },
    );
    const query = fc.record({ topic: fc.option(fc.string({ maxLength: 8 })), since: fc.option(fc.oneof(fc.integer().map(String), fc.string({ maxLength: 6 }))), format: fc.option(fc.constantFrom("cbor", "json", "x")), batch: fc.option(fc.constantFrom("1", "true", "x")) });
    let n = 0;
    await fc.assert(
      fc.asyncProperty(topic, body, query, async (t, b, q) => {
        record("event-post", await post(`/api/v1/events/${encodeURIComponent(t)}`, b.bytes, b.type), () => `${t} ${String(b.bytes).slice(0, 200)}`);
        if (++n % 10 === 0) {
          const params = new URLSearchParams(Object.entries(q).filter(([, v]) => v !== null) as [string, string][]);
          await sendFrames(`/api/v1/events?${params}`, [], 5);
        }
      }),
      { interruptAfterTimeLimit: budgetMs, numRuns: 10_000 },
    );
    expect((await api(cluster.url, "/api/v1/events/fz-canary", { body: { n: 1 } })).status).toBe(200);
    const deadline = Date.now() + 10_000;
    while (!canaries.includes(1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    ws.close();
    expect(canaries).toContain(1);
    await stillServing("events");
  }, 60_000);
});

describe("fuzzing plugins.toml", () => {
  test("any text gives plugin specs or a ConfigError, never another exception", () => {
    const dir = mkdtempSync(join(tmpdir(), "fuzz-toml-"));
    const line = fc.oneof(
      fc.constantFrom("[[scheduler.plugins]]", "[[worker.plugins]]", "[[nanny.plugins]]", "[scheduler]", "[worker.plugins]", "[[x.plugins]]", "plugins = 1", "[[scheduler.plugins.options]]"),
      fc.tuple(fc.constantFrom("use", "name", "path", "options", "url", "skip", "load", "environ", "x"), fc.oneof(
        fc.constantFrom('"jsonl"', '"upload-file"', '"environ"', '"./m.ts"', '"${HOME}"', '"${NOPE}"', "1", "true", "[1, 2]", '{ a = 1 }', '"a\\\\..\\\\x"', "1979-05-27", "inf", '"""x"""'),
        fc.string({ maxLength: 10 }).map((s) => JSON.stringify(s)),
      )).map(([k, v]) => `${k} = ${v}`),
      fc.string({ maxLength: 20 }),
    );
    const text = fc.oneof(fc.array(line, { maxLength: 12 }).map((lines) => lines.join("\n")), fc.string({ maxLength: 200 }), fc.string({ unit: "binary", maxLength: 200 }));
    fc.assert(
      fc.property(text, (toml) => {
        try {
          const specs = parsePluginsToml(toml, join(dir, "plugins.toml"), {});
          return Array.isArray(specs);
        } catch (err) {
          if (err instanceof ConfigError) return true;
          throw new Error(`Not a ConfigError for ${JSON.stringify(toml)}: ${(err as Error)?.stack}`);
        }
      }),
      { interruptAfterTimeLimit: 5_000, numRuns: 5_000 },
    );
  }, 30_000);
});

describe("after fuzzing", () => {
  test("the scheduler answered every fuzzed request with a status below 500", async () => {
    if (process.env.FUZZ_VERBOSE) {
      console.log(Object.fromEntries([...seen].map(([k, v]) => [k, [...v].sort()])));
      await Bun.write(process.env.FUZZ_VERBOSE, cluster.scheduler.stderr.join(""));
    }
    expect(serverErrors).toEqual([]);
    expect(seen.get("graph-json")?.has(202)).toBe(true);
    expect(seen.get("graph-json")?.has(400)).toBe(true);
  });
});
