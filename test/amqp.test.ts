/**
 * Tests of the `amqp` scheduler plugin against a real, private RabbitMQ broker
 * (`test/_rabbitmq.ts`): the plugin's hooks are called directly with a stand-in scheduler.
 *
 * @module
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import amqp from "amqplib";
import { amqpPlugin } from "../plugins/amqp.ts";
import { AmqpPlugin } from "../plugins/amqp-publisher.ts";
import type { AmqpOptions, AmqpStats, AmqpTransitionMessage } from "../plugins/amqp.ts";
import { builtinPlugins } from "../plugins/mod.ts";
import type { Logger, SchedulerApi, SchedulerTaskStateName } from "../lib/plugins/types.ts";
import { deleteQueue, freePort as closedPort, messageBody, readQueue, startRabbitMQ } from "../testkit/mod.ts";
import type { RabbitMQ } from "../testkit/mod.ts";

let broker: RabbitMQ;

beforeAll(async () => {
  broker = await startRabbitMQ();
  console.error(`RabbitMQ ${broker.nodename} on port ${broker.port} started in ${broker.startMs.toFixed(0)} ms`);
}, 90_000);

afterAll(async () => {
  await broker?.stop();
}, 30_000);

/** A stand-in for the scheduler: records events and log lines. */
function fakeScheduler() {
  const events: { topic: string; msg: Record<string, unknown> }[] = [];
  const lines: { level: string; msg: string }[] = [];
  const log: Logger = {
    info: (msg) => lines.push({ level: "info", msg }),
    warn: (msg) => lines.push({ level: "warn", msg }),
    error: (msg) => lines.push({ level: "error", msg }),
  };
  const api: SchedulerApi = {
    role: "scheduler",
    address: "ws://127.0.0.1:0",
    tasks: new Map(),
    workers: new Map(),
    clients: new Map(),
    logEvent: (topic, msg) => events.push({ topic, msg }),
    addPlugin: async () => {},
    removePlugin: async () => {},
    log,
  };
  return { api, events, lines, log };
}

let queueCounter = 0;
function uniqueQueue(what: string): string {
  return `test-${what}-${process.pid}-${++queueCounter}`;
}

function makePlugin(options: Partial<AmqpOptions> & { queue: string }, log: Logger): AmqpPlugin {
  return new AmqpPlugin({ url: broker.url, ...options }, { log });
}

const STATES: SchedulerTaskStateName[] = ["released", "waiting", "processing", "memory"];

/** Calls `transition` for seqs from..to (1-based), with fields derived from the seq. */
function transitions(plugin: AmqpPlugin, from: number, to: number): void {
  for (let i = from; i <= to; i++) {
    const start = STATES[i % 3];
    const finish = STATES[(i % 3) + 1];
    plugin.transition(`task-${i}`, start, finish, {
      stimulusId: `stimulus-${i}`,
      worker: finish === "processing" || finish === "memory" ? `worker-${i % 4}` : undefined,
    });
  }
}

/**
 * The plugin's books: every transition it took is confirmed, buffered, in flight or dropped.
 * Returns the stats, or throws naming the imbalance.
 */
function balanced(plugin: AmqpPlugin): AmqpStats {
  const s = plugin.stats();
  const accounted = s.confirmed + s.buffered + s.inFlight + s.dropped;
  if (s.published !== accounted) throw new Error(`The books do not balance: ${JSON.stringify(s)} (accounted ${accounted})`);
  return s;
}

