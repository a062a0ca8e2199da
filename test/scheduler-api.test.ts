/**
 * The scheduler's API edges, in process on a free port with real sockets: one error→status map
 * for HTTP and the client socket, the one `reply` op, auth as one middleware, held keys in
 * conflict, plugin registrations logged, and the hooks' arguments and order.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { PluginError } from "../lib/errors.ts";
import { decodeFrame, encodeFrame, type Message } from "../lib/protocol.ts";
import { RequestError } from "../lib/rpc.ts";
import { ConflictError, httpStatus, NotFoundError } from "../lib/scheduler/errors.ts";
import { GraphError } from "../lib/scheduler/graph.ts";
import { Scheduler } from "../lib/scheduler/server.ts";
import { Client } from "../lib/client/mod.ts";

async function post(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() as Record<string, unknown> };
}

/** A raw client socket: send messages, read the next message answering `id`. */
async function rawClient(address: string, query = "") {
  const socket = new WebSocket(`${address.replace("http", "ws")}/api/v1/client${query}`);
  socket.binaryType = "arraybuffer";
  const inbox: Message[] = [];
  const waiters: Array<() => void> = [];
  socket.onmessage = (event) => {
    inbox.push(...decodeFrame(event.data));
    for (const w of waiters.splice(0)) w();
  };
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error("cannot connect"));
  });
  const next = async (pred: (m: Message) => boolean): Promise<Message> => {
    for (;;) {
      const i = inbox.findIndex(pred);
      if (i >= 0) return inbox.splice(i, 1)[0];
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return {
    socket,
    next,
    ask: (msg: Record<string, unknown>) => {
      socket.send(encodeFrame([msg]));
      return next((m) => m.id === msg.id);
    },
  };
}

describe("errors and replies", () => {
  let scheduler: Scheduler;
  beforeAll(async () => {
    scheduler = await Scheduler.start({ port: 0, auth: { tokens: null } });
  });
  afterAll(async () => {
    await scheduler.close();
  });

  test("typed errors map to HTTP statuses in one place", () => {
    expect(httpStatus(new GraphError("x"))).toBe(400);
    expect(httpStatus(new NotFoundError("x"))).toBe(404);
    expect(httpStatus(new ConflictError("x"))).toBe(409);
    expect(httpStatus(new PluginError("p", "x"))).toBe(422);
    expect(httpStatus(new RequestError("x", { code: "E_TIMEOUT" }))).toBe(504);
    expect(httpStatus(new Error("x"))).toBe(500);
  });

  test("a held key submitted again with another definition is 409 naming the key, the same one is reused", async () => {
    const url = `${scheduler.address}/api/v1/graph`;
    expect((await post(url, { tasks: [{ key: "held", fn: "builtin.inc", args: [1] }] })).status).toBe(202);
    const conflict = await post(url, { tasks: [{ key: "other", fn: "builtin.inc", args: [1] }, { key: "held", fn: "builtin.inc", args: [2] }] });
    expect(conflict.status).toBe(409);
    expect(String(conflict.body.error)).toContain('"held"');
    expect((await fetch(`${scheduler.address}/api/v1/tasks/other`)).status).toBe(404);
    expect((await post(url, { tasks: [{ key: "held", fn: "builtin.inc", args: [1] }] })).status).toBe(202);
  });

  test("the client socket answers every request with one reply op, failures with the HTTP status", async () => {
    const client = await rawClient(scheduler.address);
    try {
      const welcome = await client.next((m) => m.op === "welcome");
      expect(typeof welcome.client).toBe("string");
      const info = await client.ask({ op: "info", id: 1 });
      expect(info).toMatchObject({ op: "reply", id: 1 });
      expect((info.info as { tasks: unknown }).tasks).toBeDefined();
      expect(await client.ask({ op: "graph", id: 2, graph: { tasks: [{ key: "c1", fn: "builtin.inc", args: [1] }] } }))
        .toEqual({ op: "reply", id: 2, keys: ["c1"] });
      const bad = await client.ask({ op: "graph", id: 3, graph: { tasks: [{ key: "c2", fn: "builtin.inc", args: [{ $ref: "nope" }] }] } });
      expect(bad).toMatchObject({ op: "reply", id: 3, status: 400 });
      expect(String(bad.error)).toContain('"nope"');
      const conflict = await client.ask({ op: "graph", id: 4, graph: { tasks: [{ key: "c1", fn: "builtin.add", args: [1, 2] }] } });
      expect(conflict).toMatchObject({ op: "reply", id: 4, status: 409 });
      expect(await client.ask({ op: "unregister-plugin", id: 5, role: "worker", name: "nope" }))
        .toMatchObject({ op: "reply", id: 5, status: 404, error: 'No worker plugin named "nope"' });
      expect(await client.ask({ op: "frobnicate", id: 6 })).toMatchObject({ op: "reply", id: 6, status: 400 });
      expect(await client.ask({ op: "event", id: 7, topic: "t", msg: { a: 1 } })).toMatchObject({ op: "reply", id: 7 });
    } finally {
      client.socket.close();
    }
  });

  test("the HTTP API answers the same statuses for the same errors", async () => {
    expect((await fetch(`${scheduler.address}/api/v1/tasks/nope`)).status).toBe(404);
    expect((await fetch(`${scheduler.address}/api/v1/results/nope`)).status).toBe(404);
    expect((await fetch(`${scheduler.address}/api/v1/results/held?timeout=x`)).status).toBe(400);
    expect((await fetch(`${scheduler.address}/api/v1/results/held?timeout=0.05`)).status).toBe(408);
    expect((await fetch(`${scheduler.address}/api/v1/plugins/wizard/x`, { method: "DELETE" })).status).toBe(404);
    const malformed = await fetch(`${scheduler.address}/api/v1/graph`, { method: "POST", body: "{", headers: { "content-type": "application/json" } });
    expect(malformed.status).toBe(400);
    expect((await malformed.json() as { error: string }).error).toContain("Malformed JSON");
  });

  test("a big JSON graph is parsed in slices and answered with every key in a streamed body; a malformed one is 400", async () => {
    const tasks = Array.from({ length: 40_000 }, (_, i) => ({ key: `big-json-${i}`, fn: "builtin.inc", args: [i] }));
    const body = JSON.stringify({ tasks });
    expect(body.length).toBeGreaterThan(256 * 1024);
    const res = await fetch(`${scheduler.address}/api/v1/graph`, { method: "POST", body, headers: { "content-type": "application/json" } });
    expect(res.status).toBe(202);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(await res.json()).toEqual({ keys: tasks.map((t) => t.key) });
    expect((await fetch(`${scheduler.address}/api/v1/tasks/big-json-39999`)).status).toBe(200);
    const broken = await fetch(`${scheduler.address}/api/v1/graph`, {
      method: "POST",
      body: body.replace('"big-json-20000"', '"big-json-20000",'),
      headers: { "content-type": "application/json" },
    });
    expect(broken.status).toBe(400);
    expect((await broken.json() as { error: string }).error).toContain("Malformed JSON");
  });
});

describe("plugins' hooks and logs", () => {
  test("updateGraph gets annotations by name and the tasks' own priorities; client hooks run in order", async () => {
    const scheduler = await Scheduler.start({ port: 0, auth: { tokens: null } });
    const graphs: Array<{ annotations: Record<string, Record<string, unknown>>; priority: Record<string, number> }> = [];
    const order: string[] = [];
    try {
      await scheduler.api.addPlugin({
        name: "watch",
        updateGraph(_s, info) {
          graphs.push(info);
        },
        async addClient(_s, client) {
          order.push(`add-start ${client}`);
          await new Promise((r) => setTimeout(r, 100));
          order.push(`add-end ${client}`);
        },
        removeClient(_s, client) {
          order.push(`remove ${client}`);
        },
      });
      const url = `${scheduler.address}/api/v1/graph`;
      await post(url, { tasks: [{ key: "p1", fn: "builtin.inc", args: [1], annotations: { team: "x", workers: ["w"] } }] });
      await post(url, {
        tasks: [
          { key: "p2", fn: "builtin.inc", args: [{ $ref: "p1" }], annotations: { team: "y" } },
          { key: "p1", fn: "builtin.inc", args: [1] },
        ],
      });
      expect(graphs[0].annotations).toEqual({ team: { p1: "x" }, workers: { p1: ["w"] } });
      expect(graphs[1].annotations).toEqual({ team: { p2: "y" } });
      for (const g of graphs) {
        for (const [key, priority] of Object.entries(g.priority)) expect(priority).toBe(scheduler.state.tasks.get(key)!.priority);
      }
      expect(Object.keys(graphs[1].priority).sort()).toEqual(["p1", "p2"]);
      const client = await rawClient(scheduler.address);
      const welcome = await client.next((m) => m.op === "welcome");
      client.socket.close();
      const id = String(welcome.client);
      for (let i = 0; i < 50 && order.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
      expect(order).toEqual([`add-start ${id}`, `add-end ${id}`, `remove ${id}`]);
    } finally {
      await scheduler.close();
    }
  });

  test("registering, replacing and removing a plugin is logged with its role and name", async () => {
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(String(chunk));
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    const scheduler = await Scheduler.start({ port: 0, auth: { tokens: null } });
    try {
      await scheduler.api.addPlugin({ name: "logged" });
      await scheduler.api.addPlugin({ name: "logged" });
      await scheduler.api.removePlugin("logged");
    } finally {
      process.stderr.write = write;
      await scheduler.close();
    }
    const mine = lines.filter((l) => l.includes('Plugin "logged"'));
    expect(mine.length).toBe(3);
    expect(mine[0]).toContain("(scheduler) added");
    expect(mine[1]).toContain("(scheduler) replaced");
    expect(mine[2]).toContain("(scheduler) removed");
  });
});

describe("auth", () => {
  test("with a token every route but /health needs it: a bearer header, or the handshake on a WebSocket (a ?token= opens nothing)", async () => {
    const before = process.env.CLUSTER_TOKEN;
    process.env.CLUSTER_TOKEN = "s3cret";
    const scheduler = await Scheduler.start({ port: 0 });
    try {
      expect((await fetch(`${scheduler.address}/health`)).status).toBe(200);
      expect((await fetch(`${scheduler.address}/api/v1/info`)).status).toBe(401);
      expect((await fetch(`${scheduler.address}/metrics`)).status).toBe(401);
      expect((await fetch(`${scheduler.address}/api/v1/info`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
      expect((await fetch(`${scheduler.address}/api/v1/info`, { headers: { authorization: "Bearer s3cret" } })).status).toBe(200);
      expect((await fetch(`${scheduler.address}/api/v1/info?token=s3cret`)).status).toBe(401);
      // The token in the URL is no proof: a first message that is not `auth` closes the socket.
      const raw = await rawClient(scheduler.address, "?token=s3cret");
      expect((await raw.next((m) => m.op === "challenge")).auth).toBeUndefined();
      const closed = new Promise<CloseEvent>((r) => (raw.socket.onclose = r));
      raw.socket.send(encodeFrame([{ op: "info", id: 1 }]));
      expect((await closed).code).toBe(4401);
      const client = await Client.connect(scheduler.address, { token: "s3cret" });
      expect(client.id).toStartWith("client-");
      await client.close();
    } finally {
      if (before === undefined) delete process.env.CLUSTER_TOKEN;
      else process.env.CLUSTER_TOKEN = before;
      await scheduler.close();
    }
  });
});
