/**
 * Tests of the `jsonl` and `webhook` built-in scheduler plugins, called through their hooks
 * directly; the webhook talks to a real HTTP server on 127.0.0.1.
 *
 * @module
 */
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinPlugins } from "../plugins/mod.ts";
import { JsonlPlugin } from "../plugins/jsonl.ts";
import { WebhookPlugin } from "../plugins/webhook.ts";
import type { Logger, PluginContext, SchedulerPlugin } from "../lib/plugins/types.ts";

const dir = mkdtempSync(join(tmpdir(), "jsonl-webhook-"));

function context(): PluginContext & { messages: string[] } {
  const messages: string[] = [];
  const log: Logger = {
    info: (m) => messages.push(`info ${m}`),
    warn: (m) => messages.push(`warn ${m}`),
    error: (m) => messages.push(`error ${m}`),
  };
  return { role: "scheduler", baseDir: dir, files: {}, log, messages };
}

function transition(seq: number): Record<string, unknown> {
  return {
    seq,
    topic: "transition",
    time: 1_700_000_000 + seq / 1000,
    key: `t-${seq}`,
    start: "processing",
    finish: "memory",
    worker: "w1",
    stimulusId: `s-${seq}`,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(20);
  }
}

/** A receiver on 127.0.0.1 that records each batch. */
function receiver(port = 0, status = () => 200) {
  const batches: { events: Record<string, unknown>[]; headers: Headers }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    async fetch(req) {
      const body = (await req.json()) as { events: Record<string, unknown>[] };
      const code = status();
      if (code === 200) batches.push({ events: body.events, headers: req.headers });
      return new Response("ok", { status: code });
    },
  });
  const events = () => batches.flatMap((b) => b.events);
  return { server, batches, events, url: `http://127.0.0.1:${server.port}/events` };
}

test("jsonl writes every one of 10,000 events as a line, in order, and close flushes", async () => {
  const ctx = context();
  const plugin = (await builtinPlugins.jsonl.create({ path: "out/sub/all.jsonl" }, ctx)) as SchedulerPlugin;
  await plugin.start?.(undefined as never);
  const t0 = performance.now();
  for (let i = 1; i <= 10_000; i++) plugin.logEvent!("transition", transition(i));
  const elapsed = performance.now() - t0;
  await plugin.close!();
  const lines = readFileSync(join(dir, "out/sub/all.jsonl"), "utf8").trimEnd().split("\n");
  expect(lines.length).toBe(10_000);
  expect(JSON.parse(lines[0])).toEqual(transition(1));
  expect(lines.map((l) => JSON.parse(l).seq)).toEqual(Array.from({ length: 10_000 }, (_, i) => i + 1));
  // The hook only buffers; a generous bound for a busy, shared machine.
  expect(elapsed).toBeLessThan(2000);
  expect(ctx.messages.filter((m) => !m.startsWith("info"))).toEqual([]);
});

