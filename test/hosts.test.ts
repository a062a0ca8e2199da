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
import { createServer } from "node:net";
import { join } from "node:path";
import {
  chooseDataHost,
  connectableHost,
  isWildcard,
  localAddressToward,
  primaryAddress,
  urlHost,
} from "../lib/address.ts";
import {
  createHosts,
  freePort,
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

/** GETs `url` from inside host `name` (the test itself runs outside every namespace). */
async function getFrom(name: string, url: string): Promise<string> {
  const script = "const r = await fetch(process.env.HOSTS_URL, { headers: { authorization: `Bearer ${process.env.CLUSTER_TOKEN}` } }); if (!r.ok) process.exit(1); "
    + "process.stdout.write(await r.text());";
  const command = net.command(name, [process.execPath, "-e", script]);
  const out = await runCli([], { command, env: { HOSTS_URL: url } });
  if (out.code !== 0) throw new Error(`GET ${url} from ${name}: ${out.stderr}`);
  return out.stdout;
}

/** GETs `path` from the scheduler, on its own host. */
function schedulerGet(path: string): Promise<string> {
  return getFrom("s", `http://127.0.0.1:8786${path}`);
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
    const key = `${prefix}-blob-${i}`;
    tasks.push({ key, fn: "hosts-tasks.blob", args: [i, kib, ms], ...on(i % 2 ? "w2" : "w1") });
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
    worker = await startProcess(["worker", url, "--name", "w1", "--tasks", tasks, "--debug"], {
      command: net.command("w1"),
    });
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
    const logged = `Bound to 0.0.0.0 port 8786 (every interface); announcing ${url}`;
    expect(scheduler.stderr.join("")).toContain(logged);
    // Someone on another host connects to the URL of the ready line.
    const health = JSON.parse(await getFrom("w1", `${scheduler.url}/health`));
    expect(health).toMatchObject({ status: "ok", role: "scheduler" });
  });

  test("each worker announces the address it reaches the scheduler from, which the other worker reaches", async () => {
    expect(worker.url).toMatch(new RegExp(`^http://${net.address("w1").replaceAll(".", "\\.")}:\\d+$`));
    expect(nanny.url).toMatch(new RegExp(`^http://${net.address("w2").replaceAll(".", "\\.")}:\\d+$`));
    const byName = new Map((await workers()).map((w) => [w.name, w.address]));
    expect(byName.get("w1")).toBe(worker.url);
    expect(byName.get("w2")).toStartWith(`http://${net.address("w2")}:`);
    // Each worker's data endpoint answers from the other worker's host.
    for (const [from, to] of [["w2", "w1"], ["w1", "w2"]]) {
      const health = JSON.parse(await getFrom(from, `${byName.get(to)}/health`));
      expect(health).toMatchObject({ status: "ok", role: "worker", name: to });
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

  const outages = [[1_500, "for less than --worker-ttl"], [5_000, "for longer than --worker-ttl"]] as const;
  for (const [downMs, what] of outages) {
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
      const back = async () => (await workers()).some((w) => w.name === "w1" && w.status === "running");
      await waitFor("w1 to be registered", back, { timeoutMs: 30_000, intervalMs: 500 });
      expect(worker.child.exitCode).toBeNull();
    }, 120_000);
  }
});

describe("choosing addresses", () => {
  test("wildcards are told apart from addresses, and IPv6 goes in brackets", () => {
    for (const h of ["0.0.0.0", "::", "[::]", ""]) expect(isWildcard(h)).toBe(true);
    for (const h of ["127.0.0.1", "::1", "10.77.0.1", "localhost"]) expect(isWildcard(h)).toBe(false);
    expect(urlHost("::1")).toBe("[::1]");
    expect(urlHost("[::1]")).toBe("[::1]");
    expect(urlHost("10.0.0.5")).toBe("10.0.0.5");
  });

  test("a server bound to a wildcard shows this host's primary address, one bound to an address shows it", () => {
    expect(connectableHost("127.0.0.1")).toBe("127.0.0.1");
    expect(connectableHost("::1")).toBe("[::1]");
    expect(connectableHost("0.0.0.0")).toBe(urlHost(primaryAddress()));
    expect(connectableHost("0.0.0.0")).not.toBe("0.0.0.0");
  });

  test("the address toward a loopback scheduler is 127.0.0.1, and a given --host is kept", async () => {
    const server = createServer((s) => s.destroy()).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const to = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const soon = () => Date.now() + 5_000;
    try {
      expect(await localAddressToward(to, soon())).toBe("127.0.0.1");
      expect(await chooseDataHost(undefined, to, soon())).toEqual({ listen: "127.0.0.1", announce: "127.0.0.1" });
      expect(await chooseDataHost("0.0.0.0", to, soon())).toEqual({ listen: "0.0.0.0", announce: "127.0.0.1" });
      expect(await chooseDataHost("::1", to, Date.now())).toEqual({ listen: "::1", announce: "[::1]" });
    } finally {
      server.close();
    }
  });

  test("a scheduler not reached by the deadline gives no address, and the worker falls back to 127.0.0.1", async () => {
    const to = `http://127.0.0.1:${await freePort()}`;
    const t0 = Date.now();
    expect(await localAddressToward(to, Date.now() + 500)).toBeNull();
    expect(Date.now() - t0).toBeLessThan(3_000);
    const fallback = { listen: "127.0.0.1", announce: "127.0.0.1" };
    expect(await chooseDataHost(undefined, to, Date.now() + 300)).toEqual(fallback);
  });
});
