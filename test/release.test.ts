/**
 * The release as a user downloads it: `npm run release` writes a binary per target and
 * SHA256SUMS, install.sh picks and checks the binary for the machine from a local HTTP server,
 * and the linux-arm64 binary, emulated by qemu, works as a worker of the x64 scheduler.
 *
 * The release is built once per test run (scripts/release.ts --if-stale keeps dist/release/ when
 * the sources have not changed).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { binaryName, release, targets } from "../scripts/release.ts";
import { root, runCli, startProcess, stopAll, tempDir } from "../testkit/mod.ts";

const releaseDir = join(root, "dist", "release");
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version as string;
const host = `${process.platform === "win32" ? "windows" : process.platform}-${process.arch}`;
const hostBinary = () => join(releaseDir, binaryName(version, host));

beforeAll(() => {
  release({ ifStale: true, log: () => {} });
}, 180_000);

afterAll(stopAll);

/** The first bytes of a file. */
function head(path: string, n: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(n);
    readSync(fd, buffer, 0, n, 0);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/** The executable format and processor a binary is for, read from its header. */
function kind(path: string): string {
  const b = head(path, 64);
  if (b.readUInt32BE(0) === 0x7f454c46) return `elf-${({ 0x3e: "x64", 0xb7: "arm64" } as Record<number, string>)[b.readUInt16LE(18)]}`;
  if (b.readUInt32LE(0) === 0xfeedfacf) return `macho-${({ 0x01000007: "x64", 0x0100000c: "arm64" } as Record<number, string>)[b.readUInt32LE(4)]}`;
  if (b.toString("latin1", 0, 2) === "MZ") {
    const pe = b.readUInt32LE(60);
    const h = head(path, pe + 6);
    return `pe-${h.readUInt16LE(pe + 4) === 0x8664 ? "x64" : "other"}`;
  }
  return "unknown";
}

describe("npm run release", () => {
  test("writes a binary of the right kind for every target and SHA256SUMS that match them", () => {
    const expected: Record<string, string> = {
      "linux-x64": "elf-x64",
      "linux-arm64": "elf-arm64",
      "darwin-x64": "macho-x64",
      "darwin-arm64": "macho-arm64",
      "windows-x64": "pe-x64",
    };
    expect(Object.keys(targets).sort()).toEqual(Object.keys(expected).sort());
    const sums = readFileSync(join(releaseDir, "SHA256SUMS"), "utf8").trim().split("\n");
    expect(sums.length).toBe(5);
    for (const [target, format] of Object.entries(expected)) {
      const name = binaryName(version, target);
      expect(name).toBe(`cluster-${version}-${target}${target.startsWith("windows") ? ".exe" : ""}`);
      expect(kind(join(releaseDir, name))).toBe(format);
      const digest = createHash("sha256").update(readFileSync(join(releaseDir, name))).digest("hex");
      expect(sums).toContain(`${digest}  ${name}`);
    }
    // The same file `sha256sum -c` checks.
    const check = spawnSync("sha256sum", ["-c", "SHA256SUMS"], { cwd: releaseDir, encoding: "utf8" });
    if (check.error === undefined) expect(check.status).toBe(0);
  });

  test("the binary for this machine prints its version, commit and target", () => {
    const r = spawnSync(hostBinary(), ["--version"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(new RegExp(`^${version.replace(/\./g, "\\.")} \\(([0-9a-f]{7,}|dev)\\) ${host}$`));
  });
});

describe("install.sh", () => {
  let server: ReturnType<typeof Bun.serve>;
  let tamperedSums = "";
  beforeAll(() => {
    const sums = readFileSync(join(releaseDir, "SHA256SUMS"), "utf8");
    tamperedSums = sums.replace(/^[0-9a-f]{64}(?= {2}cluster-[^ ]*-linux-x64$)/m, "0".repeat(64));
    // A release server on loopback: /good/ is the release as built, /tampered/ has a wrong sum.
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const [, dir, name] = new URL(req.url).pathname.split("/");
        if (name === "SHA256SUMS" && dir === "tampered") return new Response(tamperedSums);
        const path = join(releaseDir, name ?? "");
        if (!name || name.includes("..") || !existsSync(path)) return new Response("not found", { status: 404 });
        return new Response(Bun.file(path));
      },
    });
  });
  afterAll(() => server?.stop(true));

  // Asynchronous: the release server runs in this process and must keep answering.
  const install = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn("sh", [join(root, "install.sh"), ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout!.setEncoding("utf8").on("data", (c: string) => (stdout += c));
      child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      child.on("exit", (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
    });

  test("picks this machine's binary from a release URL, checks it and installs it into the prefix", async () => {
    const prefix = tempDir();
    const r = await install(["--from", `http://127.0.0.1:${server.port}/good`, "--prefix", prefix]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const installed = join(prefix, "bin", "cluster");
    expect(readFileSync(installed).equals(readFileSync(hostBinary()))).toBe(true);
    expect(r.stdout).toContain(`installed ${installed}: ${version} (`);
    expect(spawnSync(installed, ["--version"], { encoding: "utf8" }).stdout).toContain(host);
  });

  test("installs from a release directory, for another target with --target or CLUSTER_RELEASE", async () => {
    const prefix = tempDir();
    const r = await install(["--prefix", prefix, "--target", "linux-arm64"], { CLUSTER_RELEASE: releaseDir });
    expect(r.status).toBe(0);
    expect(kind(join(prefix, "bin", "cluster"))).toBe("elf-arm64");
    const win = await install(["--from", releaseDir, "--prefix", prefix, "--target", "windows-x64"]);
    expect(win.status).toBe(0);
    expect(kind(join(prefix, "bin", "cluster.exe"))).toBe("pe-x64");
  });

  test("a checksum mismatch installs nothing and says so", async () => {
    const prefix = tempDir();
    const r = await install(["--from", `http://127.0.0.1:${server.port}/tampered`, "--prefix", prefix, "--target", "linux-x64"]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("checksum mismatch");
    expect(existsSync(join(prefix, "bin", "cluster"))).toBe(false);
  });

  test("an unknown target or an unreachable release is a one-line error", async () => {
    const prefix = tempDir();
    const target = await install(["--from", releaseDir, "--prefix", prefix, "--target", "plan9-mips"]);
    expect(target.status).toBe(1);
    expect(target.stderr.trim().split("\n").length).toBe(1);
    expect(target.stderr).toContain('"plan9-mips"');
    const down = await install(["--from", "http://127.0.0.1:9/release", "--prefix", prefix]);
    expect(down.status).toBe(1);
    expect(down.stderr).toContain("http://127.0.0.1:9/release/SHA256SUMS");
  });
});

/** qemu-user and the arm64 C library, installed by .ci/install-deps.sh (npm test's pretest). */
const qemu = "qemu-aarch64-static";
const armLibs = "/usr/aarch64-linux-gnu";
const canEmulate = host === "linux-x64" && spawnSync(qemu, ["--version"]).status === 0 && existsSync(join(armLibs, "lib", "ld-linux-aarch64.so.1"));
if (!canEmulate) {
  console.warn(
    `release.test.ts: SKIPPING the mixed-architecture test: it needs an x64 Linux machine with ${qemu} and ${armLibs} ` +
      `(Debian packages qemu-user-static and libc6-arm64-cross; .ci/install-deps.sh installs them as root)`,
  );
}

describe("a mixed-architecture cluster", () => {
  test.skipIf(!canEmulate)("the linux-arm64 binary under qemu is a worker of the x64 scheduler and computes a graph", async () => {
    const arm = join(releaseDir, binaryName(version, "linux-arm64"));
    const v = spawnSync(qemu, ["-L", armLibs, arm, "--version"], { encoding: "utf8", timeout: 60_000 });
    expect(v.stdout.trim()).toEndWith(" linux-arm64");
    const scheduler = await startProcess(["scheduler", "--port", "0"]);
    const dir = tempDir();
    mkdirSync(join(dir, "work"));
    let worker: ChildProcess | undefined;
    try {
      worker = spawn(qemu, ["-L", armLibs, arm, "worker", scheduler.url, "--name", "arm64-1", "--local-directory", join(dir, "work")], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      worker.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
      await new Promise<void>((resolve, reject) => {
        let out = "";
        const timer = setTimeout(() => reject(new Error(`arm64 worker not ready in 90 s: ${stderr.slice(-2000)}`)), 90_000);
        worker!.stdout!.setEncoding("utf8").on("data", (c: string) => {
          out += c;
          if (/worker arm64-1 listening at /.test(out)) {
            clearTimeout(timer);
            resolve();
          }
        });
        worker!.on("exit", (code) => reject(new Error(`arm64 worker exited (${code}): ${stderr.slice(-2000)}`)));
      });
      const tasks = [];
      for (let i = 0; i < 20; i++) tasks.push({ key: `inc-${i}`, fn: "builtin.inc", args: [i] });
      tasks.push({ key: "total", fn: "builtin.sum", args: [tasks.map((t) => ({ $ref: t.key }))] });
      tasks.push({ key: "pid", fn: "builtin.pid", args: [] });
      const graph = join(dir, "graph.json");
      writeFileSync(graph, JSON.stringify({ tasks, keys: ["total", "pid"] }));
      const r = await runCli(["submit", scheduler.url, graph, "--timeout", "60"], { timeoutMs: 90_000 });
      expect(r.stderr).toBe("");
      // The only worker is the emulated one: its process (qemu runs it in its own) computed it.
      expect(JSON.parse(r.stdout)).toEqual({ total: 210, pid: worker.pid });
      const info = await runCli(["info", scheduler.url, "--json"]);
      expect(JSON.parse(info.stdout).workers.map((w: { name: string }) => w.name)).toEqual(["arm64-1"]);
    } finally {
      if (worker && worker.exitCode === null) {
        const exited = new Promise((r) => worker!.once("exit", r));
        process.kill(worker.pid!, "SIGTERM");
        await exited;
      }
      await scheduler.stop();
    }
  }, 180_000);
});

describe("npm ci", () => {
  test("a fresh npm ci prints no install-scripts warnings, and the bun and deno it installs run", async () => {
    const dir = tempDir();
    for (const name of ["package.json", "package-lock.json"]) writeFileSync(join(dir, name), readFileSync(join(root, name)));
    const npm = (args: string[]) =>
      new Promise<{ status: number | null; output: string }>((resolve) => {
        const child = spawn("npm", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        child.stdout!.setEncoding("utf8").on("data", (c: string) => (output += c));
        child.stderr!.setEncoding("utf8").on("data", (c: string) => (output += c));
        child.on("exit", (status) => resolve({ status, output }));
      });
    const ci = await npm(["ci"]);
    expect(ci.status).toBe(0);
    expect(ci.output).not.toMatch(/allow-scripts|install-scripts|npm warn/i);
    expect(spawnSync(join(dir, "node_modules", ".bin", "bun"), ["--version"], { encoding: "utf8" }).stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(spawnSync(join(dir, "node_modules", ".bin", "deno"), ["--version"], { encoding: "utf8" }).stdout).toStartWith("deno ");
  }, 180_000);
});
