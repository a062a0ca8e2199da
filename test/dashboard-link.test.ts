/**
 * `cluster dashboard [URL]`: the login link with the token from CLUSTER_TOKEN or --token-file,
 * the bare URL (and a note on stderr) without one, a usage error for a bad URL.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCli, tempDir } from "../testkit/mod.ts";

describe("cluster dashboard", () => {
  test("prints the login link with the token from CLUSTER_TOKEN or --token-file, else the bare URL", async () => {
    const env = await runCli(["dashboard", "http://127.0.0.1:8790"], { env: { CLUSTER_TOKEN: "s3cret" } });
    expect(env).toEqual({ code: 0, stdout: "http://127.0.0.1:8790/?token=s3cret\n", stderr: "" });
    const file = join(tempDir(), "token");
    writeFileSync(file, "from-file\n");
    const fromFile = await runCli(["dashboard", "127.0.0.1:8791", "--token-file", file], { env: { CLUSTER_TOKEN: "" } });
    expect(fromFile.stdout).toBe("http://127.0.0.1:8791/?token=from-file\n");
    const bare = await runCli(["dashboard"], { env: { CLUSTER_TOKEN: "" } });
    expect(bare.code).toBe(0);
    expect(bare.stdout).toBe("http://127.0.0.1:8786/\n");
    expect(bare.stderr).toContain("no token");
  });

  test("a URL that is not http(s) is a usage error", async () => {
    const r = await runCli(["dashboard", "ftp://127.0.0.1:8786"], { env: { CLUSTER_TOKEN: "x" } });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
  });
});
