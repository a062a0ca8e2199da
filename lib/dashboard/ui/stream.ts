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
  #window = 10;
  #drawnAt = 0;
  #drawnVersion = -1;
  #empty: HTMLElement;
  /** What the canvas shows: its layout, the time it was drawn at, the segments it holds. */
  #layout = "";
  #lastNow = 0;
  #drawnCount = 0;
  #frac = 0;

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
        this.#layout = "";
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

  /**
   * Draws incrementally: the plot is shifted left by the time that passed and only the tasks
   * that finished since are drawn, so a frame costs what is new, not what is in view. A change
   * of workers, lanes, size or window redraws everything.
   */
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
    const plotBottom = lanesTotal * laneHeight + order.length * gap;
    const height = plotBottom + axisHeight;
    const plot = width - labelWidth - 8;
    const right = labelWidth + plot;
    const t0 = now - this.#window;
    const scale = plot / this.#window;
    const layout = `${width}|${laneHeight}|${this.#window}|${order.map((o) => `${o.name}:${laneCount[o.i]}`).join(",")}`;
    const full = layout !== this.#layout || stream.count < this.#drawnCount ||
      stream.count - this.#drawnCount >= stream.capacity || now < this.#lastNow;
    const ctx = fitCanvas(this.#canvas, width, height);

    const rowTop: number[] = [];
    for (let k = 0; k < order.length; k++) rowTop[order[k].i] = firstLane[order[k].i] * laneHeight + k * gap;
    const bands = (x: number, w: number) => {
      for (let k = 0; k < order.length; k++) {
        const i = order[k].i;
        // Opaque: the plot is shifted onto itself, and translucent pixels would pile up.
        ctx.fillStyle = k % 2 === 0 ? "#1f242b" : "#1a1f26";
        ctx.fillRect(x, rowTop[i], w, laneCount[i] * laneHeight);
      }
    };

    let from: number;
    if (full) {
      ctx.clearRect(0, 0, width, height);
      ctx.font = "12px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      for (const { name, i } of order) {
        ctx.fillStyle = "#aab4c3";
        ctx.fillText(name.length > 15 ? `${name.slice(0, 14)}…` : name, 4, rowTop[i] + (laneCount[i] * laneHeight) / 2);
      }
      bands(labelWidth, plot);
      from = Math.max(0, stream.count - stream.capacity);
      this.#frac = 0;
    } else {
      const exact = (now - this.#lastNow) * scale + this.#frac;
      const dx = Math.min(Math.floor(exact), plot);
      this.#frac = exact - dx;
      if (dx > 0) {
        const dpr = this.#canvas.width / width;
        const w = Math.round((plot - dx) * dpr);
        const h = Math.round(plotBottom * dpr);
        ctx.save();
        ctx.setTransform(1, 0, 0, 1, 0, 0);
        if (w > 0) ctx.drawImage(this.#canvas, Math.round((labelWidth + dx) * dpr), 0, w, h, Math.round(labelWidth * dpr), 0, w, h);
        ctx.restore();
        const strip = right - dx;
        ctx.clearRect(strip, 0, width - strip, plotBottom);
        bands(strip, right - strip);
      }
      from = this.#drawnCount;
    }

    // Segments, newest first; the ring is in finishing order, so stop at the window's start.
    // Per lane, a pending rectangle grows while the next one touches it with the same colour.
    const lanes = lanesTotal;
    const pendX0 = new Float64Array(lanes).fill(-1);
    const pendX1 = new Float64Array(lanes);
    const pendColor = new Int32Array(lanes).fill(-1);
    const laneWorker = new Int32Array(lanes);
    const laneIndex = new Int32Array(lanes);
    const flush = (g: number) => {
      if (pendColor[g] < 0) return;
      const c = pendColor[g];
      ctx.fillStyle = c === 0x7fffffff ? "#ff5c5c" : prefixColor(stream.prefixes[c]);
      const y = rowTop[laneWorker[g]] + laneIndex[g] * laneHeight;
      ctx.fillRect(pendX0[g], y + 1, Math.max(1, pendX1[g] - pendX0[g]), laneHeight - (laneHeight > 5 ? 2 : 1));
      pendColor[g] = -1;
    };
    for (let n = stream.count - 1; n >= from; n--) {
      const slot = n % stream.capacity;
      const stop = stream.stop[slot];
      // Finishing order is nearly monotone; a second of slack covers reordering.
      if (stop < t0 - 1) break;
      if (stop < t0) continue;
      const w = stream.worker[slot];
      const lane = stream.lane[slot];
      const l = lane < laneCount[w] ? lane : laneCount[w] - 1;
      const g = firstLane[w] + l;
      const x1 = Math.min(labelWidth + (stop - t0) * scale, right);
      const x0 = Math.max(labelWidth + (stream.start[slot] - t0) * scale, labelWidth);
      if (x1 < x0) continue;
      const color = stream.erred[slot] ? 0x7fffffff : stream.prefix[slot];
      if (pendColor[g] === color && x1 >= pendX0[g] - 1) {
        if (x0 < pendX0[g]) pendX0[g] = x0;
      } else {
        flush(g);
        laneWorker[g] = w;
        laneIndex[g] = l;
        pendColor[g] = color;
        pendX0[g] = x0;
        pendX1[g] = x1;
      }
    }
    for (let g = 0; g < lanes; g++) flush(g);

    // Time axis: seconds before now (ticks only below the plot: the plot itself scrolls).
    ctx.clearRect(0, plotBottom, width, axisHeight);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#7d8899";
    ctx.textBaseline = "top";
    ctx.textAlign = "center";
    const step = this.#window <= 10 ? 2 : this.#window <= 60 ? 10 : 60;
    for (let sec = 0; sec <= this.#window; sec += step) {
      const x = right - sec * scale;
      ctx.fillRect(x, plotBottom + 1, 1, 3);
      ctx.fillText(sec === 0 ? "now" : this.#window >= 300 ? `-${sec / 60} min` : `-${sec} s`, Math.min(x, width - 16), plotBottom + 5);
    }
    ctx.textAlign = "start";
    this.#layout = layout;
    this.#lastNow = now;
    this.#drawnCount = stream.count;
  }
}
