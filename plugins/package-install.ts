/**
 * The `package-install` built-in worker plugin (Dask's `PipInstall`, for npm packages): installs
 * `packages` into `LOCAL_DIRECTORY/packages/node_modules` of every worker, with `bun add`,
 * `npm install` or `deno add`, run as a child process. A failing install fails the registration
 * with the last lines of the installer's output.
 *
 * Tasks import an installed package by its absolute path under the worker's local directory (or
 * from a task module uploaded there). An install that already happened with the same installer and
 * packages is not repeated, so a worker that restarts, or a registration sent again, costs nothing.
 * With `restartWorkers`, a worker that installed something new exits gracefully after setup so
 * that its nanny starts it again with fresh module caches (workers without a nanny only log it).
 *
 * @module
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage } from "../lib/errors.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { Logger, PluginContext, WorkerApi, WorkerPlugin } from "../lib/plugins/types.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** The package managers `package-install` can run. */
export type Installer = "bun" | "npm" | "deno";

/** Options of the `package-install` plugin. */
export interface PackageInstallOptions {
  /** npm package specs: `name`, `name@range`, `file:/abs/dir`, a tarball path or URL. */
  packages: string[];
  /** @default "bun" */
  installer?: Installer;
  /** Restart the worker (through its nanny) after installing something new. @default false */
  restartWorkers?: boolean;
}

const installers: readonly Installer[] = ["bun", "npm", "deno"];
/** How many lines of the installer's output a failure reports. */
const tailLines = 20;
/** The longest an install may take (ms). */
const installTimeoutMs = 10 * 60_000;
const markerFile = ".cluster-installed.json";

/** The command line of an installer, with the environment it needs. */
export function installerCommand(
  installer: Installer,
  packages: string[],
  dir: string,
): { command: string; args: string[]; env: Record<string, string> } {
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  const bun = (globalThis as { Bun?: unknown }).Bun;
  switch (installer) {
    case "bun":
      // A compiled Bun program is Bun itself when BUN_BE_BUN=1; plain bun ignores the variable.
      return bun && !deno
        ? { command: process.execPath, args: ["add", ...packages], env: { BUN_BE_BUN: "1" } }
        : { command: "bun", args: ["add", ...packages], env: {} };
    case "npm":
      return { command: "npm", args: ["install", "--prefix", dir, "--no-audit", "--no-fund", ...packages], env: {} };
    case "deno":
      return {
        command: deno ? deno.execPath() : "deno",
        args: ["add", ...packages.map((p) => (/^(npm|jsr):/.test(p) ? p : `npm:${p}`))],
        env: {},
      };
  }
}

/** Runs a command; resolves with its exit code and its output (stdout and stderr, interleaved). */
function runInstaller(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string> },
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    let output = "";
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const timer = setTimeout(() => {
      output += `\n(killed after ${installTimeoutMs / 1000} s)`;
      child.kill("SIGKILL");
    }, installTimeoutMs);
    const collect = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      // Only the tail is ever reported; keep memory bounded for chatty installers.
      if (output.length > 256 * 1024) output = output.slice(-64 * 1024);
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: null, output: `${output}\ncannot run "${command}": ${errorMessage(err)}` });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The last `n` non-empty lines of installer output, without colour codes. */
function tail(output: string, n: number): string {
  // deno-lint-ignore no-control-regex -- strips the installer's terminal colours
  return output.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").split(/\r?\n/).map((l) => l.trimEnd()).filter(Boolean).slice(-n).join("\n");
}

/**
 * Installs npm packages into the worker's local directory.
 *
 * @example
 * ```ts
 * const plugin = new PackageInstallPlugin({ packages: ["lodash-es@4"] }, context);
 * await plugin.setup(worker); // LOCAL_DIRECTORY/packages/node_modules/lodash-es
 * ```
 */
export class PackageInstallPlugin implements WorkerPlugin {
  name = "package-install";
  readonly packages: string[];
  readonly installer: Installer;
  readonly restartWorkers: boolean;
  #log: Logger;

