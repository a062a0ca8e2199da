/**
 * End-to-end tests of the nanny against the real binary: supervision after SIGKILL, memory
 * limits and KilledWorker, giving up on a worker that dies at start-up, nanny plugins (`environ`,
 * `upload-directory`, a failing setup, teardown on SIGTERM, warnings for workers without a
 * nanny), and `POST /api/v1/restart` with a scheduler plugin's `restart` hook.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { setBuiltins } from "../lib/plugins/registry.ts";
import { builtinPlugins } from "../plugins/mod.ts";
import { api, collectEvents, freePort, type Proc, root, runCli, sleep, startProcess, stopAll, tempDir, waitFor } from "../testkit/mod.ts";

// The client ships upload-directory's files from the built-in's declaration, handed in as the CLI does.
setBuiltins(builtinPlugins);

const fixtures = join(root, "test", "fixtures");
const tmp = tempDir("cluster-nanny-test-");
const restartLog = join(tmp, "restarts.log");
const suffix = String(process.pid);

let url = "";
let scheduler: Proc;
let client: Client;
/** The nannies that stay up for the whole file, by name. */
const nannies = new Map<string, { proc: Proc; localDirectory: string }>();

/** Starts `cluster nanny` with its own local directory; resolves at its ready line. */
function startNanny(name: string, args: string[] = []): Promise<{ proc: Proc; localDirectory: string }> {
  const localDirectory = join(tmp, name);
  return startProcess(["nanny", url, "--name", name, "--local-directory", localDirectory, ...args], {
    ready: /nanny \S+ listening at (\S+)/,
  }).then((proc) => ({ proc, localDirectory }));
}

async function info(): Promise<any> {
  const res = await api(url, "/api/v1/info");
  expect(res.status).toBe(200);
  return res.body;
}

/** Worker PIDs by worker name (only running workers). */
async function workerPids(): Promise<Map<string, number>> {
  const body = await info();
  return new Map(body.workers.filter((w: any) => w.status === "running").map((w: any) => [w.name, w.pid]));
}

let keyCounter = 0;

/** Runs `fn(...args)` on the named worker and returns its value (throws with the error). */
async function runOn(worker: string, fn: string, args: unknown[] = []): Promise<unknown> {
  const key = `on-${worker}-${++keyCounter}`;
  const res = await api(url, "/api/v1/graph", { body: { tasks: [{ key, fn, args, annotations: { workers: [worker] } }], keys: [key] } });
  expect(res.status).toBe(202);
  const result = await api(url, `/api/v1/results/${key}?timeout=20`);
  if (result.status !== 200) throw new Error(`${fn} on ${worker}: ${result.status} ${JSON.stringify(result.body)}`);
  await api(url, `/api/v1/tasks/${key}`, { method: "DELETE" });
  return result.body.value;
}

/** The value of `builtin.env(name)` on every worker under a nanny of this file. */
async function envEverywhere(name: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const worker of nannies.keys()) out[worker] = await runOn(worker, "builtin.env", [name]);
  return out;
}

function everyWorker<T>(value: T): Record<string, T> {
  return Object.fromEntries([...nannies.keys()].map((n) => [n, value]));
}

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  // This nanny starts before the scheduler exists: it keeps trying to connect.
  const early = startNanny(`early-${suffix}`);
  early.catch(() => {});
  await sleep(200);
  scheduler = await startProcess(["scheduler", "--port", String(port), "--plugins", join(fixtures, "nanny-plugins.toml")], {
    env: { NANNY_TEST_RESTART_LOG: restartLog },
  });
  nannies.set(`early-${suffix}`, await early);
  for (const name of [`a-${suffix}`, `b-${suffix}`]) nannies.set(name, await startNanny(name));
  await waitFor("three workers", async () => (await workerPids()).size === 3);
  client = await Client.connect(url);
}, 30_000);

afterAll(async () => {
  await client?.close();
  await Promise.all([...nannies.values()].map((n) => n.proc.stop()));
  await scheduler?.stop();
  await stopAll();
});

