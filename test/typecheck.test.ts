/**
 * The sources type-check under Deno (strict TypeScript), so that every line runs under both
 * runtimes with the types it claims, and pass `deno lint`.
 */
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { root } from "../testkit/mod.ts";

test("deno check passes on the CLI, the client, the built-in plugins and the examples", () => {
  const deno = join(root, "node_modules", ".bin", "deno");
  const files = ["cmd/cluster.ts", "lib/client/mod.ts", "examples/amqp-consumer.ts", "examples/tasks.ts"];
  for (const dir of ["plugins", "examples/plugins", "scripts"]) {
    for (const name of readdirSync(join(root, dir))) if (name.endsWith(".ts")) files.push(`${dir}/${name}`);
  }
  const result = spawnSync(deno, ["check", ...files], { cwd: root, encoding: "utf8", timeout: 180_000 });
  // deno-lint-ignore no-control-regex -- strips deno's terminal colours
  const output = `${result.stdout}${result.stderr}`.replace(/\x1b\[[0-9;]*m/g, "");
  expect(output).not.toContain("ERROR");
  expect(result.status).toBe(0);
}, 200_000);

test("deno lint finds nothing", () => {
  const deno = join(root, "node_modules", ".bin", "deno");
  const result = spawnSync(deno, ["lint", "lib", "cmd", "plugins", "examples", "test", "bench", "testkit", "scripts"], { cwd: root, encoding: "utf8", timeout: 120_000 });
  expect(`${result.stdout}${result.stderr}`).toContain("Checked");
  expect(result.status).toBe(0);
}, 150_000);
