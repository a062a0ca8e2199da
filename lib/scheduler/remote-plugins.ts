/**
 * The registry of worker and nanny plugins: the specs every worker or nanny gets (also those
 * that join later), and their registration: a local probe, the fan-out to every current worker
 * or nanny with their answers awaited, and the rollback everywhere when one of them fails.
 *
 * @module
 */
import { basename, extname } from "node:path";
import { errorMessage, PluginError } from "../errors.ts";
import type { Plugin } from "../plugins/types.ts";
import type { ComponentLogger } from "../log.ts";
import type { AddResult } from "../plugins/manager.ts";
import { instantiatePlugin, type WirePluginSpec, withSource } from "../plugins/load.ts";
import type { EventLog } from "./events.ts";
import type { NannyLinks } from "./nanny-link.ts";
import type { SchedulerState } from "./state.ts";
import type { WorkerLinks } from "./worker-link.ts";

/** What the registry needs of the scheduler. */
export interface RemotePluginsContext {
  readonly state: SchedulerState;
  readonly events: EventLog;
  readonly workers: WorkerLinks;
  readonly nannies: NannyLinks;
  readonly log: ComponentLogger;
  /** Where probed plugin modules are written. */
  moduleDir(): string;
}

/** What a registration did. */
export interface Registration {
  name: string;
  result: AddResult;
  warnings: string[];
}

/** Worker and nanny plugin specs, in registration order. */
export class RemotePlugins {
  readonly worker: WirePluginSpec[] = [];
  readonly nanny: WirePluginSpec[] = [];
  #ctx: RemotePluginsContext;

  constructor(context: RemotePluginsContext) {
    this.#ctx = context;
  }

  /**
   * Registers a worker or nanny plugin: set up on every current worker/nanny before this
   * resolves; a failure anywhere removes it everywhere and throws a {@linkcode PluginError}.
   */
  async register(spec: WirePluginSpec & { role: "worker" | "nanny" }, baseDir: string): Promise<Registration> {
    const ctx = this.#ctx;
    const shipped = await withSource(spec, baseDir);
    // Validate locally first: a module that does not load fails the registration here.
    const probe = await instantiatePlugin({ ...shipped, role: spec.role }, {
      baseDir,
      moduleDir: ctx.moduleDir(),
      log: ctx.log.child("probe"),
    }).catch((err) => {
      // A package only the workers have (package-install): they load it; the name comes from the spec.
      if ((err as { code?: string }).code === "E_PLUGIN_PACKAGE_MISSING" && spec.role === "worker") {
        return { name: spec.name ?? basename(spec.use, extname(spec.use)), plugin: {} as Plugin, use: spec.use };
      }
      throw new PluginError(spec.name ?? spec.use, errorMessage(err), { cause: err });
    });
    const name = probe.name;
    const full: WirePluginSpec = { ...shipped, name };
    const list = this[spec.role];
    const existing = list.findIndex((s) => s.name === name);
    if (existing >= 0 && probe.plugin.idempotent) return { name, result: "kept", warnings: [] };
    const warnings: string[] = [];
    const errors: string[] = [];
    if (spec.role === "worker") {
      await Promise.all([...ctx.workers.conns.values()].map(async (conn) => {
        try {
          await ctx.workers.addPlugin(conn, full);
        } catch (err) {
          errors.push(`${conn.state.name}: ${errorMessage(err)}`);
        }
      }));
    } else {
      await Promise.all([...ctx.nannies.conns.values()].map(async (nanny) => {
        try {
          await ctx.nannies.addPlugin(nanny, full);
        } catch (err) {
          errors.push(`${nanny.name}: ${errorMessage(err)}`);
        }
      }));
      const without = [...ctx.state.workers.values()].filter((w) => !w.nanny).map((w) => w.name);
      if (without.length > 0) {
        warnings.push(`Nanny plugin "${name}" not applied to workers without a nanny: ${without.join(", ")}`);
      }
    }
    if (errors.length > 0) {
      // Remove it again wherever it did get set up: a failed registration leaves nothing behind.
      await this.#removeEverywhere(spec.role, name);
      ctx.log.error(`Registration of the ${spec.role} plugin "${name}" failed: ${errors.join("; ")}`);
      throw new PluginError(name, errors.join("; "));
    }
    if (existing >= 0) list.splice(existing, 1);
    list.push(full);
    const result = existing >= 0 ? "replaced" : "added";
    ctx.events.append("plugin", { action: result, role: spec.role, plugin: name });
    ctx.log.info(`Plugin "${name}" (${spec.role}) ${result}`);
    return { name, result, warnings };
  }

  /** Unregisters a worker or nanny plugin; false when unknown. */
  async unregister(role: "worker" | "nanny", name: string): Promise<boolean> {
    const list = this[role];
    const index = list.findIndex((s) => s.name === name);
    if (index < 0) return false;
    list.splice(index, 1);
    await this.#removeEverywhere(role, name);
    this.#ctx.events.append("plugin", { action: "removed", role, plugin: name });
    this.#ctx.log.info(`Plugin "${name}" (${role}) removed`);
    return true;
  }

  async #removeEverywhere(role: "worker" | "nanny", name: string): Promise<void> {
    const { workers, nannies, log } = this.#ctx;
    const report = (who: string) => (err: unknown) => log.warn(`Cannot remove plugin "${name}" from ${who}: ${errorMessage(err)}`);
    if (role === "worker") {
      await Promise.all([...workers.conns.values()].map((conn) =>
        workers.removePlugin(conn, name).catch(report(`worker "${conn.state.name}"`))
      ));
    } else {
      await Promise.all([...nannies.conns.values()].map((n) => nannies.removePlugin(n, name).catch(report(`nanny "${n.name}"`))));
    }
  }
}