describe("environ", () => {
  test("environ from the scheduler's plugins.toml reaches nannies started before and after the scheduler without a restart", async () => {
    expect(await envEverywhere("FOO")).toEqual(everyWorker("bar"));
    for (const { proc } of nannies.values()) {
      const health = await api(proc.url, "/health");
      expect(health.body.role).toBe("nanny");
      // Set up before the first worker started (Dask #7035): nothing had to restart.
      expect(health.body.restarts).toBe(0);
    }
    const body = await info();
    expect(body.plugins.nanny).toContain("environ");
    for (const w of body.workers) expect(w.nanny).toBe(true);
  });

  test("environ registered while workers run restarts them, and the new workers see the variable", async () => {
    const before = await workerPids();
    const res = await api(url, "/api/v1/plugins", { body: { role: "nanny", use: "environ", name: "environ-late", env: { LATE: "yes" } } });
    expect(res.status).toBe(201);
    expect(res.body.warnings).toEqual([]);
    const after = await waitFor("restarted workers", async () => {
      const pids = await workerPids();
      return pids.size === before.size && [...before].every(([n, pid]) => pids.has(n) && pids.get(n) !== pid) && pids;
    });
    expect(after.size).toBe(3);
    expect(await envEverywhere("LATE")).toEqual(everyWorker("yes"));
    // Nanny plugins persist across worker restarts.
    expect(await envEverywhere("FOO")).toEqual(everyWorker("bar"));
  });
});

describe("supervision", () => {
  test("SIGKILL of a nanny's worker during a 10,000-task graph: a new worker process registers and every result is correct", async () => {
    const [name, { proc }] = [...nannies][1];
    const health = await api(proc.url, "/health");
    const oldPid = health.body.worker as number;
    expect(oldPid).toBeGreaterThan(0);
    const tasks = [];
    for (let i = 0; i < 10_000; i++) tasks.push({ key: `kill-${i}`, fn: "builtin.sleep", args: [0, i * 3] });
    const futures = await client.compute({ tasks, keys: tasks.map((t) => t.key) });
    await waitFor("some results", async () => ((await info()).tasks.memory ?? 0) >= 500, 20_000);
    process.kill(oldPid, "SIGKILL");
    const killedAt = Date.now();
    const done = (await info()).tasks.memory ?? 0;
    expect(done).toBeLessThan(10_000);
    const newPid = await waitFor("a new worker process", async () => {
      const pid = (await workerPids()).get(name);
      return pid !== undefined && pid !== oldPid && pid;
    });
    expect(newPid).not.toBe(oldPid);
    expect((await api(proc.url, "/health")).body.worker).toBe(newPid);
    const values = await client.gather(Object.values(futures));
    for (let i = 0; i < 10_000; i++) if (values[i] !== i * 3) expect(values[i]).toBe(i * 3);
    await client.release(Object.values(futures));
    const nannyInfo = (await info()).nannies.find((n: any) => n.name === name);
    expect(nannyInfo.restarts).toBeGreaterThanOrEqual(2);
    expect(Date.now() - killedAt).toBeLessThan(30_000);
  }, 40_000);

  test("a task allocating past --memory-limit restarts its worker and is erred with KilledWorker after 3 deaths, while others are served", async () => {
    const memName = `mem-${suffix}`;
    const mem = await startNanny(memName, ["--memory-limit", "300MB", "--tasks", join(root, "testkit", "tasks.ts")]);
    try {
      await waitFor("the memory-limited worker", async () => (await workerPids()).has(memName));
      const res = await api(url, "/api/v1/graph", {
        body: { tasks: [{ key: "mem-hog", fn: "tasks.alloc", args: [400, 20_000], annotations: { workers: [memName] } }], keys: ["mem-hog"] },
      });
      expect(res.status).toBe(202);
      const others = [...nannies.keys()];
      let batches = 0;
      let hog = await api(url, "/api/v1/results/mem-hog?timeout=0");
      while (hog.status === 408) {
        const g = { tasks: [] as any[], keys: [] as string[] };
        for (let i = 0; i < 20; i++) g.tasks.push({ key: `mem-other-${batches}-${i}`, fn: "builtin.inc", args: [i], annotations: { workers: others } });
        g.keys = g.tasks.map((t) => t.key);
        const values = await client.gather(Object.values(await client.compute(g)));
        expect(values).toEqual(g.tasks.map((_t, i) => i + 1));
        await client.release(g.keys);
        batches++;
        hog = await api(url, "/api/v1/results/mem-hog?timeout=0.2");
      }
      expect(hog.status).toBe(409);
      expect(hog.body.error).toContain("KilledWorker");
      expect(batches).toBeGreaterThan(0);
      // The third death erred the task; the nanny still restarts the worker after its backoff.
      await waitFor("the third restart", async () => (await api(mem.proc.url, "/health")).body.restarts >= 3);
      expect(mem.proc.stderr.join("")).toContain("past its memory limit");
      // The cluster goes on: the restarted worker takes new work.
      expect(await runOn(memName, "builtin.inc", [41])).toBe(42);
    } finally {
      expect(await mem.proc.stop()).toBe(0);
    }
  }, 60_000);

  test("a worker that keeps dying at start-up is given up after a bounded number of tries with a clear error", async () => {
    const started = Date.now();
    const out = await runCli(
      ["nanny", url, "--name", `broken-${suffix}`, "--local-directory", join(tmp, "broken"), "--tasks", join(fixtures, "nanny-broken-tasks.ts")],
      { timeoutMs: 30_000 },
    );
    expect(out.code).toBe(1);
    expect(out.stderr).toContain("Worker keeps dying at start-up (5 times in a row): giving up");
    expect(out.stderr).toContain("broken on purpose");
    expect(out.stdout).not.toContain("listening at");
    expect(Date.now() - started).toBeLessThan(25_000);
  }, 30_000);
});

