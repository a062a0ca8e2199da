/**
 * Loading plugins as a new user meets it: a module with a syntax error names its message, file
 * and line (and leaves no temporary directory behind), the API answers the same status for a
 * module that does not load whatever its role, built-ins declare the files they ship, and
 * `process-pool`'s `name` is its executor's name while the plugin registers as `process-pool`.
 *
 * @module
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PluginError } from "../lib/errors.ts";
import { parsePluginsToml, validatePluginSpec } from "../lib/plugins/config.ts";
import { describeImportError } from "../lib/plugins/import-error.ts";
import { instantiatePlugin } from "../lib/plugins/load.ts";
import { preparePluginFiles } from "../lib/plugins/prepare.ts";
import { builtins, findBuiltin, setBuiltins } from "../lib/plugins/registry.ts";
import { builtinPlugins } from "../plugins/mod.ts";
import { api, runCli, startCluster, stopAll, tempDir, type TestCluster } from "../testkit/mod.ts";

const log = { info: () => {}, warn: () => {}, error: () => {} };

/** Three errors Bun reports together ("3 errors building …"); the first is on line 3. */
const BROKEN = `export default {
  start() {
    await 1;
  },
};
function f() { yield 3; }
`;

beforeAll(() => setBuiltins(builtinPlugins));

afterAll(async () => {
  await stopAll();
});

describe("the registry of built-ins", () => {
  test("the framework knows only the built-ins handed in to it", () => {
    setBuiltins({});
    try {
      expect(findBuiltin("jsonl")).toBeUndefined();
      expect(() => parsePluginsToml('[[scheduler.plugins]]\nuse = "jsonl"\npath = "x"\n', "p.toml", {})).toThrow(
        'p.toml:2: unknown built-in plugin "jsonl" (known: none)',
      );
    } finally {
      setBuiltins(builtinPlugins);
    }
    expect(findBuiltin("jsonl")).toBe(builtinPlugins.jsonl);
    expect(findBuiltin("toString")).toBeUndefined();
    expect(Object.keys(builtins())).toContain("amqp");
  });

  test("a built-in's declared files are read by the registrant, with no built-in name in the framework", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "tasks.ts"), "export const one = () => 1;\n");
    mkdirSync(join(dir, "tree", "skip-me"), { recursive: true });
    writeFileSync(join(dir, "tree", "a.txt"), "a");
    writeFileSync(join(dir, "tree", "skip-me", "b.txt"), "b");
    const file = await preparePluginFiles({ role: "worker", use: "upload-file", path: "tasks.ts" }, dir);
    expect(Object.keys(file.files!)).toEqual(["tasks.ts"]);
    expect(file.options.path).toBe("tasks.ts");
    const tree = await preparePluginFiles({ role: "nanny", use: "upload-directory", path: "tree", skip: ["skip-me"] }, dir);
    expect(Object.keys(tree.files!)).toEqual(["a.txt"]);
    expect(tree.options.path).toBe("tree");
    // A registry that declares nothing ships nothing: the declaration is the built-in's.
    const none = await preparePluginFiles({ role: "worker", use: "upload-file", path: "tasks.ts" }, dir, {});
    expect(none.files).toEqual({});
  });
});

describe("process-pool's name", () => {
  test("an entry's name is the executor's name and the plugin registers as process-pool", async () => {
    const [plain, gpu] = parsePluginsToml(
      '[[worker.plugins]]\nuse = "process-pool"\n\n[[worker.plugins]]\nuse = "process-pool"\nname = "gpu"\nsize = 1\n',
      "p.toml",
      {},
    );
    expect(plain.name).toBeUndefined();
    expect(plain.options.name).toBe("processes");
    expect(gpu.name).toBeUndefined();
    expect(gpu.options).toEqual({ name: "gpu", size: 1 });
    const api = validatePluginSpec({ role: "worker", use: "process-pool", name: "processes" }, ".");
    expect(api.name).toBeUndefined();
    const loaded = await instantiatePlugin({ role: "worker", use: "process-pool", options: plain.options }, { baseDir: ".", moduleDir: ".", log });
    expect(loaded.name).toBe("process-pool");
    const other = await instantiatePlugin({ role: "worker", use: "process-pool", options: gpu.options }, { baseDir: ".", moduleDir: ".", log });
    expect(other.name).toBe("process-pool-gpu");
  });

  test("two pools with the same executor name in one file are a duplicate", () => {
    expect(() =>
      parsePluginsToml('[[worker.plugins]]\nuse = "process-pool"\n\n[[worker.plugins]]\nuse = "process-pool"\nname = "processes"\n', "p.toml", {})
    ).toThrow('p.toml:4: duplicate worker plugin name "process-pool" (first at line 1)');
  });
});

