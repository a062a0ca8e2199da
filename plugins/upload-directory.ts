/**
 * The `upload-directory` built-in nanny plugin (Dask's `UploadDirectory`): the registrant (the
 * client, or the CLI reading a plugins.toml) reads the directory, leaving out paths that match
 * `skip`, and sends its files with the registration (`context.files`, keyed by the path inside
 * the directory) and `path` rewritten to the directory's name. `setup` writes them under
 * `NANNY_LOCAL_DIRECTORY/NAME` on every nanny, so nothing needs to be on the nannies' disks.
 *
 * With `updatePath`, that directory joins `nanny.taskPaths`: every `.ts`/`.js` file at its top
 * level is loaded as a task module by each worker the nanny starts (`MODULE.EXPORT`), and files
 * below it can be imported by those modules. A running worker cannot see new files or task
 * modules, so the plugin asks for a restart when `restartWorkers` or `updatePath` is set; a
 * nanny that receives the plugin before its first worker starts needs none.
 *
 * `target` says where the directory goes: `"workers"` (every nanny, the default), `"scheduler"`
 * (the scheduler's `localDirectory`, for its plugins), or `"both"`. Each directory registers as
 * `upload-directory-NAME` (Dask's name), so several live side by side.
 *
 * @module
 */
import { mkdir, writeFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { resolveInside, safeRelativePath } from "../lib/safe-path.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { Logger, NannyApi, NannyPlugin, PluginContext, SchedulerApi, SchedulerPlugin } from "../lib/plugins/types.ts";
import { type PluginTarget, pluginTargets } from "../lib/plugins/target.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** Options of the `upload-directory` plugin. */
export interface UploadDirectoryOptions {
  /** The directory to send; on the nannies it is named after its last path segment. */
  path: string;
  /** Restart running workers after the files are in place. @default false */
  restartWorkers?: boolean;
  /** Load the directory's top-level modules as task modules on the workers (restarts them). @default false */
  updatePath?: boolean;
  /** Patterns (`*`, `**`, `?`) of paths inside the directory to leave out; applied by the registrant. @default [] */
  skip?: string[];
  /** Where it goes: every nanny, the scheduler, or both. @default "workers" */
  target?: PluginTarget;
}

/** The check for every file name sent with the registration (lib/safe-path.ts). */
export { safeRelativePath };

/**
 * Writes an uploaded directory into every nanny's local directory.
 *
 * @example
 * ```ts
 * const plugin = new UploadDirectoryPlugin({ path: "mytasks", updatePath: true }, { files, log });
 * await plugin.setup(nanny); // NANNY_LOCAL_DIRECTORY/mytasks/..., and nanny.taskPaths has it
 * ```
 */
export class UploadDirectoryPlugin implements NannyPlugin {
  name: string;
  /** Whether the worker restarts after setup (`restartWorkers` or `updatePath`). */
  readonly restart: boolean;
  /** The directory's name on the nannies. */
  readonly dirName: string;
  readonly updatePath: boolean;
  #files: Array<[string, Uint8Array]>;
  #dir: string | null = null;

  constructor(options: UploadDirectoryOptions, context: Pick<PluginContext, "files" | "log">) {
    if (typeof options.path !== "string" || options.path.trim() === "") {
      throw new TypeError(`Invalid option "path" of plugin "upload-directory": must be a non-empty string`);
    }
    this.dirName = basename(options.path.replace(/[\\/]+$/, ""));
    if (this.dirName === "" || this.dirName === "." || this.dirName === "..") {
      throw new RangeError(`Invalid option "path" of plugin "upload-directory": "${options.path}" does not name a directory`);
    }
    this.name = `upload-directory-${this.dirName}`;
    this.updatePath = options.updatePath === true;
    this.restart = options.restartWorkers === true || this.updatePath;
    // Check every name now, so a bad registration fails at the scheduler's probe already.
    this.#files = Object.entries(context.files ?? {}).map(([name, bytes]) => [safeRelativePath(name), bytes]);
    if (this.#files.length === 0) warnEmpty(context.log, options.path);
  }

  /** The files' paths inside the directory. */
  get files(): string[] {
    return this.#files.map(([name]) => name);
  }

  /** Writes the files under `base`/NAME; returns that directory. */
  async write(base: string): Promise<string> {
    const dir = resolve(base, this.dirName);
    await mkdir(dir, { recursive: true });
    for (const [name, bytes] of this.#files) {
      const target = resolveInside(dir, name);
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, bytes);
    }
    return dir;
  }

  async setup(nanny: NannyApi): Promise<void> {
    const dir = await this.write(nanny.localDirectory);
    this.#dir = dir;
    if (this.updatePath && !nanny.taskPaths.includes(dir)) nanny.taskPaths.push(dir);
  }

  /** Takes the directory off the task path; the files stay, as in Dask. */
  teardown(nanny: NannyApi): void {
    if (!this.#dir) return;
    const index = nanny.taskPaths.indexOf(this.#dir);
    if (index >= 0) nanny.taskPaths.splice(index, 1);
  }
}

/** The same directory at the scheduler (`target` "scheduler" or "both"): under its `localDirectory`. */
export class SchedulerUploadDirectoryPlugin implements SchedulerPlugin {
  readonly name: string;
  #upload: UploadDirectoryPlugin;
  constructor(upload: UploadDirectoryPlugin) {
    this.#upload = upload;
    this.name = upload.name;
  }
  async start(scheduler: SchedulerApi): Promise<void> {
    await this.#upload.write(scheduler.localDirectory);
  }
}

function warnEmpty(log: Logger | undefined, path: string): void {
  log?.warn(`No files were sent for "${path}": the registrant reads the directory (client, CLI or "files" in the request)`);
}

const options: Record<string, CheckedOptionSpec> = {
  path: { type: "string", required: true, description: "the directory to send (relative to plugins.toml)" },
  restartWorkers: { type: "boolean", default: false, description: "restart running workers once the files are in place" },
  updatePath: { type: "boolean", default: false, description: "load its top-level modules as task modules (restarts workers)" },
  skip: { type: "string[]", default: [], description: "patterns of paths inside the directory to leave out" },
  target: {
    type: "string",
    default: "workers",
    check: (v) => (pluginTargets.includes(v as PluginTarget) ? undefined : 'must be "workers", "scheduler" or "both"'),
    description: "where the directory goes: every nanny, the scheduler, or both",
  },
};

/** The `upload-directory` entry of `builtinPlugins`. */
export const uploadDirectory: BuiltinPlugin = {
  role: "nanny",
  description: "sends a directory to every nanny's local directory",
  options,
  ships: [{ option: "path", kind: "directory", skipOption: "skip" }],
  alsoAtScheduler: true,
  pluginName: (o) => `upload-directory-${basename(String(o.path ?? "").replace(/[\\/]+$/, ""))}`,
  create: (opts, context) => {
    const upload = new UploadDirectoryPlugin(opts as unknown as UploadDirectoryOptions, context);
    return context.role === "scheduler" ? new SchedulerUploadDirectoryPlugin(upload) : upload;
  },
};
