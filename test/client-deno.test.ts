/**
 * The TypeScript client under Deno (`deno run -A`), against the built binary: registering
 * module plugins of every role resolves, with and without workers, also for a module that
 * imports a file beside it.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { root, runCli, startCluster, stopAll, tempDir } from "../testkit/mod.ts";

afterAll(stopAll);

const deno = [join(root, "node_modules", ".bin", "deno"), "run", "-A", join(root, "test", "fixtures", "deno-register.ts")];

function modules(): string[] {
  const dir = tempDir();
  mkdirSync(join(dir, "lib"));
  writeFileSync(join(dir, "lib", "name.ts"), `export const name = "with-helper";\n`);
  writeFileSync(join(dir, "worker.ts"), `export default { name: "deno-worker", setup() {} };\n`);
  writeFileSync(join(dir, "helper.ts"), `import { name } from "./lib/name.ts";\nexport default { name, setup() {} };\n`);
  writeFileSync(join(dir, "nanny.ts"), `export default { name: "deno-nanny", setup() {} };\n`);
  writeFileSync(join(dir, "scheduler.ts"), `export default { name: "deno-scheduler", start() {} };\n`);
  return [`worker=${join(dir, "worker.ts")}`, `worker=${join(dir, "helper.ts")}`, `nanny=${join(dir, "nanny.ts")}`, `scheduler=${join(dir, "scheduler.ts")}`];
}

describe("the client under Deno", () => {
  for (const workers of [0, 1]) {
    test(`registers and unregisters module plugins of every role with ${workers} worker${workers === 1 ? "" : "s"}`, async () => {
      const cluster = await startCluster({ workers, nanny: workers > 0 });
      try {
        const r = await runCli([cluster.url, ...modules()], { command: deno, timeoutMs: 60_000 });
        const steps = r.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
        expect(r.stderr).not.toContain("error");
        expect(steps.filter((s) => s.step === "registered").map((s) => s.name)).toEqual(["deno-worker", "with-helper", "deno-nanny", "deno-scheduler"]);
        expect(steps.at(-1)).toEqual({ step: "closed" });
        expect(r.code).toBe(0);
      } finally {
        await cluster.stop();
      }
    }, 90_000);
  }
});
