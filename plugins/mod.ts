/**
 * The registry of built-in plugins, by the name used in `use = "NAME"`. The framework
 * (lib/plugins/) never imports this file: the entry point hands it in with `setBuiltins`.
 *
 * @module
 */
import type { BuiltinRegistry } from "../lib/plugins/registry.ts";
import { amqpPlugin } from "./amqp.ts";
import { environ } from "./environ.ts";
import { jsonl } from "./jsonl.ts";
import { packageInstall } from "./package-install.ts";
import { processPool } from "./process-pool.ts";
import { uploadDirectory } from "./upload-directory.ts";
import { uploadFile } from "./upload-file.ts";
import { webhook } from "./webhook.ts";

export type { BuiltinPlugin, OptionSpec } from "../lib/plugins/registry.ts";

/** Built-in plugins by name. Each file in this folder adds one line here. */
export const builtinPlugins: BuiltinRegistry = {
  amqp: amqpPlugin,
  environ,
  jsonl,
  "package-install": packageInstall,
  "process-pool": processPool,
  "upload-directory": uploadDirectory,
  "upload-file": uploadFile,
  webhook,
};
