/**
 * Large values: frames split into chunks and put back together (lib/frames.ts), data answers
 * and result bodies streamed (lib/transfer.ts), and, end to end, a 200 MB result computed on one
 * worker, used by a task on another (peer to peer) and fetched by a client over HTTP and over
 * the client socket, with no reconnection and each process's peak memory within twice the data.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { Client } from "../lib/client/mod.ts";
import { chunkBytes, FrameAssembler, FrameSender, highWaterBytes, splitFrameBytes } from "../lib/frames.ts";
import { decodeCbor, encodeCbor, encodeFrame } from "../lib/protocol.ts";
import { readValueSequence, resultBody, valueSequence } from "../lib/transfer.ts";
import { bytes as makeBytes } from "./fixtures/bigdata-tasks.ts";
import { api, authHeaders, startCluster, stopAll, type TestCluster } from "../testkit/mod.ts";

const MiB = 1024 * 1024;
const tasks = "test/fixtures/bigdata-tasks.ts";

afterAll(() => stopAll());

/** A sender over a fake socket that records what it was given. */
function recordingSender(buffered: () => number = () => 0) {
  const sent: Uint8Array[] = [];
  const sender = new FrameSender({ send: (b) => sent.push(b.slice()), buffered, open: () => true });
  return { sent, sender };
}

/** The messages a receiver makes of the recorded WebSocket messages. */
function receive(sent: Uint8Array[], assembler = new FrameAssembler()) {
  return sent.flatMap((b) => assembler.decode(b));
}

/** A `Uint8Array` whose every byte says where it is (mod 251). */
function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = i % 251;
  return out;
}

