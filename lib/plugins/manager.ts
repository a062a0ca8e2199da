/**
 * The plugin manager shared by scheduler, worker and nanny: registration order, hooks run one
 * plugin after the other (async ones awaited), a throwing hook logged and counted without
 * failing anything else, same-name replacement with teardown, idempotent plugins kept.
 *
 * @module
 */
import { errorMessage, PluginError } from "../errors.ts";
import type { Plugin } from "./types.ts";

/** Called when a hook throws: the plugin's name, the hook and the error. */
export type HookErrorHandler = (plugin: string, hook: string, err: unknown) => void;

/** A registered plugin and what it was made from. */
export interface Registered<P extends Plugin> {
  name: string;
  plugin: P;
  /** What `GET /api/v1/plugins` lists for it (`use`). */
  use: string;
  /** The spec it was made from, to send to workers and nannies that join later. */
  spec?: unknown;
}

/**
 * The hooks of a plugin kind: its method names (`transition`, `addWorker`, …), so that a call
 * with a misspelt or new hook name, or with the wrong arguments, fails to compile.
 */
export type HookName<P> = {
  // deno-lint-ignore no-explicit-any -- any function type, whatever its parameters
  [K in keyof P]-?: NonNullable<P[K]> extends (...args: any[]) => unknown ? K : never;
}[keyof P] & string;

/** The arguments of hook `K` of plugin kind `P`. */
export type HookArgs<P, K extends keyof P> = NonNullable<P[K]> extends (...args: infer A) => unknown ? A : never;

/** What `add` did. */
export type AddResult = "added" | "replaced" | "kept";

/**
 * Holds the plugins of one role in registration order.
 *
 * @example
 * ```ts
 * const plugins = new PluginManager<SchedulerPlugin>((name, hook, err) => log.error(`${name}.${hook}: ${err}`));
 * await plugins.add({ name: "count", plugin, use: "./count.ts" }, { start: (p) => p.start?.(api) });
 * plugins.callSync("transition", key, start, finish, info); // checked against SchedulerPlugin
 * // plugins.callSync("transitoin", key); // does not compile
 * ```
 */
export class PluginManager<P extends Plugin> {
  #entries: Registered<P>[] = [];
  #byHook = new Map<string, Registered<P>[]>();
  #onError: HookErrorHandler;
  /** Hook errors by plugin name. */
  readonly errors = new Map<string, number>();
  errorsTotal = 0;

  constructor(onError: HookErrorHandler) {
    this.#onError = onError;
  }

  /** The registered plugins in registration order. */
  get entries(): readonly Registered<P>[] {
    return this.#entries;
  }

  /** Finds a plugin by name. */
  get(name: string): Registered<P> | undefined {
    return this.#entries.find((e) => e.name === name);
  }

  /** Whether any plugin implements a hook (so callers skip building its arguments). */
  has(hook: HookName<P>): boolean {
    return this.#hooked(hook).length > 0;
  }

  /** The plugins that implement a hook, in registration order (cached until a change). */
  withHook(hook: HookName<P>): readonly Registered<P>[] {
    return this.#hooked(hook);
  }

  #hooked(hook: string): Registered<P>[] {
    let list = this.#byHook.get(hook);
    if (!list) {
      list = this.#entries.filter((e) => typeof (e.plugin as Record<string, unknown>)[hook] === "function");
      this.#byHook.set(hook, list);
    }
    return list;
  }

  /** Reports a failed hook. */
  reportError(name: string, hook: string, err: unknown): void {
    this.errorsTotal++;
    this.errors.set(name, (this.errors.get(name) ?? 0) + 1);
    try {
      this.#onError(name, hook, err);
    } catch {
      // The error handler itself must never break a hook loop.
    }
  }

  /** Calls a synchronous hook on every plugin that has it, in order. */
  callSync<K extends HookName<P>>(hook: K, ...args: HookArgs<P, K>): void {
    const list = this.#hooked(hook);
    for (let i = 0; i < list.length; i++) {
      const entry = list[i];
      try {
        const result = (entry.plugin as Record<string, (...a: unknown[]) => unknown>)[hook](...args);
        if (result instanceof Promise) result.catch((err) => this.reportError(entry.name, hook, err));
      } catch (err) {
        this.reportError(entry.name, hook, err);
      }
    }
  }

  /** Calls a hook on every plugin that has it, one after the other, awaiting each. */
  async callAsync<K extends HookName<P>>(hook: K, ...args: HookArgs<P, K>): Promise<void> {
    for (const entry of [...this.#hooked(hook)]) {
      try {
        await (entry.plugin as Record<string, (...a: unknown[]) => unknown>)[hook](...args);
      } catch (err) {
        this.reportError(entry.name, hook, err);
      }
    }
  }

  /**
   * Registers a plugin. Same name: an idempotent plugin is kept as it is; otherwise the old one
   * is torn down first. A throwing `start` fails the registration with a `PluginError`.
   */
  async add(
    entry: Registered<P>,
    lifecycle: { start?: (plugin: P) => unknown; teardown?: (plugin: P) => unknown },
  ): Promise<AddResult> {
    const old = this.get(entry.name);
    if (old && entry.plugin.idempotent) return "kept";
    if (old) await this.remove(entry.name, lifecycle.teardown);
    try {
      await lifecycle.start?.(entry.plugin);
    } catch (err) {
      throw new PluginError(entry.name, `Plugin "${entry.name}" failed to start: ${errorMessage(err)}`, { cause: err });
    }
    this.#entries.push(entry);
    this.#byHook.clear();
    return old ? "replaced" : "added";
  }

  /** Unregisters a plugin, tearing it down. Returns false when there is none of that name. */
  async remove(name: string, teardown?: (plugin: P) => unknown): Promise<boolean> {
    const index = this.#entries.findIndex((e) => e.name === name);
    if (index < 0) return false;
    const [entry] = this.#entries.splice(index, 1);
    this.#byHook.clear();
    try {
      await teardown?.(entry.plugin);
    } catch (err) {
      this.reportError(entry.name, "teardown", err);
    }
    return true;
  }

  /** Tears every plugin down in reverse registration order; errors are reported, not thrown. */
  async closeAll(teardown: (plugin: P) => unknown): Promise<void> {
    const entries = [...this.#entries].reverse();
    this.#entries = [];
    this.#byHook.clear();
    for (const entry of entries) {
      try {
        await teardown(entry.plugin);
      } catch (err) {
        this.reportError(entry.name, "teardown", err);
      }
    }
  }
}
