/**
 * Trust at the scheduler's HTTP door, against the built binary: the token made at start (0600,
 * its path logged, never the token) and found by `cluster local`, workers and the CLI on the same
 * host; `--no-auth` on loopback only; each scope against each class of route (401, 403 naming
 * the scope); and the cross-site and rebinding probes (415 for a text/plain plugin registration,
 * whose module must not run; a foreign Origin; a foreign Host, `--allow-host`, the announced
 * address of a wildcard bind).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { api, type Proc, runCli, startProcess, stopAll, tempDir, waitFor } from "../testkit/mod.ts";
import { sessionValue } from "../lib/dashboard/_session.ts";

afterAll(stopAll);

/** A scheduler's environment with no token at all, its state under `stateHome`. */
const noToken = (stateHome: string) => ({
  CLUSTER_TOKEN: undefined,
  CLUSTER_SUBMIT_TOKEN: undefined,
  CLUSTER_JOIN_TOKEN: undefined,
  XDG_STATE_HOME: stateHome,
});

const output = (p: Proc) => p.stdout.join("") + p.stderr.join("");

/**
 * One request with headers fetch will not set (Host, Upgrade): the status, and the body's
 * `error`. A WebSocket upgrade answered 101 counts as 101.
 */
function raw(url: string, path: string, headers: Record<string, string>, method = "GET", body?: string): Promise<{ status: number; error?: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: Number(u.port), path, method, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c)).on("end", () => {
        let error: string | undefined;
        try {
          error = JSON.parse(text).error;
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, error });
      });
    });
    req.on("upgrade", (_res, socket) => {
      socket.destroy();
      resolve({ status: 101 });
    });
    req.on("error", reject);
    req.end(body);
  });
}

const upgrade = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" };