describe("nanny plugins", () => {
  test("upload-directory with updatePath makes its task module callable on every worker and leaves out skipped paths", async () => {
    const before = await workerPids();
    const out = await client.registerPlugin({
      role: "nanny",
      use: "upload-directory",
      path: join(fixtures, "nanny-dir"),
      updatePath: true,
      skip: ["secret.*", "cache"],
    });
    expect(out.name).toBe("upload-directory-nanny-dir");
    const after = await workerPids();
    for (const [name, pid] of before) expect(after.get(name)).not.toBe(pid);
    for (const [name, { localDirectory }] of nannies) {
      expect(await runOn(name, "nanny_tasks.greet", ["nanny"])).toBe("HELLO NANNY!");
      expect(await runOn(name, "nanny_tasks.listFiles")).toEqual(["lib/data.json", "lib/helper.ts", "nanny_tasks.ts"]);
      expect(await runOn(name, "nanny_tasks.location")).toBe(join(localDirectory, "nanny-dir"));
      expect(existsSync(join(localDirectory, "nanny-dir", "nanny_tasks.ts"))).toBe(true);
      expect(existsSync(join(localDirectory, "nanny-dir", "secret.txt"))).toBe(false);
      expect(existsSync(join(localDirectory, "nanny-dir", "cache"))).toBe(false);
    }
  }, 30_000);

  test("upload-directory refuses file names that leave the directory", async () => {
    const before = await workerPids();
    for (const name of ["../escape.txt", "/etc/escape.txt", "a/../../escape.txt"]) {
      const res = await api(url, "/api/v1/plugins", {
        body: { role: "nanny", use: "upload-directory", name: "evil", path: "evil", files: { [name]: "x", "ok.txt": "y" } },
      });
      expect(res.status).toBe(422);
      expect(res.body.error).toContain(`Invalid file name "${name}"`);
    }
    for (const { localDirectory } of nannies.values()) {
      expect(existsSync(join(localDirectory, "escape.txt"))).toBe(false);
      expect(existsSync(join(localDirectory, "evil"))).toBe(false);
    }
    expect(await workerPids()).toEqual(before);
  });

  test("a nanny plugin whose setup throws answers 422 with its message and restarts no worker", async () => {
    const before = await workerPids();
    const res = await api(url, "/api/v1/plugins", { body: { role: "nanny", use: join(fixtures, "nanny-failing-setup.ts") } });
    expect(res.status).toBe(422);
    expect(res.body.error).toContain("nanny fixture setup failed on purpose");
    expect(await workerPids()).toEqual(before);
    expect((await api(url, "/api/v1/plugins")).body.nanny.map((p: any) => p.name)).not.toContain("failing-setup");
  });

  test("registering a nanny plugin while a worker has no nanny says so in warnings", async () => {
    const plainName = `plain-${suffix}`;
    const plain = await startProcess(["worker", url, "--name", plainName]);
    try {
      await waitFor("the plain worker", async () => (await workerPids()).has(plainName));
      const res = await api(url, "/api/v1/plugins", {
        body: { role: "nanny", use: join(fixtures, "nanny-teardown-marker.ts"), name: "warn-marker", path: join(tmp, "warn-marker.txt") },
      });
      expect(res.status).toBe(201);
      expect(res.body.warnings.length).toBe(1);
      expect(res.body.warnings[0]).toContain(plainName);
      expect(res.body.warnings[0]).toContain("without a nanny");
      expect((await api(url, "/api/v1/plugins/nanny/warn-marker", { method: "DELETE" })).status).toBe(204);
    } finally {
      await plain.stop();
    }
  });
});

