/**
 * Plugin rollout, end to end with the real binary: a registration is an epoch (workers and
 * nannies that join at any point of a slow or failing registration end where the others end),
 * per-worker and per-nanny plugin status, quarantine of a worker whose plugin failed to set up
 * and its return, configured plugins started before anything is served, and a restart that
 * answers with the workers that did not come back.
 *
 * @module
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { validateGraph } from "../lib/scheduler/graph.ts";
import { type Effects, SchedulerState } from "../lib/scheduler/state.ts";
import { api, authHeaders, freePort, type Proc, startCluster, startProcess, stopAll, tempDir } from "../testkit/mod.ts";
import { compute, lines, register, sleep, slowPreload, startNamedWorker, until, workerRecorder } from "./_conformance.ts";

afterAll(stopAll);

const suffix = String(process.pid);

/**
 * A worker plugin module, shipped as source: `setup` waits `delayMs`, then throws for workers
 * whose name starts with `failFor`, else records; `teardown` waits `teardownMs` and records.
 */
function recorderSource(out: string, options: { name: string; delayMs?: number; failFor?: string; teardownMs?: number }): string {
  return `import { appendFileSync } from "node:fs";
const out = ${JSON.stringify(out)};
const rec = (hook, who, extra = {}) => appendFileSync(out, JSON.stringify({ hook, who, t: Date.now(), ...extra }) + "\\n");
export default {
  name: ${JSON.stringify(options.name)},
  async setup(server) {
    await new Promise((r) => setTimeout(r, ${options.delayMs ?? 0}));
    if (${JSON.stringify(options.failFor ?? null)} !== null && server.name.startsWith(${JSON.stringify(options.failFor ?? "")})) {
      throw new Error("refused on " + server.name);
    }
    rec("setup", server.name);
  },
  async teardown(server) {
    await new Promise((r) => setTimeout(r, ${options.teardownMs ?? 0}));
    rec("teardown", server.name);
  },
};
`;
}

/** Starts named workers at the given delays (ms from now), all at once; resolves once all are ready. */
function joinAt(url: string, delays: number[], prefix: string, nanny = false): Promise<Proc[]> {
  return Promise.all(delays.map(async (d, i) => {
    await sleep(d);
    return await startNamedWorker(url, `${prefix}${i}-${suffix}`, [], nanny);
  }));
}

async function infoWorker(url: string, name: string): Promise<any> {
  return (await api(url, "/api/v1/info")).body.workers.find((w: any) => w.name === name);
}

async function pluginStatus(url: string, role: "worker" | "nanny", plugin: string): Promise<Record<string, string> | undefined> {
  return (await api(url, "/api/v1/plugins")).body[role].find((p: any) => p.name === plugin)?.status;
}

describe("quarantine in the state machine", () => {
  test("a quarantined worker gets no task, keeps what it runs, and takes the waiting tasks once let back", () => {
    const state = new SchedulerState();
    const client = state.addClient("c");
    const computes: string[] = [];
    const drain = (fx: Effects) => {
      for (let i = 0; i < fx.messageCount; i++) {
        const msg = fx.messages[i];
        if (msg.op === "compute") computes.push(`${fx.recipients[i].name}:${msg.key}`);
      }
      fx.clear();
    };
    const ws = state.addWorker({ name: "a", address: "http://a", nthreads: 1, nanny: false, modules: [], pid: 1 }, 0);
    drain(state.quarantineWorker(ws, "worker plugin \"p\" failed to set up: no"));
    expect(ws.status).toBe("quarantined");
    drain(state.updateGraph(client, validateGraph({ tasks: [{ key: "x", fn: "builtin.inc", args: [1] }], keys: ["x"] }, { existing: () => false, knownModules: null }), "g"));
    expect(computes).toEqual([]);
    expect(state.tasks.get("x")?.state).toBe("no-worker");
    drain(state.workerReady(ws, "back"));
    expect(ws.status).toBe("running");
    expect(ws.quarantine).toBeNull();
    expect(computes).toEqual(["a:x"]);
    // Quarantined while running: what it runs stays; nothing new comes.
    drain(state.quarantineWorker(ws, "again"));
    expect(state.tasks.get("x")?.state).toBe("processing");
    drain(state.updateGraph(client, validateGraph({ tasks: [{ key: "y", fn: "builtin.inc", args: [2] }], keys: ["y"] }, { existing: (k) => state.tasks.has(k), knownModules: null }), "g2"));
    expect(computes).toEqual(["a:x"]);
  });
});

