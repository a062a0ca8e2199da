/**
 * Turns a plugin spec (a plugins.toml entry, an API registration, or what the scheduler ships to
 * workers) into a live plugin: a built-in by name, or a TypeScript/JavaScript module that
 * default-exports a plugin (object, class or factory) or exports `clusterSetup`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, extname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ConfigError, errorMessage, PluginError } from "../errors.ts";
import { describeImportError } from "./import-error.ts";
import { collectModuleTree, writeModuleTree } from "./imports.ts";
import { builtins, findBuiltin, isModulePath } from "./registry.ts";
import type { Logger, Plugin, PluginContext, PluginRole } from "./types.ts";

/** A plugin spec as it travels: one plugins.toml entry, resolved. */
export interface WirePluginSpec {
  role: PluginRole;
  use: string;
  name?: string;
  options: Record<string, unknown>;
  /** The module's source text, for module plugins shipped to workers and nannies. */
  source?: string;
  /** The module's path inside its shipped tree, when it imports files beside it (imports.ts). */
  entry?: string;
  /** The text of the files the module imports beside it, by path inside the tree. */
  imports?: Record<string, string>;
  /** The absolute module path where it was loaded from, when local. */
  modulePath?: string;
  /** Files sent with the registration (upload-file, upload-directory). */
  files?: Record<string, Uint8Array>;
}

/** A plugin made from a spec. */
export interface LoadedPlugin<P extends Plugin = Plugin> {
  name: string;
  plugin: P;
  use: string;
}

/**
 * Reads a module plugin's source, and the files it imports beside it (imports.ts), so that it
 * can be shipped to workers. A spec that came with its source is completed with its imports
 * only when its file is here to resolve them from.
 */
export async function withSource(spec: WirePluginSpec, baseDir: string): Promise<WirePluginSpec> {
  if (!isModulePath(spec.use) || spec.imports !== undefined) return spec;
  const path = spec.modulePath ?? resolve(baseDir, spec.use);
  let source = spec.source;
  if (source === undefined) {
    try {
      source = await readFile(path, "utf8");
    } catch (err) {
      throw new ConfigError(`Cannot load plugin "${spec.name ?? spec.use}": file "${path}" cannot be read: ${errorMessage(err)}`);
    }
  } else if (!existsSync(path)) {
    return spec;
  }
  let tree;
  try {
    tree = await collectModuleTree(path, source);
  } catch (err) {
    throw new ConfigError(`Cannot load plugin "${spec.name ?? spec.use}": ${errorMessage(err)}`);
  }
  return tree ? { ...spec, modulePath: path, source, ...tree } : { ...spec, modulePath: path, source };
}

