/**
 * End-to-end tests of the built-in worker plugins `upload-file`, `package-install` and
 * `process-pool` against the real binary: registered through a scheduler's plugins.toml and
 * through `POST /api/v1/plugins`, reaching workers that join later, failing registrations with
 * 422, and running CPU-bound tasks in parallel child processes (also under Deno).
 *
 * No test needs the network: npm's registry is pointed at a closed loopback port, and the
 * package that does get installed is a local directory.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { api, type Proc, root, sleep, startCluster, stopAll, tempDir, type TestCluster, waitFor } from "../testkit/mod.ts";

const fixtures = join(root, "test", "fixtures");
/** Nothing listens on port 1: any registry request fails at once instead of reaching the network. */
const offline = { NPM_CONFIG_REGISTRY: "http://127.0.0.1:1/", BUN_CONFIG_REGISTRY: "http://127.0.0.1:1/" };

afterAll(async () => {
  await stopAll();
});

/** Submits one task and waits for its result body (`{value}` or `{error}`). */
async function runTask(url: string, task: Record<string, unknown>, timeoutS = 20): Promise<any> {
  const submitted = await api(url, "/api/v1/graph", { body: { tasks: [task], keys: [task.key] } });
  expect(submitted.status).toBe(202);
  const result = await api(url, `/api/v1/results/${encodeURIComponent(String(task.key))}?timeout=${timeoutS}`);
  await api(url, `/api/v1/tasks/${encodeURIComponent(String(task.key))}`, { method: "DELETE" });
  return result.body;
}

/** The names of the workers the scheduler knows, in the order they joined. */
async function workerNames(url: string): Promise<string[]> {
  const info = await api(url, "/api/v1/info");
  return info.body.workers.map((w: { name: string }) => w.name);
}

/** Waits until `n` workers are registered (a worker is ready before the scheduler confirmed it). */
function waitForWorkers(url: string, n: number): Promise<string[]> {
  return waitFor(`${n} registered workers`, async () => {
    const names = await workerNames(url);
    return names.length >= n && names;
  }, { timeoutMs: 10_000, intervalMs: 50 });
}

let keyCounter = 0;
const nextKey = (prefix: string) => `${prefix}-${++keyCounter}`;

