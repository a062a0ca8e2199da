/**
 * The `environ` built-in nanny plugin (Dask's `Environ`): sets environment variables for the
 * worker process. The nanny starts every worker with its own environment plus `nanny.env`, so
 * `setup` only has to fill `nanny.env`; `restart = true` makes a worker that is already running
 * restart to pick the variables up. A nanny that gets the plugin at its first welcome has not
 * started a worker yet, so its first worker starts with the variables and no restart happens.
 *
 * @module
 */
import { tableOfStrings } from "../lib/plugins/options.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { NannyApi, NannyPlugin } from "../lib/plugins/types.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";

/** Options of the `environ` plugin. */
export interface EnvironOptions {
  /** Variables to set in the worker's environment, e.g. `{ OMP_NUM_THREADS = "1" }`. */
  env: Record<string, string>;
}

/**
 * Sets environment variables for the worker process of every nanny.
 *
 * @example
 * ```ts
 * const plugin = new EnvironPlugin({ env: { FOO: "bar" } });
 * plugin.setup(nanny); // nanny.env.FOO === "bar"; the next worker sees it
 * ```
 */
export class EnvironPlugin implements NannyPlugin {
  name = "environ";
  /** A running worker has its environment fixed: it must restart to see the variables. */
  restart = true;
  readonly env: Readonly<Record<string, string>>;

  constructor(options: EnvironOptions) {
    const problem = tableOfStrings(options.env);
    if (options.env === null || typeof options.env !== "object" || Array.isArray(options.env) || problem) {
      throw new TypeError(`Invalid option "env" of plugin "environ": ${problem ?? "must be a table of strings"}`);
    }
    this.env = { ...options.env };
  }

  setup(nanny: NannyApi): void {
    Object.assign(nanny.env, this.env);
  }

  /** Takes back the variables that still hold this plugin's values; the worker keeps its own until it restarts. */
  teardown(nanny: NannyApi): void {
    for (const [key, value] of Object.entries(this.env)) {
      if (nanny.env[key] === value) delete nanny.env[key];
    }
  }
}

const options: Record<string, CheckedOptionSpec> = {
  env: { type: "table", required: true, description: "environment variables for the worker (a table of strings)", check: tableOfStrings },
};

/** The `environ` entry of `builtinPlugins`. */
export const environ: BuiltinPlugin = {
  role: "nanny",
  description: "sets environment variables for the worker; running workers restart",
  options,
  create: (opts) => new EnvironPlugin(opts as unknown as EnvironOptions),
};
