/**
 * TLS end to end, with real certificates made by openssl and by `cluster tls init`: the built
 * binary serves https/wss, workers and nannies trust `--tls-ca`, data moves between workers over
 * https, plain http and an untrusted CA are refused with clear errors; the same under Deno.
 *
 * @module
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "../lib/client/mod.ts";
import { ConfigError } from "../lib/errors.ts";
import { describeConnectError, isCertificateError } from "../lib/runtime/client.ts";
import { readTlsArgs, tlsFlags } from "../lib/tls/options.ts";
import { type Flavor, type Proc, runCli, startProcess, stopAll } from "../testkit/mod.ts";

interface CertSet {
  ca: string;
  cert: string;
  key: string;
}

const dir = mkdtempSync(join(tmpdir(), "cluster-tls-test-"));
let openssl: CertSet;
let generated: CertSet;

/** A CA and a server certificate for localhost and 127.0.0.1, RSA, made by openssl as an operator would. */
function opensslCerts(out: string): CertSet {
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: out, stdio: ["ignore", "pipe", "pipe"] });
  run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(join(out, "ext.cnf"), [
    "basicConstraints=CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth,clientAuth",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ].join("\n"));
  run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", "server.pem", "-days", "1",
    "-extfile", "ext.cnf");
  return { ca: join(out, "ca.pem"), cert: join(out, "server.pem"), key: join(out, "server-key.pem") };
}

function serveFlags(c: CertSet): string[] {
  return ["--tls-cert", c.cert, "--tls-key", c.key];
}

/** A graph whose 200 kB result is made on one worker and used on the other (a peer fetch). */
function bigGraph(prefix: string, from: string, to: string) {
  return {
    tasks: [
      { key: `${prefix}-big`, fn: "builtin.identity", args: ["x".repeat(200_000)], annotations: { workers: [from] } },
      { key: `${prefix}-use`, fn: "builtin.identity", args: [{ $ref: `${prefix}-big` }], annotations: { workers: [to] } },
      { key: `${prefix}-small`, fn: "builtin.inc", args: [41], annotations: { workers: [to] } },
    ],
    keys: [`${prefix}-use`, `${prefix}-small`],
  };
}

async function runBigGraph(url: string, ca: string, prefix: string, from: string, to: string): Promise<void> {
  const client = await Client.connect(url, { ca: readFileSync(ca, "utf8") });
  try {
    const futures = await client.compute(bigGraph(prefix, from, to));
    expect((await futures[`${prefix}-use`].result() as string).length).toBe(200_000);
    expect(await futures[`${prefix}-small`].result()).toBe(42);
  } finally {
    await client.close();
  }
}

/** The worker's debug log says when a peer could not be reached and data came through the scheduler. */
function relayed(proc: Proc): boolean {
  return proc.stderr.join("").includes("relaying through the scheduler");
}

beforeAll(async () => {
  const a = join(dir, "openssl");
  execFileSync("mkdir", ["-p", a]);
  openssl = opensslCerts(a);
  const b = join(dir, "init");
  const res = await runCli(["tls", "init", b]);
  expect(res.code).toBe(0);
  generated = { ca: join(b, "ca.pem"), cert: join(b, "scheduler.pem"), key: join(b, "scheduler-key.pem") };
});

afterAll(async () => {
  await stopAll();
});

describe("the --tls-* flags", () => {
  test("a nanny hands its --tls-* flags to its worker with absolute paths", () => {
    const flags = tlsFlags(["https://127.0.0.1:1", "--tls-ca", "ca.pem", "--tls-cert=dir/c.pem", "--name", "n", "--tls-key", "/k.pem"]);
    expect(flags).toEqual(["--tls-ca", join(process.cwd(), "ca.pem"), "--tls-cert", join(process.cwd(), "dir/c.pem"), "--tls-key", "/k.pem"]);
    expect(tlsFlags(["worker", "--", "--tls-ca", "x"])).toEqual([]);
  });

  test("a certificate without its key, a missing file and a file without PEM are configuration errors naming the flag", () => {
    expect(() => readTlsArgs({ "tls-cert": openssl.cert })).toThrow(ConfigError);
    expect(() => readTlsArgs({ "tls-ca": join(dir, "nope.pem") })).toThrow(`Cannot read "--tls-ca" file`);
    const notPem = join(dir, "not-pem.txt");
    writeFileSync(notPem, "hello");
    expect(() => readTlsArgs({ "tls-cert": notPem, "tls-key": openssl.key })).toThrow(`given to "--tls-cert" holds no PEM certificate`);
    expect(() => readTlsArgs({ "tls-cert": openssl.cert, "tls-key": generated.key })).toThrow(`is not the key of "--tls-cert" file`);
    const ok = readTlsArgs({ "tls-cert": openssl.cert, "tls-key": openssl.key, "tls-ca": openssl.ca });
    expect(ok.server?.key).toContain("PRIVATE KEY");
    expect(ok.ca).toContain("BEGIN CERTIFICATE");
    expect(readTlsArgs({})).toEqual({});
  });

  test("certificate failures of both runtimes are told apart from refused connections", () => {
    for (const m of ["unable to verify the first certificate", "invalid peer certificate: UnknownIssuer", "self signed certificate in certificate chain", "invalid peer certificate: NotValidForName"]) {
      expect(isCertificateError(m)).toBe(true);
      expect(describeConnectError(m)).toContain("--tls-ca");
    }
    for (const m of ["Failed to connect", "connection refused", "ECONNRESET", "connection closed (code 1006)"]) {
      expect(isCertificateError(m)).toBe(false);
      expect(describeConnectError(m)).toBe(m);
    }
  });
});