describe("upload-file", () => {
  test("a task module in the scheduler's plugins.toml is callable on every worker, also one started later", async () => {
    const dir = tempDir("wb-toml-");
    writeFileSync(
      join(dir, "plugins.toml"),
      `[[worker.plugins]]\nuse = "upload-file"\npath = "${join(fixtures, "wb-tasks.ts")}"\n`,
    );
    const cluster = await startCluster({ workers: 2, schedulerArgs: ["--plugins", join(dir, "plugins.toml")] });
    try {
      await cluster.addWorker();
      const names = await waitForWorkers(cluster.url, 3);
      expect(names.length).toBe(3);
      for (const [i, name] of names.entries()) {
        const body = await runTask(cluster.url, { key: nextKey("toml-triple"), fn: "wb-tasks.triple", args: [i + 1], annotations: { workers: [name] } });
        expect(body.value).toBe(3 * (i + 1));
      }
      const plugins = await api(cluster.url, "/api/v1/plugins");
      expect(plugins.body.worker).toMatchObject([{ name: "upload-file-wb-tasks.ts", use: "upload-file", status: Object.fromEntries(names.map((n) => [n, "ok"])) }]);
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  describe("and package-install, registered through the API", () => {
    let cluster: TestCluster;
    const localDirs: string[] = [];

    beforeAll(async () => {
      cluster = await startCluster({ workers: 0, env: offline });
      for (let i = 0; i < 2; i++) {
        const dir = tempDir("wb-local-");
        localDirs.push(dir);
        await cluster.addWorker(["--local-directory", dir]);
      }
      await waitForWorkers(cluster.url, 2);
    }, 60_000);

    afterAll(async () => {
      await cluster?.stop();
    });

    test("an uploaded task module is callable on all workers, including one started after registration", async () => {
      const source = "export function greet(name: string): string {\n  return `hello ${name}`;\n}\n";
      const res = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "upload-file", path: "wb-api-tasks.ts", files: { "wb-api-tasks.ts": source } },
      });
      expect(res.status).toBe(201);
      expect(res.body.name).toBe("upload-file-wb-api-tasks.ts");
      for (const dir of localDirs) expect(readFileSync(join(dir, "wb-api-tasks.ts"), "utf8")).toBe(source);
      const late = tempDir("wb-local-late-");
      await cluster.addWorker(["--local-directory", late]);
      const names = await waitForWorkers(cluster.url, 3);
      expect(names.length).toBe(3);
      for (const name of names) {
        const body = await runTask(cluster.url, { key: nextKey("api-greet"), fn: "wb-api-tasks.greet", args: [name], annotations: { workers: [name] } });
        expect(body.value).toBe(`hello ${name}`);
      }
      expect(existsSync(join(late, "wb-api-tasks.ts"))).toBe(true);
    }, 60_000);

    test("a file sent as base64 with load = false is only written, not loaded", async () => {
      const text = "not a module, just data\n";
      const res = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "upload-file", path: "wb-data.ts", load: false, files: { "wb-data.ts": { base64: btoa(text) } } },
      });
      expect(res.status).toBe(201);
      for (const dir of localDirs) expect(readFileSync(join(dir, "wb-data.ts"), "utf8")).toBe(text);
    }, 30_000);

    test("uploading changed content under the same file name runs the new version", async () => {
      for (const version of [1, 2]) {
        const res = await api(cluster.url, "/api/v1/plugins", {
          body: { role: "worker", use: "upload-file", path: "wb-reload.ts", files: { "wb-reload.ts": `export const v = () => ${version};\n` } },
        });
        expect(res.status).toBe(201);
        expect((await runTask(cluster.url, { key: nextKey("reload"), fn: "wb-reload.v", args: [] })).value).toBe(version);
      }
    }, 30_000);

    test("a task module with a syntax error fails the registration with 422 and is not listed", async () => {
      const res = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "upload-file", path: "wb-broken.ts", files: { "wb-broken.ts": readFileSync(join(fixtures, "wb-broken.ts"), "utf8") } },
      });
      expect(res.status).toBe(422);
      expect(res.body.error).toContain("wb-broken.ts");
      expect(res.body.error).toMatch(/SyntaxError/);
      expect(res.body.error).toContain("wb-broken.ts:3");
      const plugins = await api(cluster.url, "/api/v1/plugins");
      expect(plugins.body.worker.map((p: { name: string }) => p.name)).not.toContain("upload-file-wb-broken.ts");
    }, 30_000);

    test("an upload without the file's bytes fails with 422 naming the missing file", async () => {
      const res = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: "upload-file", path: "wb-nowhere.ts" } });
      expect(res.status).toBe(422);
      expect(res.body.error).toContain('Cannot upload file "wb-nowhere.ts"');
    }, 30_000);

    test("package-install: a package that cannot be installed fails the registration with 422 and the installer's output", async () => {
      const res = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "package-install", packages: ["@cluster-test/definitely-not-a-package-zzz"] },
      });
      expect(res.status).toBe(422);
      expect(res.body.error).toContain("with bun: the installer exited with code");
      // The installer's own words about the package, not just ours.
      expect(res.body.error.split("definitely-not-a-package-zzz").length).toBeGreaterThan(2);
      const plugins = await api(cluster.url, "/api/v1/plugins");
      expect(plugins.body.worker.map((p: { name: string }) => p.name)).not.toContain("package-install");
    }, 60_000);

    test("package-install: a local package is installed into every worker's local directory and a task can import it", async () => {
      const pkg = join(tempDir("wb-pkg-"), "wb-local-pkg");
      mkdirSync(pkg);
      writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "wb-local-pkg", version: "1.2.3", type: "module", main: "index.js" }));
      writeFileSync(join(pkg, "index.js"), 'export const version = "1.2.3";\n');
      const res = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: "package-install", packages: [`file:${pkg}`] } });
      expect(res.status).toBe(201);
      for (const dir of localDirs) expect(existsSync(join(dir, "packages", "node_modules", "wb-local-pkg", "index.js"))).toBe(true);
      const upload = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "upload-file", path: "wb-usepkg.ts", files: { "wb-usepkg.ts": readFileSync(join(fixtures, "wb-usepkg.ts"), "utf8") } },
      });
      expect(upload.status).toBe(201);
      const names = await workerNames(cluster.url);
      for (const [i, dir] of localDirs.entries()) {
        const body = await runTask(cluster.url, { key: nextKey("usepkg"), fn: "wb-usepkg.version", args: [dir], annotations: { workers: [names[i]] } });
        expect(body.value).toBe("1.2.3");
      }
    }, 90_000);
  });
});

