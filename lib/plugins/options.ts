/**
 * Checks the options of a built-in plugin against its schema (`BuiltinPlugin.options`) before
 * the plugin is created: unknown keys, wrong types and missing required options are reported
 * one at a time as a `ConfigError`, and defaults are filled in.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { OptionSpec } from "./registry.ts";

/**
 * An option spec with an optional extra check, for what the type alone cannot say (a positive
 * integer, a table of strings). A schema written with this type is still a `Record<string,
 * OptionSpec>`, so built-ins can use it in `builtinPlugins`.
 */
export interface CheckedOptionSpec extends OptionSpec {
  /** Returns what is wrong with an already type-checked value (e.g. "must be at least 1"), or nothing. */
  check?(value: unknown): string | undefined;
}

/**
 * Validates `options` against `schema` and returns a new object with the defaults filled in.
 * `where(key)` gives the prefix of an error about `key` (e.g. `"plugins.toml:7: "`); it
 * defaults to no prefix.
 *
 * @example
 * ```ts
 * const opts = validateOptions("jsonl", { path: { type: "string", required: true } }, { path: "x" });
 * ```
 */
export function validateOptions(
  pluginName: string,
  schema: Record<string, CheckedOptionSpec>,
  options: Record<string, unknown>,
  where: (key: string) => string = () => "",
): Record<string, unknown> {
  const fail = (key: string, what: string): never => {
    throw new ConfigError(`${where(key)}plugin "${pluginName}": ${what}`, { code: "E_PLUGIN_OPTION" });
  };
  for (const key of Object.keys(options)) {
    if (!Object.hasOwn(schema, key)) {
      const allowed = Object.keys(schema);
      fail(key, `unknown option "${key}" (allowed: ${allowed.length ? allowed.join(", ") : "none"})`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const value = options[key];
    if (value === undefined) {
      if (spec.required) fail(key, `missing required option "${key}" (${describeType(spec.type)})`);
      if (spec.default !== undefined) out[key] = structuredClone(spec.default);
      continue;
    }
    if (!hasType(value, spec.type)) {
      fail(key, `option "${key}" must be ${describeType(spec.type)}, got ${describeValue(value)}`);
    }
    const problem = spec.check?.(value);
    if (problem) fail(key, `option "${key}" ${problem}, got ${describeValue(value)}`);
    out[key] = value;
  }
  return out;
}

/** Whether `value` is a plain object (a TOML table or a JSON object). */
export function isTable(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function hasType(value: unknown, type: OptionSpec["type"]): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "number":
      // TOML integers parse as numbers; bigints only appear past 2^53, which no option needs.
      return typeof value === "number" && Number.isFinite(value);
    case "boolean":
      return typeof value === "boolean";
    case "string[]":
      return Array.isArray(value) && value.every((v) => typeof v === "string");
    case "table":
      return isTable(value);
  }
}

function describeType(type: OptionSpec["type"]): string {
  switch (type) {
    case "string":
      return "a string";
    case "number":
      return "a number";
    case "boolean":
      return "a boolean";
    case "string[]":
      return "an array of strings";
    case "table":
      return "a table";
  }
}

/** A short rendering of a value for an error message: `42`, `"x"`, `["a",1]`. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") value = hidePassword(value);
  let text: string;
  try {
    text = typeof value === "bigint" ? String(value) : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** A URL with its password replaced by `***` (error messages must never show one). */
export function hidePassword(text: string): string {
  if (!text.includes("@") || !text.includes("://")) return text;
  try {
    const url = new URL(text);
    if (!url.password) return text;
    url.password = "***";
    return url.href;
  } catch {
    return text.replace(/(\/\/[^:/@]*:)[^@/]*@/, "$1***@");
  }
}

/**
 * A `check` for numbers that must be whole and at least `min`.
 *
 * @example
 * ```ts
 * const schema = { batchSize: { type: "number", default: 100, check: integerAtLeast(1) } };
 * ```
 */
export function integerAtLeast(min: number): (value: unknown) => string | undefined {
  return (value) =>
    Number.isInteger(value) && (value as number) >= min ? undefined : `must be an integer of at least ${min}`;
}

/** A `check` for tables whose values must all be strings (headers, environment variables). */
export function tableOfStrings(value: unknown): string | undefined {
  if (!isTable(value)) return undefined;
  const bad = Object.entries(value).find(([, v]) => typeof v !== "string");
  return bad ? `must be a table of strings ("${bad[0]}" is not a string)` : undefined;
}