describe("a module that does not load", () => {
  test("the error names the first message, the file as written and the line, and counts the others", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "broken.ts"), BROKEN);
    const err = await instantiatePlugin({ role: "scheduler", use: "./broken.ts", options: {} }, { baseDir: dir, moduleDir: dir, log })
      .then(() => null, (e) => e);
    expect(err).toBeInstanceOf(PluginError);
    expect(err.code).toBe("E_PLUGIN_LOAD");
    expect(err.message).toMatch(/^Cannot load plugin module "\.\/broken\.ts": SyntaxError: .*await.* at \.\/broken\.ts:3:\d+/);
    expect(err.message).toContain("more error");
    expect(err.message).not.toContain("errors building");
    // A shipped copy that does not load is removed again.
    const moduleDir = join(dir, "modules");
    const shipped = await instantiatePlugin({ role: "worker", use: "./broken.ts", options: {}, source: BROKEN }, { baseDir: dir, moduleDir, log })
      .then(() => null, (e) => e);
    expect(shipped).toBeInstanceOf(PluginError);
    expect(readdirSync(moduleDir)).toEqual([]);
  });

  test("a shipped copy is named as the user wrote it, not by its temporary path", () => {
    const position = { file: "/tmp/x/broken-abc.ts", line: 3, column: 5 };
    const err = Object.assign(new Error("Unexpected ;"), { name: "BuildMessage", position });
    expect(describeImportError(err, "/tmp/x/broken-abc.ts", "./broken.ts")).toBe("SyntaxError: Unexpected ; at ./broken.ts:3:5");
    const deno = new TypeError("SyntaxError: Expression expected\n  |\n3 |   x +;\n  |      ~\n    at file:///tmp/x/broken-abc.ts:3:7");
    expect(describeImportError(deno, "/tmp/x/broken-abc.ts", "./broken.ts")).toBe(
      "SyntaxError: Expression expected at ./broken.ts:3:7",
    );
  });

  test("from plugins.toml the scheduler exits 2 with message, file and line, and leaves no temporary directory", async () => {
    const dir = tempDir();
    const tmp = join(dir, "tmp");
    mkdirSync(tmp);
    writeFileSync(join(dir, "broken.ts"), BROKEN);
    writeFileSync(join(dir, "plugins.toml"), '[[scheduler.plugins]]\nuse = "./broken.ts"\n');
    const result = await runCli(["scheduler", "--port", "0", "--plugins", join(dir, "plugins.toml")], { env: { TMPDIR: tmp } });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/SyntaxError: .*await.* at \.\/broken\.ts:3:\d+/);
    expect(result.stderr).not.toContain("errors building");
    expect(readdirSync(tmp)).toEqual([]);
  });

  describe("over the API", () => {
    let cluster: TestCluster;
    beforeAll(async () => {
      cluster = await startCluster({ workers: 1 });
    }, 60_000);
    afterAll(async () => {
      await cluster?.stop();
    });

    test("a module with a syntax error is 422 with its message and line as a scheduler and as a worker plugin", async () => {
      for (const role of ["scheduler", "worker", "nanny"]) {
        const res = await api(cluster.url, "/api/v1/plugins", { body: { role, use: "./broken.ts", source: BROKEN } });
        expect({ role, status: res.status }).toEqual({ role, status: 422 });
        expect(res.body.error).toMatch(/SyntaxError: .*await.* at \.\/broken\.ts:3:\d+/);
      }
      const plugins = await api(cluster.url, "/api/v1/plugins");
      expect(JSON.stringify(plugins.body)).not.toContain("broken");
    });

    test("a module that exports no plugin is 422 for every role", async () => {
      for (const role of ["scheduler", "worker"]) {
        const res = await api(cluster.url, "/api/v1/plugins", { body: { role, use: "./empty.ts", source: "export const x = 1;\n" } });
        expect({ role, status: res.status }).toEqual({ role, status: 422 });
        expect(res.body.error).toContain("exports no plugin");
      }
    });

    test("process-pool registered over the API is listed and removed as process-pool", async () => {
      const res = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: "process-pool", size: 1 } });
      expect(res.status).toBe(201);
      expect(res.body.name).toBe("process-pool");
      const named = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: "process-pool", name: "gpu", size: 1 } });
      expect(named.status).toBe(201);
      expect(named.body.name).toBe("process-pool-gpu");
      const listed = (await api(cluster.url, "/api/v1/plugins")).body.worker.map((p: { name: string }) => p.name);
      expect(listed).toEqual(expect.arrayContaining(["process-pool", "process-pool-gpu"]));
      expect((await api(cluster.url, "/api/v1/plugins/worker/process-pool", { method: "DELETE" })).status).toBe(204);
      expect((await api(cluster.url, "/api/v1/plugins/worker/process-pool-gpu", { method: "DELETE" })).status).toBe(204);
    }, 60_000);
  });
});