describe("frames of any size on the sockets", () => {
  test("a frame over the split size is sent as chunks of at most 1 MiB and put back together, in order with the frames around it", () => {
    const { sent, sender } = recordingSender();
    const text = "y".repeat(splitFrameBytes + 3 * MiB);
    sender.send([{ op: "a" }]);
    sender.send([{ op: "graph", id: 1, graph: { text } }]);
    sender.send([{ op: "b" }]);
    expect(sent.length).toBeGreaterThan(10);
    for (const b of sent) expect(b.byteLength).toBeLessThan(chunkBytes + 1024);
    const messages = receive(sent);
    expect(messages.map((m) => m.op)).toEqual(["a", "graph", "b"]);
    expect((messages[1].graph as { text: string }).text).toBe(text);
  });

  test("large binary values of a reply travel as parts from their own memory and come back as the same bytes", () => {
    const { sent, sender } = recordingSender();
    const big = pattern(3 * MiB + 17);
    const reply = { op: "reply", id: 7, data: { big, small: new Uint8Array([1, 2, 3]), n: 5 } };
    sender.send([reply]);
    // The caller's message is left as it was.
    expect(reply.data.big).toBe(big);
    const [msg] = receive(sent);
    const data = msg.data as Record<string, unknown>;
    expect(data.n).toBe(5);
    expect(Array.from(data.small as Uint8Array)).toEqual([1, 2, 3]);
    expect(Buffer.compare(data.big as Uint8Array, big)).toBe(0);
    // The value's chunks are its bytes, not a frame that holds a copy of it too.
    const total = sent.reduce((n, b) => n + b.byteLength, 0);
    expect(total).toBeLessThan(big.byteLength + 64 * 1024);
  });

  test("large binary arguments of a graph's tasks and of a compute travel as parts, and the messages sent are left as they were", () => {
    const { sent, sender } = recordingSender();
    const big = pattern(2 * MiB);
    const graph: { tasks: Array<{ key: string; fn: string; args: unknown[] }>; keys: string[] } = {
      tasks: [{ key: "t", fn: "f", args: [big, 1] }, { key: "u", fn: "f", args: [] }],
      keys: ["t"],
    };
    sender.send([{ op: "graph", id: 1, graph }, { op: "compute", key: "t", fn: "f", args: [{ $ref: "x" }, big] }]);
    expect(graph.tasks[0].args[0]).toBe(big);
    const total = sent.reduce((n, b) => n + b.byteLength, 0);
    expect(total).toBeLessThan(2 * big.byteLength + 64 * 1024);
    const [g, c] = receive(sent);
    const tasks = (g.graph as typeof graph).tasks;
    expect(Buffer.compare(tasks[0].args[0] as Uint8Array, big)).toBe(0);
    expect(tasks[0].args[1]).toBe(1);
    expect((c.args as unknown[])[0]).toEqual({ $ref: "x" });
    expect(Buffer.compare((c.args as Uint8Array[])[1], big)).toBe(0);
  });

  test("a sender waits while the socket holds more than the high-water mark, then goes on", async () => {
    let buffered = highWaterBytes + 1;
    const { sent, sender } = recordingSender(() => buffered);
    sender.send([{ op: "reply", id: 1, data: { v: new Uint8Array(4 * MiB) } }]);
    sender.send([{ op: "after" }]);
    expect(sent.length).toBe(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(sent.length).toBe(0);
    buffered = 0;
    await new Promise((r) => setTimeout(r, 20));
    expect(receive(sent).map((m) => m.op)).toEqual(["reply", "after"]);
  });

  test("a split frame over the receiver's cap is refused at its first chunk", () => {
    const { sent, sender } = recordingSender();
    sender.send([{ op: "graph", id: 1, graph: "z".repeat(splitFrameBytes + MiB) }]);
    const assembler = new FrameAssembler({ maxBytes: 4 * MiB });
    expect(() => assembler.decode(sent[0])).toThrow(/too large/);
  });

  test("a chunk out of order is refused", () => {
    const { sent, sender } = recordingSender();
    sender.send([{ op: "graph", id: 1, graph: "z".repeat(splitFrameBytes + MiB) }]);
    const assembler = new FrameAssembler();
    assembler.decode(sent[0]);
    expect(() => assembler.decode(sent[2])).toThrow(/out of order/);
  });

  test("small frames are sent at once, as one message each", () => {
    const { sent, sender } = recordingSender();
    sender.send([{ op: "x", n: 1 }]);
    expect(sent.length).toBe(1);
    expect(Buffer.compare(sent[0], encodeFrame([{ op: "x", n: 1 }]))).toBe(0);
  });
});

describe("streamed values over HTTP", () => {
  test("a data answer carries binary, text and object values and reads back the same", async () => {
    const values = new Map<string, unknown>([
      ["bin", pattern(2 * MiB + 5)],
      ["text", "é".repeat(100_000)],
      ["obj", { a: [1, 2, { b: null }], c: new Uint8Array([9]) }],
      ["nothing", null],
    ]);
    const body = new Response(valueSequence(["bin", "gone", "text", "obj", "nothing"], (k) => values.has(k) ? { value: values.get(k) } : undefined)).body;
    const { data, error } = await readValueSequence(body);
    expect(error).toBeUndefined();
    expect(Object.keys(data)).toEqual(["bin", "text", "obj", "nothing"]);
    expect(Buffer.compare(data.bin as Uint8Array, values.get("bin") as Uint8Array)).toBe(0);
    expect(data.text).toBe(values.get("text"));
    expect(data.obj).toEqual(values.get("obj"));
    expect(data.nothing).toBeNull();
  });

  test("a data answer that breaks off inside a value keeps the values that arrived whole", async () => {
    const whole = new Uint8Array(await new Response(valueSequence(["a", "b"], () => ({ value: pattern(MiB) }))).arrayBuffer());
    const cut = new Response(whole.subarray(0, whole.byteLength - 100)).body;
    const { data, error } = await readValueSequence(cut);
    expect(Object.keys(data)).toEqual(["a"]);
    expect(error?.message).toMatch(/ended inside a value/);
  });

  test("a result body is the CBOR of {key, value}, a binary value as a byte string", async () => {
    for (const value of [pattern(MiB + 1), { x: [1, "two"] }, 3.5, "text"]) {
      const bytes = new Uint8Array(await new Response(resultBody("k/1", value)).arrayBuffer());
      expect(decodeCbor(bytes)).toEqual({ key: "k/1", value });
    }
  });
});

/** Peak resident memory of a process (Linux), in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The names of the cluster's workers, in the order they started. */
async function workerNames(cluster: TestCluster): Promise<string[]> {
  const info = await api(cluster.url, "/api/v1/info");
  const names = (info.body.workers as Array<{ name: string }>).map((w) => w.name);
  return cluster.workers.map((w) => names.find((n) => w.stderr.join("").includes(`as "${n}"`))!);
}

/** The lines of a process's log that say it lost the scheduler. */
function reconnects(proc: { stderr: string[] }): string[] {
  return proc.stderr.join("").split("\n").filter((l) => /Lost the scheduler|Reconnected/.test(l));
}

describe("large values end to end", () => {
  test("a 200 MB result moves peer to peer and to the client over HTTP and the socket, with no reconnection and each process within twice the data", async () => {
    const mb = 200;
    const cluster = await startCluster({ workers: 2, flavor: "bun", workerArgs: ["--tasks", tasks] });
    const client = await Client.connect(cluster.url);
    try {
      const [a, b] = await workerNames(cluster);
      const procs = [cluster.scheduler, ...cluster.workers];
      const base = procs.map((p) => peakRss(p.pid));
      const futures = await client.compute({
        tasks: [
          { key: "big", fn: "bigdata-tasks.bytes", args: [mb], annotations: { workers: [a] } },
          { key: "checked", fn: "bigdata-tasks.check", args: [{ $ref: "big" }], annotations: { workers: [b] } },
        ],
        keys: ["big", "checked"],
      });
      expect(await futures.checked.result()).toEqual({ bytes: mb * MiB, ok: true });
      expect((await api(cluster.url, "/api/v1/tasks/big")).body.whoHas).toEqual([a]);

      const res = await fetch(`${cluster.url}/api/v1/results/big?timeout=30`, { headers: { accept: "application/cbor", ...authHeaders() } });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/cbor");
      const body = decodeCbor(new Uint8Array(await res.arrayBuffer())) as { key: string; value: Uint8Array };
      expect(body.key).toBe("big");
      expect(body.value.byteLength).toBe(mb * MiB);
      expect(body.value[mb * MiB - 1]).toBe(0xee);

      const json = await api(cluster.url, "/api/v1/results/big?timeout=30");
      expect(json.status).toBe(406);
      expect(json.body.error).toMatch(/Accept: application\/cbor/);

      const [value] = await client.gather([futures.big]) as Uint8Array[];
      expect(value.byteLength).toBe(mb * MiB);
      expect(value[5 * MiB]).toBe(5);
      expect(value[mb * MiB - 1]).toBe(0xee);

      for (const proc of procs) expect(reconnects(proc)).toEqual([]);
      const grown = procs.map((p, i) => (peakRss(p.pid) - base[i]) / MiB);
      console.log(`peak memory over start (MiB) for ${mb} MiB: scheduler ${grown[0].toFixed(0)}, holder ${grown[1].toFixed(0)}, peer ${grown[2].toFixed(0)}`);
      for (const g of grown) expect(g).toBeLessThan(2 * mb);
    } finally {
      await client.close();
      await cluster.stop();
    }
  }, 120_000);

  test("between runtimes (scheduler and one worker on Deno, one on Bun) a 70 MB result moves peer to peer and to the client with no reconnection", async () => {
    const mb = 70;
    const cluster = await startCluster({ workers: 1, flavor: "deno", workerArgs: ["--tasks", tasks] });
    await cluster.addWorker([], "bun");
    const client = await Client.connect(cluster.url);
    try {
      const [deno, bun] = await workerNames(cluster);
      const futures = await client.compute({
        tasks: [
          { key: "on-bun", fn: "bigdata-tasks.bytes", args: [mb], annotations: { workers: [bun] } },
          { key: "on-deno", fn: "bigdata-tasks.check", args: [{ $ref: "on-bun" }], annotations: { workers: [deno] } },
          { key: "text", fn: "bigdata-tasks.text", args: [20], annotations: { workers: [deno] } },
          { key: "text-len", fn: "bigdata-tasks.len", args: [{ $ref: "text" }], annotations: { workers: [bun] } },
        ],
        keys: ["on-bun", "on-deno", "text", "text-len"],
      });
      expect(await futures["on-deno"].result()).toEqual({ bytes: mb * MiB, ok: true });
      expect(await futures["text-len"].result()).toBe(20 * MiB);
      const [bytes, text] = await client.gather([futures["on-bun"], futures.text]) as [Uint8Array, string];
      expect(bytes.byteLength).toBe(mb * MiB);
      expect(text.length).toBe(20 * MiB);
      for (const proc of [cluster.scheduler, ...cluster.workers]) expect(reconnects(proc)).toEqual([]);
    } finally {
      await client.close();
      await cluster.stop();
    }
  }, 120_000);

  test("a 70 MB result whose holder peers cannot reach is relayed through the scheduler in chunks", async () => {
    const mb = 70;
    const cluster = await startCluster({ workers: 0, flavor: "bun", workerArgs: ["--tasks", tasks] });
    // Port 9 (discard) on loopback: nothing listens, so every peer request fails at once.
    await cluster.addWorker(["--contact-address", "http://127.0.0.1:9"]);
    await cluster.addWorker();
    const client = await Client.connect(cluster.url);
    try {
      const [hidden, open] = await workerNames(cluster);
      const futures = await client.compute({
        tasks: [
          { key: "hidden", fn: "bigdata-tasks.bytes", args: [mb], annotations: { workers: [hidden] } },
          { key: "relayed", fn: "bigdata-tasks.check", args: [{ $ref: "hidden" }], annotations: { workers: [open] } },
        ],
        keys: ["relayed"],
      });
      expect(await futures.relayed.result()).toEqual({ bytes: mb * MiB, ok: true });
      const metrics = await (await fetch(`${cluster.url}/metrics`, { headers: authHeaders() })).text();
      expect(metrics).toMatch(/cluster_relayed_total [1-9]/);
      for (const proc of [cluster.scheduler, ...cluster.workers]) expect(reconnects(proc)).toEqual([]);
    } finally {
      await client.close();
      await cluster.stop();
    }
  }, 90_000);

  test("a 40 MB argument goes to its task over the client socket and over HTTP when the limits allow it, and is refused with 413 when they do not", async () => {
    const cluster = await startCluster({ workers: 1, flavor: "bun", workerArgs: ["--tasks", tasks], schedulerArgs: ["--max-body-mib", "100", "--max-args-mib", "50"] });
    const client = await Client.connect(cluster.url);
    try {
      const arg = makeBytes(40);
      expect(await client.submit("bigdata-tasks.check", arg).result()).toEqual({ bytes: 40 * MiB, ok: true });
      const graph = { tasks: [{ key: "http-arg", fn: "bigdata-tasks.check", args: [arg] }], keys: ["http-arg"] };
      const res = await api(cluster.url, "/api/v1/graph", { raw: encodeCbor(graph) as BodyInit, contentType: "application/cbor" });
      expect(res.status).toBe(202);
      expect((await api(cluster.url, "/api/v1/results/http-arg?timeout=30")).body.value).toEqual({ bytes: 40 * MiB, ok: true });
      const tooBig = client.submit("bigdata-tasks.check", new Uint8Array(60 * MiB));
      await expect(tooBig.result()).rejects.toThrow(/maxArgsBytes/);
      for (const proc of [cluster.scheduler, ...cluster.workers]) expect(reconnects(proc)).toEqual([]);
    } finally {
      await client.close();
      await cluster.stop();
    }
  }, 90_000);
});
