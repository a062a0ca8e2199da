/**
 * Loading `--plugins FILE` for the CLI: parse and validate the whole file first, then read the
 * modules and files that travel with worker and nanny plugins.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { loadPluginsFile } from "../lib/plugins/config.ts";
import type { WirePluginSpec } from "../lib/plugins/load.ts";
import { preparePluginFiles } from "../lib/plugins/prepare.ts";
import type { PluginRole } from "../lib/plugins/types.ts";

/** Reads a plugins.toml into specs ready to register or ship; `roles` limits the sections. */
export async function pluginSpecsFromFile(file: string | undefined, roles?: PluginRole[]): Promise<WirePluginSpec[]> {
  if (!file) return [];
  const specs = await loadPluginsFile(file);
  const baseDir = dirname(resolve(file));
  const out: WirePluginSpec[] = [];
  for (const spec of specs) {
    if (roles && !roles.includes(spec.role)) continue;
    const wire: WirePluginSpec = {
      role: spec.role,
      use: spec.use,
      options: spec.options,
      modulePath: spec.modulePath,
      source: spec.moduleSource,
    };
    if (spec.name !== undefined) wire.name = spec.name;
    out.push(spec.role === "scheduler" ? wire : await preparePluginFiles({ ...wire } as never, baseDir));
  }
  return out;
}
