/**
 * The command line as a user meets it: ready lines, exit codes, one-line errors, the token,
 * submit/info/events, and graceful shutdown on signals.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { api, root, runCli, sleep, startCluster, startProcess, stopAll, tempDir } from "../testkit/mod.ts";
import { authenticate } from "../lib/auth/handshake.ts";
import { encodeFrame } from "../lib/protocol.ts";

afterAll(stopAll);

describe("usage errors", () => {
  test("--version, -V and version print the version, the commit and the target, and --help exits 0", async () => {
    for (const args of [["--version"], ["-V"], ["version"]]) {
      const v = await runCli(args);
      expect(v.code).toBe(0);
      expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+ \(([0-9a-f]{7,}|dev)\) (linux|darwin|windows)-(x64|arm64)$/);
    }
    const fromSource = await runCli(["--version"], { flavor: "bun" });
    const commit = spawnSync("git", ["rev-parse", "--short=7", "HEAD"], { cwd: root, encoding: "utf8" }).stdout.trim();
    expect(fromSource.stdout.trim()).toBe(`0.2.0 (${commit || "dev"}) ${process.platform}-${process.arch}`);
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

  test("help COMMAND shows that command's help, not the top-level one", async () => {
    const r = await runCli(["help", "worker"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("--nthreads");
    expect(r.stdout).toContain("cluster worker");
    const unknown = await runCli(["help", "frobnicate"]);
    expect(unknown.code).toBe(2);
  });

  test("no colour codes reach a pipe, and none with NO_COLOR", async () => {
    for (const env of [{}, { NO_COLOR: "1" }, { NO_COLOR: "yes" }]) {
      for (const args of [["--help"], ["help", "scheduler"], ["scheduler", "--help"], ["scheduler", "--bogus"]]) {
        const r = await runCli(args, { env });
        expect(r.stdout + r.stderr).not.toContain("\x1b[");
      }
    }
  });

  test("--port 99999 is a one-line usage error naming the flag and the range, exit 2", async () => {
    for (const command of [["scheduler"], ["local"], ["worker", "http://127.0.0.1:9"]]) {
      const r = await runCli([...command, "--port", "99999"]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toEqual([`cluster: Invalid value for "--port": "99999" (expected an integer from 0 to 65535)`]);
    }
  });

  test("submit, info and events word an unreachable scheduler and a refused token the same way", async () => {
    const lines = new Set<string>();
    for (const args of [["submit", "http://127.0.0.1:9", "-"], ["info", "http://127.0.0.1:9"], ["events", "http://127.0.0.1:9"]]) {
      const r = await runCli(args, { input: '{"tasks":[]}' });
      expect(r.code).toBe(1);
      lines.add(r.stderr.trim());
    }
    expect([...lines]).toEqual(['cluster: Cannot reach the scheduler at http://127.0.0.1:9: connection refused']);
    const cluster = await startCluster({ workers: 0, env: { CLUSTER_TOKEN: "right" } });
    try {
      const refused = new Set<string>();
      for (const args of [["submit", cluster.url, "-"], ["info", cluster.url], ["events", cluster.url]]) {
        const r = await runCli(args, { input: '{"tasks":[]}', env: { CLUSTER_TOKEN: "wrong" } });
        expect(r.code).toBe(1);
        refused.add(r.stderr.trim());
      }
      expect([...refused]).toEqual([`cluster: Cannot reach the scheduler at ${cluster.url}: the token was refused`]);
    } finally {
      await cluster.stop();
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
      // Never from the URL (WebSockets prove the token in-band, after the upgrade).
      expect((await api(cluster.url, `/api/v1/info?token=${token}`, { token: "" })).status).toBe(401);
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
      const no = await runCli(["info", cluster.url], { env: { CLUSTER_TOKEN: "" } });
      expect(no.code).toBe(1);
    } finally {
      await cluster.stop();
    }
  });
});

describe("flags from the environment", () => {
  test("every flag can come from a CLUSTER_ variable, and the command line wins", async () => {
    // CLUSTER_PORT=0 instead of the default 8786: the scheduler takes a free port.
    const fromEnv = await startProcess(["scheduler"], { env: { CLUSTER_PORT: "0", CLUSTER_WORKER_TTL: "30", CLUSTER_HOST: "127.0.0.1" } });
    expect(fromEnv.url).not.toContain(":8786");
    // The positional SCHEDULER_URL comes from CLUSTER_SCHEDULER, repeatable flags from a list.
    const info = await runCli(["info", "--json"], { env: { CLUSTER_SCHEDULER: fromEnv.url } });
    expect(info.code).toBe(0);
    expect(JSON.parse(info.stdout).workers).toEqual([]);
    await fromEnv.stop();
    const flagWins = await startProcess(["scheduler", "--port", "0"], { env: { CLUSTER_PORT: "99999" } });
    await flagWins.stop();
    const bad = await runCli(["scheduler"], { env: { CLUSTER_PORT: "99999" } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("CLUSTER_PORT");
    const badBool = await runCli(["local"], { env: { CLUSTER_DEMO: "maybe" } });
    expect(badBool.code).toBe(2);
    expect(badBool.stderr).toContain("CLUSTER_DEMO");
  });
});

describe("completion", () => {
  test("the bash completion script is valid bash and completes subcommands and flags", () => {
    const script = spawnSync(join(root, "dist", "cluster"), ["completion", "bash"], { encoding: "utf8" });
    expect(script.status).toBe(0);
    const dir = tempDir();
    writeFileSync(join(dir, "cluster.bash"), script.stdout);
    expect(spawnSync("bash", ["-n", join(dir, "cluster.bash")]).status).toBe(0);
    const complete = (words: string[]) => {
      const line = `source ${join(dir, "cluster.bash")}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _cluster; echo "\${COMPREPLY[*]}"`;
      return spawnSync("bash", ["-c", line], { encoding: "utf8" }).stdout.trim().split(" ");
    };
    expect(complete(["cluster", "wor"])).toEqual(["worker"]);
    expect(complete(["cluster", ""])).toEqual(expect.arrayContaining(["scheduler", "worker", "nanny", "local", "submit", "events", "info", "completion"]));
    expect(complete(["cluster", "scheduler", "--worker-"])).toEqual(["--worker-ttl"]);
    expect(complete(["cluster", "help", "sch"])).toEqual(["scheduler"]);
    expect(complete(["cluster", "completion", "f"])).toEqual(["fish"]);
  });

  test("zsh and fish scripts are printed, and an unknown shell is a usage error", () => {
    const bin = join(root, "dist", "cluster");
    for (const shell of ["zsh", "fish"]) {
      const r = spawnSync(bin, ["completion", shell], { encoding: "utf8" });
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("worker");
      // Checked for syntax where the shell is installed.
      const which = spawnSync("sh", ["-c", `command -v ${shell}`]);
      if (which.status === 0) {
        const file = join(tempDir(), `cluster.${shell}`);
        writeFileSync(file, r.stdout);
        expect(spawnSync(shell, ["-n", file]).status).toBe(0);
      }
    }
    const bad = spawnSync(bin, ["completion", "tcsh"], { encoding: "utf8" });
    expect(bad.status).toBe(2);
  });
});

describe("demo", () => {
  test("npm run demo prints the results and leaves nothing in the temp directory", () => {
    const tmp = mkdtempSync(join(tmpdir(), "cluster-demo-test-"));
    try {
      const r = spawnSync("npm", ["run", "--silent", "demo"], { cwd: root, encoding: "utf8", env: { ...process.env, TMPDIR: tmp }, timeout: 90_000 });
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout.trim().split("\n").pop()!)).toMatchObject({ total: 5050 });
      expect(readdirSync(tmp).filter((n) => n.startsWith("cluster-"))).toEqual([]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 100_000);
});

describe("signals", () => {
  test("SIGTERM closes scheduler and worker gracefully with exit code 0", async () => {
    const cluster = await startCluster({ workers: 1 });
    expect(await cluster.workers[0].stop("SIGTERM")).toBe(0);
    expect(await cluster.scheduler.stop("SIGINT")).toBe(0);
  });
});