describe("a registration is an epoch", () => {
  test("workers that join at every point of a slow (3 s) registration get the plugin before any task, and the 201 waits for them", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      const registering = register(cluster.url, { role: "worker", use: workerRecorder, out, setupDelayMs: 3_000 });
      // Early, in the middle and at the end of the running worker's 3 s setup.
      const joining = joinAt(cluster.url, [200, 1_500, 2_800], "epoch-");
      const res = await registering;
      // The first joiner registered well within the registration: the 201 waited for its setup.
      const atAnswer = lines(out).filter((r) => r.hook === "setup").map((r) => r.worker);
      expect({ status: res.status, error: res.body?.error }).toEqual({ status: 201, error: undefined });
      expect(atAnswer).toContain(`epoch-0-${suffix}`);
      const joiners = await joining;
      // One more right after the answer: it gets the plugin in its welcome, as any later worker.
      joiners.push(await startNamedWorker(cluster.url, `epoch-after-${suffix}`));
      try {
        const names = [0, 1, 2].map((i) => `epoch-${i}-${suffix}`);
        for (const name of [...names, `epoch-after-${suffix}`]) {
          const key = `on-${name}`;
          const r = await compute(cluster.url, [{ key, fn: "builtin.inc", args: [1], annotations: { workers: [name] } }], [key]);
          expect(r.body.value).toBe(2);
          const recs = lines(out).filter((x) => x.worker === name);
          expect(recs[0].hook).toBe("setup");
          expect(recs.some((x) => x.key === key)).toBe(true);
        }
        const status = await pluginStatus(cluster.url, "worker", "conf-worker");
        expect(Object.values(status ?? {}).every((s) => s === "ok")).toBe(true);
        expect(Object.keys(status ?? {}).length).toBe(5);
      } finally {
        await Promise.all(joiners.map((w) => w.stop()));
      }
    } finally {
      await cluster.stop();
    }
  }, 90_000);

  test("a registration that fails on a running worker rolls back everywhere, on the workers that joined meanwhile too, and every failure is logged with the plugin's name", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 0 });
    const bad = [await startNamedWorker(cluster.url, `bad-a-${suffix}`), await startNamedWorker(cluster.url, `bad-b-${suffix}`)];
    try {
      const source = recorderSource(out, { name: "fragile", delayMs: 2_000, failFor: "bad-" });
      const registering = register(cluster.url, { role: "worker", use: "./fragile.ts", source });
      const joiners = await joinAt(cluster.url, [200, 1_200], "rb-");
      try {
        const res = await registering;
        expect(res.status).toBe(422);
        // Every failure, not only the first.
        expect(res.body.error).toMatch(new RegExp(`bad-a-${suffix}: [^;]*refused on bad-a-${suffix}`));
        expect(res.body.error).toMatch(new RegExp(`bad-b-${suffix}: [^;]*refused on bad-b-${suffix}`));
        const logs = cluster.scheduler.stderr.join("");
        expect(logs).toMatch(new RegExp(`"fragile".*bad-a-${suffix}.*refused on bad-a-${suffix}`));
        expect(logs).toMatch(new RegExp(`"fragile".*bad-b-${suffix}.*refused on bad-b-${suffix}`));
        // The joiners had it set up, then torn down by the rollback.
        for (let i = 0; i < 2; i++) {
          const name = `rb-${i}-${suffix}`;
          await until(`the rollback on ${name}`, () => lines(out).some((r) => r.hook === "teardown" && r.who === name), 10_000);
          expect(lines(out).filter((r) => r.who === name).map((r) => r.hook)).toEqual(["setup", "teardown"]);
          expect((await infoWorker(cluster.url, name)).status).toBe("running");
        }
        expect((await api(cluster.url, "/api/v1/plugins")).body.worker).toEqual([]);
        for (const w of ["bad-a", "bad-b"]) expect((await infoWorker(cluster.url, `${w}-${suffix}`)).status).toBe("running");
      } finally {
        await Promise.all(joiners.map((w) => w.stop()));
      }
    } finally {
      await Promise.all(bad.map((w) => w.stop()));
      await cluster.stop();
    }
  }, 90_000);

  test("a worker that joins during a registration and fails its setup fails the registration, and the rollback reaches the running worker", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 0 });
    const good = await startNamedWorker(cluster.url, `good-${suffix}`);
    try {
      const source = recorderSource(out, { name: "fragile", delayMs: 2_000, failFor: "bad-" });
      const registering = register(cluster.url, { role: "worker", use: "./fragile.ts", source });
      const [joiner] = await joinAt(cluster.url, [500], "bad-joiner-");
      try {
        const res = await registering;
        expect(res.status).toBe(422);
        expect(res.body.error).toContain(`refused on bad-joiner-0-${suffix}`);
        await until("the rollback on the running worker", () => lines(out).some((r) => r.hook === "teardown" && r.who === `good-${suffix}`), 10_000);
        expect((await api(cluster.url, "/api/v1/plugins")).body.worker).toEqual([]);
        // Not quarantined: the plugin that failed is gone.
        await until("the joiner running", async () => (await infoWorker(cluster.url, `bad-joiner-0-${suffix}`))?.status === "running", 10_000);
      } finally {
        await joiner.stop();
      }
    } finally {
      await good.stop();
      await cluster.stop();
    }
  }, 90_000);

  test("a worker that joins during a slow removal never keeps the plugin", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    try {
      const source = recorderSource(out, { name: "slow-down", teardownMs: 2_000 });
      expect((await register(cluster.url, { role: "worker", use: "./slow-down.ts", source })).status).toBe(201);
      const removing = api(cluster.url, "/api/v1/plugins/worker/slow-down", { method: "DELETE" });
      const joiners = await joinAt(cluster.url, [100, 1_000], "rm-");
      try {
        expect((await removing).status).toBe(204);
        await sleep(300);
        for (let i = 0; i < 2; i++) {
          const hooks = lines(out).filter((r) => r.who === `rm-${i}-${suffix}`).map((r) => r.hook);
          // Either never set up, or set up from its welcome and then torn down.
          expect([[], ["setup", "teardown"]]).toContainEqual(hooks);
        }
        expect((await api(cluster.url, "/api/v1/plugins")).body.worker).toEqual([]);
      } finally {
        await Promise.all(joiners.map((w) => w.stop()));
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);
});

