/**
 * The registry of worker and nanny plugins: the specs every worker or nanny gets (also those
 * that join later), each plugin's status on every worker or nanny, and their registration.
 *
 * A registration is an epoch. It takes the registry's lock (one registration or removal at a
 * time), puts the spec in the list at once — so a worker or nanny that joins meanwhile gets it
 * in its welcome and confirms it before its `ready` — and fans it out to those already there. It
 * ends when every one of them, the joiners included, answered. A failure anywhere removes it
 * everywhere, joiners too; a worker or nanny that left meanwhile is a warning, not a failure.
 * A worker whose plugin (or whose nanny's plugin) failed to set up outside a registration — it
 * joined later — is quarantined until the plugin is removed, replaced or set up again.
 *
 * @module
 */
import { basename, extname } from "node:path";
import { errorMessage, PluginError } from "../errors.ts";
import type { Plugin } from "../plugins/types.ts";
import type { ComponentLogger } from "../log.ts";
import type { PluginFailure } from "../messages/worker.ts";
import type { AddResult } from "../plugins/manager.ts";
import { instantiatePlugin, type WirePluginSpec, withSource } from "../plugins/load.ts";
import type { EventLog } from "./events.ts";
import type { PluginRollout } from "./rollout.ts";
import type { NannyConn, NannyLinks } from "./nanny-link.ts";
import type { SchedulerState, WorkerState } from "./state.ts";
import type { WorkerConn, WorkerLinks } from "./worker-link.ts";

/** What the registry needs of the scheduler. */
export interface RemotePluginsContext {
  readonly state: SchedulerState;
  readonly events: EventLog;
  readonly workers: WorkerLinks;
  readonly nannies: NannyLinks;
  readonly log: ComponentLogger;
  /** Where probed plugin modules are written. */
  moduleDir(): string;
  /** Applies the state machine's pending effects. */
  apply(): void;
}

/** What a registration did. */
export interface Registration {
  name: string;
  result: AddResult;
  warnings: string[];
}

/** A plugin's status on one worker or nanny: `ok`, `failed: MESSAGE` or `pending`. */
export type PluginStatus = "ok" | "pending" | `failed: ${string}`;

/** One worker or nanny plugin as `GET /api/v1/plugins` lists it. */
export interface RemotePluginListing {
  name: string;
  use: string;
  /** By worker (or nanny) name. */
  status: Record<string, PluginStatus>;
}

type Role = "worker" | "nanny";

/** Worker and nanny plugin specs, in registration order, and where each is set up. */
export class RemotePlugins implements PluginRollout {
  readonly worker: WirePluginSpec[] = [];
  readonly nanny: WirePluginSpec[] = [];
  #ctx: RemotePluginsContext;
  /** Plugin name → worker (or nanny) name → status. */
  #status: Record<Role, Map<string, Map<string, PluginStatus>>> = { worker: new Map(), nanny: new Map() };
  /** Registrations and removals run one at a time: each is one epoch. */
  #lock: Promise<unknown> = Promise.resolve();

  constructor(context: RemotePluginsContext) {
    this.#ctx = context;
  }

