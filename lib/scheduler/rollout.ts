/**
 * What the worker and nanny links need of the plugin registry (remote-plugins.ts) when a worker
 * or nanny joins: the specs its welcome carries, where to record its `ready`, and whether its
 * worker must be quarantined. An interface of its own, so the links and the registry do not
 * import each other.
 *
 * @module
 */
import type { PluginFailure } from "../messages/worker.ts";
import type { WirePluginSpec } from "../plugins/load.ts";
import type { WorkerState } from "./task-state.ts";

/** The registry's side of a join, as the links see it. */
export interface PluginRollout {
  /** Worker plugin specs, in registration order (also one being registered now). */
  readonly worker: readonly WirePluginSpec[];
  /** Nanny plugin specs, in registration order. */
  readonly nanny: readonly WirePluginSpec[];
  /** A worker or nanny got these plugins in its welcome: pending until it says `ready`. */
  welcomed(role: "worker" | "nanny", who: string, names: readonly string[]): void;
  /** A worker or nanny set up its welcome's plugins; `failed` are those whose setup threw. */
  ready(role: "worker" | "nanny", who: string, names: readonly string[], failed: readonly PluginFailure[]): void;
  /** Why a worker must get no task (a failed plugin of its own or of its nanny's), or null. */
  quarantineReason(ws: WorkerState): string | null;
  /** Quarantines the ready workers with a failed plugin, and lets back those without one. */
  refreshQuarantine(): void;
}