describe("secure by default", () => {
  test("a scheduler with no token makes one with mode 0600, logs its path and never prints the token; a restart reuses it", async () => {
    const home = tempDir();
    const first = await startProcess(["scheduler", "--port", "0"], { env: noToken(home) });
    const file = join(home, "cluster", "token");
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(home, "cluster")).mode & 0o777).toBe(0o700);
    const token = readFileSync(file, "utf8").trim();
    expect(Buffer.from(token, "base64url").length).toBe(32);
    expect((await api(first.url, "/api/v1/info", { token: "" })).status).toBe(401);
    expect((await api(first.url, "/api/v1/info", { token })).status).toBe(200);
    await first.stop();
    expect(output(first)).toContain(file);
    expect(output(first)).not.toContain(token);

    const second = await startProcess(["scheduler", "--port", "0"], { env: noToken(home) });
    try {
      expect(readFileSync(file, "utf8").trim()).toBe(token);
      expect((await api(second.url, "/api/v1/info", { token })).status).toBe(200);
      expect(output(second)).toContain(file);
      expect(output(second)).not.toContain(token);
    } finally {
      await second.stop();
    }
  });

  test("--state-dir and --token-file say where the token goes", async () => {
    const dir = join(tempDir(), "state");
    const s = await startProcess(["scheduler", "--port", "0", "--state-dir", dir], { env: noToken(tempDir()) });
    await s.stop();
    expect(statSync(join(dir, "token")).mode & 0o777).toBe(0o600);
    const given = join(tempDir(), "my-token");
    writeFileSync(given, "given-token\n");
    const t = await startProcess(["scheduler", "--port", "0", "--token-file", given], { env: noToken(tempDir()) });
    try {
      expect((await api(t.url, "/api/v1/info", { token: "given-token" })).status).toBe(200);
    } finally {
      await t.stop();
    }
  });

  test("a same-host worker and the CLI with no token given find the scheduler's token file", async () => {
    const home = tempDir();
    const scheduler = await startProcess(["scheduler", "--port", "0"], { env: noToken(home) });
    try {
      const worker = await startProcess(["worker", scheduler.url, "--name", "finder"], { env: noToken(home) });
      const token = readFileSync(join(home, "cluster", "token"), "utf8").trim();
      await waitFor("the worker to join", async () => (await api(scheduler.url, "/api/v1/info", { token })).body.workers.length === 1);
      // The worker holds the token too: its data endpoint refuses a request without it.
      const address = (await api(scheduler.url, "/api/v1/info", { token })).body.workers[0].address as string;
      const anonymous = await fetch(`${address.replace(/^tcp:/, "http:")}/api/v1/data`, { method: "POST", body: new Uint8Array([0xa0]), headers: { "content-type": "application/cbor" } });
      expect(anonymous.status).toBe(401);
      const info = await runCli(["info", scheduler.url, "--json"], { env: noToken(home) });
      expect(info.code).toBe(0);
      expect(JSON.parse(info.stdout).workers.map((w: { name: string }) => w.name)).toEqual(["finder"]);
      const graph = JSON.stringify({ tasks: [{ key: "x", fn: "builtin.inc", args: [41] }] });
      const submit = await runCli(["submit", scheduler.url, "-"], { input: graph, env: noToken(home) });
      expect(submit.code).toBe(0);
      expect(JSON.parse(submit.stdout)).toEqual({ x: 42 });
      // Another user's (another state directory's) CLI has no token: refused.
      const stranger = await runCli(["info", scheduler.url], { env: noToken(tempDir()) });
      expect(stranger.code).toBe(1);
      expect(stranger.stderr).toContain("it needs a token: set CLUSTER_TOKEN or --token-file");
      await worker.stop();
    } finally {
      await scheduler.stop();
    }
  }, 60_000);

  test("cluster local reuses the token file and the CLI finds it", async () => {
    const home = tempDir();
    mkdirSync(join(home, "cluster"), { recursive: true, mode: 0o700 });
    writeFileSync(join(home, "cluster", "token"), "kept-token\n", { mode: 0o600 });
    const local = await startProcess(["local", "--workers", "1", "--port", "0"], { env: noToken(home), timeoutMs: 30_000 });
    try {
      await waitFor("the local worker to join", async () => (await api(local.url, "/api/v1/info", { token: "kept-token" })).body.workers?.length === 1, { timeoutMs: 30_000 });
      const info = await runCli(["info", local.url, "--json"], { env: noToken(home) });
      expect(info.code).toBe(0);
      expect(output(local)).not.toContain("kept-token");
    } finally {
      await local.stop();
    }
  }, 60_000);

  test("--no-auth is refused unless the scheduler listens on loopback only", async () => {
    const refused = await runCli(["scheduler", "--port", "0", "--host", "0.0.0.0", "--no-auth"], { env: noToken(tempDir()) });
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split("\n").length).toBe(1);
    expect(refused.stderr).toContain("--no-auth");
    expect(refused.stderr).toContain("0.0.0.0");
    const home = tempDir();
    const open = await startProcess(["scheduler", "--port", "0", "--no-auth"], { env: noToken(home) });
    try {
      expect((await api(open.url, "/api/v1/info", { token: "" })).status).toBe(200);
      expect(existsSync(join(home, "cluster", "token"))).toBe(false);
      // Cross-site protection holds without auth.
      expect((await api(open.url, "/api/v1/plugins", { raw: "{}", contentType: "text/plain" })).status).toBe(415);
      expect((await raw(open.url, "/api/v1/info", { origin: "http://evil.example" })).status).toBe(403);
      expect((await raw(open.url, "/api/v1/info", { host: "evil.example" })).status).toBe(403);
    } finally {
      await open.stop();
    }
  });
});

