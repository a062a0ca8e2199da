/**
 * Dask features users reach for when they move over, against the built binary: a URL preload
 * with options and a nanny preload, module plugins that import their own files and installed
 * packages, upload-directory to the scheduler and the workers, measured transition spans
 * (`startstops`), the task state scheduler plugins read, and `retire_workers`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { setBuiltins } from "../lib/plugins/registry.ts";
import { builtinPlugins } from "../plugins/mod.ts";
import { api, collectEvents, replayEvents, runCli, startCluster, startProcess, stopAll, tempDir, waitFor } from "../testkit/mod.ts";

afterAll(stopAll);

// The client ships upload-directory's files from the built-in's declaration, handed in as the CLI does.
setBuiltins(builtinPlugins);

/** A module that records each clusterSetup call (role and options) in a file named by `options.out`. */
const recordingPreload = `
import { appendFileSync } from "node:fs";
export function clusterSetup(server, options) {
  appendFileSync(options.out, JSON.stringify({ role: server.role, options }) + "\\n");
}
`;

function lines(path: string): any[] {
  return existsSync(path) ? readFileSync(path, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
}

describe("URL preloads", () => {
  let server: Server;
  let base = "";
  let fetches = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === "/setup.ts") {
        fetches++;
        res.writeHead(200, { "content-type": "text/typescript" });
        res.end(recordingPreload);
      } else {
        res.writeHead(404);
        res.end("no such module");
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  test("--preload URL with --preload-options runs clusterSetup(server, options) on the scheduler, the worker and, with --preload-nanny, the nanny", async () => {
    const dir = tempDir();
    const out = join(dir, "setup.jsonl");
    const options = JSON.stringify({ out, level: 3 });
    const cluster = await startCluster({
      workers: 0,
      nanny: true,
      schedulerArgs: ["--preload", `${base}/setup.ts`, "--preload-options", options],
      workerArgs: ["--preload", `${base}/setup.ts`, "--preload-nanny", `${base}/setup.ts`, "--preload-options", options],
    });
    try {
      await cluster.addWorker();
      await waitFor("three clusterSetup calls", () => lines(out).length >= 3, 10_000);
      const calls = lines(out);
      expect(calls.map((c) => c.role).sort()).toEqual(["nanny", "scheduler", "worker"]);
      for (const c of calls) expect(c.options).toEqual({ out, level: 3 });
      // One fetch per process that preloads it, at its start.
      expect(fetches).toBe(3);
    } finally {
      await cluster.stop();
    }
  });

  test("a URL preload that cannot be fetched stops the start with a one-line error naming the URL, exit code 1", async () => {
    const r = await runCli(["scheduler", "--port", "0", "--preload", `${base}/missing.ts`]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n").filter((l) => l.startsWith("cluster:"))).toEqual([
      `cluster: Cannot fetch preload "${base}/missing.ts": HTTP 404 Not Found`,
    ]);
  });

  test("an https preload is fetched trusting --tls-ca, and refused without it", async () => {
    const dir = tempDir();
    const certs = join(dir, "certs");
    expect((await runCli(["tls", "init", certs])).code).toBe(0);
    const https = createHttpsServer({ cert: readFileSync(join(certs, "scheduler.pem")), key: readFileSync(join(certs, "scheduler-key.pem")) }, (_req, res) => {
      res.writeHead(200, { "content-type": "text/typescript" });
      res.end(recordingPreload);
    });
    await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
    const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/setup.ts`;
    const out = join(dir, "setup.jsonl");
    try {
      const scheduler = await startProcess(["scheduler", "--port", "0", "--preload", url, "--preload-options", JSON.stringify({ out }), "--tls-ca", join(certs, "ca.pem")]);
      expect(lines(out).map((c) => c.role)).toEqual(["scheduler"]);
      await scheduler.stop();
      const untrusted = await runCli(["scheduler", "--port", "0", "--preload", url]);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toContain(`Cannot fetch preload "${url}"`);
    } finally {
      await new Promise<void>((r) => https.close(() => r()));
    }
  });

  test("--preload-options that is not a JSON object is a usage error naming the flag, exit code 2", async () => {
    for (const bad of ["{nope", "[1]"]) {
      const r = await runCli(["scheduler", "--port", "0", "--preload-options", bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`Invalid value for "--preload-options"`);
    }
  });
});

const replay = (url: string, topic: string) => replayEvents(url, topic);

describe("module plugins with their own files and packages", () => {
  test("a two-file worker plugin registered over the API reaches a worker that joins after its files are gone", async () => {
    const dir = tempDir();
    mkdirSync(join(dir, "lib"));
    writeFileSync(join(dir, "lib", "helper.ts"), `export const greeting: string = "hello from a helper";\n`);
    writeFileSync(join(dir, "more.ts"), `export const more = 42;\n`);
    writeFileSync(
      join(dir, "two-file.ts"),
      `import type { WorkerApi } from "./types-only.ts";\nimport { greeting } from "./lib/helper.ts";\n` +
        `export default {\n  name: "two-file",\n  async setup(worker: WorkerApi) {\n` +
        `    const { more } = await import("./more.ts");\n    worker.logEvent("two-file", { greeting, more, worker: worker.name });\n  },\n};\n`,
    );
    const cluster = await startCluster({ workers: 0 });
    try {
      const r = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: join(dir, "two-file.ts") } });
      expect(r.body).toMatchObject({ name: "two-file" });
      expect(r.status).toBe(201);
      rmSync(dir, { recursive: true, force: true });
      await cluster.addWorker();
      const events = await waitFor("the plugin's setup event", async () => {
        const e = await replay(cluster.url, "two-file");
        return e.length > 0 ? e : null;
      });
      expect(events[0]).toMatchObject({ greeting: "hello from a helper", more: 42 });
    } finally {
      await cluster.stop();
    }
  });

  test("a worker plugin imports a package that package-install put on the worker (an npm-packed folder)", async () => {
    const dir = tempDir();
    const pkg = join(dir, "tiny-shout");
    mkdirSync(pkg);
    writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "tiny-shout", version: "1.0.0", type: "module", main: "index.js" }));
    writeFileSync(join(pkg, "index.js"), `export function shout(s) { return s.toUpperCase() + "!"; }\n`);
    const packed = await runCli(["pack", "--pack-destination", dir], { command: ["npm"], cwd: pkg });
    expect(packed.code).toBe(0);
    const tarball = join(dir, packed.stdout.trim().split("\n").pop()!);
    writeFileSync(
      join(dir, "uses-pkg.ts"),
      `import { shout } from "tiny-shout";\nexport default { name: "uses-pkg", setup(worker: { logEvent(t: string, m: object): void }) { worker.logEvent("uses-pkg", { value: shout("hi") }); } };\n`,
    );
    const cluster = await startCluster({ workers: 1 });
    try {
      const install = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: "package-install", packages: [tarball], installer: "npm" } });
      expect(install.status).toBe(201);
      const r = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: join(dir, "uses-pkg.ts") } });
      expect(r.status).toBe(201);
      const events = await waitFor("the plugin's setup event", async () => {
        const e = await replay(cluster.url, "uses-pkg");
        return e.length > 0 ? e : null;
      });
      expect(events[0].value).toBe("HI!");
    } finally {
      await cluster.stop();
    }
  });
});

describe("retiring workers", () => {
  test("POST /api/v1/workers/retire asks validWorkersDownscaling, moves held data off, closes the worker and its nanny, and the results stay available", async () => {
    const dir = tempDir();
    const out = join(dir, "downscaling.jsonl");
    writeFileSync(join(dir, "protect.ts"), `import { appendFileSync } from "node:fs";
export function clusterSetup(scheduler: unknown, options: { protect: string; out: string }) {
  (scheduler as { addPlugin(p: object): Promise<void> }).addPlugin({
    name: "protect",
    validWorkersDownscaling(_s: unknown, workers: string[]) {
      appendFileSync(options.out, JSON.stringify(workers) + "\\n");
      return workers.filter((w) => w !== options.protect);
    },
  });
}
`);
    writeFileSync(join(dir, "big.ts"), `export function make(n: number, tag: string): string { return tag + "x".repeat(n); }\n`);
    const cluster = await startCluster({
      workers: 0,
      nanny: true,
      schedulerArgs: ["--preload", join(dir, "protect.ts"), "--preload-options", JSON.stringify({ protect: "protected", out })],
      workerArgs: ["--tasks", join(dir, "big.ts")],
    });
    try {
      const leaving = await cluster.addWorker();
      await cluster.addWorker();
      const kept = await startProcess(["worker", cluster.url, "--nanny", "--name", "protected", "--tasks", join(dir, "big.ts")]);
      const names = (await api(cluster.url, "/api/v1/info")).body.workers.map((w: { name: string }) => w.name) as string[];
      expect(names).toContain("protected");
      const nannies = (await api(cluster.url, "/api/v1/info")).body.nannies as Array<{ name: string; pid: number }>;
      const target = names.find((n) => nannies.some((x) => x.name === n && x.pid === leaving.pid))!;
      expect(target).toBeTruthy();
      // Results of 100 kB (over the inline limit: only the worker holds them) pinned to the one to retire.
      const keys = ["big-0", "big-1", "big-2"];
      const graph = { tasks: keys.map((k) => ({ key: k, fn: "big.make", args: [100_000, k], annotations: { workers: [target] } })), keys };
      expect((await api(cluster.url, "/api/v1/graph", { body: graph })).status).toBe(202);
      for (const k of keys) expect((await api(cluster.url, `/api/v1/results/${k}?timeout=20`)).status).toBe(200);
      expect((await api(cluster.url, "/api/v1/tasks/big-0")).body.whoHas).toEqual([target]);

      const r = await api(cluster.url, "/api/v1/workers/retire", { body: { workers: [target, "protected", "no-such-worker"] } });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ retired: [target] });
      expect(lines(out)).toEqual([[target, "protected"]]);
      // Its nanny exits instead of restarting it.
      expect(await leaving.exited).toBe(0);
      const after = (await api(cluster.url, "/api/v1/info")).body;
      expect(after.workers.map((w: { name: string }) => w.name)).not.toContain(target);
      expect(after.workers.map((w: { name: string }) => w.name)).toContain("protected");
      for (const k of keys) {
        const res = await api(cluster.url, `/api/v1/results/${k}?timeout=5`);
        expect(res.status).toBe(200);
        expect(res.body.value.length).toBe(100_000 + k.length);
        expect((await api(cluster.url, `/api/v1/tasks/${k}`)).body.whoHas).not.toContain(target);
      }
      await kept.stop();
    } finally {
      await cluster.stop();
    }
  });
});

describe("transition spans and task state", () => {
  test("transitions into memory and erred carry startstops (compute, and transfer of fetched dependencies) to events, GET /api/v1/tasks, scheduler and worker plugins, and scheduler.tasks has prefix, group and whoWants", async () => {
    const dir = tempDir();
    const schedOut = join(dir, "scheduler.jsonl");
    const workerOut = join(dir, "worker.jsonl");
    writeFileSync(join(dir, "big.ts"), `export function make(n: number, tag: string): string { return tag + "x".repeat(n); }
export function size(s: string): number { return s.length; }
`);
    writeFileSync(join(dir, "sched.ts"), `import { appendFileSync } from "node:fs";
let scheduler: any;
export default {
  name: "spans",
  start(s: unknown) { scheduler = s; },
  transition(key: string, start: string, finish: string, info: any) {
    if (finish !== "memory" && finish !== "erred") return;
    const ts = scheduler.tasks.get(key);
    appendFileSync(${JSON.stringify(schedOut)}, JSON.stringify({ key, finish, info, prefix: ts.prefix, group: ts.group,
      whoWants: [...ts.whoWants], startstops: ts.startstops, state: ts.state }) + "\\n");
  },
};
`);
    writeFileSync(join(dir, "wplug.ts"), `import { appendFileSync } from "node:fs";
export default {
  name: "wspans",
  transition(key: string, start: string, finish: string, info: any) {
    if (finish === "memory" || finish === "error") appendFileSync(${JSON.stringify(workerOut)}, JSON.stringify({ key, finish, info }) + "\\n");
  },
};
`);
    const cluster = await startCluster({ workers: 2, workerArgs: ["--tasks", join(dir, "big.ts")], schedulerArgs: ["--preload", join(dir, "sched.ts")] });
    try {
      expect((await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: join(dir, "wplug.ts") } })).status).toBe(201);
      const names = (await api(cluster.url, "/api/v1/info")).body.workers.map((w: { name: string }) => w.name) as string[];
      const events = collectEvents(cluster.url, "topic=transition", (es) => es.filter((e) => e.finish === "memory" || e.finish === "erred").length >= 3);
      await events.ready;
      const graph = {
        tasks: [
          { key: "make-abcd1234-0", fn: "big.make", args: [100_000, "a"], annotations: { workers: [names[0]] } },
          { key: "size-abcd1234-0", fn: "big.size", args: [{ $ref: "make-abcd1234-0" }], annotations: { workers: [names[1]] } },
          { key: "bad-0", fn: "builtin.fail", args: ["boom"] },
        ],
        keys: ["size-abcd1234-0", "bad-0"],
      };
      expect((await api(cluster.url, "/api/v1/graph", { body: graph })).status).toBe(202);
      const seen = (await events.done).filter((e) => e.finish === "memory" || e.finish === "erred");
      const byKey = Object.fromEntries(seen.map((e) => [e.key, e]));
      const actions = (e: any) => e.startstops.map((s: any) => s.action);
      expect(actions(byKey["make-abcd1234-0"])).toEqual(["compute"]);
      expect(actions(byKey["size-abcd1234-0"])).toEqual(["transfer", "compute"]);
      expect(byKey["bad-0"]).toMatchObject({ finish: "erred" });
      expect(typeof byKey["bad-0"].worker).toBe("string");
      expect(actions(byKey["bad-0"])).toEqual(["compute"]);
      const now = Date.now() / 1000;
      for (const e of seen) {
        for (const s of e.startstops) {
          expect(s.start).toBeLessThanOrEqual(s.stop);
          expect(Math.abs(now - s.stop)).toBeLessThan(60);
        }
      }
      const task = (await api(cluster.url, "/api/v1/tasks/size-abcd1234-0")).body;
      expect(task.startstops).toEqual(byKey["size-abcd1234-0"].startstops);
      // Scheduler plugins: the same spans in info and in scheduler.tasks, with Dask's prefix and group.
      const recs = lines(schedOut);
      const size = recs.find((r) => r.key === "size-abcd1234-0")!;
      expect(size.info.startstops).toEqual(task.startstops);
      expect(size.startstops).toEqual(task.startstops);
      expect(size).toMatchObject({ prefix: "size", group: "size-abcd1234", state: "memory", whoWants: ["http"] });
      expect(recs.find((r) => r.key === "bad-0")).toMatchObject({ finish: "erred", prefix: "bad", group: "bad" });
      // Worker plugins: →memory and →error with the spans of that worker.
      await waitFor("worker plugin records", () => lines(workerOut).length >= 3);
      const w = Object.fromEntries(lines(workerOut).map((r) => [r.key, r]));
      expect(w["size-abcd1234-0"].info.startstops.map((s: any) => s.action)).toEqual(["transfer", "compute"]);
      expect(w["bad-0"]).toMatchObject({ finish: "error", info: { startstops: [{ action: "compute" }] } });
    } finally {
      await cluster.stop();
    }
  });
});

describe("upload-directory targets", () => {
  test("several directories go side by side to the nannies, the scheduler, or both, each under its own name", async () => {
    const dir = tempDir();
    for (const name of ["one", "two", "three"]) {
      mkdirSync(join(dir, name, "sub"), { recursive: true });
      writeFileSync(join(dir, name, "sub", `${name}.txt`), `file of ${name}`);
    }
    writeFileSync(join(dir, "where.ts"), `export function clusterSetup(s: { localDirectory: string; logEvent(t: string, m: object): void }) { s.logEvent("where", { dir: s.localDirectory }); }\n`);
    const nannyDir = join(dir, "nanny");
    const cluster = await startCluster({ workers: 1, nanny: true, schedulerArgs: ["--preload", join(dir, "where.ts")], workerArgs: ["--local-directory", nannyDir] });
    const client = await Client.connect(cluster.url);
    try {
      expect((await client.registerPlugin({ role: "nanny", use: "upload-directory", path: join(dir, "one"), target: "both" })).name).toBe("upload-directory-one");
      expect((await client.registerPlugin({ role: "nanny", use: "upload-directory", path: join(dir, "two") })).name).toBe("upload-directory-two");
      expect((await client.registerPlugin({ role: "nanny", use: "upload-directory", path: join(dir, "three"), target: "scheduler" })).name).toBe("upload-directory-three");
      const plugins = (await api(cluster.url, "/api/v1/plugins")).body;
      expect(plugins.nanny.map((p: { name: string }) => p.name)).toEqual(["upload-directory-one", "upload-directory-two"]);
      expect(plugins.scheduler.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["upload-directory-one", "upload-directory-three"]));
      expect(plugins.scheduler.map((p: { name: string }) => p.name)).not.toContain("upload-directory-two");
      const schedulerDir = (await replay(cluster.url, "where"))[0].dir as string;
      const onScheduler = (name: string) => existsSync(join(schedulerDir, name, "sub", `${name}.txt`));
      const onNanny = (name: string) => existsSync(join(nannyDir, name, "sub", `${name}.txt`));
      expect([onScheduler("one"), onScheduler("two"), onScheduler("three")]).toEqual([true, false, true]);
      expect([onNanny("one"), onNanny("two"), onNanny("three")]).toEqual([true, true, false]);
      expect(readFileSync(join(nannyDir, "two", "sub", "two.txt"), "utf8")).toBe("file of two");
      const bad = await client.registerPlugin({ role: "nanny", use: "upload-directory", path: join(dir, "one"), target: "moon" }).catch((e) => e);
      expect(String(bad)).toContain(`must be "workers", "scheduler" or "both"`);
    } finally {
      await client.close();
      await cluster.stop();
    }
  });
});
