/// <reference lib="dom" />
/**
 * The progress panel: a bar per task prefix (done, erred, processing, waiting of its total), as
 * Dask's `progress`. A handful of elements per prefix, never per task; at most `maxRows` prefixes
 * are shown, running ones first.
 *
 * @module
 */
import { count, h, prefixColor, setText } from "./dom.ts";
import type { PrefixCounts, Progress } from "./model.ts";

const maxRows = 40;

interface Row {
  el: HTMLElement;
  done: HTMLElement;
  erred: HTMLElement;
  processing: HTMLElement;
  text: HTMLElement;
  erredText: HTMLElement;
}

export class ProgressPanel {
  #list: HTMLElement;
  #more: HTMLElement;
  #empty: HTMLElement;
  #rows = new Map<string, Row>();
  #version = -1;

  constructor(root: HTMLElement, progress: Progress) {
    this.#list = h("div", "prefixes");
    this.#more = h("p", "muted small");
    this.#empty = h("p", "empty", "No tasks yet: submit a graph and its prefixes appear here.");
    const clear = h("button", "ghost", "Clear finished");
    clear.type = "button";
    clear.addEventListener("click", () => {
      progress.clearFinished();
      this.#version = -1;
    });
    root.querySelector(".panel-tools")?.append(clear);
    root.append(this.#list, this.#more, this.#empty);
  }

  /** The model version last drawn. */
  get drawnVersion(): number {
    return this.#version;
  }

  render(progress: Progress): void {
    if (progress.version === this.#version) return;
    this.#version = progress.version;
    const all = [...progress.prefixes.values()];
    const active = (p: PrefixCounts) => p.waiting + p.processing > 0;
    all.sort((a, b) => Number(active(b)) - Number(active(a)) || b.order - a.order);
    const shown = all.slice(0, maxRows);
    const keep = new Set<string>();
    let previous: HTMLElement | null = null;
    for (const p of shown) {
      keep.add(p.name);
      let row = this.#rows.get(p.name);
      if (!row) this.#rows.set(p.name, row = this.#row(p.name));
      const want: ChildNode | null = previous ? previous.nextSibling : this.#list.firstChild;
      if (want !== row.el) this.#list.insertBefore(row.el, want);
      previous = row.el;
      const total = Math.max(1, p.total);
      row.done.style.width = `${((p.done / total) * 100).toFixed(2)}%`;
      row.erred.style.width = `${((p.erred / total) * 100).toFixed(2)}%`;
      row.processing.style.width = `${((p.processing / total) * 100).toFixed(2)}%`;
      setText(row.text, `${count(p.done)} / ${count(p.total)}`);
      setText(row.erredText, p.erred > 0 ? `${count(p.erred)} erred` : p.processing > 0 ? `${count(p.processing)} running` : "");
      row.erredText.className = p.erred > 0 ? "tag bad" : p.processing > 0 ? "tag" : "tag hidden";
      row.el.classList.toggle("finished", !active(p));
    }
    for (const [name, row] of this.#rows) {
      if (!keep.has(name)) {
        row.el.remove();
        this.#rows.delete(name);
      }
    }
    setText(this.#more, all.length > maxRows ? `and ${count(all.length - maxRows)} more prefixes` : "");
    this.#empty.hidden = all.length > 0;
  }

  #row(name: string): Row {
    const done = h("div", "seg done");
    done.style.background = prefixColor(name);
    const erred = h("div", "seg erred");
    const processing = h("div", "seg processing");
    processing.style.background = prefixColor(name);
    const text = h("span", "count");
    const erredText = h("span", "tag");
    const label = h("div", "prefix-label", h("span", "swatch"), h("span", "prefix-name", name), erredText, text);
    (label.firstChild as HTMLElement).style.background = prefixColor(name);
    const el = h("div", "prefix", label, h("div", "bar", done, erred, processing));
    el.dataset.prefix = name;
    el.title = name;
    return { el, done, erred, processing, text, erredText };
  }
}
