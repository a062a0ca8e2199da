/// <reference lib="dom" />
/**
 * The task stream: one canvas, a row of lanes per worker (one lane per thread), a coloured
 * rectangle per task where it ran, the last 10 s, 1 min or 5 min. Drawing merges neighbouring
 * rectangles of one colour that fall on the same pixels, so a 100k-task graph costs at most a
 * few rectangles per pixel column and lane, however many tasks it has.
 *
 * @module
 */
import { fitCanvas, h, prefixColor } from "./dom.ts";
import type { TaskStream } from "./model.ts";

const labelWidth = 110;
const axisHeight = 18;

export class StreamPanel {
  #canvas: HTMLCanvasElement;
  #box: HTMLElement;
  #window = 60;
  #drawnAt = 0;
  #drawnVersion = -1;
  #empty: HTMLElement;

  constructor(root: HTMLElement) {
    const tools = root.querySelector(".panel-tools");
    const buttons: HTMLButtonElement[] = [];
    for (const [label, seconds] of [["10 s", 10], ["1 min", 60], ["5 min", 300]] as const) {
      const b = h("button", seconds === this.#window ? "ghost active" : "ghost", label);
      b.type = "button";
      b.addEventListener("click", () => {
        this.#window = seconds;
        for (const other of buttons) other.classList.toggle("active", other === b);
        this.#drawnAt = 0;
        this.#drawnVersion = -1;
      });
      buttons.push(b);
      tools?.append(b);
    }
    this.#box = h("div", "stream-box");
    this.#canvas = h("canvas", "stream");
    this.#empty = h("p", "empty", "Tasks appear here as workers run them.");
    this.#box.append(this.#canvas);
    root.append(this.#box, this.#empty);
  }

  /**
   * Redraws at most ten times a second (the time axis moves), and not at all while nothing ran
   * in the window and nothing changed. Returns whether it wants more frames (tasks are in view).
   */
  render(stream: TaskStream, now: number, force = false): boolean {
    const size = stream.size;
    const newest = size > 0 ? stream.stop[(stream.count - 1) % stream.capacity] : 0;
    const inView = size > 0 && now - newest < this.#window + 1;
    const wall = performance.now();
    if (!force && wall - this.#drawnAt < 100) return inView;
    if (!force && !inView && stream.version === this.#drawnVersion && this.#drawnAt > 0) return false;
    this.#drawnAt = wall;
    this.#drawnVersion = stream.version;
    this.#empty.hidden = size > 0;
    this.#box.hidden = size === 0;
    if (size > 0) this.#draw(stream, now);
    return inView;
  }

  #draw(stream: TaskStream, now: number): void {
    const order = stream.workers.map((name, i) => ({ name, i })).sort((a, b) =>
      a.name.localeCompare(b.name, "en", { numeric: true })
    );
    let lanesTotal = 0;
    const firstLane: number[] = [];
    const laneCount: number[] = [];
    for (const { i } of order) {
      firstLane[i] = lanesTotal;
      laneCount[i] = stream.lanes(i);
      lanesTotal += laneCount[i];
    }
    const width = Math.max(200, this.#box.clientWidth);
    const laneHeight = Math.max(3, Math.min(16, Math.floor(260 / Math.max(1, lanesTotal))));
    const gap = 4;
    const height = lanesTotal * laneHeight + order.length * gap + axisHeight;
    const ctx = fitCanvas(this.#canvas, width, height);
    ctx.clearRect(0, 0, width, height);
    const plot = width - labelWidth - 8;
    const t0 = now - this.#window;
    const xOf = (t: number) => labelWidth + ((t - t0) / this.#window) * plot;

    // Rows: a faint band per worker and its name.
    const rowTop: number[] = [];
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (let k = 0; k < order.length; k++) {
      const { name, i } = order[k];
      const top = firstLane[i] * laneHeight + k * gap;
      rowTop[i] = top;
      const rows = laneCount[i] * laneHeight;
      ctx.fillStyle = k % 2 === 0 ? "rgba(255,255,255,0.035)" : "rgba(255,255,255,0.015)";
      ctx.fillRect(labelWidth, top, plot, rows);
      ctx.fillStyle = "#aab4c3";
      const label = name.length > 15 ? `${name.slice(0, 14)}…` : name;
      ctx.fillText(label, 4, top + rows / 2);
    }

    // Segments, newest first; the ring is in finishing order, so stop at the window's start.
    // Per lane, a pending rectangle grows while the next one touches it with the same colour.
    const lanes = lanesTotal;
    const pendX0 = new Float64Array(lanes).fill(-1);
    const pendX1 = new Float64Array(lanes);
    const pendColor = new Int32Array(lanes).fill(-1);
    const flush = (g: number, worker: number, lane: number) => {
      if (pendColor[g] < 0) return;
      const c = pendColor[g];
      ctx.fillStyle = c === 0x7fffffff ? "#ff5c5c" : prefixColor(stream.prefixes[c]);
      const y = rowTop[worker] + lane * laneHeight;
      ctx.fillRect(pendX0[g], y + 1, Math.max(1, pendX1[g] - pendX0[g]), laneHeight - (laneHeight > 5 ? 2 : 1));
      pendColor[g] = -1;
    };
    const laneWorker = new Int32Array(lanes);
    const laneIndex = new Int32Array(lanes);
    const size = stream.size;
    for (let n = 0; n < size; n++) {
      const slot = (stream.count - 1 - n) % stream.capacity;
      const stop = stream.stop[slot];
      // Finishing order is nearly monotone; a second of slack covers reordering.
      if (stop < t0 - 1) break;
      if (stop < t0) continue;
      const w = stream.worker[slot];
      const lane = stream.lane[slot];
      const l = lane < laneCount[w] ? lane : laneCount[w] - 1;
      const g = firstLane[w] + l;
      laneWorker[g] = w;
      laneIndex[g] = l;
      const x1 = Math.min(xOf(stop), width);
      const x0 = Math.max(xOf(stream.start[slot]), labelWidth);
      if (x1 < x0) continue;
      const color = stream.erred[slot] ? 0x7fffffff : stream.prefix[slot];
      if (pendColor[g] === color && x1 >= pendX0[g] - 1) {
        if (x0 < pendX0[g]) pendX0[g] = x0;
      } else {
        flush(g, w, laneIndex[g]);
        pendColor[g] = color;
        pendX0[g] = x0;
        pendX1[g] = x1;
      }
    }
    for (let g = 0; g < lanes; g++) flush(g, laneWorker[g], laneIndex[g]);

    // Time axis: seconds before now.
    const axisTop = height - axisHeight + 2;
    ctx.fillStyle = "#7d8899";
    ctx.strokeStyle = "rgba(255,255,255,0.08)";
    ctx.textBaseline = "top";
    ctx.textAlign = "center";
    const step = this.#window <= 10 ? 2 : this.#window <= 60 ? 10 : 60;
    for (let s = 0; s <= this.#window; s += step) {
      const x = xOf(now - s);
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, axisTop - 2);
      ctx.stroke();
      ctx.fillText(s === 0 ? "now" : this.#window >= 300 ? `-${s / 60} min` : `-${s} s`, Math.min(x, width - 16), axisTop);
    }
    ctx.textAlign = "start";
  }
}
