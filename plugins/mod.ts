/**
 * The registry of built-in plugins, by the name used in `use = "NAME"`.
 *
 * @module
 */
import type { Plugin, PluginContext, PluginRole } from "../lib/plugins/types.ts";
import { amqpPlugin } from "./amqp.ts";
import { environ } from "./environ.ts";
import { jsonl } from "./jsonl.ts";
import { packageInstall } from "./package-install.ts";
import { processPool } from "./process-pool.ts";
import { uploadDirectory } from "./upload-directory.ts";
import { uploadFile } from "./upload-file.ts";
import { webhook } from "./webhook.ts";

/** The type of one option of a built-in plugin, checked before the plugin is created. */
export interface OptionSpec {
  type: "string" | "number" | "boolean" | "string[]" | "table";
  required?: boolean;
  default?: unknown;
  description?: string;
}

/** A built-in plugin: its role, its options and a factory. */
export interface BuiltinPlugin {
  role: PluginRole;
  description: string;
  options: Record<string, OptionSpec>;
  create(options: Record<string, unknown>, context: PluginContext): Plugin | Promise<Plugin>;
}

/** Built-in plugins by name. Each file in this folder adds one line here. */
export const builtinPlugins: Record<string, BuiltinPlugin> = {
  amqp: amqpPlugin,
  environ,
  jsonl,
  "package-install": packageInstall,
  "process-pool": processPool,
  "upload-directory": uploadDirectory,
  "upload-file": uploadFile,
  webhook,
};
