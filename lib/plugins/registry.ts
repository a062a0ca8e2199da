/**
 * What a built-in plugin is (its role, option schema, the files it ships, a factory) and the
 * registry of built-ins the framework consults. The framework never imports the built-ins
 * themselves: the entry point (`cmd/cluster.ts`) hands `plugins/mod.ts`'s registry in once with
 * {@linkcode setBuiltins}, so that the client, and any program that only needs the framework,
 * loads no built-in (and no amqplib).
 *
 * @module
 */
import { isAbsolute } from "node:path";
import type { Plugin, PluginContext, PluginRole } from "./types.ts";

/** The type of one option of a built-in plugin, checked before the plugin is created. */
export interface OptionSpec {
  type: "string" | "number" | "boolean" | "string[]" | "table";
  required?: boolean;
  default?: unknown;
  description?: string;
}

/**
 * An option whose value is a path on the registrant's disk: the registrant reads it and sends
 * its bytes with the registration (`files`), and the option is rewritten to the basename.
 */
export interface ShippedOption {
  /** The option holding the path. */
  option: string;
  /** One file (`files[basename]`) or a directory tree (`files[relative/path]`). */
  kind: "file" | "directory";
  /** For a directory: the option holding glob patterns of paths to leave out. */
  skipOption?: string;
}

/** A built-in plugin: its role, its options, what it ships, and a factory. */
export interface BuiltinPlugin {
  role: PluginRole;
  description: string;
  options: Record<string, OptionSpec>;
  /** Options naming files or directories that travel with the registration. */
  ships?: readonly ShippedOption[];
  /**
   * A worker or nanny built-in that can also be set up at the scheduler (its `start` gets the
   * scheduler): its `target` option (`"workers"`, `"scheduler"` or `"both"`) says where.
   */
  alsoAtScheduler?: boolean;
  /**
   * The option that an entry's `name` sets, for a built-in whose `name` means something of its
   * own (process-pool: the executor's name). The plugin then registers under its own name.
   */
  nameOption?: string;
  /** The name an instance registers under, from its validated options. @default the built-in's name */
  pluginName?(options: Record<string, unknown>): string;
  create(options: Record<string, unknown>, context: PluginContext): Plugin | Promise<Plugin>;
}

/** Built-in plugins by the name used in `use = "NAME"`. */
export type BuiltinRegistry = Readonly<Record<string, BuiltinPlugin>>;

let registry: BuiltinRegistry = {};

/**
 * Hands the built-in plugins to the framework (plugins.toml validation, loading, file
 * shipping). Called once by the entry point, before any plugin is loaded.
 *
 * @example
 * ```ts
 * import { builtinPlugins } from "../plugins/mod.ts";
 * setBuiltins(builtinPlugins);
 * ```
 */
export function setBuiltins(builtins: BuiltinRegistry): void {
  registry = builtins;
}

/** The built-ins handed in with {@linkcode setBuiltins} (none before). */
export function builtins(): BuiltinRegistry {
  return registry;
}

/** The built-in called `use`, if there is one (own properties only: `use = "toString"` is none). */
export function findBuiltin(use: string, from: BuiltinRegistry = registry): BuiltinPlugin | undefined {
  return Object.hasOwn(from, use) ? from[use] : undefined;
}

/** Whether `use` names a module (a path) rather than a built-in. */
export function isModulePath(use: string): boolean {
  return use.startsWith("./") || use.startsWith("../") || isAbsolute(use) || /\.(m?[jt]s|tsx?)$/.test(use);
}
