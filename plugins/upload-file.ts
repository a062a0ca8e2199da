/**
 * The `upload-file` built-in worker plugin (Dask's `UploadFile`): puts a file, sent along with
 * the registration, into every worker's local directory; a `.ts`, `.js` or `.mjs` file is then
 * loaded as a task module, so that its exports become the task functions `MODULE.EXPORT`.
 *
 * The registrant (the scheduler for plugins.toml, or the client) reads `path` from its own disk
 * and ships the bytes as `files[basename]` with `path` rewritten to the basename
 * (lib/plugins/prepare.ts); over the HTTP API the caller sends `files` itself.
 *
 * @module
 */
import { mkdir, writeFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { resolveInside, safeRelativePath } from "../lib/safe-path.ts";
import { describeImportError } from "../lib/plugins/import-error.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { PluginContext, WorkerApi, WorkerPlugin } from "../lib/plugins/types.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** Options of the `upload-file` plugin. */
export interface UploadFileOptions {
  /** The file: a key of the registration's `files` (its basename, after the registrant read it). */
  path: string;
  /** Load a `.ts`/`.js`/`.mjs` file as a task module. @default true */
  load?: boolean;
}

const moduleExtension = /\.(m?[jt]s)$/;

/**
 * Writes one file into the worker's local directory and loads it as a task module.
 *
 * @example
 * ```ts
 * const plugin = new UploadFilePlugin({ path: "tasks.ts" }, { files: { "tasks.ts": bytes } });
 * await plugin.setup(worker); // tasks.* are now task functions
 * ```
 */
export class UploadFilePlugin implements WorkerPlugin {
  /** `upload-file-BASENAME`, so that several files can be uploaded side by side. */
  name: string;
  /** Where the file goes, relative to the worker's local directory. */
  readonly relativePath: string;
  #bytes: Uint8Array;
  #load: boolean;

  constructor(options: UploadFileOptions, context: Pick<PluginContext, "files">) {
    if (typeof options.path !== "string" || options.path === "") {
      throw new TypeError(`Option "path" of upload-file must be a file name`);
    }
    // Only a relative path inside the local directory (lib/safe-path.ts: no "..", backslash, drive, NUL).
    const rel = safeRelativePath(options.path);
    const files = context.files ?? {};
    const bytes = files[options.path] ?? files[rel] ?? files[basename(rel)];
    if (!bytes) {
      const sent = Object.keys(files);
      throw new Error(
        `Cannot upload file "${options.path}": it was not sent with the registration ` +
          `(files: ${sent.length ? sent.map((f) => `"${f}"`).join(", ") : "none"})`,
      );
    }
    this.relativePath = rel;
    this.name = `upload-file-${basename(rel)}`;
    this.#bytes = bytes;
    this.#load = options.load !== false;
  }

  /** Whether the file is loaded as a task module. */
  get loadsModule(): boolean {
    return this.#load && moduleExtension.test(this.relativePath);
  }

  async setup(worker: WorkerApi): Promise<void> {
    const target = resolveInside(worker.localDirectory, this.relativePath);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, this.#bytes);
    if (!this.loadsModule) return;
    try {
      const module = await worker.loadTaskModule(target);
      worker.log.info(`Uploaded "${this.relativePath}" and loaded it as task module "${module}"`);
    } catch (err) {
      // Keep the import's own message (a SyntaxError names line and column) and say which file.
      const message = describeImportError(err, target, this.relativePath);
      throw new Error(`Cannot load uploaded task module "${this.relativePath}": ${message}`, { cause: err });
    }
  }
}

const options: Record<string, CheckedOptionSpec> = {
  path: { type: "string", required: true, description: "the file to upload (relative to plugins.toml or the client)" },
  load: { type: "boolean", default: true, description: "load a .ts/.js/.mjs file as a task module" },
};

/** The `upload-file` entry of `builtinPlugins`. */
export const uploadFile: BuiltinPlugin = {
  role: "worker",
  description: "puts a file into every worker's local directory; a .ts/.js file becomes a task module",
  options,
  ships: [{ option: "path", kind: "file" }],
  create: (opts, context) => new UploadFilePlugin(opts as unknown as UploadFileOptions, context),
};
