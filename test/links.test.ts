/**
 * The links between the parts, attacked and stressed from outside against the real binary:
 * challenge–response with scoped tokens, signed peer-data requests, a fake scheduler squatting
 * the scheduler's port, `--death-timeout`, unique nanny names, nanny heartbeats, one listener per
 * port, long-polls past Bun's idle timeout, and task messages that cannot reach their worker.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { authenticate, type PeerAuth, type Sealed, unseal } from "../lib/auth/handshake.ts";
import { peerAuthHeader, signRequest, verifyResponse } from "../lib/auth/peer-data.ts";
import { readValueSequence } from "../lib/transfer.ts";
import { Client } from "../lib/client/mod.ts";
import { decodeFrame, encodeCbor, encodeFrame } from "../lib/protocol.ts";
import { api, freePort, runCli, startCluster, startProcess, stopAll, tempDir, waitFor } from "../testkit/mod.ts";

declare const Bun: {
  serve(options: Record<string, unknown>): { port: number; stop(force?: boolean): void };
};

const admin = "admin-secret";
const submit = "submit-secret";
const join_ = "join-secret";
const tokenEnv = { CLUSTER_TOKEN: admin, CLUSTER_SUBMIT_TOKEN: submit, CLUSTER_JOIN_TOKEN: join_ };
const tmp = tempDir("cluster-links-test-");

afterAll(() => stopAll());

/**
 * Joins as a worker over a real socket (one that does not say it reads records: every frame is
 * decoded by the shared plain decoder, as an older worker would); returns the peer key the
 * scheduler sealed for it. `received` gets every message after the handshake.
 */
async function joinAsProbe(url: string, token: string, received: Record<string, unknown>[] = [], as: { name?: string; nthreads?: number; modules?: string[] } = {}): Promise<{ socket: WebSocket; peerKey: Buffer }> {
  const socket = new WebSocket(`${url.replace("http", "ws")}/api/v1/worker`);
  socket.binaryType = "arraybuffer";
  let resolveWelcome!: (msg: Record<string, unknown>) => void;
  const welcome = new Promise<Record<string, unknown>>((r) => (resolveWelcome = r));
  const auth: PeerAuth = await authenticate(socket, {
    role: "worker",
    token,
    onMessage: (event) => {
      for (const msg of decodeFrame(event.data)) {
        received.push(msg);
        if (msg.op === "welcome") resolveWelcome(msg);
      }
    },
  });
  socket.send(encodeFrame([{ op: "register", name: as.name ?? `probe-${process.pid}`, nthreads: as.nthreads ?? 1, address: "http://127.0.0.1:9", nanny: false, pid: 0, modules: as.modules ?? [], restarts: 0, version: "0.1.0" }]));
  const msg = await welcome;
  return { socket, peerKey: unseal(msg.peerKey as Sealed, auth.sessionKey!) };
}