  #exclusive<T>(run: () => Promise<T>): Promise<T> {
    const next = this.#lock.then(run, run);
    this.#lock = next.catch(() => {});
    return next;
  }

  /**
   * Registers a worker or nanny plugin: set up on every current worker/nanny, and on those that
   * join meanwhile, before this resolves; a failure anywhere removes it everywhere and throws a
   * {@linkcode PluginError} naming every failure.
   */
  async register(spec: WirePluginSpec & { role: Role }, baseDir: string): Promise<Registration> {
    const ctx = this.#ctx;
    const role = spec.role;
    const shipped = await withSource(spec, baseDir);
    // Validate locally first: a module that does not load fails the registration here.
    const probe = await instantiatePlugin({ ...shipped, role }, {
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
    return await this.#exclusive(async () => {
      const list = this[role];
      const existing = list.findIndex((s) => s.name === name);
      if (existing >= 0 && probe.plugin.idempotent) {
        // Kept as it is; but where it had failed to set up, it is set up again.
        await this.#retryFailed(role, list[existing]);
        return { name, result: "kept" as const, warnings: [] };
      }
      // The epoch starts: from here on a joiner gets the plugin in its welcome.
      if (existing >= 0) list.splice(existing, 1, full);
      else list.push(full);
      const statuses = new Map<string, PluginStatus>();
      this.#status[role].set(name, statuses);
      const warnings: string[] = [];
      const targets: Array<WorkerConn | NannyConn> = role === "worker" ? [...ctx.workers.conns.values()] : [...ctx.nannies.conns.values()];
      for (const t of targets) statuses.set(whoOf(t), "pending");
      await Promise.all(targets.map(async (t) => {
        const who = whoOf(t);
        try {
          const warning = role === "worker" ? await ctx.workers.addPlugin(t as WorkerConn, full) : await ctx.nannies.addPlugin(t as NannyConn, full);
          if (warning) warnings.push(`${role} "${who}": ${warning}`);
          // The answer to the fan-out decides, also over a `ready` for an older spec of the same name.
          statuses.set(who, "ok");
        } catch (err) {
          if (!this.#connected(role, t)) {
            // Dask keeps the plugin for those that remain: one that left is no failure.
            warnings.push(`${role} "${who}" left during the registration of "${name}"`);
            statuses.delete(who);
          } else {
            statuses.set(who, `failed: ${errorMessage(err)}`);
          }
        }
      }));
      await this.#awaitJoiners(role, name, new Set(targets));
      const errors: string[] = [];
      for (const [who, status] of statuses) {
        if (!status.startsWith("failed: ")) continue;
        const message = status.slice("failed: ".length);
        ctx.log.error(`Plugin "${name}" (${role}) failed to set up on ${role} "${who}": ${message}`);
        errors.push(`${who}: ${message}`);
      }
      if (errors.length > 0) {
        // Removed again wherever it did get set up, joiners included: a failed registration
        // leaves nothing behind (a plugin it was to replace is gone too, as on the scheduler).
        const index = list.indexOf(full);
        if (index >= 0) list.splice(index, 1);
        this.#status[role].delete(name);
        await this.#removeEverywhere(role, name);
        this.refreshQuarantine();
        ctx.events.append("plugin", { action: "failed", role, plugin: name, errors });
        throw new PluginError(name, errors.join("; "));
      }
      if (role === "nanny") {
        const without = [...ctx.state.workers.values()].filter((w) => !w.nanny).map((w) => w.name);
        if (without.length > 0) warnings.push(`Nanny plugin "${name}" not applied to workers without a nanny: ${without.join(", ")}`);
      }
      for (const w of warnings) ctx.log.warn(w);
      // A replaced plugin that had failed somewhere no longer holds those workers out.
      this.refreshQuarantine();
      const result = existing >= 0 ? "replaced" : "added";
      ctx.events.append("plugin", { action: result, role, plugin: name });
      ctx.log.info(`Plugin "${name}" (${role}) ${result}`);
      return { name, result, warnings };
    });
  }

  /** Sets a kept plugin up again where it had failed; those where it now works leave quarantine. */
  async #retryFailed(role: Role, spec: WirePluginSpec): Promise<void> {
    const ctx = this.#ctx;
    const statuses = this.#status[role].get(spec.name!);
    if (!statuses) return;
    const failed = [...statuses].filter(([, status]) => status.startsWith("failed: ")).map(([who]) => who);
    const targets = failed.map((who) => role === "worker" ? ctx.workers.conns.get(who) : ctx.nannies.conns.get(who)).filter((t) => t !== undefined);
    if (targets.length === 0) return;
    await Promise.all(targets.map(async (t) => {
      const who = whoOf(t);
      try {
        if (role === "worker") await ctx.workers.addPlugin(t as WorkerConn, spec);
        else await ctx.nannies.addPlugin(t as NannyConn, spec);
        statuses.set(who, "ok");
        ctx.log.info(`Plugin "${spec.name}" (${role}) set up on ${role} "${who}" on a second try`);
      } catch (err) {
        if (this.#connected(role, t)) statuses.set(who, `failed: ${errorMessage(err)}`);
      }
    }));
    this.refreshQuarantine();
  }

  /** Waits for the workers or nannies that joined during the registration of `name` to be ready. */
  async #awaitJoiners(role: Role, name: string, seen: Set<WorkerConn | NannyConn>): Promise<void> {
    for (;;) {
      const conns: Array<WorkerConn | NannyConn> = role === "worker" ? [...this.#ctx.workers.conns.values()] : [...this.#ctx.nannies.conns.values()];
      const fresh = conns.filter((c) => !seen.has(c) && c.welcomed.includes(name));
      if (fresh.length === 0) return;
      for (const c of fresh) seen.add(c);
      await Promise.all(fresh.map((c) => c.pluginsReady));
    }
  }

  #connected(role: Role, t: WorkerConn | NannyConn): boolean {
    return role === "worker" ? this.#ctx.workers.conns.get(whoOf(t)) === t : this.#ctx.nannies.conns.get(whoOf(t)) === t;
  }

  /** Unregisters a worker or nanny plugin (torn down everywhere before this resolves); false when unknown. */
  unregister(role: Role, name: string): Promise<boolean> {
    return this.#exclusive(async () => {
      const list = this[role];
      const index = list.findIndex((s) => s.name === name);
      if (index < 0) return false;
      // Out of the list first: a worker that joins meanwhile does not get it.
      list.splice(index, 1);
      this.#status[role].delete(name);
      await this.#removeEverywhere(role, name);
      this.refreshQuarantine();
      this.#ctx.events.append("plugin", { action: "removed", role, plugin: name });
      this.#ctx.log.info(`Plugin "${name}" (${role}) removed`);
      return true;
    });
  }

  async #removeEverywhere(role: Role, name: string): Promise<void> {
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

  // ---- statuses and quarantine ---------------------------------------------------------------

  /** A worker or nanny got these plugins in its welcome: pending until it says `ready`. */
  welcomed(role: Role, who: string, names: readonly string[]): void {
    for (const [plugin, statuses] of this.#status[role]) {
      if (names.includes(plugin)) statuses.set(who, "pending");
      else statuses.delete(who);
    }
  }

  /**
   * A worker or nanny set up its welcome's plugins: `failed` ones are `failed: MESSAGE` (the
   * link logs and counts them), the others `ok`.
   */
  ready(role: Role, who: string, names: readonly string[], failed: readonly PluginFailure[]): void {
    const byName = new Map(failed.map((f) => [f.plugin, f.error]));
    for (const plugin of names) {
      const statuses = this.#status[role].get(plugin);
      // Removed meanwhile: its teardown follows on the same link.
      if (!statuses) continue;
      const error = byName.get(plugin);
      if (error === undefined) {
        statuses.set(who, "ok");
      } else {
        statuses.set(who, `failed: ${error}`);
      }
    }
  }

  /** Why a worker must get no task (a failed plugin of its own or of its nanny's), or null. */
  quarantineReason(ws: WorkerState): string | null {
    const own = this.#firstFailure("worker", ws.name);
    if (own) return own;
    if (!ws.nanny) return null;
    const nanny = this.#ctx.nannies.byWorker().get(ws.name) ?? this.#ctx.nannies.conns.get(ws.name);
    return nanny ? this.#firstFailure("nanny", nanny.name) : null;
  }

  /** Why a nanny's worker must get no task, or null. */
  nannyQuarantine(name: string): string | null {
    return this.#firstFailure("nanny", name);
  }

  #firstFailure(role: Role, who: string): string | null {
    for (const spec of this[role]) {
      const status = this.#status[role].get(spec.name!)?.get(who);
      if (status?.startsWith("failed: ")) return `${role} plugin "${spec.name}" failed to set up: ${status.slice("failed: ".length)}`;
    }
    return null;
  }

  /** Quarantines the ready workers with a failed plugin, and lets back those without one. */
  refreshQuarantine(): void {
    const { state, workers, log, events } = this.#ctx;
    for (const conn of workers.conns.values()) {
      const ws = conn.state;
      if (ws.status !== "running" && ws.status !== "quarantined") continue;
      const reason = this.quarantineReason(ws);
      if (reason && ws.status === "running") {
        state.quarantineWorker(ws, reason);
        log.warn(`Worker "${ws.name}" quarantined (it gets no task): ${reason}`);
        events.append("worker", { action: "quarantine", worker: ws.name, reason });
      } else if (reason) {
        ws.quarantine = reason;
      } else if (ws.status === "quarantined") {
        state.workerReady(ws, state.stimulusId("worker-unquarantined"));
        log.info(`Worker "${ws.name}" leaves quarantine`);
        events.append("worker", { action: "unquarantine", worker: ws.name });
      }
    }
    this.#ctx.apply();
  }

  /** What `GET /api/v1/plugins` lists of one role: each plugin with its status everywhere. */
  listing(role: Role): RemotePluginListing[] {
    const { workers, nannies } = this.#ctx;
    const names = role === "worker" ? [...workers.conns.keys()] : [...nannies.conns.keys()];
    return this[role].map((s) => {
      const statuses = this.#status[role].get(s.name!);
      const status: Record<string, PluginStatus> = {};
      for (const who of names) status[who] = statuses?.get(who) ?? "pending";
      return { name: s.name!, use: s.use, status };
    });
  }
}

function whoOf(t: WorkerConn | NannyConn): string {
  return "state" in t ? t.state.name : t.name;
}
