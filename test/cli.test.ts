/**
 * The command line as a user meets it: ready lines, exit codes, one-line errors, the token,
 * submit/info/events, and graceful shutdown on signals.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { api, runCli, sleep, startCluster, startProcess, stopAll, tempDir } from "../testkit/mod.ts";
import { authenticate } from "../lib/auth/handshake.ts";
import { encodeFrame } from "../lib/protocol.ts";

afterAll(stopAll);

describe("usage errors", () => {
  test("--version and --help print and exit 0", async () => {
    const v = await runCli(["--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const h = await runCli(["--help"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain("scheduler");
    const sub = await runCli(["worker", "--help"]);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain("--nthreads");
  });

  test("a bad flag, an unknown command or a bad value exit 2 with one line and no stack trace", async () => {
    for (const args of [["scheduler", "--bogus"], ["frobnicate"], ["scheduler", "--port", "abc"], ["worker"], ["worker", "http://127.0.0.1:1", "--nthreads", "0"]]) {
      const r = await runCli(args);
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split("\n");
      expect(lines.length).toBe(1);
      expect(lines[0]).toStartWith("cluster: ");
      expect(r.stderr).not.toContain("    at ");
    }
  });

  test("an unreachable scheduler exits 1 naming it", async () => {
    const worker = await runCli(["worker", "http://127.0.0.1:9", "--connect-timeout", "1"]);
    expect(worker.code).toBe(1);
    expect(worker.stderr).toContain("http://127.0.0.1:9");
    for (const args of [["info", "http://127.0.0.1:9"], ["submit", "http://127.0.0.1:9", "-"]]) {
      const r = await runCli(args, { input: '{"tasks":[]}' });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("127.0.0.1:9");
    }
  });

  test("a missing graph file exits 2 naming the file", async () => {
    const r = await runCli(["submit", "http://127.0.0.1:9", "/nonexistent/graph.json"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("/nonexistent/graph.json");
  });
});

describe("client commands", () => {
  test("submit prints the results as JSON, info and events show the cluster", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const dir = tempDir();
      const file = join(dir, "graph.json");
      writeFileSync(file, JSON.stringify({
        tasks: [{ key: "a", fn: "builtin.inc", args: [1] }, { key: "b", fn: "builtin.add", args: [{ $ref: "a" }, 10] }],
        keys: ["b"],
      }));
      const submitted = await runCli(["submit", cluster.url, file]);
      expect(submitted.code).toBe(0);
      expect(JSON.parse(submitted.stdout)).toEqual({ b: 12 });
      const fromStdin = await runCli(["submit", cluster.url, "-"], { input: JSON.stringify({ tasks: [{ key: "f", fn: "builtin.fail", args: ["bad"] }] }) });
      expect(fromStdin.code).toBe(1);
      expect(JSON.parse(fromStdin.stdout)).toEqual({ f: null });
      expect(fromStdin.stderr).toContain("bad");
      const rejected = await runCli(["submit", cluster.url, "-"], { input: JSON.stringify({ tasks: [{ key: "r", fn: "builtin.inc", args: [{ $ref: "zz" }] }] }) });
      expect(rejected.code).toBe(2);
      expect(rejected.stderr).toContain('"zz"');
      const info = await runCli(["info", cluster.url, "--json"]);
      expect(info.code).toBe(0);
      expect(JSON.parse(info.stdout).workers.length).toBe(1);
      const text = await runCli(["info", cluster.url]);
      expect(text.stdout).toContain("workers: 1");
    } finally {
      await cluster.stop();
    }
  });

  test("events follows the stream one JSON object a line", async () => {
    const cluster = await startCluster({ workers: 0 });
    try {
      const pending = startProcess(["events", cluster.url, "--topic", "cli-topic"], { ready: /(\{.*"cli-topic".*\})/, timeoutMs: 10_000 });
      await sleep(500);
      await api(cluster.url, "/api/v1/events/cli-topic", { body: { hello: "world" } });
      const proc = await pending;
      const event = JSON.parse(proc.url);
      expect(event).toMatchObject({ topic: "cli-topic", hello: "world" });
      expect(typeof event.seq).toBe("number");
      await proc.stop();
    } finally {
      await cluster.stop();
    }
  });
});

describe("token", () => {
  test("with CLUSTER_TOKEN every route but /health needs the bearer token, and WebSockets the handshake", async () => {
    const token = "s3cret-token";
    const cluster = await startCluster({ workers: 1, env: { CLUSTER_TOKEN: token } });
    try {
      expect((await api(cluster.url, "/health")).status).toBe(200);
      expect((await api(cluster.url, "/api/v1/info")).status).toBe(401);
      expect((await api(cluster.url, "/api/v1/info", { token: "wrong" })).status).toBe(401);
      expect((await api(cluster.url, "/api/v1/info", { token })).status).toBe(200);
      expect((await api(cluster.url, "/metrics")).status).toBe(401);
      // WebSockets prove the token by challenge–response; a token in the URL proves nothing.
      const refused = await new Promise<number>((resolve) => {
        const ws = new WebSocket(cluster.url.replace("http", "ws") + `/api/v1/events?token=${token}`);
        ws.binaryType = "arraybuffer";
        ws.onmessage = () => ws.send(encodeFrame([{ op: "auth", nonce: "00".repeat(32), proof: "00".repeat(32) }]));
        ws.onclose = (event) => resolve(event.code);
      });
      expect(refused).toBe(4401);
      const ws = new WebSocket(cluster.url.replace("http", "ws") + "/api/v1/events");
      ws.binaryType = "arraybuffer";
      expect((await authenticate(ws, { role: "events", token, onMessage: () => {} })).scope).toBe("admin");
      ws.close();
      // The CLI and workers read the same variable; a token file works too.
      const dir = tempDir();
      writeFileSync(join(dir, "token"), token + "\n");
      const ok = await runCli(["submit", cluster.url, "-", "--token-file", join(dir, "token")], { input: JSON.stringify({ tasks: [{ key: "t", fn: "builtin.inc", args: [1] }] }) });
      expect(ok.code).toBe(0);
      expect(JSON.parse(ok.stdout)).toEqual({ t: 2 });
      const no = await runCli(["submit", cluster.url, "-"], { input: '{"tasks":[]}', env: { CLUSTER_TOKEN: "" } });
      expect(no.code).toBe(1);
    } finally {
      await cluster.stop();
    }
  });
});

describe("signals", () => {
  test("SIGTERM closes scheduler and worker gracefully with exit code 0", async () => {
    const cluster = await startCluster({ workers: 1 });
    expect(await cluster.workers[0].stop("SIGTERM")).toBe(0);
    expect(await cluster.scheduler.stop("SIGINT")).toBe(0);
  });
});
