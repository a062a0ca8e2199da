/**
 * End-to-end tests across separate hosts: the scheduler and two workers of the built binary, each
 * in its own network namespace on a private 10.77.X.0/24 (testkit/netns.ts), started as a user
 * would (`cluster scheduler --host 0.0.0.0`, `cluster worker http://10.77.X.1:8786`, one with
 * `--nanny`). Loopback cannot catch these mistakes: a ready line showing `0.0.0.0`, workers
 * announcing 127.0.0.1 (every transfer then silently relays through the scheduler), a worker
 * whose link drops. The tests talk to the scheduler from inside its namespace. Skipped, saying
 * why, when network namespaces cannot be made (not root, no `ip netns`).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  createHosts,
  netnsUnavailable,
  type NetHosts,
  type Proc,
  requireBinary,
  root,
  runCli,
  sleep,
  startProcess,
  stopAll,
  waitFor,
} from "../testkit/mod.ts";

const why = netnsUnavailable();
if (why) console.warn(`test/hosts.test.ts skipped: ${why}`);

const tasks = join(root, "test", "fixtures", "hosts-tasks.ts");
const kib = 96;
let net: NetHosts;
let scheduler: Proc;
let worker: Proc;
let nanny: Proc;
/** The scheduler's URL as the workers see it. */
let url = "";

/** GETs `path` from the scheduler, from inside its namespace (the test runs outside). */
async function schedulerGet(path: string): Promise<string> {
  const script = "const r = await fetch(process.env.HOSTS_URL); if (!r.ok) process.exit(1); process.stdout.write(await r.text());";
  const out = await runCli([], {
    command: net.command("s", [process.execPath, "-e", script]),
    env: { HOSTS_URL: `http://127.0.0.1:8786${path}` },
  });
  if (out.code !== 0) throw new Error(`GET ${path}: ${out.stderr}`);
  return out.stdout;
}

async function metric(name: string): Promise<number> {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(await schedulerGet("/metrics"));
  if (!m) throw new Error(`No metric ${name}`);
  return Number(m[1]);
}

async function workers(): Promise<Array<{ name: string; address: string; status: string }>> {
  return JSON.parse(await schedulerGet("/api/v1/info")).workers;
}

/** `cluster submit` from the scheduler's host; resolves with the results by key. */
async function submit(graph: { tasks: unknown[]; keys: string[] }): Promise<Record<string, any>> {
  const out = await runCli(["submit", "http://127.0.0.1:8786", "-", "--timeout", "90"], {
    command: net.command("s"),
    input: JSON.stringify(graph),
    timeoutMs: 100_000,
  });
  if (out.code !== 0) throw new Error(`cluster submit exited ${out.code}: ${out.stderr}`);
  return JSON.parse(out.stdout);
}

/** `n` blobs made alternately on w1 and w2, and `digest` tasks each reading blobs from both. */
function blobGraph(prefix: string, n: number, ms: number, pin: boolean): { tasks: unknown[]; keys: string[] } {
  const on = (name: string) => (pin ? { annotations: { workers: [name] } } : {});
  const tasks: unknown[] = [];
  for (let i = 0; i < n; i++) {
    tasks.push({ key: `${prefix}-blob-${i}`, fn: "hosts-tasks.blob", args: [i, kib, ms], ...on(i % 2 ? "w2" : "w1") });
  }
  const keys: string[] = [];
  for (let i = 0; i < n; i += 2) {
    const key = `${prefix}-digest-${i}`;
    const args = [kib, { $ref: `${prefix}-blob-${i}` }, { $ref: `${prefix}-blob-${i + 1}` }];
    tasks.push({ key, fn: "hosts-tasks.digest", args, ...on((i / 2) % 2 ? "w2" : "w1") });
    keys.push(key);
  }
  return { tasks, keys };
}