describe("cluster tls init", () => {
  for (const flavor of ["binary", "deno"] as Flavor[]) {
    test(`under ${flavor}, it writes a CA and a certificate for the given names that openssl verifies, keys mode 0600`, async () => {
      const out = join(dir, `init-${flavor}`);
      const res = await runCli(["tls", "init", out, "--name", "edge-1.lan", "--ip", "10.1.2.3"], { flavor, timeoutMs: 60_000 });
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      for (const key of ["ca-key.pem", "scheduler-key.pem"]) expect(statSync(join(out, key)).mode & 0o777).toBe(0o600);
      const verify = execFileSync("openssl", ["verify", "-CAfile", join(out, "ca.pem"), join(out, "scheduler.pem")], { encoding: "utf8" });
      expect(verify).toContain(": OK");
      const san = execFileSync("openssl", ["x509", "-in", join(out, "scheduler.pem"), "-noout", "-ext", "subjectAltName"], { encoding: "utf8" });
      for (const name of ["DNS:localhost", "DNS:edge-1.lan", "IP Address:127.0.0.1", "IP Address:10.1.2.3"]) expect(san).toContain(name);
      // A second run reuses the CA: certificates made earlier stay valid.
      const ca = readFileSync(join(out, "ca.pem"), "utf8");
      const again = await runCli(["tls", "init", out, "--cert", "worker-1"], { flavor, timeoutMs: 60_000 });
      expect(again.code).toBe(0);
      expect(readFileSync(join(out, "ca.pem"), "utf8")).toBe(ca);
      expect(execFileSync("openssl", ["verify", "-CAfile", join(out, "ca.pem"), join(out, "worker-1.pem")], { encoding: "utf8" })).toContain(": OK");
    }, 120_000);
  }

  test("a bad IP address is a usage error", async () => {
    const res = await runCli(["tls", "init", join(dir, "bad"), "--ip", "not-an-ip"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`"--ip": "not-an-ip"`);
  });
});

describe("a TLS cluster from the binary", () => {
  for (const certs of ["openssl", "tls init"]) {
    test(`with ${certs} certificates, a worker and a nanny run a graph whose 200 kB result moves between them over https`, async () => {
      const c = certs === "openssl" ? openssl : generated;
      const scheduler = await startProcess(["scheduler", "--port", "0", ...serveFlags(c)]);
      expect(scheduler.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const tag = certs === "openssl" ? "o" : "g";
      const worker = await startProcess(["worker", scheduler.url, "--name", `tls-w-${tag}`, "--tls-ca", c.ca, ...serveFlags(c), "--debug"]);
      const nanny = await startProcess(["nanny", scheduler.url, "--name", `tls-n-${tag}`, "--tls-ca", c.ca, ...serveFlags(c), "--debug"]);
      expect(worker.url).toMatch(/^https:/);
      expect(nanny.url).toMatch(/^https:/);
      const info = await runCli(["info", scheduler.url, "--tls-ca", c.ca, "--json"]);
      expect(info.code).toBe(0);
      const workers = JSON.parse(info.stdout).workers as Array<{ name: string; address: string }>;
      expect(workers.map((w) => w.address).every((a) => a.startsWith("https://"))).toBe(true);
      await runBigGraph(scheduler.url, c.ca, `${tag}1`, `tls-w-${tag}`, `tls-n-${tag}`);
      await runBigGraph(scheduler.url, c.ca, `${tag}2`, `tls-n-${tag}`, `tls-w-${tag}`);
      // Both ways the data came from the peer's https endpoint, not relayed by the scheduler.
      expect(relayed(worker) || relayed(nanny)).toBe(false);
      await Promise.all([worker.stop(), nanny.stop()]);
      await scheduler.stop();
    }, 120_000);
  }

  test("plain http and ws on a TLS port are refused, and cluster info needs the CA", async () => {
    const scheduler = await startProcess(["scheduler", "--port", "0", ...serveFlags(openssl)]);
    const plain = scheduler.url.replace("https://", "http://");
    await expect(fetch(`${plain}/health`, { signal: AbortSignal.timeout(5000) })).rejects.toThrow();
    const ws = await new Promise<string>((resolve) => {
      const socket = new WebSocket(`${plain.replace("http://", "ws://")}/api/v1/events`);
      socket.onopen = () => resolve("open");
      socket.onclose = () => resolve("closed");
    });
    expect(ws).toBe("closed");
    const untrusted = await runCli(["info", scheduler.url]);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr.trim().split("\n")).toHaveLength(1);
    expect(untrusted.stderr).toContain("--tls-ca");
    const wrongCa = await runCli(["info", scheduler.url, "--tls-ca", generated.ca]);
    expect(wrongCa.code).toBe(1);
    expect(wrongCa.stderr).toContain("certificate");
    const trusted = await runCli(["info", scheduler.url, "--tls-ca", openssl.ca]);
    expect(trusted.code).toBe(0);
    expect(trusted.stdout).toContain(`scheduler ${scheduler.url}`);
    const events = await runCli(["events", scheduler.url]);
    expect(events.code).toBe(1);
    expect(events.stderr).toContain("--tls-ca");
    await scheduler.stop();
  }, 60_000);

  test("a worker without the CA refuses the scheduler at once with a one-line error", async () => {
    const scheduler = await startProcess(["scheduler", "--port", "0", ...serveFlags(generated)]);
    const started = Date.now();
    const res = await runCli(["worker", scheduler.url, "--name", "tls-no-ca"]);
    const elapsed = Date.now() - started;
    expect(res.code).toBe(1);
    const lines = res.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^cluster: Cannot reach the scheduler at https:.*certificate.*--tls-ca/);
    // Not retried until --connect-timeout (10 s): a certificate that fails once fails every time.
    expect(elapsed).toBeLessThan(5_000);
    // A nanny without the CA fails the same way.
    const nanny = await runCli(["nanny", scheduler.url, "--name", "tls-no-ca-n"]);
    expect(nanny.code).toBe(1);
    expect(nanny.stderr).toContain("--tls-ca");
    await scheduler.stop();
  }, 60_000);

  test("the TypeScript client connects with its ca option and refuses the scheduler without it", async () => {
    const scheduler = await startProcess(["scheduler", "--port", "0", ...serveFlags(openssl)]);
    await expect(Client.connect(scheduler.url, { timeoutMs: 5000 })).rejects.toThrow(/certificate/);
    const client = await Client.connect(scheduler.url, { ca: readFileSync(openssl.ca, "utf8") });
    // The event socket (a second wss connection) trusts the same CA.
    const events: Array<Record<string, unknown>> = [];
    const stop = client.subscribe("tls-topic", (e) => events.push(e));
    await new Promise((r) => setTimeout(r, 500));
    await client.logEvent("tls-topic", { hello: 1 });
    for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(events[0]).toMatchObject({ topic: "tls-topic", hello: 1 });
    stop();
    await client.close();
    await scheduler.stop();
  }, 60_000);

  test("cluster submit with --tls-ca runs a graph on a TLS cluster", async () => {
    const scheduler = await startProcess(["scheduler", "--port", "0", ...serveFlags(generated)]);
    const worker = await startProcess(["worker", scheduler.url, "--name", "tls-submit", "--tls-ca", generated.ca]);
    const graph = JSON.stringify({ tasks: [{ key: "s1", fn: "builtin.add", args: [40, 2] }], keys: ["s1"] });
    const res = await runCli(["submit", scheduler.url, "-", "--tls-ca", generated.ca], { input: graph });
    expect(res.stderr).toBe("");
    expect(JSON.parse(res.stdout)).toEqual({ s1: 42 });
    // A worker's data endpoint without --tls-cert stays http: the scheduler link is what --tls-ca is for.
    expect(worker.url).toMatch(/^http:/);
    await worker.stop();
    await scheduler.stop();
  }, 60_000);

  test("a certificate without its key, or with another's key, is a usage error", async () => {
    const res = await runCli(["scheduler", "--port", "0", "--tls-cert", openssl.cert]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`"--tls-cert" and "--tls-key" go together`);
    const mismatch = await runCli(["worker", "https://127.0.0.1:1", "--tls-cert", openssl.cert, "--tls-key", generated.key]);
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toContain("is not the key of");
  });
});