describe("restart and close", () => {
  test("POST /api/v1/restart brings every worker back with a new PID and calls the scheduler plugin's restart hook once", async () => {
    await waitFor("only nanny workers", async () => (await workerPids()).size === nannies.size);
    const before = await workerPids();
    const res = await api(url, "/api/v1/restart", { method: "POST" });
    expect(res.status).toBe(200);
    const after = await workerPids();
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [name, pid] of before) expect(after.get(name)).not.toBe(pid);
    expect(readFileSync(restartLog, "utf8").trim().split("\n").length).toBe(1);
    // Environment and uploaded modules come back with the new workers.
    expect(await envEverywhere("FOO")).toEqual(everyWorker("bar"));
    for (const name of nannies.keys()) expect(await runOn(name, "nanny_tasks.greet", ["again"])).toBe("HELLO AGAIN!");
  }, 30_000);

  test("SIGTERM to a nanny runs its plugins' teardown, stops its worker, the scheduler sees it leave, and it exits 0", async () => {
    const name = `term-${suffix}`;
    const marker = join(tmp, "teardown.txt");
    const term = await startNanny(name);
    await waitFor("the nanny's worker", async () => (await workerPids()).has(name));
    // A nanny that joins later gets the registered plugins too.
    expect(await runOn(name, "builtin.env", ["FOO"])).toBe("bar");
    expect(await runOn(name, "nanny_tasks.greet", ["late"])).toBe("HELLO LATE!");
    const res = await api(url, "/api/v1/plugins", { body: { role: "nanny", use: join(fixtures, "nanny-teardown-marker.ts"), path: marker } });
    expect(res.status).toBe(201);
    const workerPid = (await api(term.proc.url, "/health")).body.worker as number;
    const events = collectEvents(url, "topic=worker", (es) => es.some((e) => e.action === "remove" && e.worker === name));
    await events.ready;
    expect(await term.proc.stop("SIGTERM")).toBe(0);
    expect(readFileSync(marker, "utf8")).toBe(`teardown ${name}\n`);
    expect(() => process.kill(workerPid, 0)).toThrow();
    const removed = (await events.done).find((e) => e.action === "remove" && e.worker === name);
    expect(removed).toBeDefined();
    await waitFor("the nanny to leave", async () => {
      const body = await info();
      return !body.workers.some((w: any) => w.name === name) && !body.nannies.some((n: any) => n.name === name);
    });
    expect((await api(url, "/api/v1/plugins/nanny/teardown-marker", { method: "DELETE" })).status).toBe(204);
  }, 30_000);

  test("a worker or nanny removes the directory it made for itself when it closes, and keeps one it was given", async () => {
    const given = join(tmp, `given-${suffix}`);
    const own = (role: string, name: string) => join(tmpdir(), `cluster-${role}-${name}`);
    const worker = await startProcess(["worker", url, "--name", `own-w-${suffix}`]);
    const kept = await startProcess(["worker", url, "--name", `given-w-${suffix}`, "--local-directory", given]);
    const nanny = await startProcess(["nanny", url, "--name", `own-n-${suffix}`], { ready: /nanny \S+ listening at (\S+)/ });
    await waitFor("the nanny's worker", async () => (await workerPids()).has(`own-n-${suffix}`));
    for (const dir of [own("worker", `own-w-${suffix}`), given, own("nanny", `own-n-${suffix}`)]) expect(existsSync(dir)).toBe(true);
    expect(await worker.stop("SIGTERM")).toBe(0);
    expect(await kept.stop("SIGTERM")).toBe(0);
    expect(await nanny.stop("SIGTERM")).toBe(0);
    expect(existsSync(own("worker", `own-w-${suffix}`))).toBe(false);
    expect(existsSync(own("nanny", `own-n-${suffix}`))).toBe(false);
    expect(existsSync(given)).toBe(true);
  }, 30_000);
});
