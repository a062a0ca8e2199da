/**
 * `cluster dashboard [URL]`: the login link with the token from CLUSTER_TOKEN, --token-file or
 * the scheduler's state directory, the bare URL (and a note on stderr) without one, a usage
 * error for a bad URL.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCli, startProcess, stopAll, tempDir } from "../testkit/mod.ts";

afterAll(stopAll);

describe("cluster dashboard", () => {
  test("prints the login link with the token from CLUSTER_TOKEN or --token-file, else the bare URL", async () => {
    const env = await runCli(["dashboard", "http://127.0.0.1:8790"], { env: { CLUSTER_TOKEN: "s3cret" } });
    expect(env).toEqual({ code: 0, stdout: "http://127.0.0.1:8790/?token=s3cret\n", stderr: "" });
    const file = join(tempDir(), "token");
    writeFileSync(file, "from-file\n");
    const fromFile = await runCli(["dashboard", "127.0.0.1:8791", "--token-file", file], { env: { CLUSTER_TOKEN: "" } });
    expect(fromFile.stdout).toBe("http://127.0.0.1:8791/?token=from-file\n");
    const bare = await runCli(["dashboard"], { env: { CLUSTER_TOKEN: "", XDG_STATE_HOME: tempDir() } });
    expect(bare.code).toBe(0);
    expect(bare.stdout).toBe("http://127.0.0.1:8786/\n");
    expect(bare.stderr).toContain("no token");
  });

  test("reads the token a scheduler wrote in its state directory, the default one or --state-dir", async () => {
    const home = tempDir();
    const scheduler = await startProcess(["scheduler", "--port", "0"], { env: { CLUSTER_TOKEN: "", XDG_STATE_HOME: home } });
    try {
      const token = readFileSync(join(home, "cluster", "token"), "utf8").trim();
      const fromDefault = await runCli(["dashboard", scheduler.url], { env: { CLUSTER_TOKEN: "", XDG_STATE_HOME: home } });
      expect(fromDefault.stdout).toBe(`${scheduler.url}/?token=${token}\n`);
      const fromFlag = await runCli(["dashboard", scheduler.url, "--state-dir", join(home, "cluster")], { env: { CLUSTER_TOKEN: "", XDG_STATE_HOME: tempDir() } });
      expect(fromFlag.stdout).toBe(`${scheduler.url}/?token=${token}\n`);
      // The scheduler's own output names the file, never the token.
      expect(scheduler.stderr.join("") + scheduler.stdout.join("")).not.toContain(token);
      const missing = await runCli(["dashboard", "--state-dir", tempDir()], { env: { CLUSTER_TOKEN: "" } });
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("token");
    } finally {
      await scheduler.stop();
    }
  });

  test("a URL that is not http(s) is a usage error", async () => {
    const r = await runCli(["dashboard", "ftp://127.0.0.1:8786"], { env: { CLUSTER_TOKEN: "x" } });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
  });
});