describe("a TLS cluster under Deno", () => {
  test("a Deno scheduler with a Deno worker and a binary worker runs the graph over https both ways", async () => {
    const c = generated;
    const scheduler = await startProcess(["scheduler", "--port", "0", ...serveFlags(c)], { flavor: "deno", timeoutMs: 60_000 });
    expect(scheduler.url).toMatch(/^https:/);
    const denoWorker = await startProcess(["worker", scheduler.url, "--name", "tls-deno", "--tls-ca", c.ca, ...serveFlags(c), "--debug"], {
      flavor: "deno",
      timeoutMs: 60_000,
    });
    const binWorker = await startProcess(["worker", scheduler.url, "--name", "tls-bin", "--tls-ca", c.ca, ...serveFlags(c), "--debug"]);
    expect(denoWorker.url).toMatch(/^https:/);
    await runBigGraph(scheduler.url, c.ca, "d1", "tls-bin", "tls-deno");
    await runBigGraph(scheduler.url, c.ca, "d2", "tls-deno", "tls-bin");
    expect(relayed(denoWorker) || relayed(binWorker)).toBe(false);
    const untrusted = await runCli(["worker", scheduler.url, "--name", "tls-deno-no-ca"], { flavor: "deno", timeoutMs: 60_000 });
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toContain("--tls-ca");
    await Promise.all([denoWorker.stop(), binWorker.stop()]);
    await scheduler.stop();
  }, 180_000);
});
