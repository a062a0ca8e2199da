/**
 * Dask features users reach for when they move over, against the built binary: a URL preload
 * with options and a nanny preload, module plugins that import their own files and installed
 * packages, upload-directory to the scheduler and the workers, measured transition spans
 * (`startstops`), the task state scheduler plugins read, and `retire_workers`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { api, collectEvents, runCli, startCluster, startProcess, stopAll, tempDir, waitFor } from "../testkit/mod.ts";

afterAll(stopAll);

/** A module that records each clusterSetup call (role and options) in a file named by `options.out`. */
const recordingPreload = `
import { appendFileSync } from "node:fs";
export function clusterSetup(server, options) {
  appendFileSync(options.out, JSON.stringify({ role: server.role, options }) + "\\n");
}
`;

function lines(path: string): any[] {
  return existsSync(path) ? readFileSync(path, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
}

describe("URL preloads", () => {
  let server: Server;
  let base = "";
  let fetches = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === "/setup.ts") {
        fetches++;
        res.writeHead(200, { "content-type": "text/typescript" });
        res.end(recordingPreload);
      } else {
        res.writeHead(404);
        res.end("no such module");
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  test("--preload URL with --preload-options runs clusterSetup(server, options) on the scheduler, the worker and, with --preload-nanny, the nanny", async () => {
    const dir = tempDir();
    const out = join(dir, "setup.jsonl");
    const options = JSON.stringify({ out, level: 3 });
    const cluster = await startCluster({
      workers: 0,
      nanny: true,
      schedulerArgs: ["--preload", `${base}/setup.ts`, "--preload-options", options],
      workerArgs: ["--preload", `${base}/setup.ts`, "--preload-nanny", `${base}/setup.ts`, "--preload-options", options],
    });
    try {
      await cluster.addWorker();
      await waitFor("three clusterSetup calls", () => lines(out).length >= 3, 10_000);
      const calls = lines(out);
      expect(calls.map((c) => c.role).sort()).toEqual(["nanny", "scheduler", "worker"]);
      for (const c of calls) expect(c.options).toEqual({ out, level: 3 });
      // One fetch per process that preloads it, at its start.
      expect(fetches).toBe(3);
    } finally {
      await cluster.stop();
    }
  });

  test("a URL preload that cannot be fetched stops the start with a one-line error naming the URL, exit code 1", async () => {
    const r = await runCli(["scheduler", "--port", "0", "--preload", `${base}/missing.ts`]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n").filter((l) => l.startsWith("cluster:"))).toEqual([
      `cluster: Cannot fetch preload "${base}/missing.ts": HTTP 404 Not Found`,
    ]);
  });

  test("--preload-options that is not a JSON object is a usage error naming the flag, exit code 2", async () => {
    for (const bad of ["{nope", "[1]"]) {
      const r = await runCli(["scheduler", "--port", "0", "--preload-options", bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`Invalid value for "--preload-options"`);
    }
  });
});
