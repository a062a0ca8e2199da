/**
 * Tests of the plugins.toml loader (lib/plugins/config.ts) and option validation
 * (lib/plugins/options.ts): every error names FILE:LINE, the plugin and the key.
 *
 * @module
 */
import { expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { expandEnv, loadPluginsFile, parsePluginsToml, validatePluginSpec } from "../lib/plugins/config.ts";
import { validateOptions } from "../lib/plugins/options.ts";
import { ConfigError } from "../lib/errors.ts";
import { setBuiltins } from "../lib/plugins/registry.ts";
import { builtinPlugins } from "../plugins/mod.ts";

// As the entry point does: the framework knows the built-ins only from the registry handed in.
setBuiltins(builtinPlugins);

const dir = mkdtempSync(join(tmpdir(), "plugins-toml-"));
const file = join(dir, "plugins.toml");

/** Parses `text` as plugins.toml in `dir`; returns the ConfigError message, or fails. */
function errorOf(text: string, env: Record<string, string | undefined> = {}): string {
  try {
    parsePluginsToml(text, "plugins.toml", env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("expected a ConfigError");
}

function parse(text: string, env: Record<string, string | undefined> = {}) {
  writeFileSync(file, text);
  return parsePluginsToml(text, file, env);
}

test("a TOML syntax error names FILE:LINE:COLUMN and the reason", () => {
  const msg = errorOf('[[scheduler.plugins]]\nuse = "jsonl"\npath = = "x"\n');
  expect(msg).toMatch(/^plugins\.toml:3:\d+: TOML syntax error: /);
  expect(msg).toContain("invalid");
});

test("an unknown built-in names its line and lists the known ones", () => {
  const msg = errorOf('# comment\n\n[[scheduler.plugins]]\nname = "x"\nuse = "jsonll"\npath = "e"\n');
  expect(msg).toStartWith('plugins.toml:5: unknown built-in plugin "jsonll" (known: ');
  expect(msg).toContain("jsonl");
  expect(msg).toContain("webhook");
});

test("a built-in in the wrong section is an error naming the right one", () => {
  const msg = errorOf('[[worker.plugins]]\nuse = "jsonl"\npath = "x"\n');
  expect(msg).toBe(
    'plugins.toml:2: built-in plugin "jsonl" is a scheduler plugin, not a worker plugin: put it under [[scheduler.plugins]]',
  );
});

test("a missing module names the entry's line and the resolved path", () => {
  let msg = "";
  try {
    parse('[[worker.plugins]]\nuse = "./nope.ts"\n');
  } catch (err) {
    msg = (err as Error).message;
  }
  expect(msg).toBe(`${file}:2: cannot load plugin "./nope.ts": file "${join(dir, "nope.ts")}" does not exist`);
});

test("a relative module resolves against the file's directory and carries its source", () => {
  mkdirSync(join(dir, "plugins"), { recursive: true });
  writeFileSync(join(dir, "plugins", "p.ts"), "export default { name: 'p' };\n");
  const specs = parse('[[worker.plugins]]\nuse = "./plugins/p.ts"\nname = "pp"\nlimit = 3\n');
  expect(specs).toEqual([
    {
      role: "worker",
      use: "./plugins/p.ts",
      name: "pp",
      options: { limit: 3 },
      source: { file, line: 1 },
      modulePath: join(dir, "plugins", "p.ts"),
      moduleSource: "export default { name: 'p' };\n",
    },
  ]);
});

test("an unknown option names the line of the key and lists the allowed ones", () => {
  const msg = errorOf('[[scheduler.plugins]]\nuse = "jsonl"\npath = "x"\n\npaht = "y"\n');
  expect(msg).toBe('plugins.toml:5: plugin "jsonl": unknown option "paht" (allowed: path, topics)');
});

test("a wrong-typed option names the line of the key, the type and the value", () => {
  const text = [
    '[[scheduler.plugins]]',
    'use = "jsonl"',
    'path = "a"',
    '',
    '[[scheduler.plugins]]',
    'use = "webhook"',
    'name = "hook"',
    'url = "http://127.0.0.1:1/x"',
    'topics = [',
    '  "transition",',
    '  """multi',
    'line""",',
    ']',
    'batchSize = "many"',
  ].join("\n");
  expect(errorOf(text)).toBe('plugins.toml:14: plugin "hook": option "batchSize" must be a number, got "many"');
  expect(errorOf(text.replace('"many"', "0"))).toBe(
    'plugins.toml:14: plugin "hook": option "batchSize" must be an integer of at least 1, got 0',
  );
  expect(errorOf(text.replace('"many"', '10\nheaders = { A = 1 }'))).toBe(
    'plugins.toml:15: plugin "hook": option "headers" must be a table of strings ("A" is not a string), got {"A":1}',
  );
});

test("a missing required option names the line of the entry's header", () => {
  const msg = errorOf('[[scheduler.plugins]]\nuse = "jsonl"\n\n[[scheduler.plugins]]\nuse = "webhook"\n');
  expect(msg).toBe('plugins.toml:1: plugin "jsonl": missing required option "path" (a string)');
  const msg2 = errorOf('[[scheduler.plugins]]\nuse = "jsonl"\npath="x"\n\n[[scheduler.plugins]]\nuse = "webhook"\n');
  expect(msg2).toBe('plugins.toml:5: plugin "webhook": missing required option "url" (a string)');
});

test("an entry without use, an unknown top-level key and an unknown section key are errors", () => {
  expect(errorOf('[[nanny.plugins]]\nname = "x"\n')).toBe(
    'plugins.toml:1: plugin "x": missing "use" (a built-in name or a module path)',
  );
  expect(errorOf('[[scheduler.plugins]]\nuse = "jsonl"\npath = "x"\n\n[client]\na = 1\n')).toBe(
    'plugins.toml:5: unknown top-level key "client" (allowed: scheduler, worker, nanny)',
  );
  expect(errorOf('[scheduler]\nport = 1\n')).toBe('plugins.toml:2: unknown key "scheduler.port" (allowed: plugins)');
  expect(errorOf('[[worker.plugins]]\nuse = 3\n')).toBe('plugins.toml:2: plugin entry: "use" must be a non-empty string, got 3');
});

test("two plugins with the same name in one section are an error", () => {
  expect(errorOf('[[scheduler.plugins]]\nuse = "jsonl"\npath = "a"\n[[scheduler.plugins]]\nuse = "jsonl"\npath = "b"\n'))
    .toBe('plugins.toml:4: duplicate scheduler plugin name "jsonl" (first at line 1): give one of them another "name"');
  const ok = parsePluginsToml(
    '[[scheduler.plugins]]\nuse = "jsonl"\npath = "a"\n[[scheduler.plugins]]\nuse = "jsonl"\nname = "b"\npath = "b"\n',
    "p.toml",
    {},
  );
  expect(ok.map((s) => s.name ?? s.use)).toEqual(["jsonl", "b"]);
});

test("${VAR} expands to the variable, or to an empty string when it is unset", () => {
  const text = '[[scheduler.plugins]]\nuse = "webhook"\nurl = "http://${HOST}${PORT}/x"\nheaders = { a = "${TOKEN}" }\ntopics = ["${T}"]\n';
  const [spec] = parsePluginsToml(text, "p.toml", { HOST: "127.0.0.1", PORT: ":9", TOKEN: "s3", T: "log" });
  expect(spec.options).toEqual({
    url: "http://127.0.0.1:9/x",
    headers: { a: "s3" },
    topics: ["log"],
    batchSize: 100,
    intervalMs: 1000,
    maxBuffered: 100000,
    timeoutMs: 10000,
    closeTimeoutMs: 5000,
  });
  expect(expandEnv("a${UNSET}b", {})).toBe("ab");
});

test("${VAR:-default} uses the default when the variable is unset or empty, and $$ is a literal $", () => {
  expect(expandEnv("${A:-x}", {})).toBe("x");
  expect(expandEnv("${A:-x}", { A: "" })).toBe("x");
  expect(expandEnv("${A:-x}", { A: "y" })).toBe("y");
  expect(expandEnv("${A-x}", { A: "" })).toBe("");
  expect(expandEnv("${A:-${B:-z}}", {})).toBe("z");
  expect(expandEnv("$$HOME costs $5 ${A:+set}", { A: "1" })).toBe("$HOME costs $5 set");
  const [spec] = parsePluginsToml('[[scheduler.plugins]]\nuse = "jsonl"\npath = "${EV:-./e.jsonl}"\n', "p.toml", {});
  expect(spec.options.path).toBe("./e.jsonl");
});

test("${VAR:?message} fails with the message, naming the line, the plugin and the key", () => {
  const text = '[[scheduler.plugins]]\nuse = "webhook"\n\nurl = "${HOOK_URL:?set HOOK_URL to the receiver}"\n';
  expect(errorOf(text)).toBe(
    'plugins.toml:4: plugin "webhook": key "url": required variable "HOOK_URL" is missing a value: set HOOK_URL to the receiver',
  );
  expect(errorOf(text, { HOOK_URL: "" })).toContain("missing a value");
  expect(parsePluginsToml(text, "p.toml", { HOOK_URL: "http://127.0.0.1:1/" })[0].options.url).toBe(
    "http://127.0.0.1:1/",
  );
  expect(errorOf('[[scheduler.plugins]]\nuse = "jsonl"\npath = "${oops"\n')).toStartWith(
    'plugins.toml:3: plugin "jsonl": key "path": unterminated "${"',
  );
});

test("validateOptions fills in defaults and reports without a prefix by default", () => {
  const schema = { a: { type: "number" as const, default: 5 }, b: { type: "string[]" as const } };
  expect(validateOptions("p", schema, { b: ["x"] })).toEqual({ a: 5, b: ["x"] });
  expect(() => validateOptions("p", schema, { b: ["x", 1] })).toThrow(
    'plugin "p": option "b" must be an array of strings, got ["x",1]',
  );
});

test("validatePluginSpec checks a JSON entry without FILE:LINE", () => {
  const spec = validatePluginSpec({ role: "scheduler", use: "jsonl", options: { path: "e.jsonl" } }, dir);
  expect(spec).toEqual({ role: "scheduler", use: "jsonl", options: { path: "e.jsonl" } });
  expect(() => validatePluginSpec({ role: "worker", use: "jsonl", options: { path: "e" } }, dir)).toThrow(
    'built-in plugin "jsonl" is a scheduler plugin, not a worker plugin: put it under [[scheduler.plugins]]',
  );
  expect(() => validatePluginSpec({ role: "scheduler", use: "jsonl", options: { path: 1 } }, dir)).toThrow(
    'plugin "jsonl": option "path" must be a string, got 1',
  );
  expect(() => validatePluginSpec({ role: "boss", use: "jsonl" }, dir)).toThrow(ConfigError);
  expect(() => validatePluginSpec({ role: "worker", use: "./missing.ts" }, dir)).toThrow("does not exist");
});

test("loadPluginsFile reports a missing file", async () => {
  await expect(loadPluginsFile(join(dir, "absent.toml"))).rejects.toThrow(
    `Cannot read plugins file "${join(dir, "absent.toml")}": file does not exist`,
  );
});

test("examples/plugins.toml loads cleanly", async () => {
  const path = resolve(import.meta.dir, "../examples/plugins.toml");
  const specs = await loadPluginsFile(path, { env: {} });
  expect(specs.map((s) => [s.role, s.use])).toEqual([
    ["scheduler", "jsonl"],
    ["scheduler", "./plugins/forward-transitions.ts"],
    ["scheduler", "./plugins/task-state-reader.ts"],
    ["worker", "./plugins/timer.ts"],
    ["nanny", "environ"],
  ]);
  expect(specs[0].options).toEqual({ path: "./.tmp/events.jsonl" });
  expect(specs[4].options).toEqual({ env: { OMP_NUM_THREADS: "1" } });
  for (const s of specs.slice(1, 4)) {
    expect(s.modulePath).toStartWith(resolve(import.meta.dir, "../examples/plugins/"));
    expect(s.moduleSource).toContain("export default class");
  }
});

test("the example modules import nothing from the host at run time", async () => {
  const { readFileSync } = await import("node:fs");
  for (const name of ["timer.ts", "forward-transitions.ts", "task-state-reader.ts"]) {
    const source = readFileSync(resolve(import.meta.dir, "../examples/plugins", name), "utf8");
    const imports = source.match(/^import\s(?!type\b)[^;]*;/gm) ?? [];
    expect(imports).toEqual([]);
  }
});

test("the example plugins work when their hooks are called directly", async () => {
  const messages: string[] = [];
  const log = { info: (m: string) => messages.push(m), warn: (m: string) => messages.push(m), error: () => {} };
  const ctx = { role: "scheduler" as const, baseDir: dir, files: {}, log };
  const events: [string, Record<string, unknown>][] = [];
  const task = { key: "b", state: "erred", fn: "builtin.fail", dependencies: new Set(["a"]), worker: "w1", nbytes: 0, exception: "boom" };
  const scheduler = {
    tasks: new Map([["b", task]]),
    logEvent: (topic: string, msg: Record<string, unknown>) => events.push([topic, msg]),
    log,
  } as never;

  const { default: Forward } = await import("../examples/plugins/forward-transitions.ts");
  const forward = new Forward({ topic: "fwd" }, ctx);
  forward.start(scheduler);
  forward.transition("b", "processing", "erred", { stimulusId: "s1", worker: "w1" });
  await forward.close();
  expect(events).toEqual([["fwd", { key: "b", start: "processing", finish: "erred", worker: "w1", stimulusId: "s1" }]]);

  const { default: Reader } = await import("../examples/plugins/task-state-reader.ts");
  const reader = new Reader({}, ctx);
  reader.start(scheduler);
  reader.transition("b", "processing", "erred", { stimulusId: "s1" });
  expect(reader.stats().get("builtin.fail")).toEqual({ done: 0, erred: 1, nbytes: 0 });
  expect(messages).toContain('task "b" (builtin.fail) erred on w1 (depends on a): boom');

  const { default: Timer } = await import("../examples/plugins/timer.ts");
  const timer = new Timer({ slowMs: 10_000 }, { ...ctx, role: "worker" });
  timer.setup({ name: "w1", log } as never);
  timer.transition("a", "ready", "executing", { stimulusId: "s" });
  timer.transition("a", "executing", "memory", { stimulusId: "s" });
  timer.teardown();
  expect(timer.summary()).toMatchObject({ executions: 1, ok: 1, failed: 0 });
  expect(messages.at(-1)).toStartWith("task-timer on w1: 1 executions (1 ok, 0 failed, 0 other)");
});
