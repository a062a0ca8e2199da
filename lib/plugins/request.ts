/**
 * Validation of a plugin registration sent over the API (`POST /api/v1/plugins`, the client's
 * `registerPlugin`): one plugins.toml entry plus `role`, with optional module `source` and
 * `files` (bytes in CBOR; `{"base64": …}` or text in JSON).
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import { validatePluginSpec } from "./config.ts";
import type { WirePluginSpec } from "./load.ts";
import { safeRelativePath } from "../safe-path.ts";

function decodeFiles(raw: unknown): Record<string, Uint8Array> | Error {
  if (raw === undefined) return {};
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return new TypeError(`"files" must be an object`);
  const out: Record<string, Uint8Array> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (value instanceof Uint8Array) out[name] = value;
    else if (typeof value === "string") out[name] = new TextEncoder().encode(value);
    else if (value && typeof value === "object" && typeof (value as { base64?: unknown }).base64 === "string") {
      out[name] = Uint8Array.from(atob((value as { base64: string }).base64), (ch) => ch.charCodeAt(0));
    } else return new TypeError(`"files.${name}" must be bytes, text or {"base64": "..."}`);
  }
  return out;
}

/** A module's shipped files (`entry`, `imports`: text by path), their names checked; null when absent. */
function checkTree(entry: unknown, imports: unknown): { entry: string; imports: Record<string, string> } | null | Error {
  if (imports === undefined && entry === undefined) return null;
  if (imports === null || typeof imports !== "object" || Array.isArray(imports)) return new TypeError(`"imports" must be an object of file texts by path`);
  if (typeof entry !== "string") return new TypeError(`"entry" must be the module's path among its "imports"`);
  try {
    safeRelativePath(entry);
    for (const [path, text] of Object.entries(imports)) {
      safeRelativePath(path);
      if (typeof text !== "string") return new TypeError(`"imports.${path}" must be the file's text`);
    }
  } catch (err) {
    return new TypeError(errorMessage(err));
  }
  return { entry, imports: imports as Record<string, string> };
}

/**
 * Turns an API body into a plugin spec, or an Error (answered with 400) naming what is wrong.
 *
 * @example
 * ```ts
 * const spec = validatePluginRequest({ role: "scheduler", use: "jsonl", path: "e.jsonl" }, process.cwd());
 * ```
 */
export function validatePluginRequest(body: unknown, baseDir: string): WirePluginSpec | Error {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return new TypeError("A plugin registration must be an object with \"role\" and \"use\"");
  }
  const { role, use, name, source, files, entry, imports, options: nested, ...rest } = body as Record<string, unknown>;
  if (typeof role !== "string") return new TypeError("\"role\" is required: scheduler, worker or nanny");
  if (source !== undefined && typeof source !== "string") return new TypeError("\"source\" must be the module's text");
  const decoded = decodeFiles(files);
  if (decoded instanceof Error) return decoded;
  const tree = checkTree(entry, imports);
  if (tree instanceof Error) return tree;
  const options = nested !== undefined && typeof nested === "object" && nested !== null ? { ...nested, ...rest } : rest;
  try {
    const spec = validatePluginSpec({ role, use, name, options, moduleSource: source }, baseDir);
    return {
      role: spec.role,
      use: spec.use,
      name: spec.name,
      options: spec.options,
      modulePath: spec.modulePath,
      source: spec.moduleSource,
      ...(tree && spec.moduleSource !== undefined ? tree : {}),
      files: decoded,
    };
  } catch (err) {
    return new Error(errorMessage(err));
  }
}
