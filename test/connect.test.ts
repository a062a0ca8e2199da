/**
 * Reaching the scheduler, as a user meets it: one wording for a refused connection, a refused
 * token and a silent address in every command; a worker that waits says so at once and while it
 * waits; a nanny waits for a restarted scheduler instead of giving up; and client commands exit
 * as soon as they are done.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { createServer, type Server, type Socket } from "node:net";
import { classifyError, ConnectError } from "../lib/connect-error.ts";
import { authHeaders, command, runCli, startCluster, startProcess, stopAll, tempDir } from "../testkit/mod.ts";

afterAll(async () => {
  await stopAll();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A port nothing listens on (taken, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Runs the CLI; returns when the first stdout arrived and when the process exited (ms). */
function timeCli(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string; outputAt: number; exitAt: number }> {
  const [cmd, ...lead] = command("binary");
  const child = spawn(cmd, [...lead, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let outputAt = 0;
  child.stdout!.setEncoding("utf8").on("data", (c: string) => {
    outputAt ||= performance.now();
    stdout += c;
  });
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  child.stdin!.end(input ?? "");
  return new Promise((resolve) => {
    child.on("exit", (code) => resolve({ code, stdout, stderr, outputAt, exitAt: performance.now() }));
  });
}

describe("client commands", () => {
  test("submit of a two-task graph and info exit within half a second of printing their answer, and https to plain HTTP is a TLS failure", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const graph = JSON.stringify({ tasks: [{ key: "a", fn: "builtin.inc", args: [1] }, { key: "b", fn: "builtin.inc", args: [{ $ref: "a" }] }] });
      const submit = await timeCli(["submit", cluster.url, "-"], graph);
      expect(submit.code).toBe(0);
      expect(JSON.parse(submit.stdout)).toEqual({ a: 2, b: 3 });
      expect(submit.exitAt - submit.outputAt).toBeLessThan(500);
      // https:// to a scheduler that speaks plain HTTP is a TLS failure, named as such.
      const tls = await runCli(["submit", cluster.url.replace("http:", "https:"), "-"], { input: graph });
      expect(tls.code).toBe(1);
      expect(tls.stderr).toContain(`Cannot reach the scheduler at ${cluster.url.replace("http:", "https:")}: TLS failure`);
      const info = await timeCli(["info", cluster.url]);
      expect(info.code).toBe(0);
      expect(info.exitAt - info.outputAt).toBeLessThan(500);
    } finally {
      await cluster.stop();
    }
  }, 30_000);

  test("submit to a closed port says the connection was refused", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const out = await runCli(["submit", url, "-"], { input: JSON.stringify({ tasks: [{ key: "a", fn: "builtin.inc", args: [1] }] }) });
    expect(out.code).toBe(1);
    expect(out.stderr).toContain(`Cannot reach the scheduler at ${url}: connection refused`);
  });
});

describe("wording", () => {
  test("errors of Bun, Deno and Node are classified as refused, timed out or TLS", () => {
    const refusedBun = Object.assign(new TypeError("ECONNREFUSED: Unable to connect. Is the computer able to access the url?"), { code: "ECONNREFUSED" });
    const refusedDeno = new TypeError("fetch failed", { cause: new Error("tcp connect error: Connection refused (os error 111)") });
    const timeout = new DOMException("The operation timed out.", "TimeoutError");
    const tlsBun = Object.assign(new Error("self signed certificate"), { code: "DEPTH_ZERO_SELF_SIGNED_CERT" });
    const tlsDeno = new TypeError("fetch failed", { cause: new Error("invalid peer certificate: UnknownIssuer") });
    const plainDeno = new TypeError("fetch failed", { cause: new Error("client error (Connect): received corrupt message of type InvalidContentType") });
    const kinds = [refusedBun, refusedDeno, timeout, tlsBun, tlsDeno, plainDeno].map((e) => classifyError(e).kind);
    expect(kinds).toEqual(["refused", "refused", "timeout", "tls", "tls", "tls"]);
    // The reason Deno hides in `cause` is the one shown.
    expect(classifyError(tlsDeno).detail).toBe("invalid peer certificate: UnknownIssuer");
  });

  test("every failure names the scheduler's URL and the reason in one line", () => {
    const url = "http://127.0.0.1:8786";
    expect(new ConnectError(url, "refused").message).toBe(`Cannot reach the scheduler at ${url}: connection refused`);
    expect(new ConnectError(url, "unauthorized").message).toBe(`Cannot reach the scheduler at ${url}: the token was refused`);
    expect(new ConnectError(url, "timeout", "no answer within 2 s").message).toBe(`Cannot reach the scheduler at ${url}: timed out (no answer within 2 s)`);
    expect(new ConnectError(url, "tls", "EPROTO").message).toBe(`Cannot reach the scheduler at ${url}: TLS failure (EPROTO)`);
  });
});

