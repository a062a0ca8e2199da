/// <reference lib="dom" />
/**
 * The plugins panel: each scheduler, worker and nanny plugin, what it was set up from (`use`),
 * and its status on every worker or nanny when the scheduler reports one (`ok`,
 * `failed: MESSAGE`, `pending`). Also turns that answer into a status per worker for the
 * workers panel.
 *
 * @module
 */
import { h } from "./dom.ts";
import { statusClass } from "./workers.ts";

/** One plugin as `GET /api/v1/plugins` lists it. */
export interface PluginEntry {
  name: string;
  use?: string;
  [field: string]: unknown;
}

/** Where a plugin runs and how it is there. */
export interface PluginPlace {
  where: string;
  status: string;
}

/**
 * The places of a plugin, from whichever shape the scheduler gives: `status` as a map
 * `{worker: status}` or a list `[{worker|nanny|name, status}]`, or `workers`/`nannies` the same.
 */
export function pluginPlaces(entry: PluginEntry): PluginPlace[] {
  const out: PluginPlace[] = [];
  for (const field of ["status", "workers", "nannies", "on"]) {
    const v = entry[field];
    if (Array.isArray(v)) {
      for (const item of v) {
        if (item && typeof item === "object") {
          const o = item as Record<string, unknown>;
          const where = o.worker ?? o.nanny ?? o.name ?? o.where;
          if (typeof where === "string") out.push({ where, status: String(o.status ?? "ok") });
        } else if (typeof item === "string") out.push({ where: item, status: "ok" });
      }
    } else if (v && typeof v === "object") {
      for (const [where, status] of Object.entries(v as Record<string, unknown>)) {
        out.push({ where, status: typeof status === "string" ? status : String((status as { status?: unknown })?.status ?? status) });
      }
    }
  }
  return out;
}

/** Plugin statuses per worker (or nanny) name, for the workers panel. */
export function statusByPlace(plugins: Record<string, PluginEntry[]>): Map<string, Array<{ name: string; status: string }>> {
  const out = new Map<string, Array<{ name: string; status: string }>>();
  for (const role of ["worker", "nanny"]) {
    for (const entry of plugins[role] ?? []) {
      for (const place of pluginPlaces(entry)) {
        let list = out.get(place.where);
        if (!list) out.set(place.where, list = []);
        list.push({ name: entry.name, status: place.status });
      }
    }
  }
  return out;
}

export class PluginsPanel {
  #root: HTMLElement;
  #key = "";

  constructor(root: HTMLElement) {
    this.#root = h("div", "plugins");
    root.append(this.#root);
  }

  update(plugins: Record<string, PluginEntry[]>): void {
    const key = JSON.stringify(plugins);
    if (key === this.#key) return;
    this.#key = key;
    const sections: HTMLElement[] = [];
    for (const role of ["scheduler", "worker", "nanny"]) {
      const list = plugins[role] ?? [];
      const title = h("h3", "", `${role[0].toUpperCase()}${role.slice(1)}`, h("span", "n", String(list.length)));
      const items = list.map((p) => {
        const places = pluginPlaces(p);
        const chips = h("div", "chips");
        if (role === "scheduler") chips.append(h("span", "chip ok", "scheduler"));
        for (const place of places) {
          const chip = h("span", `chip ${statusClass(place.status)}`, place.where);
          chip.title = place.status;
          chips.append(chip);
        }
        if (role !== "scheduler" && places.length === 0) chips.append(h("span", "muted small", `sent to every ${role}`));
        const item = h("div", "plugin", h("div", "plugin-head", h("strong", "", p.name), h("code", "", String(p.use ?? ""))), chips);
        item.dataset.plugin = p.name;
        return item;
      });
      if (items.length === 0) items.push(h("p", "muted small", "none"));
      sections.push(h("section", "role", title, ...items));
    }
    this.#root.replaceChildren(...sections);
  }
}