/** Everything taken is confirmed or dropped: nothing buffered or in flight. */
function settled(plugin: AmqpPlugin): boolean {
  const s = balanced(plugin);
  return s.buffered === 0 && s.inFlight === 0;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test("the amqp plugin is registered as a scheduler built-in with its options", () => {
  expect(builtinPlugins.amqp).toBe(amqpPlugin);
  expect(amqpPlugin.role).toBe("scheduler");
  expect(amqpPlugin.options.url.required).toBe(true);
  expect(amqpPlugin.options.queue.required).toBe(true);
  expect(amqpPlugin.options.maxBuffered.default).toBe(100_000);
  expect(amqpPlugin.options.confirm.default).toBe(true);
});

test("5,000 transitions arrive in a durable queue exactly once, in seq order, persistent, with their fields", async () => {
  const queue = uniqueQueue("order");
  const { api, log } = fakeScheduler();
  const plugin = makePlugin({ queue }, log);
  await plugin.start(api);
  const before = Date.now() / 1000;
  transitions(plugin, 1, 5000);
  await plugin.close();
  const stats = balanced(plugin);
  expect(stats).toMatchObject({ published: 5000, confirmed: 5000, buffered: 0, inFlight: 0, dropped: 0, returned: 0, reconnects: 0 });
  expect(stats.sent).toBe(5000);

  const messages = await readQueue(broker.url, queue);
  expect(messages.length).toBe(5000);
  messages.forEach((msg, i) => {
    const seq = i + 1;
    const start = STATES[seq % 3];
    const finish = STATES[(seq % 3) + 1];
    const worker = finish === "processing" || finish === "memory" ? `worker-${seq % 4}` : undefined;
    const got = messageBody<AmqpTransitionMessage>(msg);
    expect(Object.keys(got)).toEqual(
      worker ? ["key", "start", "finish", "worker", "stimulusId", "time", "seq"] : ["key", "start", "finish", "stimulusId", "time", "seq"],
    );
    expect(got).toMatchObject({ key: `task-${seq}`, start, finish, stimulusId: `stimulus-${seq}`, seq });
    expect(got.worker).toBe(worker);
    expect(got.time).toBeGreaterThanOrEqual(before - 1);
    expect(got.time).toBeLessThanOrEqual(Date.now() / 1000 + 1);
    expect(msg.properties.deliveryMode).toBe(2);
    expect(msg.properties.contentType).toBe("application/json");
    expect(msg.fields.redelivered).toBe(false);
  });

  // Declaring the queue as non-durable must clash with what the plugin declared.
  const conn = await amqp.connect(broker.url);
  conn.on("error", () => {});
  const channel = await conn.createChannel();
  channel.on("error", () => {});
  await expect(channel.assertQueue(queue, { durable: false })).rejects.toThrow(/inequivalent arg 'durable'/);
  await conn.close().catch(() => {});
  await deleteQueue(broker.url, queue);
}, 60_000);

test("transitions go through a durable exchange to the bound queue with the routing key", async () => {
  const queue = uniqueQueue("exchange");
  const exchange = `${queue}-x`;
  const { api, log } = fakeScheduler();
  const plugin = makePlugin({ queue, exchange, routingKey: "status" }, log);
  await plugin.start(api);
  transitions(plugin, 1, 100);
  await plugin.close();
  const messages = await readQueue(broker.url, queue);
  expect(messages.map((msg) => messageBody<AmqpTransitionMessage>(msg).seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  expect(messages[0].fields.exchange).toBe(exchange);
  expect(messages[0].fields.routingKey).toBe("status");
  const conn = await amqp.connect(broker.url);
  conn.on("error", () => {});
  const channel = await conn.createChannel();
  await channel.deleteExchange(exchange);
  await channel.deleteQueue(queue);
  await conn.close().catch(() => {});
}, 60_000);

for (const [kind, graceful] of [["a graceful broker stop", true], ["a kill -9 of the broker", false]] as const) {
test(`every seq survives ${kind} in the middle, the books balance throughout, and transition calls never block while it is down`, async () => {
  const queue = uniqueQueue(graceful ? "outage" : "crash");
  const { api, log, lines } = fakeScheduler();
  const plugin = makePlugin({ queue }, log);
  await plugin.start(api);
  let seq = 0;
  const call = (n: number) => {
    transitions(plugin, seq + 1, seq + n);
    seq += n;
  };
  // 1,000 transitions while it is up, in batches as a scheduler would make them.
  for (let i = 0; i < 10; i++) {
    call(100);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await waitFor("the first 1,000 to be confirmed", () => plugin.stats().confirmed >= 1000, 10_000);

  // Keep making transitions, timing each call, while the broker stops, stays down and starts.
  let maxCallMs = 0;
  let downCalls = 0;
  let downMs = 0;
  const imbalances: string[] = [];
  let confirmedBeforeOutage = 0;
  const timed = setInterval(() => {
    try {
      balanced(plugin);
    } catch (err) {
      imbalances.push((err as Error).message);
    }
    const down = !plugin.stats().connected;
    for (let i = 0; i < 5; i++) {
      const s = ++seq;
      const key = `task-${s}`;
      const start = STATES[s % 3];
      const finish = STATES[(s % 3) + 1];
      const info = { stimulusId: `stimulus-${s}`, worker: finish === "processing" || finish === "memory" ? `worker-${s % 4}` : undefined };
      const t0 = performance.now();
      plugin.transition(key, start, finish, info);
      const dt = performance.now() - t0;
      if (down) {
        downCalls++;
        downMs += dt;
      }
      if (dt > maxCallMs) maxCallMs = dt;
    }
  }, 5);
  try {
    await broker.pause({ graceful });
    await waitFor("the plugin to notice", () => !plugin.stats().connected, 10_000);
    confirmedBeforeOutage = plugin.stats().confirmed;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(plugin.stats().connected).toBe(false);
    expect(plugin.stats().buffered).toBeGreaterThan(0);
  } finally {
    await broker.restart();
    clearInterval(timed);
  }
  if (seq < 5000) call(5000 - seq);
  const total = seq;
  await waitFor("every transition to be confirmed", () => settled(plugin), 30_000);
  const stats = balanced(plugin);
  await plugin.close();
  expect(imbalances).toEqual([]);
  expect(stats).toMatchObject({ published: total, confirmed: total, buffered: 0, inFlight: 0, dropped: 0 });

  console.error(
    `outage (${kind}): ${total} transitions, ${downCalls} calls while down: mean ${(downMs / downCalls * 1e6).toFixed(0)} ns, ` +
      `max ${(maxCallMs * 1000).toFixed(0)} µs; stats ${JSON.stringify(stats)}`,
  );
  expect(downCalls).toBeGreaterThan(1000);
  expect(downMs / downCalls).toBeLessThan(0.01); // well under 10 µs on average
  expect(maxCallMs).toBeLessThan(50); // nothing waits on the network (a GC pause at most)
  expect(stats.reconnects).toBeGreaterThanOrEqual(1);
  expect(stats.dropped).toBe(0);
  expect(lines.some((l) => l.level === "warn" && l.msg.includes("lost connection to RabbitMQ"))).toBe(true);

  const messages = await readQueue(broker.url, queue);
  const bySeq = new Map<number, string>();
  for (const msg of messages) {
    const text = msg.content.toString("utf8");
    const s = messageBody<AmqpTransitionMessage>(msg).seq;
    // A duplicate is a resend of the very same message.
    if (bySeq.has(s)) expect(text).toBe(bySeq.get(s)!);
    bySeq.set(s, text);
  }
  const missing = Array.from({ length: total }, (_, i) => i + 1).filter((s) => !bySeq.has(s));
  if (stats.queueMissing === 0) {
    expect(missing).toEqual([]);
    expect(bySeq.size).toBe(total);
    // Each resend starts again from the oldest unconfirmed message: seqs never go backwards otherwise.
    const seqs = messages.map((msg) => messageBody<AmqpTransitionMessage>(msg).seq);
    expect(seqs.slice(0, 1000)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
  } else {
    // RabbitMQ 3.10 killed with -9 may lose a durable queue declared shortly before (its
    // declaration was not yet on disk), and with it what it had confirmed. The plugin saw the
    // queue missing, said so, and delivered everything it had not had confirmed.
    expect(graceful).toBe(false);
    expect(lines.some((l) => l.level === "warn" && l.msg.includes("was missing"))).toBe(true);
    expect(missing.filter((s) => s > confirmedBeforeOutage)).toEqual([]);
    console.error(`outage (${kind}): the broker lost the queue with ${missing.length} confirmed transitions (seq <= ${confirmedBeforeOutage})`);
  }
  await deleteQueue(broker.url, queue);
}, 90_000);
}

/** Runs `rabbitmqctl` against the test broker (its cookie is in the broker's HOME). */
function rabbitmqctl(...args: string[]): void {
  const out = spawnSync("/usr/lib/rabbitmq/bin/rabbitmqctl", ["-n", broker.nodename, ...args], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C.UTF-8", HOME: join(broker.dir, "home") },
    encoding: "utf8",
    timeout: 60_000,
  });
  if (out.status !== 0) throw new Error(`rabbitmqctl ${args.join(" ")} failed: ${out.stderr || out.stdout}`);
}

test("every seq survives rabbitmqctl stop_app and start_app in the middle of a stream, and the books balance throughout", async () => {
  const queue = uniqueQueue("stop-app");
  const { api, log } = fakeScheduler();
  const plugin = makePlugin({ queue }, log);
  await plugin.start(api);
  let seq = 0;
  const imbalances: string[] = [];
  const stream = setInterval(() => {
    transitions(plugin, seq + 1, seq + 50);
    seq += 50;
    try {
      balanced(plugin);
    } catch (err) {
      imbalances.push((err as Error).message);
    }
  }, 5);
  try {
    await waitFor("the first confirms", () => plugin.stats().confirmed >= 2000, 10_000);
    // The node stays up with its application stopped: connections close, the port closes.
    rabbitmqctl("stop_app");
    await waitFor("the plugin to notice", () => !plugin.stats().connected, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    rabbitmqctl("start_app");
    await waitFor("the plugin to reconnect", () => plugin.stats().connected, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
  } finally {
    clearInterval(stream);
  }
  const total = seq;
  await waitFor("every transition to be confirmed", () => settled(plugin), 30_000);
  const stats = balanced(plugin);
  await plugin.close();
  console.error(`stop_app: ${total} transitions; stats ${JSON.stringify(stats)}`);
  expect(imbalances).toEqual([]);
  expect(stats).toMatchObject({ published: total, confirmed: total, buffered: 0, inFlight: 0, dropped: 0 });
  expect(stats.reconnects).toBeGreaterThanOrEqual(1);
  const seqs = new Set((await readQueue(broker.url, queue)).map((msg) => messageBody<AmqpTransitionMessage>(msg).seq));
  const missing = Array.from({ length: total }, (_, i) => i + 1).filter((s) => !seqs.has(s));
  expect(missing).toEqual([]);
  await deleteQueue(broker.url, queue);
}, 90_000);

test("a queue deleted while the plugin publishes is declared again and nothing sent after the deletion is lost", async () => {
  const queue = uniqueQueue("deleted");
  const { api, log, lines } = fakeScheduler();
  const plugin = makePlugin({ queue }, log);
  await plugin.start(api);
  transitions(plugin, 1, 1000);
  await waitFor("the first 1,000 to be confirmed", () => settled(plugin), 10_000);
  // A steady stream while an operator deletes the queue: the broker returns what it cannot route.
  let seq = 1000;
  const imbalances: string[] = [];
  const stream = setInterval(() => {
    transitions(plugin, seq + 1, seq + 20);
    seq += 20;
    try {
      balanced(plugin);
    } catch (err) {
      imbalances.push((err as Error).message);
    }
  }, 5);
  let afterDelete = 0;
  try {
    await new Promise((resolve) => setTimeout(resolve, 200));
    await deleteQueue(broker.url, queue);
    afterDelete = seq;
    await waitFor("a returned message", () => plugin.stats().returned > 0, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
  } finally {
    clearInterval(stream);
  }
  const total = seq;
  await waitFor("every transition to be confirmed", () => settled(plugin), 30_000);
  const stats = balanced(plugin);
  await plugin.close();
  console.error(`deleted queue: ${total} transitions, deleted after seq ${afterDelete}; stats ${JSON.stringify(stats)}`);
  expect(imbalances).toEqual([]);
  expect(stats).toMatchObject({ published: total, confirmed: total, dropped: 0 });
  expect(stats.returned).toBeGreaterThan(0);
  expect(stats.queueMissing).toBeGreaterThan(0);
  expect(lines.some((l) => l.msg.includes("returned by the broker"))).toBe(true);
  expect(lines.some((l) => l.level === "warn" && l.msg.includes(`queue "${queue}" was missing`))).toBe(true);
  // What the deleted queue held went with it; everything from the deletion on is in the new one.
  const seqs = new Set((await readQueue(broker.url, queue)).map((msg) => messageBody<AmqpTransitionMessage>(msg).seq));
  const missing = Array.from({ length: total - afterDelete }, (_, i) => afterDelete + 1 + i).filter((s) => !seqs.has(s));
  expect(missing).toEqual([]);
  await deleteQueue(broker.url, queue);
}, 60_000);

test("start rejects with a message naming host and port when nothing listens there", async () => {
  const port = await closedPort();
  const { api, log } = fakeScheduler();
  const plugin = new AmqpPlugin({ url: `amqp://guest:guest@127.0.0.1:${port}`, queue: uniqueQueue("refused") }, { log });
  await expect(plugin.start(api)).rejects.toThrow(`Cannot connect to RabbitMQ at "127.0.0.1:${port}": connection refused`);
  await plugin.close();
});

test("start rejects with a message naming the host and never the password when credentials are refused", async () => {
  const { api, log } = fakeScheduler();
  const password = "not-the-password-42";
  const plugin = new AmqpPlugin(
    { url: `amqp://guest:${password}@127.0.0.1:${broker.port}`, queue: uniqueQueue("denied") },
    { log },
  );
  let error: Error | undefined;
  try {
    await plugin.start(api);
  } catch (err) {
    error = err as Error;
  }
  expect(error).toBeInstanceOf(Error);
  expect(error!.message).toStartWith(`Cannot connect to RabbitMQ at "127.0.0.1:${broker.port}": access refused`);
  expect(error!.message).not.toContain(password);
  await plugin.close();
});

test("a URL that is not amqp:// is a TypeError that does not show the password", () => {
  const { log } = fakeScheduler();
  expect(() => new AmqpPlugin({ url: "http://u:secret@127.0.0.1:5672", queue: "q" }, { log })).toThrow(TypeError);
  try {
    new AmqpPlugin({ url: "http://u:secret@127.0.0.1:5672", queue: "q" }, { log });
  } catch (err) {
    expect((err as Error).message).not.toContain("secret");
  }
});

test("past maxBuffered while the broker is down the oldest are dropped, counted and warned about once", async () => {
  const queue = uniqueQueue("overflow");
  const { api, log, events, lines } = fakeScheduler();
  const plugin = makePlugin({ queue, maxBuffered: 1000 }, log);
  await plugin.start(api);
  try {
    await broker.pause({ graceful: false });
    await waitFor("the plugin to notice", () => !plugin.stats().connected, 10_000);
    transitions(plugin, 1, 3000);
    expect(balanced(plugin)).toMatchObject({ published: 3000, buffered: 1000, inFlight: 0, dropped: 2000 });
    transitions(plugin, 3001, 3500);
    await waitFor("a warning event", () => events.some((e) => e.topic === "plugin"), 3000);
    // Drops within one second make one warning.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const warnings = events.filter((e) => e.topic === "plugin");
    expect(warnings.length).toBe(1);
    expect(warnings[0].msg).toMatchObject({ plugin: "amqp", level: "warning", dropped: 2500 });
    expect(String(warnings[0].msg.message)).toContain("dropped the 2500 oldest");
    expect(lines.filter((l) => l.level === "warn" && l.msg.includes("buffer full")).length).toBe(1);
  } finally {
    await broker.restart();
  }
  await waitFor("the newest 1,000 to be confirmed", () => settled(plugin), 30_000);
  await plugin.close();
  const seqs = (await readQueue(broker.url, queue)).map((msg) => messageBody<AmqpTransitionMessage>(msg).seq);
  expect(new Set(seqs)).toEqual(new Set(Array.from({ length: 1000 }, (_, i) => 2501 + i)));
  expect(balanced(plugin)).toMatchObject({ published: 3500, confirmed: 1000, dropped: 2500 });
  await deleteQueue(broker.url, queue);
}, 90_000);

test("100,000 transition calls with the broker up cost well under a microsecond-ish each", async () => {
  const queue = uniqueQueue("bench");
  const { api, log } = fakeScheduler();
  // Not waiting for 100,000 confirms keeps the test short; what close() cannot deliver is dropped.
  const plugin = makePlugin({ queue, maxBuffered: 200_000, closeTimeoutMs: 0 }, log);
  await plugin.start(api);
  const n = 100_000;
  const keys = Array.from({ length: n }, (_, i) => `task-${i}`);
  const info = { stimulusId: "bench", worker: "worker-1" };
  transitions(plugin, 1, 1000); // warm up the JIT
  const t0 = performance.now();
  for (let i = 0; i < n; i++) plugin.transition(keys[i], "processing", "memory", info);
  const ns = ((performance.now() - t0) * 1e6) / n;
  await waitFor("the first confirms", () => plugin.stats().confirmed > 0, 10_000);
  await plugin.close();
  console.error(`bench: ${ns.toFixed(0)} ns per transition() call with the broker up`);
  expect(ns).toBeLessThan(2000);
  const stats = balanced(plugin);
  expect(stats.confirmed + stats.dropped).toBe(n + 1000);
  await deleteQueue(broker.url, queue);
}, 60_000);

// A benchmark, not a check: `AMQP_BENCH=1 npx bun test test/amqp.test.ts -t "catches up"`.
test.skipIf(!process.env.AMQP_BENCH)("the plugin catches up after a 10-second outage (benchmark)", async () => {
  const rate = Number(process.env.AMQP_BENCH_RATE ?? 5000);
  const queue = uniqueQueue("catchup");
  const { api, log } = fakeScheduler();
  const plugin = makePlugin({ queue, maxBuffered: 1_000_000 }, log);
  await plugin.start(api);
  const info = { stimulusId: "bench", worker: "worker-1" };
  let seq = 0;
  const began = performance.now();
  // A steady stream of `rate` transitions a second, as a busy scheduler makes them.
  const producer = setInterval(() => {
    const due = Math.floor(((performance.now() - began) * rate) / 1000);
    for (; seq < due; seq++) plugin.transition(`task-${seq}`, "processing", "memory", info);
  }, 5);
  try {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const down = performance.now();
    await broker.pause();
    const startMs = broker.startMs;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 10_000 - (performance.now() - down) - startMs)));
    await broker.restart();
    const ready = performance.now();
    const backlogSeq = seq;
    const backlog = plugin.stats().buffered;
    await waitFor("the backlog to be confirmed", () => {
      const s = plugin.stats();
      return s.confirmed + s.dropped >= backlogSeq;
    }, 120_000);
    const backlogDone = performance.now();
    const reconnected = plugin.stats().reconnects;
    await waitFor("the buffer to be back to normal", () => plugin.stats().buffered <= rate / 10, 120_000);
    const steady = performance.now();
    console.error(
      `catch-up at ${rate} transitions/s: broker away ${((ready - down) / 1000).toFixed(1)} s, ` +
        `${backlog} buffered when it was back; those confirmed ${((backlogDone - ready) / 1000).toFixed(1)} s later, ` +
        `buffer back to normal (<= 100 ms of transitions) after ${((steady - ready) / 1000).toFixed(1)} s; ` +
        `reconnects ${reconnected}; stats ${JSON.stringify(plugin.stats())}`,
    );
  } finally {
    clearInterval(producer);
    if (!broker.running) await broker.restart();
    await plugin.close();
    await deleteQueue(broker.url, queue);
  }
}, 300_000);