describe("a wrong token", () => {
  test("is named as such by submit and by a worker, which gives up at once", async () => {
    const cluster = await startCluster({ workers: 0, env: { CLUSTER_TOKEN: "right-token" } });
    try {
      const graph = JSON.stringify({ tasks: [{ key: "a", fn: "builtin.inc", args: [1] }] });
      const submit = await runCli(["submit", cluster.url, "-"], { input: graph, env: { CLUSTER_TOKEN: "wrong-token" } });
      expect(submit.code).toBe(1);
      expect(submit.stderr).toContain(`Cannot reach the scheduler at ${cluster.url}: the token was refused`);
      const started = Date.now();
      const worker = await runCli(["worker", cluster.url, "--connect-timeout", "20"], { env: { CLUSTER_TOKEN: "wrong-token" } });
      expect(worker.code).toBe(1);
      expect(worker.stderr).toContain(`Cannot reach the scheduler at ${cluster.url}: the token was refused`);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await cluster.stop();
    }
  }, 30_000);
});

describe("a worker waiting for its scheduler", () => {
  test("says so at once and again every few seconds, then gives up with exit code 1 (69 under a nanny)", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const [cmd, ...lead] = command("binary");
    const child = spawn(cmd, [...lead, "worker", url, "--connect-timeout", "8"], { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, CLUSTER_NANNY: "1" } });
    const lines: Array<{ at: number; line: string }> = [];
    const started = performance.now();
    child.stderr!.setEncoding("utf8").on("data", (c: string) => {
      for (const line of c.split("\n").filter(Boolean)) lines.push({ at: performance.now() - started, line });
    });
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(69); // run as a nanny runs it
    const first = lines.find((l) => l.line.includes("waiting for it"));
    expect(first?.line).toContain(`Cannot reach the scheduler at ${url}: connection refused`);
    // The first attempt fails in milliseconds; a loaded machine still says it well within 3 s.
    expect(first!.at).toBeLessThan(3_000);
    expect(lines.some((l) => l.line.includes("Still waiting for the scheduler"))).toBe(true);
    expect(lines.at(-1)!.line).toBe(`cluster: Cannot reach the scheduler at ${url}: connection refused`);
  }, 30_000);

  test("at an address that never answers, gives up saying it timed out", async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((s) => sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const url = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    try {
      const out = await runCli(["worker", url, "--connect-timeout", "2"], { timeoutMs: 20_000 });
      expect(out.code).toBe(1);
      expect(out.stderr).toContain(`Cannot reach the scheduler at ${url}: timed out`);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 30_000);
});

describe("a nanny whose scheduler restarts", () => {
  test("waits for it to come back instead of giving up, and its worker joins the new scheduler", async () => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}`;
    const args = ["scheduler", "--port", String(port)];
    let scheduler = await startProcess(args);
    const name = `waiting-nanny-${process.pid}`;
    const nanny = await startProcess(
      ["nanny", url, "--name", name, "--connect-timeout", "1", "--local-directory", tempDir()],
      { ready: /nanny \S+ listening at (\S+)/ },
    );
    try {
      await scheduler.stop();
      // Long enough for five start-ups that cannot connect (1 s each): the old nanny gave up here.
      const deadline = Date.now() + 20_000;
      while (!nanny.stderr.join("").includes("waiting for it to come back") && Date.now() < deadline) await sleep(200);
      expect(nanny.stderr.join("")).toContain(`The worker cannot reach the scheduler at ${url}: waiting for it to come back`);
      await sleep(6_000);
      expect(nanny.child.exitCode).toBeNull();
      expect(nanny.stderr.join("")).not.toContain("keeps dying");
      scheduler = await startProcess(args);
      const joined = Date.now() + 20_000;
      let names: string[] = [];
      while (Date.now() < joined) {
        const info = await fetch(`${url}/api/v1/info`, { headers: authHeaders() }).then((r) => r.json()) as { workers: Array<{ name: string }> };
        names = info.workers.map((w) => w.name);
        if (names.includes(name)) break;
        await sleep(250);
      }
      expect(names).toContain(name);
    } finally {
      await nanny.stop();
      await scheduler.stop();
    }
  }, 60_000);
});
