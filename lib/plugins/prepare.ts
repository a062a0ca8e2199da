/**
 * What the registrant does before a plugin travels: a module plugin's source is read, and the
 * files a built-in declares it ships (`BuiltinPlugin.ships`: `upload-file`'s file,
 * `upload-directory`'s tree) are read from the registrant's disk, so that the receiving workers
 * and nannies need no copy of anything. The built-ins come from the registry handed in by the
 * entry point (or passed here): a program that handed in none ships no files for built-ins.
 *
 * @module
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, join, relative, resolve } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import { collectModuleTree } from "./imports.ts";
import type { WirePluginSpec } from "./load.ts";
import { type BuiltinRegistry, builtins, findBuiltin, isModulePath } from "./registry.ts";

/** Glob-ish match of `skip` patterns against a path inside the directory (`*`, `**`, `?`). */
export function matchesSkip(path: string, patterns: string[]): boolean {
  const parts = path.split("/");
  for (const pattern of patterns) {
    const re = new RegExp(
      "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*\*/g, "\uE000").replace(/\*/g, "[^/]*")
        .replace(/\?/g, "[^/]").replace(/\uE000/g, ".*") + "$",
    );
    if (re.test(path)) return true;
    // A pattern without a slash matches any single path segment (like .gitignore).
    if (!pattern.includes("/") && parts.some((p) => re.test(p))) return true;
  }
  return false;
}

async function readTree(root: string, skip: string[]): Promise<Record<string, Uint8Array>> {
  const files: Record<string, Uint8Array> = {};
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      const rel = relative(root, full).split("\\").join("/");
      if (matchesSkip(rel, skip)) continue;
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) files[rel] = new Uint8Array(await readFile(full));
    }
  };
  await walk(root);
  return files;
}

/**
 * Fills in `source` and `files` of a spec from the registrant's disk.
 *
 * @example
 * ```ts
 * const spec = await preparePluginFiles({ role: "worker", use: "upload-file", options: { path: "tasks.ts" } }, ".");
 * ```
 */
export async function preparePluginFiles(
  raw: { role: string; use: string; name?: string; options?: Record<string, unknown>; [k: string]: unknown },
  baseDir: string,
  registry: BuiltinRegistry = builtins(),
): Promise<WirePluginSpec> {
  const { role, use, name, options: nested, source, files, modulePath: _m, entry, imports, ...rest } = raw;
  const options = { ...(nested ?? {}), ...rest } as Record<string, unknown>;
  const spec: WirePluginSpec = {
    role: role as WirePluginSpec["role"],
    use,
    name,
    options,
    source: source as string | undefined,
    entry: entry as string | undefined,
    imports: imports as Record<string, string> | undefined,
    files: (files as Record<string, Uint8Array> | undefined) ?? {},
  };
  if (name === undefined) delete spec.name;
  if (entry === undefined) delete spec.entry;
  if (imports === undefined) delete spec.imports;
  try {
    if (isModulePath(use) && spec.source === undefined) {
      const path = resolve(baseDir, use);
      spec.source = await readFile(path, "utf8");
      spec.modulePath = path;
      // Its own files travel with it (imports.ts).
      const tree = await collectModuleTree(path, spec.source);
      if (tree) Object.assign(spec, tree);
    }
    const ships = isModulePath(use) ? [] : findBuiltin(use, registry)?.ships ?? [];
    for (const { option, kind, skipOption } of ships) {
      const value = options[option];
      if (typeof value !== "string" || Object.keys(spec.files!).length > 0) continue;
      const path = resolve(baseDir, value);
      if (kind === "file") {
        spec.files = { [basename(path)]: new Uint8Array(await readFile(path)) };
      } else {
        if (!(await stat(path)).isDirectory()) throw new Error(`"${path}" is not a directory`);
        const patterns = skipOption !== undefined ? options[skipOption] : undefined;
        spec.files = await readTree(path, Array.isArray(patterns) ? patterns.map(String) : []);
      }
      options[option] = basename(path);
    }
  } catch (err) {
    throw new ConfigError(`Cannot prepare plugin "${name ?? use}": ${errorMessage(err)}`);
  }
  return spec;
}