describe("with scoped tokens", () => {
  test("workers join by challenge–response, move results over 64 KiB peer to peer, and a submit token may do all but plugins", async () => {
    const cluster = await startCluster({ workers: 0, env: tokenEnv });
    try {
      // One worker with the admin token, one with only the join token.
      await cluster.addWorker();
      const joinOnly = await startProcess(["worker", cluster.url, "--name", "join-only"], { env: { CLUSTER_TOKEN: "", CLUSTER_JOIN_TOKEN: join_ } });
      cluster.workers.push(joinOnly);
      const info = (await api(cluster.url, "/api/v1/info", { token: admin })).body;
      const names = info.workers.map((w: { name: string }) => w.name);
      expect(names).toContain("join-only");
      const big = "x".repeat(100 * 1024);
      const graph = {
        tasks: [
          { key: "p2p-a", fn: "builtin.identity", args: [big], annotations: { workers: [names[0]] } },
          { key: "p2p-b", fn: "builtin.identity", args: [{ $ref: "p2p-a" }], annotations: { workers: [names[1]] } },
        ],
        keys: ["p2p-b"],
      };
      const client = await Client.connect(cluster.url, { token: submit });
      try {
        const futures = await client.compute(graph);
        expect(((await futures["p2p-b"].result()) as string).length).toBe(big.length);
        // Fetched from the peer directly, with a signed request: nothing relayed.
        const metrics = await (await fetch(`${cluster.url}/metrics`, { headers: { authorization: `Bearer ${admin}` } })).text();
        expect(metrics).toMatch(/^cluster_relayed_total 0$/m);
        const refused = client.unregisterPlugin("scheduler", "anything");
        await expect(refused).rejects.toThrow('This needs the "admin" scope; the token given has "submit"');
        await expect(client.registerPlugin({ role: "nanny", use: "environ", environ: { A: "1" } })).rejects.toThrow('This needs the "admin" scope; the token given has "submit"');
        // Events with the submit token.
        const seen: unknown[] = [];
        const stop = client.subscribe("links-topic", (e) => seen.push(e));
        await new Promise((r) => setTimeout(r, 300));
        await client.logEvent("links-topic", { n: 1 });
        await waitFor("the posted event", () => seen.length > 0, { timeoutMs: 10_000 });
        stop();
      } finally {
        await client.close();
      }
      // A join token opens no client link.
      await expect(Client.connect(cluster.url, { token: join_ })).rejects.toThrow("the token was refused");
      const events = await runCli(["events", cluster.url], { env: { CLUSTER_TOKEN: "wrong" }, timeoutMs: 15_000 });
      expect(events.code).toBe(1);
      expect(events.stderr).toContain("the token was refused");
    } finally {
      await cluster.stop();
    }
  }, 90_000);

  test("a worker's data endpoint refuses requests without a signature, replayed or stale, and signs its answers", async () => {
    const cluster = await startCluster({ workers: 1, env: tokenEnv });
    const { socket, peerKey } = await joinAsProbe(cluster.url, join_);
    try {
      const worker = (await api(cluster.url, "/api/v1/info", { token: admin })).body.workers.find((w: { name: string }) => !w.name.startsWith("probe"));
      const res = await api(cluster.url, "/api/v1/graph", { token: admin, body: { tasks: [{ key: "held", fn: "builtin.identity", args: ["y".repeat(70_000)] }], keys: ["held"] } });
      expect(res.status).toBe(202);
      expect((await api(cluster.url, "/api/v1/results/held?timeout=20", { token: admin })).status).toBe(200);
      const url = new URL("/api/v1/data", worker.address);
      const body = encodeCbor({ keys: ["held"] }).slice();
      const post = (headers: Record<string, string>) => fetch(url, { method: "POST", body, headers: { "content-type": "application/cbor", ...headers } });
      // No signature, or the cluster token as a bearer (it no longer opens anything here).
      expect((await post({})).status).toBe(401);
      expect((await post({ authorization: `Bearer ${admin}` })).status).toBe(401);
      const signed = signRequest(peerKey, { method: "POST", path: url.pathname, body });
      const ok = await post({ [peerAuthHeader]: signed.header });
      expect(ok.status).toBe(200);
      const answer = new Uint8Array(await ok.arrayBuffer());
      // The answer streams: its signature covers the request's nonce, not the body (TLS guards that).
      expect(answer.byteLength).toBeGreaterThan(0);
      expect(verifyResponse(peerKey, signed.nonce, new Uint8Array(0), ok.headers.get(peerAuthHeader))).toBe(true);
      const { data } = await readValueSequence(new Response(answer).body);
      expect((data.held as string).length).toBe(70_000);
      const replayed = await post({ [peerAuthHeader]: signed.header });
      expect(replayed.status).toBe(401);
      expect(await replayed.text()).toContain("Replayed");
      const stale = signRequest(peerKey, { method: "POST", path: url.pathname, body, now: Date.now() - 120_000 });
      expect((await post({ [peerAuthHeader]: stale.header })).status).toBe(401);
    } finally {
      socket.close();
      await cluster.stop();
    }
  }, 60_000);
  test("before the handshake a socket is closed with 4401 for a large frame or a first message that is not auth (a register without proof)", async () => {
    const cluster = await startCluster({ workers: 0, env: { CLUSTER_TOKEN: admin } });
    try {
      const attempt = (path: string, frame: Uint8Array) =>
        new Promise<CloseEvent>((resolve) => {
          const ws = new WebSocket(`${cluster.url.replace("http", "ws")}${path}`);
          ws.binaryType = "arraybuffer";
          ws.onmessage = () => ws.send(frame);
          ws.onclose = resolve;
        });
      expect((await attempt("/api/v1/client", new Uint8Array(1024 * 1024))).code).toBe(4401);
      const register = encodeFrame([{ op: "register", name: "intruder", nthreads: 1 }]);
      const refused = await attempt("/api/v1/worker", register);
      expect(refused.code).toBe(4401);
      expect(refused.reason).toBe("Expected an auth message first");
      expect((await attempt("/api/v1/nanny", encodeFrame([{ op: "register", name: "intruder" }]))).code).toBe(4401);
      const info = (await api(cluster.url, "/api/v1/info", { token: admin })).body;
      expect([info.workers, info.nannies]).toEqual([[], []]);
    } finally {
      await cluster.stop();
    }
  }, 30_000);

  test("under a Deno scheduler, Bun and Deno workers authenticate and fetch from each other with signed requests", async () => {
    const env = { CLUSTER_TOKEN: admin };
    const cluster = await startCluster({ workers: 0, flavor: "deno", env });
    try {
      cluster.workers.push(await startProcess(["worker", cluster.url, "--name", "bun-w"], { env }));
      cluster.workers.push(await startProcess(["worker", cluster.url, "--name", "deno-w"], { env, flavor: "deno" }));
      const client = await Client.connect(cluster.url, { token: admin });
      try {
        const futures = await client.compute({
          tasks: [
            { key: "rt-a", fn: "builtin.identity", args: ["q".repeat(90_000)], annotations: { workers: ["bun-w"] } },
            { key: "rt-b", fn: "builtin.identity", args: [{ $ref: "rt-a" }], annotations: { workers: ["deno-w"] } },
            { key: "rt-c", fn: "builtin.identity", args: [{ $ref: "rt-b" }], annotations: { workers: ["bun-w"] } },
          ],
          keys: ["rt-c"],
        });
        expect(((await futures["rt-c"].result()) as string).length).toBe(90_000);
      } finally {
        await client.close();
      }
      const metrics = await (await fetch(`${cluster.url}/metrics`, { headers: { authorization: `Bearer ${admin}` } })).text();
      expect(metrics).toMatch(/^cluster_relayed_total 0$/m);
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("after a scheduler restart workers authenticate again and move data peer to peer with the new peer key", async () => {
    const port = await freePort();
    const start = () => startProcess(["scheduler", "--port", String(port)], { env: tokenEnv });
    let scheduler = await start();
    const workers = [
      await startProcess(["worker", scheduler.url, "--name", "rw-1"], { env: tokenEnv }),
      await startProcess(["worker", scheduler.url, "--name", "rw-2"], { env: tokenEnv }),
    ];
    try {
      await scheduler.stop("SIGKILL");
      scheduler = await start();
      const url = scheduler.url;
      await waitFor("both workers back", async () => (await api(url, "/api/v1/info", { token: admin })).body.workers?.filter((w: { status: string }) => w.status === "running").length === 2, { timeoutMs: 20_000 });
      const graph = {
        tasks: [
          { key: "rs-a", fn: "builtin.identity", args: ["r".repeat(80_000)], annotations: { workers: ["rw-1"] } },
          { key: "rs-b", fn: "builtin.identity", args: [{ $ref: "rs-a" }], annotations: { workers: ["rw-2"] } },
        ],
        keys: ["rs-b"],
      };
      expect((await api(url, "/api/v1/graph", { token: admin, body: graph })).status).toBe(202);
      expect((await api(url, "/api/v1/results/rs-b?timeout=20", { token: admin })).body.value.length).toBe(80_000);
      const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${admin}` } })).text();
      expect(metrics).toMatch(/^cluster_relayed_total 0$/m);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      await scheduler.stop();
    }
  }, 60_000);
});

describe("records on worker links", () => {
  test("a worker that does not say it reads records is sent plain CBOR maps; the scheduler says it reads them", async () => {
    const cluster = await startCluster({ workers: 0, env: tokenEnv });
    try {
      const received: Record<string, unknown>[] = [];
      const { socket } = await joinAsProbe(cluster.url, admin, received);
      expect(received[0]).toMatchObject({ op: "welcome", records: true });
      socket.send(encodeFrame([{ op: "ready" }]));
      const client = await Client.connect(cluster.url, { token: admin });
      try {
        const keys = Array.from({ length: 40 }, (_, i) => `plain-${i}`);
        await client.compute({ tasks: keys.map((key, i) => ({ key, fn: "builtin.inc", args: [i] })), keys });
        // Compute messages (as many as its one thread gets), each a plain map to the shared decoder.
        await waitFor("tasks at the probe", () => received.some((m) => m.op === "compute"), { timeoutMs: 10_000 });
        const computes = received.filter((m) => m.op === "compute");
        for (const m of computes) expect(keys).toContain(m.key as string);
        expect(computes[0]).toMatchObject({ fn: "builtin.inc" });
      } finally {
        await client.close();
        socket.close();
      }
    } finally {
      await cluster.stop();
    }
  }, 30_000);
});

describe("a fake scheduler", () => {
  /**
   * Squats a port as a scheduler would answer: its own challenge, then (per `mode`) a wrong
   * auth-ok, a claim that auth is off, or nothing but orders; then a welcome with a plugin
   * that writes a marker file, and a compute.
   */
  function fake(mode: "wrong-proof" | "auth-off" | "orders-only", marker: string) {
    const urls: string[] = [];
    const received: Record<string, unknown>[] = [];
    const plugin = { role: "worker", use: "evil.ts", name: "evil", options: {}, source: `import { writeFileSync } from "node:fs"; export default { setup() { writeFileSync(${JSON.stringify(marker)}, "ran"); } };` };
    const orders = encodeFrame([
      { op: "welcome", plugins: [plugin], version: "0.1.0" },
      { op: "compute", key: "evil-task", fn: "builtin.env", args: ["CLUSTER_TOKEN"], deps: [], stimulusId: "s" },
    ]);
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req: Request, srv: { upgrade(req: Request): boolean }) {
        urls.push(req.url);
        for (const [k, v] of req.headers) urls.push(`${k}: ${v}`);
        if (srv.upgrade(req)) return undefined;
        return new Response("not found", { status: 404 });
      },
      websocket: {
        open(ws: { send(d: Uint8Array): void }) {
          ws.send(encodeFrame([mode === "auth-off" ? { op: "challenge", nonce: "ab".repeat(32), auth: false } : { op: "challenge", nonce: "ab".repeat(32) }]));
          if (mode !== "wrong-proof") ws.send(orders);
        },
        message(ws: { send(d: Uint8Array): void }, data: Uint8Array) {
          for (const msg of decodeFrame(data)) received.push(msg);
          if (mode === "wrong-proof") {
            ws.send(encodeFrame([{ op: "auth-ok", proof: "00".repeat(32), scope: "admin" }]));
            ws.send(orders);
          }
        },
      },
    });
    return { url: `http://127.0.0.1:${server.port}`, urls, received, stop: () => server.stop(true) };
  }

  for (const mode of ["wrong-proof", "auth-off", "orders-only"] as const) {
    test(`a worker with a token runs nothing a fake scheduler sends and gives it no usable proof (${mode})`, async () => {
      const marker = join(tmp, `marker-${mode}`);
      const squatter = fake(mode, marker);
      try {
        const run = await runCli(["worker", squatter.url, "--name", `victim-${mode}`, "--connect-timeout", "3"], { env: { CLUSTER_TOKEN: admin }, timeoutMs: 30_000 });
        expect(run.code).toBe(1);
        expect(run.stderr).toContain("the scheduler could not prove it knows the token");
        expect(existsSync(marker)).toBe(false);
        // Nothing but proofs bound to the fake's nonce: no register, no result, no ready.
        expect(squatter.received.every((m) => m.op === "auth")).toBe(true);
        if (mode === "wrong-proof") expect(squatter.received.length).toBeGreaterThan(0);
        expect(squatter.urls.join("\n")).not.toContain(admin);
        expect(squatter.urls.join("\n")).not.toContain("token=");
        // A proof the fake saw does not open the real scheduler's worker link.
        if (squatter.received.length > 0) {
          const real = await startCluster({ workers: 0, env: { CLUSTER_TOKEN: admin } });
          try {
            const ws = new WebSocket(`${real.url.replace("http", "ws")}/api/v1/worker`);
            ws.binaryType = "arraybuffer";
            const closed = new Promise<CloseEvent>((r) => (ws.onclose = r));
            ws.onmessage = () => ws.send(encodeFrame([squatter.received[0]]));
            expect((await closed).code).toBe(4401);
            expect((await api(real.url, "/api/v1/info", { token: admin })).body.workers).toEqual([]);
          } finally {
            await real.stop();
          }
        }
      } finally {
        squatter.stop();
      }
    }, 60_000);
  }
});

describe("a worker's big frame", () => {
  test("30,000 results in one frame are handled a slice at a time: the API answers meanwhile, every result counts, and a close waits its turn", async () => {
    const cluster = await startCluster({ workers: 0, env: { CLUSTER_TOKEN: admin } });
    try {
      const received: Record<string, unknown>[] = [];
      // A worker with a thread per task, so that every task is sent to it at once.
      const n = 30_000;
      const { socket } = await joinAsProbe(cluster.url, admin, received, { name: "big-frame", nthreads: n, modules: ["builtin"] });
      socket.send(encodeFrame([{ op: "ready" }]));
      const client = await Client.connect(cluster.url, { token: admin });
      try {
        await client.compute({ tasks: Array.from({ length: n }, (_, i) => ({ key: `big-frame-${i}`, fn: "builtin.inc", args: [i] })) });
        const computes = () => received.filter((m) => m.op === "compute") as Array<{ key: string }>;
        await waitFor("every task sent to the worker", () => computes().length === n, { timeoutMs: 60_000 });
        const info = async () => (await api(cluster.url, "/api/v1/info", { token: admin })).body as { tasks: Record<string, number>; events: { lastSeq: number } };
        /** One frame of a result for each of these tasks. */
        const results = (tasks: Array<{ key: string }>) => encodeFrame(tasks.map((c) => ({ op: "done", key: c.key, nbytes: 8, duration: 0.0001 })));
        expect((await info()).tasks.processing).toBe(n);
        socket.send(results(computes()));
        // Asked once the frame is on its way: answered between its slices, before all of it is handled.
        await waitFor("the first results of the frame", async () => (await info()).tasks.memory > 0, { intervalMs: 1 });
        expect((await info()).tasks.memory).toBeLessThan(n);
        await waitFor("every result of the frame", async () => (await info()).tasks.memory === n, { timeoutMs: 60_000 });
        expect((await info()).tasks.processing).toBe(0);

        // A frame of results and the socket closed right after: the close waits for the frame's
        // slices, so every result counts before the worker is removed.
        const m = 20_000;
        await client.compute({ tasks: Array.from({ length: m }, (_, i) => ({ key: `big-close-${i}`, fn: "builtin.inc", args: [i] })) });
        const closing = () => computes().filter((c) => c.key.startsWith("big-close-"));
        await waitFor("every task sent to the worker", () => closing().length === m, { timeoutMs: 60_000 });
        const since = (await info()).events.lastSeq;
        let inMemory = 0;
        let atRemoval = -1;
        const unsubscribe = client.subscribe("transition,worker", (e) => {
          if (e.topic === "worker" && e.action === "remove") atRemoval = inMemory;
          else if (e.topic === "transition" && e.finish === "memory" && String(e.key).startsWith("big-close-")) inMemory++;
        }, { since });
        try {
          socket.send(results(closing()));
          socket.close();
          await waitFor("the worker's removal", () => atRemoval >= 0, { timeoutMs: 60_000 });
          expect(atRemoval).toBe(m);
        } finally {
          unsubscribe();
        }
      } finally {
        await client.close();
        socket.close();
      }
    } finally {
      await cluster.stop();
    }
  }, 120_000);
});

describe("robustness", () => {
  test("a worker and a nanny give up on a lost scheduler after --death-timeout with a clear message", async () => {
    const cluster = await startCluster({ workers: 0 });
    const worker = await cluster.addWorker(["--death-timeout", "2"]);
    const nanny = await startProcess(["nanny", cluster.url, "--name", "mortal", "--death-timeout", "2", "--local-directory", join(tmp, "mortal")], { ready: /nanny \S+ listening at (\S+)/ });
    await cluster.scheduler.stop("SIGKILL");
    const started = Date.now();
    expect(await worker.exited).toBe(1);
    expect(await nanny.exited).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(worker.stderr.join("")).toContain("not back within 2 s (--death-timeout)");
    expect(nanny.stderr.join("")).toContain("not back within 2 s (--death-timeout)");
  }, 40_000);

  test("a second nanny with a taken name is refused and the first keeps its place; a silent nanny is removed", async () => {
    const cluster = await startCluster({ workers: 0, schedulerArgs: ["--worker-ttl", "3"] });
    try {
      const first = await startProcess(["nanny", cluster.url, "--name", "dup", "--local-directory", join(tmp, "dup1")], { ready: /nanny \S+ listening at (\S+)/ });
      const second = await runCli(["nanny", cluster.url, "--name", "dup", "--local-directory", join(tmp, "dup2"), "--connect-timeout", "3"], { timeoutMs: 30_000 });
      expect(second.code).not.toBe(0);
      expect(second.stderr).toContain('A nanny named "dup" is already connected');
      const nannies = (await api(cluster.url, "/api/v1/info")).body.nannies;
      expect(nannies.map((n: { pid: number }) => n.pid)).toEqual([first.pid]);
      // Silent (stopped) past --worker-ttl: removed, as a worker would be.
      process.kill(first.pid, "SIGSTOP");
      try {
        await waitFor("the silent nanny's removal", async () => (await api(cluster.url, "/api/v1/info")).body.nannies.length === 0, { timeoutMs: 15_000 });
      } finally {
        process.kill(first.pid, "SIGCONT");
      }
      await first.stop();
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("a scheduler or worker on a port in use fails with one line and exit code 1, on Bun and Deno", async () => {
    const port = await freePort();
    const first = await startProcess(["scheduler", "--port", String(port)]);
    try {
      for (const [args, flavor] of [
        [["scheduler", "--port", String(port)], "binary"],
        [["worker", first.url, "--port", String(port)], "binary"],
        [["scheduler", "--port", String(port)], "deno"],
      ] as const) {
        const run = await runCli([...args], { flavor, timeoutMs: 30_000 });
        expect(run.code).toBe(1);
        expect(run.stderr.trim()).toBe(`cluster: Port ${port} is already in use`);
      }
      expect((await api(first.url, "/health")).status).toBe(200);
    } finally {
      await first.stop();
    }
  }, 90_000);

  test("a results long-poll lives as long as its timeout (past Bun's 10 s idle timeout), on Bun and Deno", async () => {
    await Promise.all((["binary", "deno"] as const).map(async (flavor) => {
      const cluster = await startCluster({ workers: 1, flavor, workerFlavor: "binary" });
      try {
        // Not ready within its timeout: 408 then, not a connection reset after 10 s idle.
        await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "slow-30", fn: "builtin.sleep", args: [30_000] }], keys: ["slow-30"] } });
        const started = Date.now();
        expect((await api(cluster.url, "/api/v1/results/slow-30?timeout=15")).status).toBe(408);
        expect(Date.now() - started).toBeGreaterThanOrEqual(14_500);
      } finally {
        await cluster.workers[0].stop("SIGKILL");
        await cluster.stop();
      }
    }));
  }, 90_000);

  test("a task message or a result past the 64 MiB frame limit travels in chunks, the others in its batch run, and the link stays up", async () => {
    const tasks = join(tmp, "blobs.ts");
    writeFileSync(tasks, "export function blob(n: number, i: number) { return String(i).padEnd(n, 'x'); }\nexport function count(list: unknown[]) { return list.length; }\n");
    const cluster = await startCluster({ workers: 2, workerArgs: ["--tasks", tasks] });
    try {
      const names = (await api(cluster.url, "/api/v1/info")).body.workers.map((w: { name: string }) => w.name).sort();
      const n = 1100;
      // Results just under the inline limit: the scheduler keeps a copy and sends them inline.
      const producers = Array.from({ length: n }, (_, i) => ({ key: `blob-${i}`, fn: "blobs.blob", args: [62_000, i], annotations: { workers: [names[0]] } }));
      const refs = (from: number, to: number) => producers.slice(from, to).map((p) => ({ $ref: p.key }));
      const pinned = { workers: [names[1]] };
      const graph = {
        tasks: [
          ...producers,
          { key: "too-big", fn: "blobs.count", args: [refs(0, n)], annotations: pinned },
          { key: "small", fn: "builtin.inc", args: [1], annotations: pinned },
          { key: "half-1", fn: "blobs.count", args: [refs(0, 550)], annotations: pinned },
          { key: "half-2", fn: "blobs.count", args: [refs(550, n)], annotations: pinned },
        ],
        keys: ["too-big", "small", "half-1", "half-2"],
      };
      expect((await api(cluster.url, "/api/v1/graph", { body: graph })).status).toBe(202);
      // 1,100 results of 62 KB inline in one compute message: about 68 MB, sent in chunks.
      expect((await api(cluster.url, "/api/v1/results/too-big?timeout=60")).body.value).toBe(n);
      expect((await api(cluster.url, "/api/v1/results/small?timeout=60")).body.value).toBe(2);
      expect((await api(cluster.url, "/api/v1/results/half-1?timeout=60")).body.value).toBe(550);
      expect((await api(cluster.url, "/api/v1/results/half-2?timeout=60")).body.value).toBe(550);
      // A result larger than one frame comes back to the scheduler in chunks too.
      const huge = { tasks: [{ key: "huge-result", fn: "blobs.blob", args: [70_000_000, 1], annotations: pinned }], keys: ["huge-result"] };
      expect((await api(cluster.url, "/api/v1/graph", { body: huge })).status).toBe(202);
      const fetched = await api(cluster.url, "/api/v1/results/huge-result?timeout=60");
      expect([fetched.status, (fetched.body.value as string).length]).toEqual([200, 70_000_000]);
      const after = { tasks: [{ key: "after-huge", fn: "builtin.inc", args: [41], annotations: pinned }], keys: ["after-huge"] };
      expect((await api(cluster.url, "/api/v1/graph", { body: after })).status).toBe(202);
      expect((await api(cluster.url, "/api/v1/results/after-huge?timeout=30")).body.value).toBe(42);
      expect(cluster.workers.every((w) => !w.stderr.join("").includes("Lost the scheduler"))).toBe(true);
    } finally {
      await cluster.stop();
    }
  }, 120_000);
});
