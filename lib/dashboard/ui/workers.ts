/// <reference lib="dom" />
/**
 * The workers panel: one row per worker (a handful to a few hundred, never per task) with its
 * status, threads busy, results held, CPU and memory over time (when its heartbeats carry
 * them), restarts and the status of its plugins. Rows are kept by name and only changed text is
 * written.
 *
 * @module
 */
import { bytes, count, h, setText, sparkline } from "./dom.ts";

/** A worker as `GET /api/v1/info` lists it; the metrics are optional (older schedulers). */
export interface WorkerInfo {
  name: string;
  address?: string;
  nthreads?: number;
  status?: string;
  nanny?: boolean;
  processing?: number;
  /** Results held (a count), or a metrics object in newer schedulers. */
  memory?: number | Record<string, unknown>;
  held?: number;
  nbytes?: number;
  pid?: number;
  rss?: number;
  cpu?: number;
  restarts?: number;
  message?: string;
  reason?: string;
  [field: string]: unknown;
}

/** Samples kept per worker for the charts: two minutes at one poll a second. */
const historyLength = 120;

interface Row {
  tr: HTMLTableRowElement;
  name: HTMLElement;
  status: HTMLElement;
  busyBar: HTMLElement;
  busyText: HTMLElement;
  held: HTMLElement;
  cpuCanvas: HTMLCanvasElement;
  cpuText: HTMLElement;
  memCanvas: HTMLCanvasElement;
  memText: HTMLElement;
  restarts: HTMLElement;
  plugins: HTMLElement;
  cpu: number[];
  mem: number[];
  seen: boolean;
}

/** The memory a worker reports in bytes, or NaN when it reports none. */
export function workerMemoryBytes(w: WorkerInfo): number {
  if (typeof w.memory === "object" && w.memory !== null) {
    const m = w.memory as Record<string, unknown>;
    const v = m.rss ?? m.used ?? m.bytes;
    if (typeof v === "number" && v > 0) return v;
  }
  for (const k of ["rss", "memoryBytes", "memory_bytes"]) {
    const v = w[k];
    if (typeof v === "number" && v > 0) return v;
  }
  return NaN;
}

/** Results a worker holds: `held`, or `memory` while it is still a count. */
export function workerHeld(w: WorkerInfo): number {
  if (typeof w.held === "number") return w.held;
  return typeof w.memory === "number" ? w.memory : 0;
}

/** CPU use in percent of one core, or NaN when the worker reports none. */
export function workerCpu(w: WorkerInfo): number {
  const v = w.cpu ?? (typeof w.metrics === "object" && w.metrics ? (w.metrics as Record<string, unknown>).cpu : undefined);
  return typeof v === "number" && Number.isFinite(v) ? v : NaN;
}

export class WorkersPanel {
  #body: HTMLTableSectionElement;
  #empty: HTMLElement;
  #rows = new Map<string, Row>();