function isClass(fn: unknown): boolean {
  return typeof fn === "function" && /^class[\s{]/.test(Function.prototype.toString.call(fn));
}

/**
 * Makes a plugin from a spec. A spec that names no such built-in, or a built-in of another role,
 * is a `ConfigError` (the spec is wrong); a module that does not load or exports no plugin, and a
 * built-in or plugin class that throws while being made, is a `PluginError` (code
 * `E_PLUGIN_LOAD`), whatever the role, so that every caller answers it the same way.
 *
 * @param spec what to load
 * @param context where relative paths resolve, where shipped modules are written, the logger
 */
export async function instantiatePlugin<P extends Plugin = Plugin>(
  spec: WirePluginSpec,
  context: { baseDir: string; moduleDir: string; log: Logger },
): Promise<LoadedPlugin<P>> {
  const ctx: PluginContext = { role: spec.role, baseDir: context.baseDir, files: spec.files ?? {}, log: context.log };
  if (!isModulePath(spec.use)) {
    const builtin = findBuiltin(spec.use);
    if (!builtin) {
      const known = Object.keys(builtins()).sort();
      throw new ConfigError(`Unknown built-in plugin "${spec.use}" (known: ${known.length ? known.join(", ") : "none"})`);
    }
    if (builtin.role !== spec.role && !(spec.role === "scheduler" && builtin.alsoAtScheduler)) {
      throw new ConfigError(`Plugin "${spec.use}" is a ${builtin.role} plugin, not a ${spec.role} plugin`);
    }
    const plugin = await made(spec, () => builtin.create(spec.options, ctx)) as P;
    return { name: spec.name ?? plugin.name ?? spec.use, plugin, use: spec.use };
  }
  let path: string;
  let written: string | null = null;
  if (spec.source !== undefined && spec.imports !== undefined && Object.keys(spec.imports).length > 0) {
    // With its own files: written side by side in a folder of its own.
    const tree = await writeModuleTree(context.moduleDir, basename(spec.use, extname(spec.use)), spec.source, {
      entry: spec.entry ?? basename(spec.use),
      imports: spec.imports,
    }).catch((err) => {
      throw new PluginError(spec.name ?? spec.use, `Cannot write plugin module "${spec.use}": ${errorMessage(err)}`, { code: "E_PLUGIN_LOAD", cause: err });
    });
    path = tree.path;
    written = tree.folder;
  } else if (spec.source !== undefined) {
    const hash = createHash("sha256").update(spec.source).digest("hex").slice(0, 12);
    const ext = extname(spec.use) || ".ts";
    await mkdir(context.moduleDir, { recursive: true });
    path = join(context.moduleDir, `${basename(spec.use, extname(spec.use))}-${hash}${ext}`);
    await writeFile(path, spec.source);
    written = path;
  } else {
    path = spec.modulePath ?? resolve(context.baseDir, spec.use);
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(path).href);
  } catch (err) {
    // A copy that does not load is of no use later: leave nothing behind.
    if (written) await rm(written, { recursive: true, force: true }).catch(() => {});
    // Name the module as the user wrote it, not the copy under a temporary directory. A package
    // it imports may exist only where package-install put it (the workers): a code of its own.
    throw new PluginError(spec.name ?? spec.use, `Cannot load plugin module "${spec.use}": ${describeImportError(err, path, spec.use)}`, {
      code: missingPackage(err) ? "E_PLUGIN_PACKAGE_MISSING" : "E_PLUGIN_LOAD",
      cause: err,
    });
  }
  const defaultName = basename(spec.use, extname(spec.use));
  const plugin = await made(spec, () => fromModule(mod, spec, ctx));
  if (!plugin) {
    throw new PluginError(spec.name ?? defaultName, `Plugin module "${spec.use}" exports no plugin: expected a default export or clusterSetup()`, {
      code: "E_PLUGIN_LOAD",
    });
  }
  return { name: spec.name ?? plugin.name ?? defaultName, plugin: plugin as P, use: spec.use };
}

/** Whether an import failed for a bare package that is not installed here (Bun's and Deno's words). */
function missingPackage(err: unknown): boolean {
  const message = errorMessage(err);
  return /Cannot find (?:package|module) ['"](?![./]|node:)[^'"]+['"]/.test(message) ||
    /Import ["'](?![./]|node:)[^"']+["'] not a dependency|Relative import path ["'](?![./]|node:)[^"']+["'] not prefixed/.test(message);
}

/** Runs a plugin's factory or constructor; what it throws becomes a `PluginError` naming it. */
async function made<T>(spec: WirePluginSpec, make: () => T | Promise<T>): Promise<T> {
  try {
    return await make();
  } catch (err) {
    if (err instanceof PluginError || err instanceof ConfigError) throw err;
    throw new PluginError(spec.name ?? spec.use, errorMessage(err), { code: "E_PLUGIN_LOAD", cause: err });
  }
}

async function fromModule(mod: Record<string, unknown>, spec: WirePluginSpec, ctx: PluginContext): Promise<Plugin | null> {
  const exported = mod.default;
  if (typeof exported === "function") {
    if (isClass(exported)) return new (exported as new (o: unknown, c: unknown) => Plugin)(spec.options, ctx);
    return await (exported as (o: unknown, c: unknown) => Plugin | Promise<Plugin>)(spec.options, ctx);
  }
  if (exported && typeof exported === "object") return exported as Plugin;
  const setup = mod.clusterSetup as ((server: unknown, options: unknown) => unknown) | undefined;
  if (typeof setup !== "function") return null;
  const teardown = mod.clusterTeardown as ((server: unknown) => unknown) | undefined;
  let server: unknown;
  if (spec.role === "scheduler") {
    return {
      start: (s: unknown) => {
        server = s;
        return setup(s, spec.options) as void;
      },
      close: () => teardown?.(server) as void,
    };
  }
  return {
    setup: (s: unknown) => {
      server = s;
      return setup(s, spec.options) as void;
    },
    teardown: () => teardown?.(server) as void,
  };
}