describe.skipIf(why !== null)("separate hosts", () => {
  beforeAll(async () => {
    requireBinary();
    net = await createHosts(["s", "w1", "w2"]);
    url = `http://${net.address("s")}:8786`;
    scheduler = await startProcess(["scheduler", "--host", "0.0.0.0", "--port", "8786", "--worker-ttl", "3"], {
      command: net.command("s"),
    });
    worker = await startProcess(["worker", url, "--name", "w1", "--tasks", tasks, "--debug"], { command: net.command("w1") });
    nanny = await startProcess(["worker", url, "--nanny", "--name", "w2", "--tasks", tasks, "--debug"], {
      command: net.command("w2"),
      ready: /nanny \S+ listening at (\S+)/,
    });
  }, 60_000);

  afterAll(async () => {
    await stopAll("SIGTERM", 5_000);
    await net?.remove();
  });

  test("a scheduler bound to 0.0.0.0 shows a URL that others can connect to and logs the bind address", async () => {
    expect(scheduler.url).toBe(url);
    expect(scheduler.stdout.join("")).not.toContain("0.0.0.0");
    expect(scheduler.stderr.join("")).toContain(`Bound to 0.0.0.0 port 8786 (every interface); announcing ${url}`);
  });

  test("each worker announces the address it reaches the scheduler from, and the other worker can reach it", async () => {
    expect(worker.url).toMatch(new RegExp(`^http://${net.address("w1").replaceAll(".", "\\.")}:\\d+$`));
    expect(nanny.url).toMatch(new RegExp(`^http://${net.address("w2").replaceAll(".", "\\.")}:\\d+$`));
    const byName = new Map((await workers()).map((w) => [w.name, w.address]));
    expect(byName.get("w1")).toBe(worker.url);
    expect(byName.get("w2")).toStartWith(`http://${net.address("w2")}:`);
    // Each worker's data endpoint answers from the other worker's host.
    for (const [from, to] of [["w2", "w1"], ["w1", "w2"]]) {
      const out = await runCli([], {
        command: net.command(from, [process.execPath, "-e", "process.stdout.write(await (await fetch(process.env.HOSTS_URL)).text())"]),
        env: { HOSTS_URL: `${byName.get(to)}/health` },
      });
      expect(out.code).toBe(0);
      expect(JSON.parse(out.stdout)).toMatchObject({ status: "ok", role: "worker", name: to });
    }
  });

  test("results larger than 64 KiB move peer to peer between hosts, never through the scheduler", async () => {
    const relayedBefore = await metric("cluster_relayed_total");
    const n = 8;
    const results = await submit(blobGraph("p2p", n, 0, true));
    const digests = Object.values(results);
    expect(digests).toHaveLength(n / 2);
    for (const d of digests) {
      expect(d.ok).toBe(true);
      expect(d.bytes).toBe(2 * kib * 1024);
      // One blob of each digest was made by the other worker's process.
      expect(d.from).toHaveLength(2);
      expect(d.from).toContain(d.here);
    }
    expect(await metric("cluster_relayed_total")).toBe(relayedBefore);
    const logs = worker.stderr.join("") + nanny.stderr.join("");
    expect(logs).not.toContain("relaying through the scheduler");
  }, 120_000);

  for (const [downMs, what] of [[1_500, "for less than --worker-ttl"], [5_000, "for longer than --worker-ttl"]] as const) {
    test(`a worker whose link goes down mid-graph ${what} and comes back loses nothing`, async () => {
      const n = 24;
      const prefix = `flap${downMs}`;
      const leftBefore = scheduler.stderr.join("").split(`Worker "w1" left`).length;
      const running = submit(blobGraph(prefix, n, 250, false));
      await sleep(1_000);
      await net.linkDown("w1");
      await sleep(downMs);
      await net.linkUp("w1");
      const results = await running;
      expect(Object.keys(results).sort()).toEqual(blobGraph(prefix, n, 0, false).keys.sort());
      for (const d of Object.values(results)) {
        expect(d.ok).toBe(true);
        expect(d.bytes).toBe(2 * kib * 1024);
      }
      // Past --worker-ttl the scheduler gave up on w1 (its work went to w2); w1 comes back on its own.
      const left = scheduler.stderr.join("").split(`Worker "w1" left`).length > leftBefore;
      if (downMs > 3_000) expect(left).toBe(true);
      await waitFor("w1 to be registered", async () => (await workers()).some((w) => w.name === "w1" && w.status === "running"), {
        timeoutMs: 30_000,
        intervalMs: 500,
      });
      expect(worker.child.exitCode).toBeNull();
    }, 120_000);
  }
});
