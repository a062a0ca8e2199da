/**
 * The plugins.toml loader: parses the file, expands `${VAR}` references,
 * resolves built-in names and module paths, validates built-in options, and returns one
 * `PluginSpec` per entry, in file order. Everything is checked before anything starts; every
 * problem is a `ConfigError` whose one-line message starts with `FILE:LINE:` and names the
 * plugin and the key.
 *
 * @module
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import { describeValue, isTable, validateOptions } from "./options.ts";
import { builtins, findBuiltin, isModulePath } from "./registry.ts";
import { parseTomlWithPositions, type Positions, TomlSyntaxError } from "./toml.ts";
import type { PluginRole } from "./types.ts";

/** One plugin to register, as read from plugins.toml or `POST /api/v1/plugins`. */
export interface PluginSpec {
  role: PluginRole;
  /** A built-in name, or the module path as written. */
  use: string;
  /** The name from the config; when absent, the plugin's own name (or the built-in's). */
  name?: string;
  /** Built-ins: validated, with defaults. Modules: as written (with `${VAR}` expanded). */
  options: Record<string, unknown>;
  /** Where the entry was written (its `[[ROLE.plugins]]` header). */
  source?: { file: string; line: number };
  /** Absolute module path when `use` is a path. */
  modulePath?: string;
  /** For module plugins: the module source text, so it can be shipped to workers. */
  moduleSource?: string;
}

export { isModulePath } from "./registry.ts";

/** Environment variables for `${VAR}` expansion. */
export type Env = Record<string, string | undefined>;

const ROLES: readonly PluginRole[] = ["scheduler", "worker", "nanny"];

/**
 * Reads and validates a plugins.toml file. Relative module paths resolve against the file's
 * directory.
 *
 * @example
 * ```ts
 * const specs = await loadPluginsFile("examples/plugins.toml");
 * const schedulerPlugins = specs.filter((s) => s.role === "scheduler");
 * ```
 */
export async function loadPluginsFile(path: string, options?: { env?: Env }): Promise<PluginSpec[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const why = (err as { code?: string }).code === "ENOENT" ? "file does not exist" : errorMessage(err);
    throw new ConfigError(`Cannot read plugins file "${path}": ${why}`, { code: "E_PLUGINS_FILE", cause: err });
  }
  return parsePluginsToml(text, path, options?.env ?? process.env);
}

/**
 * Parses and validates the text of a plugins.toml. `file` is used in messages and to resolve
 * relative module paths (against its directory). Module files are read (to check they exist
 * and to carry their source), never imported.
 *
 * @example
 * ```ts
 * const specs = parsePluginsToml('[[scheduler.plugins]]\nuse = "jsonl"\npath = "e.jsonl"\n', "plugins.toml", {});
 * ```
 */
export function parsePluginsToml(text: string, file: string, env: Env = process.env): PluginSpec[] {
  let doc: Record<string, unknown>;
  let pos: Positions;
  try {
    ({ doc, positions: pos } = parseTomlWithPositions(text));
  } catch (err) {
    if (err instanceof TomlSyntaxError) {
      throw new ConfigError(`${file}:${err.line}:${err.column}: TOML syntax error: ${err.message}`, {
        code: "E_TOML_SYNTAX",
        cause: err,
      });
    }
    throw new ConfigError(`${file}: cannot parse TOML: ${errorMessage(err)}`, { cause: err });
  }
  const baseDir = dirname(resolve(file));
  const at = (line: number) => `${file}:${line}: `;

  for (const key of Object.keys(doc)) {
    if (!(ROLES as readonly string[]).includes(key)) {
      throw new ConfigError(
        `${at(pos.rootLine(key))}unknown top-level key "${key}" (allowed: ${ROLES.join(", ")})`,
      );
    }
  }

  const specs: PluginSpec[] = [];
  const namesByRole = new Map<PluginRole, Map<string, number>>();
  for (const [key, section] of Object.entries(doc)) {
    const role = key as PluginRole;
    if (!isTable(section)) {
      throw new ConfigError(`${at(pos.rootLine(role))}"${role}" must be a table with a "plugins" array`);
    }
    for (const sk of Object.keys(section)) {
      if (sk !== "plugins") {
        throw new ConfigError(`${at(pos.sectionKeyLine(role, sk))}unknown key "${role}.${sk}" (allowed: plugins)`);
      }
    }
    const entries = section.plugins;
    if (entries === undefined) continue;
    if (!Array.isArray(entries)) {
      throw new ConfigError(
        `${at(pos.sectionKeyLine(role, "plugins"))}"${role}.plugins" must be an array of tables ([[${role}.plugins]]), got ${describeValue(entries)}`,
      );
    }
    const names = namesByRole.get(role) ?? new Map<string, number>();
    namesByRole.set(role, names);
    entries.forEach((entry, index) => {
      const entryLine = pos.entryLine(role, index);
      const keyLine = (k: string) => pos.entryKeyLine(role, index, k);
      if (!isTable(entry)) {
        throw new ConfigError(
          `${at(entryLine)}each entry of "${role}.plugins" must be a table, got ${describeValue(entry)}`,
        );
      }
      const spec = normalizeEntry(entry, {
        role,
        baseDir,
        env,
        where: (k) => at(k === undefined ? entryLine : keyLine(k)),
      });
      spec.source = { file, line: entryLine };
      const effectiveName = spec.name ?? (spec.modulePath ? undefined : findBuiltin(spec.use)?.pluginName?.(spec.options) ?? spec.use);
      if (effectiveName !== undefined) {
        const first = names.get(effectiveName);
        if (first !== undefined) {
          throw new ConfigError(
            `${at(entryLine)}duplicate ${role} plugin name "${effectiveName}" (first at line ${first}): give one of them another "name"`,
          );
        }
        names.set(effectiveName, entryLine);
      }
      specs.push(spec);
    });
  }
  return specs;
}

