/**
 * End-to-end tests of the `amqp` scheduler plugin through the real binary: `dist/cluster
 * scheduler --plugins plugins.toml` with `use = "amqp"`, real workers, and a private RabbitMQ
 * broker (`test/_rabbitmq.ts`). The queue is compared with the scheduler's own
 * `/api/v1/events` transition stream, also across a broker outage in the middle of a graph.
 *
 * @module
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { authenticate } from "../lib/auth/handshake.ts";
import type { AmqpTransitionMessage } from "../plugins/amqp.ts";
import { api, authHeaders, graphs, runCli, startCluster, stopAll, tempDir } from "../testkit/mod.ts";
import type { TestCluster } from "../testkit/mod.ts";
import { deleteQueue, freePort as closedPort, messageBody, readQueue, startRabbitMQ } from "../testkit/mod.ts";
import type { RabbitMQ } from "../testkit/mod.ts";

let broker: RabbitMQ;

beforeAll(async () => {
  broker = await startRabbitMQ();
  console.error(`RabbitMQ ${broker.nodename} on port ${broker.port} started in ${broker.startMs.toFixed(0)} ms`);
}, 120_000);

afterAll(async () => {
  await stopAll();
  await broker?.stop();
}, 60_000);

// ---- helpers -----------------------------------------------------------------------------------

let queueCounter = 0;

/** A queue name no other test (or earlier run on this broker) used. */
function uniqueQueue(what: string): string {
  return `e2e-${what}-${process.pid}-${++queueCounter}-${Math.random().toString(36).slice(2, 6)}`;
}