describe("status and quarantine", () => {
  test("a worker whose plugin fails to set up when it joins is quarantined with the message, gets no task, and returns to work when the plugin is replaced by one that sets up", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 1 });
    const name = `q-${suffix}`;
    try {
      expect((await register(cluster.url, { role: "worker", use: "./picky.ts", source: recorderSource(out, { name: "picky", failFor: "q-" }) })).status).toBe(201);
      const w = await startNamedWorker(cluster.url, name);
      try {
        const info = await until("the quarantined worker", async () => {
          const x = await infoWorker(cluster.url, name);
          return x?.status === "quarantined" ? x : null;
        }, 10_000);
        expect(info.quarantine).toContain(`refused on ${name}`);
        expect(info.quarantine).toContain(`"picky"`);
        const status = await pluginStatus(cluster.url, "worker", "picky");
        expect(status?.[name]).toMatch(new RegExp(`^failed: .*refused on ${name}$`));
        expect(Object.values(status ?? {}).filter((s) => s === "ok").length).toBe(1);
        // Logged with the plugin's name and the message, and counted.
        expect(cluster.scheduler.stderr.join("")).toMatch(new RegExp(`Plugin "${name}/picky" failed in setup: .*refused on ${name}`));
        expect((await fetch(`${cluster.url}/metrics`, { headers: authHeaders() }).then((r) => r.text()))).toMatch(/cluster_plugin_errors_total [1-9]/);
        const keys = Array.from({ length: 6 }, (_, i) => `q-anywhere-${i}`);
        await compute(cluster.url, keys.map((key) => ({ key, fn: "builtin.inc", args: [1] })), keys);
        for (const key of keys) {
          expect((await api(cluster.url, `/api/v1/results/${key}?timeout=20`)).status).toBe(200);
          expect((await api(cluster.url, `/api/v1/tasks/${key}`)).body.worker).not.toBe(name);
        }
        // Replaced by a version that sets up everywhere: the worker is back.
        expect((await register(cluster.url, { role: "worker", use: "./picky.ts", source: recorderSource(out, { name: "picky" }) })).status).toBe(201);
        await until("the worker back at work", async () => (await infoWorker(cluster.url, name))?.status === "running", 10_000);
        expect((await infoWorker(cluster.url, name)).quarantine).toBeUndefined();
        expect((await pluginStatus(cluster.url, "worker", "picky"))?.[name]).toBe("ok");
        const r = await compute(cluster.url, [{ key: "q-pinned", fn: "builtin.inc", args: [1], annotations: { workers: [name] } }], ["q-pinned"]);
        expect(r.body.value).toBe(2);
      } finally {
        await w.stop();
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("a quarantined worker returns to work when the failing plugin is removed", async () => {
    const out = join(tempDir(), "w.jsonl");
    const cluster = await startCluster({ workers: 0 });
    const name = `q2-${suffix}`;
    try {
      expect((await register(cluster.url, { role: "worker", use: "./picky.ts", source: recorderSource(out, { name: "picky", failFor: "q2-" }) })).status).toBe(201);
      const w = await startNamedWorker(cluster.url, name);
      try {
        await until("the quarantined worker", async () => (await infoWorker(cluster.url, name))?.status === "quarantined", 10_000);
        // The only worker is quarantined: the task waits.
        expect((await api(cluster.url, "/api/v1/graph", { body: { tasks: [{ key: "q2-wait", fn: "builtin.inc", args: [1] }], keys: ["q2-wait"] } })).status).toBe(202);
        expect((await api(cluster.url, "/api/v1/results/q2-wait?timeout=1")).status).toBe(408);
        expect((await api(cluster.url, "/api/v1/plugins/worker/picky", { method: "DELETE" })).status).toBe(204);
        const r = await api(cluster.url, "/api/v1/results/q2-wait?timeout=20");
        expect(r.body.value).toBe(2);
        expect((await infoWorker(cluster.url, name)).status).toBe("running");
      } finally {
        await w.stop();
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("a quarantined worker returns to work when an idempotent plugin registered again sets up on it this time", async () => {
    const dir = tempDir();
    const marker = join(dir, "ready");
    const source = `import { existsSync } from "node:fs";
export default { name: "flaky", idempotent: true, setup(worker) {
  if (worker.name.startsWith("q3-") && !existsSync(${JSON.stringify(marker)})) throw new Error("not yet on " + worker.name);
} };`;
    const cluster = await startCluster({ workers: 1 });
    const name = `q3-${suffix}`;
    try {
      expect((await register(cluster.url, { role: "worker", use: "./flaky.ts", source })).status).toBe(201);
      const w = await startNamedWorker(cluster.url, name);
      try {
        await until("the quarantined worker", async () => (await infoWorker(cluster.url, name))?.status === "quarantined", 10_000);
        writeFileSync(marker, "");
        const again = await register(cluster.url, { role: "worker", use: "./flaky.ts", source });
        expect(again.body.result).toBe("kept");
        expect((await infoWorker(cluster.url, name)).status).toBe("running");
        expect((await pluginStatus(cluster.url, "worker", "flaky"))?.[name]).toBe("ok");
      } finally {
        await w.stop();
      }
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  test("a nanny whose plugin fails to set up has its worker quarantined, the status listed per nanny, until the plugin is removed", async () => {
    const out = join(tempDir(), "n.jsonl");
    const cluster = await startCluster({ workers: 0 });
    const good = await startNamedWorker(cluster.url, `ngood-${suffix}`, [], true);
    const name = `nq-${suffix}`;
    try {
      const source = recorderSource(out, { name: "nanny-picky", failFor: "nq-" });
      expect((await register(cluster.url, { role: "nanny", use: "./nanny-picky.ts", source })).status).toBe(201);
      const n = await startNamedWorker(cluster.url, name, [], true);
      try {
        const info = await until("the quarantined worker", async () => {
          const x = await infoWorker(cluster.url, name);
          return x?.status === "quarantined" ? x : null;
        }, 15_000);
        expect(info.quarantine).toContain(`refused on ${name}`);
        const status = await pluginStatus(cluster.url, "nanny", "nanny-picky");
        expect(status?.[`ngood-${suffix}`]).toBe("ok");
        expect(status?.[name]).toMatch(new RegExp(`^failed: .*refused on ${name}$`));
        const nannyInfo = (await api(cluster.url, "/api/v1/info")).body.nannies.find((x: any) => x.name === name);
        expect(nannyInfo.quarantine).toContain("refused on");
        expect(cluster.scheduler.stderr.join("")).toMatch(new RegExp(`Plugin "${name}/nanny-picky" failed in setup: .*refused on ${name}`));
        const r = await compute(cluster.url, [{ key: "nq-any", fn: "builtin.inc", args: [1] }], ["nq-any"]);
        expect(r.body.value).toBe(2);
        expect((await api(cluster.url, "/api/v1/tasks/nq-any")).body.worker).toBe(`ngood-${suffix}`);
        expect((await api(cluster.url, "/api/v1/plugins/nanny/nanny-picky", { method: "DELETE" })).status).toBe(204);
        await until("the worker back at work", async () => (await infoWorker(cluster.url, name))?.status === "running", 10_000);
      } finally {
        await n.stop();
      }
    } finally {
      await good.stop();
      await cluster.stop();
    }
  }, 90_000);
});

describe("start-up and restart", () => {
  test("a scheduler's configured plugins have started before it serves a worker: a worker started on its port at once joins after the slow start", async () => {
    const dir = tempDir();
    const out = join(dir, "s.jsonl");
    writeFileSync(join(dir, "slow-start.ts"), `import { appendFileSync } from "node:fs";
export default {
  name: "slow-start",
  async start() {
    await new Promise((r) => setTimeout(r, 1500));
    appendFileSync(${JSON.stringify(out)}, JSON.stringify({ hook: "started", t: Date.now() }) + "\\n");
  },
  addWorker(_s, worker) {
    appendFileSync(${JSON.stringify(out)}, JSON.stringify({ hook: "addWorker", worker, t: Date.now() }) + "\\n");
  },
};
`);
    writeFileSync(join(dir, "plugins.toml"), `[[scheduler.plugins]]\nuse = "./slow-start.ts"\n`);
    const port = await freePort();
    const scheduler = startProcess(["scheduler", "--port", String(port), "--plugins", join(dir, "plugins.toml")]);
    scheduler.catch(() => {});
    await sleep(300);
    const worker = startNamedWorker(`http://127.0.0.1:${port}`, `early-${suffix}`);
    worker.catch(() => {});
    const s = await scheduler;
    try {
      expect(lines(out)[0]?.hook).toBe("started");
      const w = await worker;
      try {
        await until("addWorker", () => lines(out).some((r) => r.hook === "addWorker"));
        expect(lines(out).map((r) => r.hook)).toEqual(["started", "addWorker"]);
      } finally {
        await w.stop();
      }
    } finally {
      await s.stop();
    }
  }, 60_000);

  test("restart answers 200 once every nanny's worker is back and running", async () => {
    const cluster = await startCluster({ workers: 2, nanny: true });
    try {
      const before = (await api(cluster.url, "/api/v1/info")).body.workers.map((w: any) => w.pid);
      const res = await api(cluster.url, "/api/v1/restart", { body: {} });
      expect(res.status).toBe(200);
      expect(res.body.missing).toEqual([]);
      expect(res.body.restarted).toBe(2);
      // Back means ready: no polling needed after the answer.
      const workers = (await api(cluster.url, "/api/v1/info")).body.workers;
      expect(workers.map((w: any) => w.status)).toEqual(["running", "running"]);
      for (const w of workers) expect(before).not.toContain(w.pid);
    } finally {
      await cluster.stop();
    }
  }, 90_000);

  test("restart answers 504 naming the worker whose nanny left during the restart", async () => {
    const cluster = await startCluster({ workers: 1, nanny: true });
    // Its worker takes 2 s to start (a slow preload): the nanny is surely gone mid-restart.
    const leaving = await startNamedWorker(cluster.url, `gone-${suffix}`, ["--preload", slowPreload], true);
    try {
      const restarting = api(cluster.url, "/api/v1/restart", { body: {} });
      await sleep(500);
      process.kill(leaving.pid, "SIGKILL");
      const res = await restarting;
      expect(res.status).toBe(504);
      expect(res.body.error).toContain(`gone-${suffix}`);
    } finally {
      await leaving.stop("SIGKILL");
      await cluster.stop();
    }
  }, 90_000);
});