describe("scopes", () => {
  const tokens = { CLUSTER_TOKEN: "admin-t", CLUSTER_SUBMIT_TOKEN: "submit-t", CLUSTER_JOIN_TOKEN: "join-t" };
  const submitRoutes: Array<[string, string, unknown?]> = [
    ["GET", "/api/v1/info"],
    ["GET", "/metrics"],
    ["GET", "/api/v1/plugins"],
    ["GET", "/api/v1/tasks/nothing"],
    ["GET", "/api/v1/results/nothing"],
    ["DELETE", "/api/v1/tasks/nothing"],
    ["POST", "/api/v1/graph", { tasks: [{ key: "s", fn: "builtin.inc", args: [1] }] }],
    ["POST", "/api/v1/events/probe", { hello: 1 }],
  ];
  const adminRoutes: Array<[string, string, unknown?]> = [
    ["POST", "/api/v1/plugins", {}],
    ["DELETE", "/api/v1/plugins/scheduler/nothing"],
    ["POST", "/api/v1/restart", {}],
  ];

  test("each token against each class of route: 401 without or with a wrong one, 403 naming the scope needed", async () => {
    const s = await startProcess(["scheduler", "--port", "0"], { env: { ...tokens, XDG_STATE_HOME: tempDir() } });
    try {
      const call = (route: [string, string, unknown?], token: string) => api(s.url, route[1], { method: route[0], body: route[2], token });
      for (const route of [...submitRoutes, ...adminRoutes]) {
        expect({ route, status: (await call(route, "")).status }).toEqual({ route, status: 401 });
        expect({ route, status: (await call(route, "wrong")).status }).toEqual({ route, status: 401 });
        const join = await call(route, "join-t");
        const need = adminRoutes.includes(route) ? "admin" : "submit";
        expect({ route, status: join.status, body: join.body }).toEqual({
          route,
          status: 403,
          body: { error: `This needs the "${need}" scope; the token given has "join"` },
        });
      }
      for (const route of submitRoutes) {
        const res = await call(route, "submit-t");
        expect({ route, ok: res.status !== 401 && res.status !== 403 }).toEqual({ route, ok: true });
      }
      for (const route of adminRoutes) {
        const res = await call(route, "submit-t");
        expect({ route, status: res.status, body: res.body }).toEqual({
          route,
          status: 403,
          body: { error: 'This needs the "admin" scope; the token given has "submit"' },
        });
        const admin = await call(route, "admin-t");
        expect({ route, ok: admin.status !== 401 && admin.status !== 403 }).toEqual({ route, ok: true });
      }
      for (const route of submitRoutes) {
        const res = await call(route, "admin-t");
        expect({ route, ok: res.status !== 401 && res.status !== 403 }).toEqual({ route, ok: true });
      }
      // Tokens are never taken from the URL.
      expect((await api(s.url, "/api/v1/info?token=admin-t", { token: "" })).status).toBe(401);
      // The dashboard's session cookie (an HMAC of the admin token) stands for the admin token;
      // one made from another token, or the token itself as a cookie, is nothing.
      const session = `cluster_session=${sessionValue("admin-t")}`;
      expect((await raw(s.url, "/api/v1/info", { cookie: session })).status).toBe(200);
      expect((await raw(s.url, "/api/v1/info", { cookie: `cluster_session=${sessionValue("submit-t")}` })).status).toBe(401);
      expect((await raw(s.url, "/api/v1/info", { cookie: "cluster_token=admin-t" })).status).toBe(401);
      // The WebSocket links pass without credentials (they prove them in-band), but ones given are checked.
      expect((await raw(s.url, "/api/v1/events", { ...upgrade, authorization: "Bearer wrong" })).status).toBe(401);
      expect((await raw(s.url, "/api/v1/events", { ...upgrade, authorization: "Bearer join-t" })).status).toBe(403);
      expect((await raw(s.url, "/api/v1/events", { ...upgrade, cookie: session })).status).toBe(101);
    } finally {
      await s.stop();
    }
  });
});