/**
 * Validates one plugin entry given as JSON (`POST /api/v1/plugins`): the role, the built-in or
 * module, and the built-in's options. Module paths resolve against `baseDir`. No `${VAR}`
 * expansion: the values come from a client, not from the operator's file. Errors are
 * `ConfigError`s without `FILE:LINE`.
 *
 * @example
 * ```ts
 * const spec = validatePluginSpec({ role: "scheduler", use: "jsonl", options: { path: "e.jsonl" } }, process.cwd());
 * ```
 */
export function validatePluginSpec(
  spec: { role: string; use: unknown; name?: unknown; options?: Record<string, unknown>; moduleSource?: unknown },
  baseDir: string,
): PluginSpec {
  if (!(ROLES as readonly unknown[]).includes(spec.role)) {
    throw new ConfigError(`"role" must be one of ${ROLES.join(", ")}, got ${describeValue(spec.role)}`);
  }
  const options = spec.options ?? {};
  if (!isTable(options)) throw new ConfigError(`"options" must be an object, got ${describeValue(options)}`);
  for (const k of ["use", "name"]) {
    if (Object.hasOwn(options, k)) throw new ConfigError(`"${k}" cannot be an option`);
  }
  const entry: Record<string, unknown> = { ...options, use: spec.use };
  if (spec.name !== undefined) entry.name = spec.name;
  return normalizeEntry(entry, {
    role: spec.role as PluginRole,
    baseDir,
    where: () => "",
    moduleSource: typeof spec.moduleSource === "string" ? spec.moduleSource : undefined,
  });
}


interface NormalizeContext {
  role: PluginRole;
  baseDir: string;
  /** When given, string values are `${VAR}`-expanded. */
  env?: Env;
  /** The message prefix for an error about key `k` (undefined: the entry as a whole). */
  where: (k?: string) => string;
  /** Module text sent along instead of a path on this machine. */
  moduleSource?: string;
}

function normalizeEntry(raw: Record<string, unknown>, ctx: NormalizeContext): PluginSpec {
  const { role, where } = ctx;
  const entry: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    entry[k] = ctx.env ? expandValue(v, ctx.env, (msg) => `${where(k)}${label(raw)}: key "${k}": ${msg}`) : v;
  }
  const { use, name, ...options } = entry;
  if (use === undefined) {
    throw new ConfigError(`${where()}${label(raw)}: missing "use" (a built-in name or a module path)`);
  }
  if (typeof use !== "string" || use.trim() === "") {
    throw new ConfigError(`${where("use")}${label(raw)}: "use" must be a non-empty string, got ${describeValue(use)}`);
  }
  if (name !== undefined && (typeof name !== "string" || name.trim() === "")) {
    throw new ConfigError(`${where("name")}plugin "${use}": "name" must be a non-empty string, got ${describeValue(name)}`);
  }
  const spec: PluginSpec = { role, use, options };
  if (name !== undefined) spec.name = name as string;
  const pluginName = (name as string | undefined) ?? use;

  if (isModulePath(use)) {
    const modulePath = resolve(ctx.baseDir, use);
    spec.modulePath = modulePath;
    if (ctx.moduleSource !== undefined) {
      spec.moduleSource = ctx.moduleSource;
      return spec;
    }
    if (!existsSync(modulePath)) {
      throw new ConfigError(`${where("use")}cannot load plugin "${pluginName}": file "${modulePath}" does not exist`, {
        code: "E_PLUGIN_MODULE",
      });
    }
    if (!statSync(modulePath).isFile()) {
      throw new ConfigError(`${where("use")}cannot load plugin "${pluginName}": "${modulePath}" is not a file`, {
        code: "E_PLUGIN_MODULE",
      });
    }
    try {
      spec.moduleSource = readFileSync(modulePath, "utf8");
    } catch (err) {
      throw new ConfigError(`${where("use")}cannot load plugin "${pluginName}": ${errorMessage(err)}`, {
        code: "E_PLUGIN_MODULE",
        cause: err,
      });
    }
    return spec;
  }

  const builtin = findBuiltin(use);
  if (!builtin) {
    const known = Object.keys(builtins()).sort();
    const hint = use.includes("/") ? `; a module path starts with "./", "../" or "/"` : "";
    throw new ConfigError(
      `${where("use")}unknown built-in plugin "${use}" (known: ${known.length ? known.join(", ") : "none"}${hint})`,
      { code: "E_PLUGIN_UNKNOWN" },
    );
  }
  if (builtin.role !== role) {
    throw new ConfigError(
      `${where("use")}built-in plugin "${use}" is a ${builtin.role} plugin, not a ${role} plugin: put it under [[${builtin.role}.plugins]]`,
      { code: "E_PLUGIN_ROLE" },
    );
  }
  if (builtin.nameOption !== undefined && name !== undefined) {
    // The entry's `name` is this built-in's option (process-pool: the executor), not the plugin's.
    options[builtin.nameOption] = name;
    delete spec.name;
  }
  spec.options = validateOptions(spec.name ?? use, builtin.options, options, (k) => where(k));
  return spec;
}

