/**
 * Where a worker or nanny built-in that can also run at the scheduler (`alsoAtScheduler`, e.g.
 * `upload-directory`) is set up: its `target` option, `"workers"` (the default: as any nanny or
 * worker plugin), `"scheduler"`, or `"both"`.
 *
 * @module
 */
import type { WirePluginSpec } from "./load.ts";
import { findBuiltin, isModulePath } from "./registry.ts";

/** The values of the `target` option. */
export type PluginTarget = "workers" | "scheduler" | "both";

/** The targets, for option checks. */
export const pluginTargets: readonly PluginTarget[] = ["workers", "scheduler", "both"];

/**
 * Where a spec is to be set up; always `"workers"` for a scheduler plugin, a module, or a
 * built-in that runs only where its role says.
 *
 * @example
 * ```ts
 * schedulerTarget({ role: "nanny", use: "upload-directory", options: { path: "d", target: "both" } }); // "both"
 * ```
 */
export function schedulerTarget(spec: WirePluginSpec): PluginTarget {
  if (spec.role === "scheduler" || isModulePath(spec.use) || !findBuiltin(spec.use)?.alsoAtScheduler) return "workers";
  const target = spec.options.target;
  return target === "scheduler" || target === "both" ? target : "workers";
}
