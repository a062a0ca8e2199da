/**
 * Separate hosts on one machine, for tests that loopback cannot catch (a worker announcing
 * 127.0.0.1, a ready line showing 0.0.0.0): one network namespace per host, each with `lo` up and
 * one interface `eth0` on a private /24 (10.77.X.0/24), all joined by a bridge that lives in a
 * namespace of its own. Nothing is created outside these namespaces and there is no route to any
 * other network. Needs root and `ip netns`; `netnsUnavailable()` says why not, for a clean skip.
 *
 * Everything created is deleted by `remove()`, on process exit and on SIGINT/SIGTERM, together
 * with any process still running inside; namespaces left behind by a run that was killed
 * (SIGKILL) are deleted, with their processes, by the next `createHosts`.
 *
 * @example
 * ```ts
 * const net = await createHosts(["s", "w1"]);
 * try {
 *   const scheduler = await startProcess(["scheduler"], { command: net.command("s") });
 *   await net.linkDown("w1"); await net.linkUp("w1");
 * } finally { await net.remove(); }
 * ```
 *
 * @module
 */
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { binary, requireBinary } from "./cluster.ts";

/** Every namespace made here is named `cl-ROLE-PID-RAND`: the PID tells a stale one. */
const prefix = "cl-";

/** One host: its namespace and its address on the shared network. */
export interface NetHost {
  /** The name given to `createHosts` (`s`, `w1`, …). */
  name: string;
  /** The namespace (`cl-s-1234-ab12`). */
  ns: string;
  /** Its address on the shared /24 (`10.77.X.N`). */
  address: string;
}

/** Namespaces made by `createHosts`. */
export interface NetHosts {
  /** The shared /24's third octet: addresses are `10.77.${subnet}.N`. */
  subnet: number;
  hosts: Map<string, NetHost>;
  /** The address of host `name`. */
  address(name: string): string;
  /** The program and leading arguments that run the built binary inside host `name`. */
  command(name: string, program?: string[]): string[];
  /** Runs `argv` inside host `name` to completion; rejects on a non-zero exit. */
  exec(name: string, argv: string[]): Promise<string>;
  /** Pulls host `name`'s cable: its bridge port goes down, packets to and from it are dropped. */
  linkDown(name: string): Promise<void>;
  /** Plugs it back in. */
  linkUp(name: string): Promise<void>;
  /** Deletes every namespace made (and with them their interfaces). Idempotent. */
  remove(): Promise<void>;
}

function run(argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(" ")}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function listNamespaces(): string[] {
  const out = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  return out.status === 0 ? out.stdout.split("\n").map((l) => l.split(" ")[0]).filter(Boolean) : [];
}

/**
 * Deletes namespaces made here, SIGKILLing first what still runs in them (only what a test
 * started there can): a namespace outlives its mount point while a process is in it.
 */
function deleteNamespacesSync(names: string[]): void {
  for (const ns of names) {
    const pids = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" }).stdout ?? "";
    for (const pid of pids.split("\n").map(Number).filter((p) => p > 0)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  }
}

/** Deletes namespaces of this kit whose creating process is gone (a run killed with SIGKILL). */
function removeStale(): void {
  const stale = listNamespaces().filter((ns) => {
    const m = /^cl-[\w]+-(\d+)-[0-9a-f]+$/.exec(ns);
    return m !== null && !alive(Number(m[1]));
  });
  deleteNamespacesSync(stale);
}

let probed: string | null | undefined;

/**
 * Why separate hosts cannot be made here (not root, no `ip`, namespaces not allowed), or null
 * when they can. Creates and deletes a probe namespace once.
 */
export function netnsUnavailable(): string | null {
  if (probed !== undefined) return probed;
  if (process.platform !== "linux") return probed = "network namespaces need Linux";
  if (process.getuid?.() !== 0) return probed = "network namespaces need root";
  const probe = `${prefix}probe-${process.pid}-0`;
  const add = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (add.error || add.status !== 0) {
    return probed = `"ip netns" is not available: ${add.error?.message ?? add.stderr.trim()}`;
  }
  deleteNamespacesSync([probe]);
  return probed = null;
}

/**
 * Makes one namespace per name in `names` (the first gets `10.77.X.1`, the next `.2`, …) and a
 * bridge namespace joining them, with a random X. Throws when `netnsUnavailable()` is not null.
 */
export async function createHosts(names: string[]): Promise<NetHosts> {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  removeStale();
  const tag = `${process.pid}-${randomBytes(2).toString("hex")}`;
  const subnet = 1 + (randomBytes(1)[0] % 254);
  const bridge = `${prefix}br-${tag}`;
  const made: string[] = [];
  const hosts = new Map<string, NetHost>();
  let removed = false;
  const removeSync = () => {
    if (removed) return;
    removed = true;
    deleteNamespacesSync(made);
  };
  const onSignal = (sig: NodeJS.Signals) => () => {
    removeSync();
    process.exit(sig === "SIGINT" ? 130 : 143);
  };
  const onInt = onSignal("SIGINT");
  const onTerm = onSignal("SIGTERM");
  process.once("exit", removeSync);
  process.once("SIGINT", onInt);
  process.once("SIGTERM", onTerm);
  const remove = () => {
    process.off("exit", removeSync);
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
    removeSync();
    return Promise.resolve();
  };
  const ns = (name: string) => {
    const host = hosts.get(name);
    if (!host) throw new Error(`No host named "${name}"`);
    return host;
  };
  // The port of host `name` on the bridge; interface names have at most 15 characters.
  const port = (name: string) => `p-${name}`.slice(0, 15);
  try {
    await run(["ip", "netns", "add", bridge]);
    made.push(bridge);
    await run(["ip", "-n", bridge, "link", "set", "lo", "up"]);
    await run(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"]);
    await run(["ip", "-n", bridge, "link", "set", "br0", "up"]);
    for (const [i, name] of names.entries()) {
      if (!/^\w{1,12}$/.test(name) || hosts.has(name)) throw new Error(`Bad or repeated host name "${name}"`);
      const host: NetHost = { name, ns: `${prefix}${name}-${tag}`, address: `10.77.${subnet}.${i + 1}` };
      await run(["ip", "netns", "add", host.ns]);
      made.push(host.ns);
      hosts.set(name, host);
      await run(["ip", "-n", host.ns, "link", "set", "lo", "up"]);
      // Both ends are made inside the namespaces: nothing ever exists in this machine's own.
      const peer = ["peer", "name", "eth0", "netns", host.ns];
      await run(["ip", "-n", bridge, "link", "add", port(name), "type", "veth", ...peer]);
      await run(["ip", "-n", bridge, "link", "set", port(name), "master", "br0", "up"]);
      await run(["ip", "-n", host.ns, "addr", "add", `${host.address}/24`, "dev", "eth0"]);
      await run(["ip", "-n", host.ns, "link", "set", "eth0", "up"]);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    subnet,
    hosts,
    address: (name) => ns(name).address,
    command(name, program) {
      if (!program) requireBinary();
      return ["ip", "netns", "exec", ns(name).ns, ...(program ?? [binary])];
    },
    exec: (name, argv) => run(["ip", "netns", "exec", ns(name).ns, ...argv]),
    linkDown: (name) => run(["ip", "-n", bridge, "link", "set", port(ns(name).name), "down"]).then(() => {}),
    linkUp: (name) => run(["ip", "-n", bridge, "link", "set", port(ns(name).name), "up"]).then(() => {}),
    remove,
  };
}
