/// <reference lib="dom" />
/**
 * The event log: the newest events, newest first, filtered by topic (a chip per topic seen, with
 * its count; transitions are off by default: they would drown everything else). At most
 * `maxRows` rows exist and the list is rebuilt at most four times a second.
 *
 * @module
 */
import { clock, count, h, setText } from "./dom.ts";
import type { EventRing, StreamEvent } from "./model.ts";

const maxRows = 200;

/** One line of text for an event: the fields that say what happened, then the rest. */
export function summarize(e: StreamEvent): string {
  if (e.topic === "transition") {
    return `${e.key}  ${e.start} → ${e.finish}${e.worker ? `  on ${e.worker}` : ""}`;
  }
  // `action` first, then `name=value` pairs: easier to scan than JSON.
  const parts: string[] = typeof e.action === "string" ? [e.action] : [];
  for (const k in e) {
    if (k === "seq" || k === "topic" || k === "time" || k === "action") continue;
    const v = e[k];
    let text: string;
    try {
      text = typeof v === "string" ? v : JSON.stringify(v);
    } catch {
      text = String(v);
    }
    parts.push(`${k}=${text}`);
  }
  const line = parts.join("  ");
  return line.length > 400 ? `${line.slice(0, 399)}…` : line;
}

export class LogPanel {
  #chips: HTMLElement;
  #list: HTMLElement;
  #hidden = new Set<string>(["transition"]);
  #chipFor = new Map<string, { el: HTMLElement; n: HTMLElement }>();
  #version = -1;
  #countsVersion = -1;
  #searched = "";
  #drawnAt = 0;
  #search: HTMLInputElement;

  constructor(root: HTMLElement) {
    this.#chips = h("div", "topics");
    this.#search = h("input", "search");
    this.#search.type = "search";
    this.#search.placeholder = "Filter text…";
    this.#search.setAttribute("aria-label", "Filter the event log by text");
    this.#search.addEventListener("input", () => (this.#version = -1));
    root.querySelector(".panel-tools")?.append(this.#search);
    this.#list = h("div", "log");
    root.append(this.#chips, this.#list);
  }

  /** The ring version whose counts were last drawn. */
  get drawnVersion(): number {
    return this.#countsVersion;
  }

  render(ring: EventRing): void {
    const wall = performance.now();
    if (wall - this.#drawnAt < 250) return;
    // With transitions hidden, a flood of them only moves a counter, not the list.
    const version = this.#hidden.has("transition") ? ring.otherVersion : ring.version;
    if (version === this.#version && ring.version === this.#countsVersion) return;
    this.#drawnAt = wall;
    this.#countsVersion = ring.version;
    for (const [topic, n] of ring.topics) {
      let chip = this.#chipFor.get(topic);
      if (!chip) {
        const nEl = h("span", "n");
        const el = h("button", "chip topic", topic, nEl);
        (el as HTMLButtonElement).type = "button";
        el.dataset.topic = topic;
        el.addEventListener("click", () => {
          if (this.#hidden.has(topic)) this.#hidden.delete(topic);
          else this.#hidden.add(topic);
          el.classList.toggle("off", this.#hidden.has(topic));
          this.#version = -1;
          this.#drawnAt = 0;
        });
        el.classList.toggle("off", this.#hidden.has(topic));
        chip = { el, n: nEl };
        this.#chipFor.set(topic, chip);
        this.#chips.append(el);
      }
      setText(chip.n, count(n));
    }
    if (version === this.#version && this.#search.value === this.#searched) return;
    this.#version = version;
    this.#searched = this.#search.value;
    const needle = this.#search.value.trim().toLowerCase();
    const events = ring.newest((t) => !this.#hidden.has(t), needle ? maxRows * 10 : maxRows);
    const rows: HTMLElement[] = [];
    for (const e of events) {
      const text = summarize(e);
      if (needle && !text.toLowerCase().includes(needle) && !e.topic.includes(needle)) continue;
      rows.push(h("div", `entry topic-${e.topic.replace(/[^a-z0-9-]/gi, "")}`,
        h("span", "time", clock(e.time)),
        h("span", "topic-name", e.topic),
        h("span", "text", text)));
      if (rows.length >= maxRows) break;
    }
    if (rows.length === 0) rows.push(h("p", "empty", "No events of the shown topics yet."));
    this.#list.replaceChildren(...rows);
  }
}