  constructor(root: HTMLElement) {
    const table = h("table", "workers");
    const head = h("thead");
    const tr = h("tr");
    for (const [label, cls] of [
      ["Worker", ""],
      ["Status", ""],
      ["Executing", ""],
      ["Held", "num"],
      ["CPU", ""],
      ["Memory", ""],
      ["Restarts", "num"],
      ["Plugins", ""],
    ]) tr.append(h("th", cls, label));
    head.append(tr);
    this.#body = h("tbody");
    table.append(head, this.#body);
    this.#empty = h("p", "empty", "No workers connected yet.");
    root.append(table, this.#empty);
  }

  /** Applies one poll of `info` and the plugin status per worker. */
  update(workers: WorkerInfo[], plugins: Map<string, Array<{ name: string; status: string }>>): void {
    for (const row of this.#rows.values()) row.seen = false;
    const sorted = [...workers].sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
    let previous: HTMLTableRowElement | null = null;
    for (const w of sorted) {
      let row = this.#rows.get(w.name);
      if (!row) {
        row = this.#row(w.name);
        this.#rows.set(w.name, row);
      }
      row.seen = true;
      // Keep DOM order = sorted order without rebuilding the table.
      const want: ChildNode | null = previous ? previous.nextSibling : this.#body.firstChild;
      if (want !== row.tr) this.#body.insertBefore(row.tr, want);
      previous = row.tr;
      this.#fill(row, w, plugins.get(w.name) ?? []);
    }
    for (const [name, row] of this.#rows) {
      if (!row.seen) {
        row.tr.remove();
        this.#rows.delete(name);
      }
    }
    this.#empty.hidden = workers.length > 0;
  }

  #row(name: string): Row {
    const cell = (cls = "") => h("td", cls);
    const row: Row = {
      tr: h("tr"),
      name: h("div", "wname", name),
      status: h("span", "badge"),
      busyBar: h("div", "fill"),
      busyText: h("span", "small"),
      held: cell("num"),
      cpuCanvas: h("canvas", "spark"),
      cpuText: h("span", "small"),
      memCanvas: h("canvas", "spark"),
      memText: h("span", "small"),
      restarts: cell("num"),
      plugins: h("div", "chips"),
      cpu: [],
      mem: [],
      seen: true,
    };
    row.tr.dataset.worker = name;
    const nameCell = cell();
    nameCell.append(row.name);
    const statusCell = cell();
    statusCell.append(row.status);
    const busyCell = cell();
    busyCell.append(h("div", "meter", row.busyBar), row.busyText);
    const cpuCell = cell("chart");
    cpuCell.append(row.cpuCanvas, row.cpuText);
    const memCell = cell("chart");
    memCell.append(row.memCanvas, row.memText);
    const pluginCell = cell();
    pluginCell.append(row.plugins);
    row.tr.append(nameCell, statusCell, busyCell, row.held, cpuCell, memCell, row.restarts, pluginCell);
    return row;
  }

  #fill(row: Row, w: WorkerInfo, plugins: Array<{ name: string; status: string }>): void {
    const sub = [w.address, w.pid ? `pid ${w.pid}` : "", w.nanny ? "nanny" : ""].filter(Boolean).join(" · ");
    row.name.title = sub;
    if (row.name.dataset.sub !== sub) {
      row.name.dataset.sub = sub;
      row.name.replaceChildren(h("strong", "", w.name), h("span", "sub", sub));
    }
    const status = String(w.status ?? "unknown");
    setText(row.status, status);
    row.status.className = `badge status-${status.replace(/[^a-z-]/g, "")}`;
    const why = w.message ?? w.reason;
    row.status.title = typeof why === "string" ? why : "";
    const threads = Math.max(1, w.nthreads ?? 1);
    const busy = w.processing ?? 0;
    row.busyBar.style.width = `${Math.min(100, (busy / threads) * 100).toFixed(1)}%`;
    setText(row.busyText, `${count(busy)} / ${threads} thread${threads === 1 ? "" : "s"}`);
    const held = workerHeld(w);
    setText(row.held, `${count(held)}${w.nbytes ? ` · ${bytes(w.nbytes)}` : ""}`);

    const cpu = workerCpu(w);
    const mem = workerMemoryBytes(w);
    row.cpu.push(cpu);
    row.mem.push(mem);
    if (row.cpu.length > historyLength) row.cpu.shift();
    if (row.mem.length > historyLength) row.mem.shift();
    sparkline(row.cpuCanvas, row.cpu, { color: "#7cc4ff", max: Math.max(100, ...row.cpu.filter((v) => !Number.isNaN(v))), width: 110 });
    setText(row.cpuText, Number.isNaN(cpu) ? "—" : `${Math.round(cpu)} %`);
    sparkline(row.memCanvas, row.mem, { color: "#c49bff", width: 110 });
    setText(row.memText, Number.isNaN(mem) ? "—" : bytes(mem));
    setText(row.restarts, count(w.restarts ?? 0));
    row.restarts.classList.toggle("warn", (w.restarts ?? 0) > 0);

    const key = plugins.map((p) => `${p.name}=${p.status}`).join("|");
    if (row.plugins.dataset.key !== key) {
      row.plugins.dataset.key = key;
      row.plugins.replaceChildren(...plugins.map((p) => {
        const chip = h("span", `chip ${statusClass(p.status)}`, p.name);
        chip.title = p.status;
        return chip;
      }));
      if (plugins.length === 0) row.plugins.append(h("span", "muted", "—"));
    }
  }
}

/** `ok` green, `failed…` red, anything else (pending) amber. */
export function statusClass(status: string): string {
  if (status === "ok" || status === "running") return "ok";
  if (status.startsWith("failed") || status === "quarantined" || status === "error") return "bad";
  return "pending";
}