  constructor(options: PackageInstallOptions, context: Pick<PluginContext, "log">) {
    if (!Array.isArray(options.packages) || options.packages.length === 0) {
      throw new TypeError(`Option "packages" of package-install must name at least one package`);
    }
    const installer = options.installer ?? "bun";
    if (!installers.includes(installer)) {
      throw new RangeError(`Option "installer" of package-install must be "bun", "npm" or "deno", got "${installer}"`);
    }
    this.packages = [...options.packages];
    this.installer = installer;
    this.restartWorkers = options.restartWorkers === true;
    this.#log = context.log;
  }

  /** The directory packages go to: `LOCAL_DIRECTORY/packages` (with `node_modules` inside). */
  static directory(worker: Pick<WorkerApi, "localDirectory">): string {
    return join(worker.localDirectory, "packages");
  }

  async setup(worker: WorkerApi): Promise<void> {
    const dir = PackageInstallPlugin.directory(worker);
    await mkdir(dir, { recursive: true });
    const manifest = join(dir, "package.json");
    if (!existsSync(manifest)) {
      await writeFile(manifest, JSON.stringify({ name: "cluster-worker-packages", private: true }, null, 2) + "\n");
    }
    const wanted = JSON.stringify({ installer: this.installer, packages: this.packages });
    const marker = join(dir, markerFile);
    const done = await readFile(marker, "utf8").catch(() => "");
    if (done === wanted && existsSync(join(dir, "node_modules"))) {
      this.#log.info(`Packages already installed: ${this.packages.join(", ")}`);
      return;
    }
    const { command, args, env } = installerCommand(this.installer, this.packages, dir);
    const started = performance.now();
    const result = await runInstaller(command, args, { cwd: dir, env });
    if (result.code !== 0) {
      const how = result.code === null ? "could not run" : `exited with code ${result.code}`;
      throw new Error(
        `Cannot install ${this.packages.map((p) => `"${p}"`).join(", ")} with ${this.installer}: ` +
          `the installer ${how}:\n${tail(result.output, tailLines)}`,
      );
    }
    await writeFile(marker, wanted);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    this.#log.info(`Installed ${this.packages.join(", ")} with ${this.installer} in ${seconds} s into ${dir}`);
    if (this.restartWorkers) this.#restart(worker);
  }

  #restart(worker: WorkerApi): void {
    // A nanny-started worker has CLUSTER_WORKER_RESTARTS set; only a nanny can bring it back.
    if (process.env.CLUSTER_WORKER_RESTARTS === undefined) {
      this.#log.warn(`restartWorkers: worker "${worker.name}" has no nanny; restart it yourself to use the new packages`);
      return;
    }
    this.#log.info(`restartWorkers: worker "${worker.name}" restarts through its nanny to load the new packages`);
    // Give the registration's acknowledgement time to leave, then close gracefully.
    setTimeout(() => process.kill(process.pid, "SIGTERM"), 500);
  }
}

const options: Record<string, CheckedOptionSpec> = {
  packages: {
    type: "string[]",
    required: true,
    check: (v) => ((v as string[]).length === 0 ? "must name at least one package" : undefined),
    description: "npm package specs (name, name@range, file:/dir, tarball)",
  },
  installer: {
    type: "string",
    default: "bun",
    check: (v) => (installers.includes(v as Installer) ? undefined : 'must be "bun", "npm" or "deno"'),
    description: "the package manager to run",
  },
  restartWorkers: { type: "boolean", default: false, description: "restart workers (through their nanny) after installing" },
};

/** The `package-install` entry of `builtinPlugins`. */
export const packageInstall: BuiltinPlugin = {
  role: "worker",
  description: "installs npm packages into every worker's local directory",
  options,
  create: (opts, context) => new PackageInstallPlugin(opts as unknown as PackageInstallOptions, context),
};