/** Writes a plugins.toml with the amqp plugin (plus `extra` lines) and returns its path. */
function pluginsToml(dir: string, lines: string[], extra: string[] = []): string {
  const path = join(dir, "plugins.toml");
  writeFileSync(path, ["[[scheduler.plugins]]", 'use = "amqp"', ...lines, ...extra].join("\n") + "\n");
  return path;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor<T>(what: string, check: () => T | false | Promise<T | false>, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value !== false) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** The `cluster_plugin_stat{plugin=NAME,stat=…}` samples of `/metrics`. */
async function pluginStats(url: string, name = "amqp"): Promise<Record<string, number>> {
  const text = await fetch(`${url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
  const stats: Record<string, number> = {};
  const pattern = new RegExp(`^cluster_plugin_stat\\{plugin="${name}",stat="(\\w+)"\\} (\\S+)$`, "gm");
  for (const m of text.matchAll(pattern)) stats[m[1]] = Number(m[2]);
  return stats;
}

/**
 * The plugin's books as `/metrics` shows them: every transition it took is confirmed, buffered,
 * in flight or dropped. Throws naming the imbalance.
 */
function balanced(s: Record<string, number>): Record<string, number> {
  const accounted = s.confirmed + s.buffered + s.inFlight + s.dropped;
  if (s.published !== accounted) throw new Error(`The books do not balance: ${JSON.stringify(s)} (accounted ${accounted})`);
  return s;
}

/** Waits until the scheduler holds no task (the client released everything and it was forgotten). */
function waitIdle(url: string, timeoutMs = 60_000): Promise<true> {
  return waitFor("the scheduler to forget every task", async () => {
    const info = (await api(url, "/api/v1/info")).body as { tasks: Record<string, number> };
    return Object.values(info.tasks).every((n) => n === 0) || false;
  }, timeoutMs, 100);
}

/** A transition as both sides can state it. */
interface Transition {
  key: string;
  start: string;
  finish: string;
  stimulusId: string;
  worker?: string;
}

function tuple(t: Transition): string {
  return JSON.stringify([t.key, t.start, t.finish, t.stimulusId, t.worker ?? null]);
}

/**
 * Subscribes to the scheduler's `transition` events (live, batched) and collects them; `closed`
 * resolves with the close reason if the scheduler drops the subscriber.
 */
function streamTransitions(url: string): { events: Transition[]; ready: Promise<void>; closeReason(): string | null; close(): void } {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/v1/events?topic=transition&batch=1`);
  ws.binaryType = "arraybuffer";
  const events: Transition[] = [];
  let reason: string | null = null;
  // Subscribed once the handshake is done (the stream proves the token in-band first).
  const ready = authenticate(ws, {
    role: "events",
    token: process.env.CLUSTER_TOKEN,
    onMessage: (e) => {
      const data = JSON.parse(String(e.data));
      for (const event of Array.isArray(data) ? data : [data]) if (event.topic === "transition") events.push(event);
    },
  }).then(() => {});
  ws.onclose = (e) => (reason = `${e.code} ${e.reason}`);
  return { events, ready, closeReason: () => reason, close: () => ws.close() };
}

/**
 * A task module for the `upload-file` worker plugin: `gate.open(path)` returns once `path`
 * exists, so a test decides when the rest of a graph may run.
 */
const GATE_MODULE = `import { existsSync } from "node:fs";
export async function open(path: string): Promise<number> {
  while (!existsSync(path)) await new Promise((resolve) => setTimeout(resolve, 20));
  return 1;
}
`;

// ---- tests -------------------------------------------------------------------------------------

test("a 5,000-task graph puts exactly one message per transition in the queue, in the event stream's order", async () => {
  const queue = uniqueQueue("order");
  const toml = pluginsToml(tempDir(), [`url = "${broker.url}"`, `queue = "${queue}"`]);
  const cluster = await startCluster({ workers: 2, schedulerArgs: ["--plugins", toml] });
  let stream: ReturnType<typeof streamTransitions> | undefined;
  try {
    stream = streamTransitions(cluster.url);
    await stream.ready;
    const client = await Client.connect(cluster.url);
    const graph = graphs.map(5000, "amqp-order");
    await client.compute(graph);
    const values = await client.gather(graph.keys);
    values.forEach((v, i) => expect(v).toBe(i + 1));
    // Closing the client releases the keys: their memory → released → forgotten go too.
    await client.close();
    await waitIdle(cluster.url);
    const stats = await waitFor("the plugin to confirm every transition", async () => {
      const s = await pluginStats(cluster.url);
      return balanced(s).buffered === 0 && s.inFlight === 0 && s.confirmed === stream!.events.length ? s : false;
    }, 60_000);
    const events = stream.events;
    expect(stream.closeReason()).toBeNull();
    // Every task went released→waiting→processing→memory and, once released, to forgotten.
    expect(events.length).toBeGreaterThanOrEqual(4 * 5000);
    expect(stats).toMatchObject({ published: events.length, confirmed: events.length, dropped: 0, reconnects: 0, inFlight: 0 });

    const messages = await readQueue(broker.url, queue);
    expect(messages.length).toBe(events.length);
    const bodies = messages.map((msg) => messageBody<AmqpTransitionMessage>(msg));
    expect(messages.every((m) => !m.fields.redelivered && m.properties.deliveryMode === 2)).toBe(true);
    // The plugin's seq is its own counter: 1..N in queue order, with no duplicate.
    expect(bodies.map((b) => b.seq)).toEqual(Array.from({ length: events.length }, (_, i) => i + 1));
    // And the transitions themselves, in order, are the scheduler's.
    expect(bodies.map(tuple)).toEqual(events.map(tuple));
    const toMemory = bodies.filter((b) => b.start === "processing" && b.finish === "memory");
    expect(new Set(toMemory.map((b) => b.key)).size).toBe(5000);
    expect(toMemory.length).toBe(5000);
    expect(toMemory.every((b) => typeof b.worker === "string" && b.worker.length > 0)).toBe(true);
    const last = new Map(bodies.map((b) => [b.key, b.finish]));
    expect(last.size).toBe(5000);
    expect([...last.values()].every((finish) => finish === "forgotten")).toBe(true);
  } finally {
    stream?.close();
    await cluster.stop();
    await deleteQueue(broker.url, queue).catch(() => {});
  }
}, 180_000);

for (const [kind, graceful, n] of [["a graceful stop", true, 20_000], ["a kill -9", false, 6_000]] as const) {
test(`the graph finishes on time while the broker is down after ${kind}, and after it returns every transition is in the queue`, async () => {
  const queue = uniqueQueue(graceful ? "outage" : "crash");
  const dir = tempDir();
  const gateModule = join(dir, "gate.ts");
  const gateFile = join(dir, "gate-open");
  writeFileSync(gateModule, GATE_MODULE);
  const toml = pluginsToml(dir, [`url = "${broker.url}"`, `queue = "${queue}"`], [
    "[[worker.plugins]]",
    'use = "upload-file"',
    `path = "${gateModule}"`,
  ]);
  const cluster: TestCluster = await startCluster({ workers: 2, schedulerArgs: ["--plugins", toml] });
  let confirmedBeforeOutage = 0;
  let stream: ReturnType<typeof streamTransitions> | undefined;
  try {
    stream = streamTransitions(cluster.url);
    await stream.ready;
    const client = await Client.connect(cluster.url);
    // Half the map runs at once, while the broker is up; the other half waits for the gate,
    // which the test opens once the broker is down.
    const tasks: any[] = [{ key: "gate", fn: "gate.open", args: [gateFile] }];
    for (let i = 0; i < n; i++) {
      tasks.push(i % 2 === 0
        ? { key: `outage-${i}`, fn: "builtin.inc", args: [i] }
        : { key: `outage-${i}`, fn: "builtin.add", args: [{ $ref: "gate" }, i] });
    }
    const keys = tasks.slice(1).map((t) => t.key);
    await client.compute({ tasks, keys });
    // Some of the graph is confirmed before the outage, the rest is in the middle of it.
    await waitFor("the first transitions to be confirmed", async () => (await pluginStats(cluster.url)).confirmed >= n || false, 60_000);
    const before = balanced(await pluginStats(cluster.url));
    await broker.pause({ graceful });
    await waitFor("the plugin to notice the broker is gone", () => cluster.scheduler.stderr.join("").includes("lost connection to RabbitMQ"), 30_000);
    await sleep(200); // the thread reports its counters every 50 ms
    const down = balanced(await pluginStats(cluster.url));
    confirmedBeforeOutage = down.confirmed;
    console.error(`outage (${kind}): broker stopped with ${before.confirmed} confirmed; plugin stats when noticed ${JSON.stringify(down)}`);

    const t0 = performance.now();
    writeFileSync(gateFile, "");
    const values = await client.gather(keys);
    const graphSeconds = (performance.now() - t0) / 1000;
    // Still down: the graph did not wait for the broker.
    expect(broker.running).toBe(false);
    values.forEach((v, i) => expect(v).toBe(i + 1));
    const whileDown = balanced(await pluginStats(cluster.url));
    console.error(`outage: ${n} tasks gathered ${graphSeconds.toFixed(2)} s after the gate opened, broker down; stats ${JSON.stringify(whileDown)}`);
    expect(whileDown.buffered).toBeGreaterThan(n);
    expect(whileDown.dropped).toBe(0);
    // Generous for a shared 2-core machine; the same graph takes 1–3 s with no plugin at all.
    expect(graphSeconds).toBeLessThan(30);
    await client.close();
    await waitIdle(cluster.url);
    expect(broker.running).toBe(false);
  } finally {
    if (!broker.running) await broker.restart();
  }
  try {
    const total = stream!.events.length;
    const stats = await waitFor("the plugin to deliver everything after the broker returned", async () => {
      const s = await pluginStats(cluster.url);
      return balanced(s).buffered === 0 && s.inFlight === 0 && s.confirmed === stream!.events.length ? s : false;
    }, 120_000, 100);
    expect(stream!.closeReason()).toBeNull();
    expect(stream!.events.length).toBe(total);
    expect(stats.reconnects).toBeGreaterThanOrEqual(1);
    expect(stats).toMatchObject({ published: total, confirmed: total, buffered: 0, inFlight: 0, dropped: 0 });

    const messages = await readQueue(broker.url, queue);
    const bySeq = new Map<number, string>();
    let duplicates = 0;
    for (const msg of messages) {
      const text = msg.content.toString("utf8");
      const seq = messageBody<AmqpTransitionMessage>(msg).seq;
      const seen = bySeq.get(seq);
      if (seen !== undefined) {
        // A duplicate is a resend of the very same message.
        expect(text).toBe(seen);
        duplicates++;
      }
      bySeq.set(seq, text);
    }
    console.error(`outage (${kind}): ${total} transitions, ${messages.length} messages in the queue (${duplicates} resent duplicates); stats ${JSON.stringify(stats)}`);
    const missing = Array.from({ length: total }, (_, i) => i + 1).filter((s) => !bySeq.has(s));
    if (stats.queueMissing === 0) {
      expect(missing).toEqual([]);
      expect(bySeq.size).toBe(total);
    } else {
      // RabbitMQ 3.10 killed with -9 may lose a durable queue declared shortly before, and what
      // it had confirmed into it. The plugin saw the queue missing, said so, and delivered
      // everything it had not had confirmed.
      expect(graceful).toBe(false);
      expect(cluster.scheduler.stderr.join("")).toContain("was missing");
      expect(missing.filter((s) => s > confirmedBeforeOutage)).toEqual([]);
      console.error(`outage (${kind}): the broker lost the queue with ${missing.length} confirmed transitions (seq <= ${confirmedBeforeOutage})`);
    }
    // De-duplicated by seq, the queue holds the scheduler's transitions in its order.
    const ordered = [...bySeq.entries()].sort((a, b) => a[0] - b[0]).map(([, text]) => tuple(JSON.parse(text)));
    const delivered = stream!.events.filter((_, i) => bySeq.has(i + 1));
    expect(ordered).toEqual(delivered.map(tuple));
  } finally {
    stream?.close();
    await cluster.stop();
    await deleteQueue(broker.url, queue).catch(() => {});
  }
}, 300_000);
}

test("a queue deleted while the scheduler runs is declared again, and every transition after the deletion is in it", async () => {
  const queue = uniqueQueue("deleted");
  const dir = tempDir();
  const gateModule = join(dir, "gate.ts");
  const gateFile = join(dir, "gate-open");
  writeFileSync(gateModule, GATE_MODULE);
  const toml = pluginsToml(dir, [`url = "${broker.url}"`, `queue = "${queue}"`], [
    "[[worker.plugins]]",
    'use = "upload-file"',
    `path = "${gateModule}"`,
  ]);
  const n = 2000;
  const cluster = await startCluster({ workers: 2, schedulerArgs: ["--plugins", toml] });
  try {
    const client = await Client.connect(cluster.url);
    const tasks: any[] = [{ key: "gate", fn: "gate.open", args: [gateFile] }];
    for (let i = 0; i < n; i++) tasks.push({ key: `deleted-${i}`, fn: "builtin.add", args: [{ $ref: "gate" }, i] });
    await client.compute({ tasks, keys: tasks.slice(1).map((t) => t.key) });
    // Everything so far is confirmed; then an operator deletes the queue.
    const before = await waitFor("the first transitions to be confirmed", async () => {
      const s = balanced(await pluginStats(cluster.url));
      return s.published > 0 && s.buffered === 0 && s.inFlight === 0 ? s : false;
    }, 60_000);
    await deleteQueue(broker.url, queue);
    writeFileSync(gateFile, "");
    const values = await client.gather(tasks.slice(1).map((t) => t.key));
    values.forEach((v, i) => expect(v).toBe(i + 1));
    await client.close();
    await waitIdle(cluster.url);
    const stats = await waitFor("the plugin to deliver everything", async () => {
      const s = balanced(await pluginStats(cluster.url));
      return s.buffered === 0 && s.inFlight === 0 && s.published > before.published ? s : false;
    }, 60_000, 100);
    console.error(`deleted queue: ${before.published} confirmed before the deletion; stats ${JSON.stringify(stats)}`);
    expect(stats).toMatchObject({ confirmed: stats.published, dropped: 0 });
    expect(stats.returned + stats.queueMissing).toBeGreaterThan(0);
    expect(cluster.scheduler.stderr.join("")).toContain(`queue "${queue}" was missing`);
    const seqs = new Set((await readQueue(broker.url, queue)).map((msg) => messageBody<AmqpTransitionMessage>(msg).seq));
    const after = Array.from({ length: stats.published - before.published }, (_, i) => before.published + 1 + i);
    expect(after.filter((seq) => !seqs.has(seq))).toEqual([]);
  } finally {
    await cluster.stop();
    await deleteQueue(broker.url, queue).catch(() => {});
  }
}, 120_000);

test("a closed port or refused credentials stop the scheduler with exit code 2 and one line naming the host", async () => {
  const dir = tempDir();
  const port = await closedPort();
  const refused = await runCli(["scheduler", "--port", "0", "--plugins", pluginsToml(dir, [
    `url = "amqp://guest:guest@127.0.0.1:${port}"`,
    `queue = "${uniqueQueue("refused")}"`,
  ])], { timeoutMs: 60_000 });
  expect(refused.code).toBe(2);
  expect(refused.stdout).not.toContain("listening at");
  const refusedLine = refused.stderr.trim();
  expect(refusedLine.split("\n").length).toBe(1);
  expect(refusedLine).toContain(`Cannot connect to RabbitMQ at "127.0.0.1:${port}": connection refused`);

  const password = "wrong-password-e2e-73";
  const denied = await runCli(["scheduler", "--port", "0", "--plugins", pluginsToml(dir, [
    `url = "amqp://guest:${password}@127.0.0.1:${broker.port}"`,
    `queue = "${uniqueQueue("denied")}"`,
  ])], { timeoutMs: 60_000 });
  expect(denied.code).toBe(2);
  expect(denied.stdout).not.toContain("listening at");
  const deniedLine = denied.stderr.trim();
  expect(deniedLine.split("\n").length).toBe(1);
  expect(deniedLine).toContain(`Cannot connect to RabbitMQ at "127.0.0.1:${broker.port}": access refused`);
  expect(deniedLine).toContain("amqp");
  expect(denied.stdout + denied.stderr).not.toContain(password);

  // Not an AMQP URL at all: refused before connecting, naming the file, line and option.
  const wrongScheme = await runCli(["scheduler", "--port", "0", "--plugins", pluginsToml(dir, [
    `url = "http://guest:guest@127.0.0.1:${broker.port}"`,
    `queue = "${uniqueQueue("scheme")}"`,
  ])], { timeoutMs: 60_000 });
  expect(wrongScheme.code).toBe(2);
  expect(wrongScheme.stderr.trim().split("\n").length).toBe(1);
  expect(wrongScheme.stderr).toContain(`plugins.toml:3: plugin "amqp": option "url" must start with "amqp://" or "amqps://"`);
}, 180_000);

// lib/plugins/options.ts echoes a rejected option value (`got "…"`): a URL's password is hidden.
test("a URL with the wrong scheme is refused without showing its password", async () => {
  const password = "wrong-password-e2e-73";
  const result = await runCli(["scheduler", "--port", "0", "--plugins", pluginsToml(tempDir(), [
    `url = "http://guest:${password}@127.0.0.1:${broker.port}"`,
    `queue = "${uniqueQueue("scheme-secret")}"`,
  ])], { timeoutMs: 60_000 });
  expect(result.code).toBe(2);
  expect(result.stdout + result.stderr).not.toContain(password);
}, 60_000);

test("/metrics shows the plugin's published, confirmed and dropped counts under its name while it runs", async () => {
  const queue = uniqueQueue("metrics");
  const toml = pluginsToml(tempDir(), [`name = "status-to-rabbitmq"`, `url = "${broker.url}"`, `queue = "${queue}"`]);
  const cluster = await startCluster({ workers: 2, schedulerArgs: ["--plugins", toml] });
  try {
    const idle = await pluginStats(cluster.url, "status-to-rabbitmq");
    expect(idle).toMatchObject({ published: 0, confirmed: 0, buffered: 0, inFlight: 0, dropped: 0, reconnects: 0 });
    const client = await Client.connect(cluster.url);
    const graph = graphs.map(3000, "amqp-metrics");
    await client.compute(graph);
    // Sampled while the graph runs and the plugin publishes.
    let gatheredYet = false;
    const gathered = client.gather(graph.keys).finally(() => (gatheredYet = true));
    const running: Record<string, number>[] = [];
    while (!gatheredYet) {
      running.push(await pluginStats(cluster.url, "status-to-rabbitmq"));
      await sleep(20);
    }
    expect((await gathered).length).toBe(3000);
    expect(running.length).toBeGreaterThan(0);
    expect(running.some((s) => s.published > 0)).toBe(true);
    for (const s of running) {
      balanced(s);
      expect(s.confirmed).toBeLessThanOrEqual(s.published);
      expect(s.dropped).toBe(0);
    }
    const last = await waitFor("every transition to be confirmed", async () => {
      const s = await pluginStats(cluster.url, "status-to-rabbitmq");
      return balanced(s).buffered === 0 && s.inFlight === 0 && s.published >= 3 * 3000 ? s : false;
    }, 60_000);
    const transitions = Number(/^cluster_transitions_total (\d+)$/m.exec(await fetch(`${cluster.url}/metrics`, { headers: authHeaders() }).then((r) => r.text()))![1]);
    expect(last).toMatchObject({ published: transitions, confirmed: transitions, dropped: 0, inFlight: 0 });
    // The default name is not used when the plugin is named.
    expect(await pluginStats(cluster.url, "amqp")).toEqual({});
    await client.close();
  } finally {
    await cluster.stop();
    await deleteQueue(broker.url, queue).catch(() => {});
  }
}, 120_000);