describe("package-install with restartWorkers", () => {
  test("a worker under a nanny restarts once after installing, and its replacement finds the packages installed", async () => {
    const cluster = await startCluster({ workers: 1, nanny: true, env: offline });
    try {
      const pid = async () => (await runTask(cluster.url, { key: nextKey("nanny-pid"), fn: "builtin.pid", args: [] })).value as number;
      await waitForWorkers(cluster.url, 1);
      const before = await pid();
      const pkg = join(tempDir("wb-pkg-"), "wb-local-pkg");
      mkdirSync(pkg);
      writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "wb-local-pkg", version: "1.2.3", main: "index.js" }));
      writeFileSync(join(pkg, "index.js"), 'export const version = "1.2.3";\n');
      const res = await api(cluster.url, "/api/v1/plugins", {
        body: { role: "worker", use: "package-install", packages: [`file:${pkg}`], restartWorkers: true },
      });
      expect(res.status).toBe(201);
      const after = await waitFor("a restarted worker", async () => {
        const now = await pid();
        return now !== before && now;
      }, { timeoutMs: 15_000, intervalMs: 200 });
      // The replacement set the plugin up again without installing (and so without restarting).
      await sleep(1_000);
      expect(await pid()).toBe(after);
      expect(cluster.workers[0].stderr.join("")).toContain("Packages already installed");
    } finally {
      await cluster.stop();
    }
  }, 60_000);
});