function label(raw: Record<string, unknown>): string {
  const n = typeof raw.name === "string" ? raw.name : typeof raw.use === "string" ? raw.use : undefined;
  return n === undefined ? "plugin entry" : `plugin "${n}"`;
}

/** Expands `${VAR}` forms in every string inside `value` (arrays and tables too). */
function expandValue(value: unknown, env: Env, fail: (msg: string) => string): unknown {
  if (typeof value === "string") {
    try {
      return expandEnv(value, env);
    } catch (err) {
      throw new ConfigError(fail(errorMessage(err)), { code: "E_CONFIG_VAR" });
    }
  }
  if (Array.isArray(value)) return value.map((v) => expandValue(v, env, fail));
  if (isTable(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = expandValue(v, env, fail);
    return out;
  }
  return value;
}

/**
 * Expands variables in `text` with Docker Compose's rules: `${VAR}` (unset → ""),
 * `${VAR:-default}` (unset or empty → default), `${VAR-default}` (unset → default),
 * `${VAR:?message}` (unset or empty → error), `${VAR?message}` (unset → error),
 * `${VAR:+alt}` / `${VAR+alt}` (set → alt), and `$$` for a literal `$`. Defaults may contain
 * references themselves. A `$` not followed by `{` or `$` stays as it is.
 *
 * @example
 * ```ts
 * expandEnv("amqp://${HOST:-127.0.0.1}:5672", {}); // "amqp://127.0.0.1:5672"
 * ```
 */
export function expandEnv(text: string, env: Env): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c !== "$") {
      out += c;
      i++;
      continue;
    }
    const next = text[i + 1];
    if (next === "$") {
      out += "$";
      i += 2;
      continue;
    }
    if (next !== "{") {
      out += "$";
      i++;
      continue;
    }
    let depth = 0;
    let j = i + 1;
    for (; j < text.length; j++) {
      if (text[j] === "{") depth++;
      else if (text[j] === "}" && --depth === 0) break;
    }
    if (j >= text.length) throw new SyntaxError(`unterminated "\${" in ${JSON.stringify(text)}`);
    const inner = text.slice(i + 2, j);
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([\s\S]*))?$/.exec(inner);
    if (!m) throw new SyntaxError(`invalid variable reference "\${${inner}}"`);
    const [, name, op, arg = ""] = m;
    const value = env[name];
    const isSet = value !== undefined;
    const nonEmpty = isSet && value !== "";
    switch (op) {
      case undefined:
        out += value ?? "";
        break;
      case ":-":
        out += nonEmpty ? value : expandEnv(arg, env);
        break;
      case "-":
        out += isSet ? value : expandEnv(arg, env);
        break;
      case ":+":
        out += nonEmpty ? expandEnv(arg, env) : "";
        break;
      case "+":
        out += isSet ? expandEnv(arg, env) : "";
        break;
      case ":?":
      case "?":
        if (op === ":?" ? !nonEmpty : !isSet) {
          const why = arg ? `: ${expandEnv(arg, env)}` : "";
          throw new RangeError(`required variable "${name}" is missing a value${why}`);
        }
        out += value;
        break;
    }
    i = j + 1;
  }
  return out;
}