test("jsonl keeps only the chosen topics and adds topic and time to bare events", async () => {
  const plugin = new JsonlPlugin({ path: join(dir, "topics.jsonl"), topics: ["worker", "log"] }, context());
  plugin.logEvent("transition", transition(1));
  plugin.logEvent("worker", { action: "add", worker: "w1" });
  plugin.logEvent("client", { action: "add", client: "c1" });
  plugin.logEvent("log", { seq: 9, topic: "log", time: 1, msg: "hi" });
  await plugin.close();
  const rows = readFileSync(join(dir, "topics.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
  expect(rows.length).toBe(2);
  expect(rows[0]).toMatchObject({ topic: "worker", action: "add", worker: "w1" });
  expect(typeof rows[0].time).toBe("number");
  expect(rows[1]).toEqual({ seq: 9, topic: "log", time: 1, msg: "hi" });
});

test("jsonl appends in the background without waiting for close", async () => {
  const path = join(dir, "background.jsonl");
  const plugin = new JsonlPlugin({ path }, context());
  for (let i = 1; i <= 100; i++) plugin.logEvent("transition", transition(i));
  await waitFor(() => {
    try {
      return readFileSync(path, "utf8").split("\n").length === 101;
    } catch {
      return false;
    }
  }, 3000);
  plugin.logEvent("transition", transition(101));
  await plugin.close();
  expect(readFileSync(path, "utf8").trimEnd().split("\n").length).toBe(101);
  expect(plugin.stats()).toEqual({ written: 101, buffered: 0, lost: 0 });
});

test("webhook delivers every event in order, in batches of at most batchSize", async () => {
  const rx = receiver();
  try {
    const plugin = new WebhookPlugin({ url: rx.url, batchSize: 100, intervalMs: 50 }, context());
    for (let i = 1; i <= 1050; i++) plugin.logEvent("transition", transition(i));
    // The last partial batch (50 events) goes out after intervalMs, before close.
    await waitFor(() => rx.events().length === 1050, 5000);
    expect(rx.events().map((e) => e.seq)).toEqual(Array.from({ length: 1050 }, (_, i) => i + 1));
    expect(rx.events()[0]).toEqual(transition(1));
    expect(rx.batches.every((b) => b.events.length <= 100)).toBe(true);
    expect(rx.batches.length).toBe(11);
    await plugin.close();
    expect(plugin.stats()).toEqual({ sent: 1050, batches: 11, failedAttempts: 0, buffered: 0, dropped: 0 });
  } finally {
    rx.server.stop(true);
  }
});

test("webhook keeps only the chosen topics, sends its headers and flushes a partial batch on close", async () => {
  const rx = receiver();
  try {
    const plugin = new WebhookPlugin(
      { url: rx.url, topics: ["worker"], intervalMs: 60_000, headers: { authorization: "Bearer t0k" } },
      context(),
    );
    plugin.logEvent("transition", transition(1));
    plugin.logEvent("worker", { action: "add", worker: "w1" });
    plugin.logEvent("worker", { action: "remove", worker: "w1" });
    await plugin.close();
    expect(rx.batches.length).toBe(1);
    expect(rx.batches[0].headers.get("authorization")).toBe("Bearer t0k");
    expect(rx.batches[0].headers.get("content-type")).toBe("application/json");
    expect(rx.events().map((e) => [e.topic, e.action])).toEqual([
      ["worker", "add"],
      ["worker", "remove"],
    ]);
  } finally {
    rx.server.stop(true);
  }
});

test("webhook loses nothing while the receiver is down for 2 s at the start", async () => {
  // Take a free port, then leave it closed: connections are refused until the receiver starts.
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = probe.port!;
  probe.stop(true);
  const ctx = context();
  const plugin = new WebhookPlugin({ url: `http://127.0.0.1:${port}/events`, batchSize: 50, intervalMs: 50 }, ctx);
  let seq = 0;
  const producer = setInterval(() => {
    for (let i = 0; i < 20; i++) plugin.logEvent("transition", transition(++seq));
  }, 10);
  await sleep(2000);
  expect(plugin.stats().sent).toBe(0);
  expect(plugin.stats().failedAttempts).toBeGreaterThan(0);
  const rx = receiver(port);
  try {
    await sleep(500);
    clearInterval(producer);
    const total = seq;
    await waitFor(() => rx.events().length >= total, 10_000);
    await plugin.close();
    expect(rx.events().map((e) => e.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(plugin.stats()).toMatchObject({ sent: total, buffered: 0, dropped: 0 });
    expect(ctx.messages.some((m) => m.startsWith("warn cannot POST events"))).toBe(true);
  } finally {
    clearInterval(producer);
    rx.server.stop(true);
  }
});

test("webhook retries a receiver that answers 503 and keeps the order", async () => {
  let failures = 3;
  const rx = receiver(0, () => (failures-- > 0 ? 503 : 200));
  try {
    const plugin = new WebhookPlugin({ url: rx.url, batchSize: 10, intervalMs: 20 }, context());
    for (let i = 1; i <= 35; i++) plugin.logEvent("transition", transition(i));
    await waitFor(() => rx.events().length === 35, 5000);
    await plugin.close();
    expect(rx.events().map((e) => e.seq)).toEqual(Array.from({ length: 35 }, (_, i) => i + 1));
    expect(plugin.stats().failedAttempts).toBe(3);
  } finally {
    rx.server.stop(true);
  }
});

test("webhook drops the oldest events past maxBuffered, counts them, and close is bounded", async () => {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const url = `http://127.0.0.1:${probe.port}/events`;
  probe.stop(true);
  const ctx = context();
  const plugin = new WebhookPlugin({ url, batchSize: 5, maxBuffered: 10, closeTimeoutMs: 300 }, ctx);
  for (let i = 1; i <= 25; i++) plugin.logEvent("transition", transition(i));
  expect(plugin.stats()).toMatchObject({ buffered: 10, dropped: 15 });
  expect(ctx.messages.some((m) => m.startsWith("warn buffer full"))).toBe(true);
  const t0 = Date.now();
  await plugin.close();
  expect(Date.now() - t0).toBeLessThan(2000);
  expect(plugin.stats()).toMatchObject({ sent: 0, buffered: 0, dropped: 25 });
  expect(ctx.messages.some((m) => m.includes("dropped 10 events not delivered"))).toBe(true);
});
