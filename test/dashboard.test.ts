/**
 * The dashboard: its pure parts in-process (CBOR decoding, progress per prefix, the task stream's
 * lanes, the login cookie, the link), the committed bundle against its sources, the page served
 * the same from the binary and from source under Bun and Deno, and the page itself in a real
 * browser (Debian's chromium driven by playwright-core) against the built binary: login, workers,
 * a graph's prefixes, no console errors. Screenshots go to dist/test-artifacts/.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { encodeFrame } from "../lib/protocol.ts";
import { appJs, sourceHash as committedHash } from "../lib/dashboard/_assets.ts";
import { DashboardFeed, dashboardApp, dashboardLink, hasSession } from "../lib/dashboard/mod.ts";
import { sessionValue } from "../lib/dashboard/_session.ts";
import { ArrayReader, decode } from "../lib/dashboard/ui/cbor.ts";
import { EventRing, keyPrefix, PackedSegments, packSegments, Progress, Rate, TaskStream } from "../lib/dashboard/ui/model.ts";
import { pluginPlaces, statusByPlace } from "../lib/dashboard/ui/plugins.ts";
import { workerCpu, workerHeld, workerMemoryBytes } from "../lib/dashboard/ui/workers.ts";
import { assetsFile, buildAssets, sourceHash } from "../scripts/build-dashboard.ts";
import { api, binary, type Flavor, graphs, root, startCluster, startProcess, stopAll, type TestCluster } from "../testkit/mod.ts";

const chromiumPath = "/usr/bin/chromium";
const artifacts = join(root, "dist", "test-artifacts");

afterAll(stopAll);

describe("dashboard logic", () => {
  test("the CBOR decoder reads, whole or one element at a time, the scheduler's event batches as cbor-x wrote them", () => {
    const events = [
      { seq: 1, topic: "transition", time: 1764460000.123, key: "inc-1", start: "waiting", finish: "processing", stimulusId: "x-1", worker: "w1" },
      { seq: 2, topic: "worker", time: 1764460000.5, action: "add", nested: { list: [1, -2, 3.5, 70000, 2 ** 40], ok: true, none: null } },
      { seq: 3, topic: "log", time: 1.5, message: "héllo ✓ ".repeat(20), empty: "", big: -(2 ** 33) },
    ];
    expect(decode(encodeFrame(events))).toEqual(events);
    const reader = new ArrayReader(encodeFrame(events));
    const read: unknown[] = [];
    while (!reader.done) read.push(reader.next());
    expect(read).toEqual(events);
  });

  test("a key's prefix is the key up to its last dash, as Dask's progress groups tasks", () => {
    expect(keyPrefix("inc-12")).toBe("inc");
    expect(keyPrefix("load-part-3")).toBe("load-part");
    expect(keyPrefix("sum")).toBe("sum");
    expect(keyPrefix("-x")).toBe("-x");
  });

  test("the feed counts done, erred and total per prefix, and keeps finished keys done when they are forgotten", () => {
    const frames: Uint8Array[] = [];
    let seq = 0;
    const feed = new DashboardFeed({ subscribe: () => () => {} }, { intervalMs: 60_000 });
    const detach = feed.attach((f) => frames.push(f));
    const t = (key: string, start: string, finish: string, extra: Record<string, unknown> = {}) =>
      ({ seq: ++seq, topic: "transition", time: 100 + seq / 100, key, start, finish, stimulusId: "s", ...extra });
    const events = [];
    for (let i = 0; i < 3; i++) events.push(t(`inc-${i}`, "released", "waiting"), t(`inc-${i}`, "waiting", "processing", { worker: "w1" }));
    events.push(t("inc-0", "processing", "memory", { worker: "w1" }), t("inc-1", "processing", "erred", { worker: "w1" }));
    events.push(t("inc-0", "memory", "released"), t("inc-0", "released", "forgotten"));
    events.push({ seq: ++seq, topic: "worker", time: 101, action: "add", worker: "w1" });
    feed.fold(events);
    detach();
    // Reattaching gives a snapshot: the feed restarted from the (empty) source.
    const snapshot = decode(frames[0]) as Array<Record<string, any>>;
    expect(snapshot[0].op).toBe("snapshot");
    const again = new DashboardFeed({ subscribe: (sub) => (sub.deliver({ events } as never), () => {}) }, { intervalMs: 60_000 });
    const got: Uint8Array[] = [];
    const off = again.attach((f) => got.push(f));
    const [msg] = decode(got.at(-1)!) as Array<Record<string, any>>;
    off();
    expect(msg.prefixes).toEqual([{ name: "inc", total: 3, waiting: 0, processing: 1, done: 1, erred: 1, order: 0 }]);
    // Two finished tasks, each a packed segment, named by the transition that ends them.
    const segments = new PackedSegments(msg.segments);
    expect(segments.length).toBe(2);
    expect(msg.workers).toEqual(["w1"]);
    expect([segments.worker(1), segments.prefix(1), segments.erred(0), segments.erred(1)]).toEqual([0, 0, false, true]);
    // Without compute spans, a segment starts and stops at its transition (float32 from the first one's start).
    expect(Math.abs(segments.stop(0) - 100.07)).toBeLessThan(1e-4);
    expect(msg.events.map((e: { topic: string }) => e.topic)).toContain("worker");
    expect(msg.topics).toEqual({ transition: 10, worker: 1 });
  });

  test("segments are packed in 16 bytes and read back, wherever the bytes start in their buffer", () => {
    const base = 1_790_000_000.25;
    const quintuples = new Float64Array([0, 0, base - 0.5, base - 0.25, 0, 300, 70_000, base - 120.125, base - 119.5, 1]);
    const packed = packSegments(quintuples);
    expect(packed.byteLength).toBe(8 + 32);
    expect(new PackedSegments(packSegments(new Float64Array(0))).length).toBe(0);
    // As a CBOR decoder may hand them over: at an odd offset of a larger buffer.
    const shifted = new Uint8Array(packed.byteLength + 3);
    shifted.set(packed, 3);
    for (const bytes of [packed, shifted.subarray(3)]) {
      const s = new PackedSegments(bytes);
      expect(s.length).toBe(2);
      expect([s.worker(0), s.prefix(0), s.erred(0), s.worker(1), s.prefix(1), s.erred(1)]).toEqual([0, 0, false, 300, 70_000, true]);
      expect(s.start(0)).toBe(base - 0.5);
      expect(Math.abs(s.start(1) - (base - 120.125))).toBeLessThan(1e-5);
      expect(Math.abs(s.stop(1) - (base - 119.5))).toBeLessThan(1e-5);
    }
  });

  test("the page's progress takes the feed's rows and clears finished ones until they change", () => {
    const p = new Progress();
    p.apply([{ name: "inc", total: 2, waiting: 0, processing: 0, done: 2, erred: 0, order: 0 }]);
    p.apply([{ name: "sum", total: 1, waiting: 1, processing: 0, done: 0, erred: 0, order: 1 }]);
    p.clearFinished();
    expect([...p.prefixes.keys()]).toEqual(["sum"]);
    p.apply([{ name: "inc", total: 2, waiting: 0, processing: 0, done: 2, erred: 0, order: 0 }]);
    expect(p.prefixes.has("inc")).toBe(false);
    p.apply([{ name: "inc", total: 3, waiting: 1, processing: 0, done: 2, erred: 0, order: 0 }]);
    expect(p.prefixes.get("inc")?.total).toBe(3);
  });

  test("the task stream puts tasks on a worker's thread lanes and queues a task behind a busy lane", () => {
    const s = new TaskStream(4);
    s.setThreads("w1", 2);
    s.add("w1", "inc", 0, 1);
    s.add("w1", "inc", 0, 2);
    s.add("w1", "inc", 0.5, 3);
    expect([s.lane[0], s.lane[1], s.lane[2]]).toEqual([0, 1, 0]);
    // Lane 0 was busy until 1: the third task ran from then.
    expect(s.start[2]).toBe(1);
    for (let i = 0; i < 3; i++) s.add("w2", "sum", 10 + i, 11 + i);
    expect(s.size).toBe(4);
    expect(s.count).toBe(6);
  });

  test("the rate counts tasks per second and the log keeps other events from a flood of transitions", () => {
    const rate = new Rate(60);
    rate.add(100.2, 30);
    rate.add(100.9, 20);
    rate.add(101.5, 5);
    expect(rate.series(101).slice(-2)).toEqual([50, 5]);
    const log = new EventRing(10);
    log.add({ seq: 1, topic: "worker", time: 100, action: "add" });
    for (let i = 0; i < 50; i++) log.add({ seq: 2 + i, topic: "transition", time: 100, key: `inc-${i}` });
    expect(log.newest((t) => t !== "transition", 100).map((e) => e.topic)).toEqual(["worker"]);
    expect(log.newest(() => true, 100).length).toBe(11);
    expect(log.topics.get("transition")).toBe(50);
  });

  test("worker metrics are read when present and reported missing when not", () => {
    expect(workerMemoryBytes({ name: "a", rss: 0, memory: 3 })).toBeNaN();
    expect(workerMemoryBytes({ name: "a", rss: 1024 })).toBe(1024);
    expect(workerMemoryBytes({ name: "a", memory: { rss: 2048 } })).toBe(2048);
    expect(workerHeld({ name: "a", memory: 3 })).toBe(3);
    expect(workerCpu({ name: "a" })).toBeNaN();
    expect(workerCpu({ name: "a", cpu: 42 })).toBe(42);
  });

  test("plugin statuses are read per worker from a map or a list", () => {
    expect(pluginPlaces({ name: "p", status: { w1: "ok", w2: "failed: boom" } })).toEqual([
      { where: "w1", status: "ok" },
      { where: "w2", status: "failed: boom" },
    ]);
    expect(pluginPlaces({ name: "p", workers: [{ worker: "w1", status: "pending" }] })).toEqual([{ where: "w1", status: "pending" }]);
    const byWorker = statusByPlace({ worker: [{ name: "p", status: { w1: "ok" } }], scheduler: [{ name: "s" }] });
    expect(byWorker.get("w1")).toEqual([{ name: "p", status: "ok" }]);
  });

  test("the login link carries the token and nothing else of the given URL", () => {
    expect(dashboardLink("http://127.0.0.1:8786", "t0k")).toBe("http://127.0.0.1:8786/?token=t0k");
    expect(dashboardLink("ws://[::1]:9000/api/v1/events?x=1", "a b")).toBe("http://[::1]:9000/?token=a+b");
    expect(dashboardLink("https://edge.local:8786/", undefined)).toBe("https://edge.local:8786/");
    expect(() => dashboardLink("ftp://x", "t")).toThrow(TypeError);
  });

  test("the session cookie is an HMAC of the token, accepted only for that token", () => {
    const value = sessionValue("secret");
    expect(value).not.toContain("secret");
    expect(hasSession(`a=1; cluster_session=${value}; b=2`, "secret")).toBe(true);
    expect(hasSession(`cluster_session=${value}`, "other")).toBe(false);
    expect(hasSession(undefined, "secret")).toBe(false);
  });

  test("without a token configured the page opens directly, and a login link just redirects", async () => {
    const app = dashboardApp({ token: () => undefined, events: { subscribe: () => () => {} } });
    const page = await app.request("/");
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('id="workers"');
    const link = await app.request("/?token=anything");
    expect(link.status).toBe(303);
    expect(link.headers.get("location")).toBe("/");
  });

  test("a wrong token shows the form again with a reason and sets no cookie", async () => {
    const app = dashboardApp({ token: () => "right", events: { subscribe: () => () => {} } });
    const res = await app.request("/?token=wrong");
    expect(res.status).toBe(401);
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(await res.text()).toContain("not valid");
    const form = await app.request("/login", { method: "POST", body: new URLSearchParams({ token: "right" }) });
    expect(form.status).toBe(303);
    expect(form.headers.get("set-cookie")).toContain("HttpOnly; SameSite=Strict");
  });

  test("the committed bundle is up to date with lib/dashboard/ui/ (run `npm run build:dashboard`)", async () => {
    expect(committedHash).toBe(sourceHash());
    expect(await buildAssets()).toBe(readFileSync(assetsFile, "utf8"));
  });
});

describe("dashboard served by every runtime", () => {
  for (const flavor of ["binary", "bun", "deno"] as Flavor[]) {
    test(`the ${flavor} scheduler serves the same page and script, and the page's API takes the login cookie`, async () => {
      if (flavor === "binary" && !existsSync(binary)) throw new Error(`${binary} is missing: run "npm run build" first`);
      const token = "runtime-token";
      const scheduler = await startProcess(["scheduler", "--port", "0"], { flavor, env: { CLUSTER_TOKEN: token }, timeoutMs: 60_000 });
      try {
        const login = await fetch(`${scheduler.url}/?token=${token}`, { redirect: "manual" });
        expect(login.status).toBe(303);
        const cookie = login.headers.get("set-cookie")!.split(";")[0];
        const page = await fetch(`${scheduler.url}/`, { headers: { cookie } });
        expect(await page.text()).toContain(`/dashboard/app.js?v=${committedHash}`);
        expect(await (await fetch(`${scheduler.url}/dashboard/app.js`)).text()).toBe(appJs);
        expect((await fetch(`${scheduler.url}/api/v1/info`, { headers: { cookie } })).status).toBe(200);
        expect((await fetch(`${scheduler.url}/api/v1/info`, { headers: { cookie: "cluster_session=forged" } })).status).toBe(401);
        expect((await fetch(`${scheduler.url}/dashboard/feed`)).status).toBe(401);
        const foreign = await fetch(`${scheduler.url}/dashboard/feed`, { headers: { cookie, origin: "http://evil.example" } });
        expect(foreign.status).toBe(403);
      } finally {
        await scheduler.stop();
      }
      expect(scheduler.stdout.join("") + scheduler.stderr.join("")).not.toContain(token);
    }, 90_000);
  }
});

const haveChromium = existsSync(chromiumPath);
if (!haveChromium) {
  console.warn(`dashboard browser tests skipped: ${chromiumPath} is missing (run .ci/install-chromium.sh as root)`);
}

describe.skipIf(!haveChromium)("dashboard in a real browser", () => {
  const token = "browser-test-token-4f2a";
  let cluster: TestCluster;
  // deno-lint-ignore no-explicit-any
  let browser: any;

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    cluster = await startCluster({ workers: 2, env: { CLUSTER_TOKEN: token } });
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  // deno-lint-ignore no-explicit-any
  async function newPage(): Promise<{ context: any; page: any; errors: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const errors: string[] = [];
    // deno-lint-ignore no-explicit-any
    page.on("console", (msg: any) => {
      if (msg.type() === "error") errors.push(`${page.url()}: ${msg.text()}`);
    });
    page.on("pageerror", (err: Error) => errors.push(`${page.url()}: ${err.message}`));
    return { context, page, errors };
  }

  test("without the token the page shows the login form and no data", async () => {
    const { context, page, errors } = await newPage();
    const res = await page.goto(`${cluster.url}/`);
    expect(res.status()).toBe(200);
    expect(await page.locator("form.login").isVisible()).toBe(true);
    expect(await page.locator("#workers").count()).toBe(0);
    expect(await page.content()).not.toContain(cluster.workers[0].url);
    await page.screenshot({ path: join(artifacts, "dashboard-login.png") });
    expect(errors).toEqual([]);
    // The API refuses the page without the cookie (the browser logs that 401 as an error).
    const info = await page.evaluate(async () => (await fetch("/api/v1/info")).status);
    expect(info).toBe(401);
    await context.close();
  }, 60_000);

  test("the login link sets an HttpOnly SameSite=Strict cookie, drops the token from the URL and shows the workers", async () => {
    const { context, page, errors } = await newPage();
    await page.goto(`${cluster.url}/?token=${token}`);
    expect(page.url()).toBe(`${cluster.url}/`);
    const cookies = await context.cookies();
    const session = cookies.find((c: { name: string }) => c.name === "cluster_session");
    expect(session).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/" });
    expect(session.value).not.toContain(token);
    expect(await page.evaluate(() => document.cookie)).toBe("");
    const info = await api(cluster.url, "/api/v1/info", { token });
    for (const w of info.body.workers) {
      await page.locator(`tr[data-worker="${w.name}"] .status-running`).waitFor({ timeout: 15_000 });
    }
    await page.locator("#connection.live").waitFor({ timeout: 15_000 });
    expect(errors).toEqual([]);
    await context.close();
  }, 60_000);

  test("the token form logs in too", async () => {
    const { context, page } = await newPage();
    await page.goto(`${cluster.url}/`);
    await page.fill("#token", token);
    await Promise.all([page.waitForURL(`${cluster.url}/`), page.click("form.login button")]);
    await page.locator("#workers tbody tr").first().waitFor({ timeout: 15_000 });
    await context.close();
  }, 60_000);

  test("a submitted graph shows its prefixes with their totals when done, with no console errors", async () => {
    const { context, page, errors } = await newPage();
    await page.goto(`${cluster.url}/?token=${token}`);
    await page.locator("#connection.live").waitFor({ timeout: 15_000 });
    const map = graphs.map(1000, "inc");
    const tasks = [...map.tasks, { key: "sum-0", fn: "builtin.sum", args: [map.keys.map((k) => ({ $ref: k }))] }];
    const submitted = await api(cluster.url, "/api/v1/graph", { token, body: { tasks, keys: ["sum-0"] } });
    expect(submitted.status).toBe(202);
    const count = (prefix: string) => page.locator(`.prefix[data-prefix="${prefix}"] .count`);
    await page.waitForFunction(() => document.querySelector('.prefix[data-prefix="sum"] .count')?.textContent === "1 / 1", null, { timeout: 30_000 });
    expect(await count("inc").textContent()).toBe("1,000 / 1,000");
    const result = await api(cluster.url, "/api/v1/results/sum-0?timeout=10", { token });
    expect(result.body.value).toBe(500_500);
    // The stream has drawn, the tasks/s chart has counted, the log has the workers joining.
    await page.locator(".entry.topic-worker").first().waitFor({ timeout: 5_000 });
    await page.waitForTimeout(1200);
    await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
    expect(errors).toEqual([]);
    await context.close();
  }, 90_000);

  test("the scheduler's output never contains the token", () => {
    const out = cluster.scheduler.stdout.join("") + cluster.scheduler.stderr.join("");
    expect(out).not.toContain(token);
  });
});