describe("cross-site and rebinding", () => {
  test("a text/plain plugin registration (a cross-site form post) is 415 and its module never runs", async () => {
    const dir = tempDir();
    const marker = join(dir, "ran");
    const source = `import { writeFileSync } from "node:fs";\nwriteFileSync(${JSON.stringify(marker)}, "ran");\nexport default class Evil { start() {} }\n`;
    const body = JSON.stringify({ role: "scheduler", use: "./evil.ts", name: "evil", source });
    const s = await startProcess(["scheduler", "--port", "0"], { env: { XDG_STATE_HOME: tempDir() } });
    try {
      for (const type of ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
        const res = await api(s.url, "/api/v1/plugins", { raw: body, contentType: type });
        expect({ type, status: res.status }).toEqual({ type, status: 415 });
        expect(res.body.error).toContain("application/json");
      }
      const noType = await raw(s.url, "/api/v1/plugins", { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` }, "POST", body);
      expect(noType.status).toBe(415);
      await Bun.sleep(200);
      expect(existsSync(marker)).toBe(false);
      expect((await api(s.url, "/api/v1/plugins")).body.scheduler).toEqual([]);
      // The probe is real: sent as JSON by the admin, the same module runs.
      expect((await api(s.url, "/api/v1/plugins", { raw: body, contentType: "application/json" })).status).toBe(201);
      expect(existsSync(marker)).toBe(true);
    } finally {
      await s.stop();
    }
  });

  test("a foreign Origin is 403 on routes and WebSocket upgrades; the scheduler's own passes", async () => {
    const s = await startProcess(["scheduler", "--port", "0"], { env: { XDG_STATE_HOME: tempDir() } });
    const auth = { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` };
    const port = new URL(s.url).port;
    try {
      for (const origin of ["http://evil.example", "null", `http://evil.example:${port}`, `https://127.0.0.1:${port}`, "http://127.0.0.1:1"]) {
        const res = await raw(s.url, "/api/v1/info", { ...auth, origin });
        expect({ origin, status: res.status }).toEqual({ origin, status: 403 });
        expect(res.error).toContain("Origin");
        const ws = await raw(s.url, "/api/v1/events", { ...upgrade, origin });
        expect({ origin, ws: ws.status }).toEqual({ origin, ws: 403 });
      }
      const post = await raw(s.url, "/api/v1/events/t", { ...auth, origin: "http://evil.example", "content-type": "application/json" }, "POST", "{}");
      expect(post.status).toBe(403);
      for (const origin of [s.url, `http://localhost:${port}`]) {
        expect((await raw(s.url, "/api/v1/info", { ...auth, origin })).status).toBe(200);
        expect((await raw(s.url, "/api/v1/events", { ...upgrade, origin })).status).toBe(101);
      }
    } finally {
      await s.stop();
    }
  });

  test("a rebinding Host is 403; --allow-host adds a name", async () => {
    const s = await startProcess(["scheduler", "--port", "0", "--allow-host", "cluster.lan"], { env: { XDG_STATE_HOME: tempDir() } });
    const auth = { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` };
    const port = new URL(s.url).port;
    try {
      for (const host of [`attacker.example:${port}`, "attacker.example", `127.0.0.1.nip.io:${port}`]) {
        const res = await raw(s.url, "/api/v1/info", { ...auth, host });
        expect({ host, status: res.status }).toEqual({ host, status: 403 });
        expect(res.error).toContain("--allow-host");
        expect((await raw(s.url, "/api/v1/events", { ...upgrade, host })).status).toBe(403);
      }
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `cluster.lan:${port}`, `CLUSTER.LAN:${port}`]) {
        expect({ host, status: (await raw(s.url, "/api/v1/info", { ...auth, host })).status }).toEqual({ host, status: 200 });
      }
      expect((await raw(s.url, "/health", { host: "attacker.example" })).status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  test("bound to 0.0.0.0 the scheduler answers to its announced address, not to a foreign name", async () => {
    const s = await startProcess(["scheduler", "--port", "0", "--host", "0.0.0.0"], { env: { XDG_STATE_HOME: tempDir() } });
    const auth = { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` };
    const announced = new URL(s.url);
    // Talk over loopback, naming the announced address as a client on the network would.
    const loopback = `http://127.0.0.1:${announced.port}`;
    try {
      expect((await raw(loopback, "/api/v1/info", { ...auth, host: announced.host })).status).toBe(200);
      expect((await raw(loopback, "/api/v1/info", { ...auth, host: `127.0.0.1:${announced.port}` })).status).toBe(200);
      expect((await raw(loopback, "/api/v1/info", { ...auth, host: `attacker.example:${announced.port}` })).status).toBe(403);
    } finally {
      await s.stop();
    }
  });
});

describe("a name the scheduler does not know", () => {
  test("a worker given it says the Host was refused and how to allow it, not that its token was", async () => {
    const s = await startProcess(["scheduler", "--port", "0", "--host", "0.0.0.0"], { env: { XDG_STATE_HOME: tempDir() } });
    try {
      // 127.0.0.2 reaches a wildcard bind over loopback, but is no name of the scheduler.
      const other = `http://127.0.0.2:${new URL(s.url).port}`;
      const worker = await runCli(["worker", other, "--connect-timeout", "2"], { timeoutMs: 20_000 });
      expect(worker.code).toBe(1);
      expect(worker.stderr).toContain('Host "127.0.0.2:');
      expect(worker.stderr).toContain("--allow-host");
      expect(worker.stderr).not.toContain("the token was refused");
    } finally {
      await s.stop();
    }
  }, 30_000);
});

describe("the rules as functions", () => {
  test("every route has one scope in the table, unknown routes need admin, and client ops follow the same rules", async () => {
    const { needFor, scopeForOp, scopeForLink } = await import("../lib/scheduler/auth.ts");
    expect(needFor("POST", "/api/v1/plugins")).toBe("admin");
    expect(needFor("DELETE", "/api/v1/plugins/worker/x")).toBe("admin");
    expect(needFor("POST", "/api/v1/restart")).toBe("admin");
    expect(needFor("GET", "/api/v1/plugins")).toBe("submit");
    expect(needFor("HEAD", "/api/v1/info")).toBe("submit");
    expect(needFor("GET", "/api/v1/worker")).toBe("in-band");
    expect(needFor("PUT", "/api/v1/graph")).toBe("admin");
    expect(needFor("GET", "/api/v1/something-new")).toBe("admin");
    expect(scopeForLink("/api/v1/nanny")).toBe("join");
    expect(scopeForLink("/api/v1/client")).toBe("submit");
    expect(scopeForOp("graph")).toBe("submit");
    expect(scopeForOp("register-plugin")).toBe("admin");
    expect(scopeForOp("unregister-plugin")).toBe("admin");
    expect(scopeForOp("made-up")).toBe("admin");
  });

  test("Host, Origin and body type checks name what they refuse", async () => {
    const { allowedHosts, bodyTypeProblem, hostProblem, originProblem } = await import("../lib/auth/cross-site.ts");
    const listener = { protocol: "http", hostname: "127.0.0.1", port: 8786, announced: "127.0.0.1" };
    const hosts = allowedHosts(listener, ["Cluster.LAN", "proxy.lan:443", "[fd00::1]"]);
    expect(hostProblem("proxy.lan", hosts)).toBeNull();
    expect(hostProblem("[fd00::1]:8786", hosts)).toBeNull();
    expect(hostProblem("127.0.0.1:8786", hosts)).toBeNull();
    expect(hostProblem("[::1]:8786", hosts)).toBeNull();
    expect(hostProblem("cluster.lan.", hosts)).toBeNull();
    expect(hostProblem(undefined, hosts)).toBeNull();
    expect(hostProblem("evil.example:8786", hosts)).toContain('"evil.example:8786"');
    expect(hostProblem("127.0.0.1:8786/x", hosts)).not.toBeNull();
    expect(originProblem(undefined, listener, hosts)).toBeNull();
    expect(originProblem("http://localhost:8786", listener, hosts)).toBeNull();
    expect(originProblem("http://localhost:8787", listener, hosts)).not.toBeNull();
    expect(originProblem("https://localhost:8786", listener, hosts)).not.toBeNull();
    expect(originProblem("null", listener, hosts)).toContain('"null"');
    expect(bodyTypeProblem("application/json; charset=utf-8", true)).toBeNull();
    expect(bodyTypeProblem("Application/CBOR", true)).toBeNull();
    expect(bodyTypeProblem(undefined, false)).toBeNull();
    expect(bodyTypeProblem(undefined, true)).not.toBeNull();
    expect(bodyTypeProblem("text/plain", false)).not.toBeNull();
  });

  test("tokens from the environment keep auth on when only a narrow token is set", async () => {
    const { envTokens, scopeOf } = await import("../lib/auth/tokens.ts");
    expect(envTokens({})).toBeNull();
    const only = envTokens({ CLUSTER_SUBMIT_TOKEN: "s" })!;
    expect(only.admin.length).toBeGreaterThan(20);
    expect(scopeOf(only, "s")).toBe("submit");
    expect(scopeOf(only, "")).toBeNull();
  });
});