describe("process-pool", () => {
  let cluster: TestCluster;
  let worker: Proc;

  beforeAll(async () => {
    const dir = tempDir("wb-pool-");
    writeFileSync(join(dir, "plugins.toml"), `[[worker.plugins]]\nuse = "process-pool"\nsize = 2\n`);
    cluster = await startCluster({ workers: 0, schedulerArgs: ["--plugins", join(dir, "plugins.toml")] });
    worker = await cluster.addWorker(["--nthreads", "4", "--tasks", join(fixtures, "wb-cpu.ts")]);
    await waitForWorkers(cluster.url, 1);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  test("four CPU-bound tasks on one worker run two at a time in two child processes", async () => {
    const tasks = [0, 1, 2, 3].map((i) => ({ key: `spin-${i}`, fn: "wb-cpu.spin", args: [400], annotations: { executor: "processes" } }));
    const started = performance.now();
    expect((await api(cluster.url, "/api/v1/graph", { body: { tasks, keys: tasks.map((t) => t.key) } })).status).toBe(202);
    const results: Array<{ pid: number; start: number; end: number }> = [];
    for (const t of tasks) {
      const res = await api(cluster.url, `/api/v1/results/${t.key}?timeout=20`);
      expect(res.status).toBe(200);
      results.push(res.body.value);
    }
    const elapsed = performance.now() - started;
    // Serially this takes 4 × 400 ms; two children take about 2 × 400 ms.
    expect(elapsed).toBeLessThan(1500);
    const pids = new Set(results.map((r) => r.pid));
    expect(pids.size).toBe(2);
    expect(pids.has(worker.pid)).toBe(false);
    // Two spins in different processes overlapped in time.
    const overlapping = results.some((a) => results.some((b) => a.pid !== b.pid && a.start < b.end && b.start < a.end));
    expect(overlapping).toBe(true);
    const own = await runTask(cluster.url, { key: nextKey("own-pid"), fn: "builtin.pid", args: [] });
    expect(own.value).toBe(worker.pid);
    const builtinInChild = await runTask(cluster.url, { key: nextKey("child-pid"), fn: "builtin.pid", args: [], annotations: { executor: "processes" } });
    expect(pids.has(builtinInChild.value)).toBe(true);
  }, 30_000);

  test("an error thrown in a child process errs the task with its message and stack", async () => {
    const body = await runTask(cluster.url, { key: nextKey("child-fail"), fn: "builtin.fail", args: ["boom in a child"], annotations: { executor: "processes" } });
    expect(body.error).toBe("Error: boom in a child");
    expect(body.traceback).toContain("boom in a child");
  }, 30_000);

  test("a child that dies fails its task with a clear error and is replaced", async () => {
    const before = new Set<number>();
    for (let i = 0; i < 4; i++) {
      before.add((await runTask(cluster.url, { key: nextKey("pid"), fn: "wb-cpu.pid", args: [], annotations: { executor: "processes" } })).value);
    }
    const died = await runTask(cluster.url, { key: nextKey("die"), fn: "wb-cpu.die", args: [], annotations: { executor: "processes" } });
    expect(died.error).toMatch(/Task "wb-cpu\.die" failed: executor child process \d+ of process pool "processes" died \(exit code 3\)/);
    const deadline = Date.now() + 10_000;
    let fresh: number | undefined;
    while (fresh === undefined && Date.now() < deadline) {
      const pid = (await runTask(cluster.url, { key: nextKey("pid"), fn: "wb-cpu.pid", args: [], annotations: { executor: "processes" } })).value;
      if (!before.has(pid)) fresh = pid;
    }
    expect(fresh).toBeNumber();
    expect(fresh).not.toBe(worker.pid);
  }, 30_000);

  test("unregistering the pool stops its child processes", async () => {
    const pids = new Set<number>();
    for (let i = 0; i < 4; i++) {
      pids.add((await runTask(cluster.url, { key: nextKey("pid"), fn: "wb-cpu.pid", args: [], annotations: { executor: "processes" } })).value);
    }
    expect((await api(cluster.url, "/api/v1/plugins/worker/process-pool", { method: "DELETE" })).status).toBe(204);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitFor("the pool's child processes to exit", () => ![...pids].some(alive), { timeoutMs: 5_000, intervalMs: 50 });
    const after = await runTask(cluster.url, { key: nextKey("closed"), fn: "wb-cpu.pid", args: [], annotations: { executor: "processes" } });
    expect(after.error).toContain('Unknown executor "processes"');
  }, 30_000);

  test("under Deno from source, tasks run in the pool's child processes", async () => {
    const deno = await startCluster({ workers: 1, flavor: "deno", workerArgs: ["--nthreads", "2", "--tasks", join(fixtures, "wb-cpu.ts")] });
    try {
      const res = await api(deno.url, "/api/v1/plugins", { body: { role: "worker", use: "process-pool", size: 2 } });
      expect(res.status).toBe(201);
      const tasks = [0, 1].map((i) => ({ key: `deno-spin-${i}`, fn: "wb-cpu.spin", args: [300], annotations: { executor: "processes" } }));
      expect((await api(deno.url, "/api/v1/graph", { body: { tasks, keys: tasks.map((t) => t.key) } })).status).toBe(202);
      const pids = new Set<number>();
      for (const t of tasks) pids.add((await api(deno.url, `/api/v1/results/${t.key}?timeout=30`)).body.value.pid);
      expect(pids.size).toBe(2);
      const own = await runTask(deno.url, { key: nextKey("deno-own"), fn: "builtin.pid", args: [] }, 30);
      expect(pids.has(own.value)).toBe(false);
    } finally {
      await deno.stop();
    }
  }, 90_000);
});
