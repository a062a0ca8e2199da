/// <reference lib="dom" />
/**
 * Small DOM helpers for the dashboard's panels: element creation (text always through
 * `textContent`, never HTML, since keys and event fields come from users), number formats, the
 * colour of a task prefix, and canvas sparklines.
 *
 * @module
 */

/** Creates an element with a class and children (strings become text nodes). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = "",
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const c of children) el.append(c);
  return el;
}

/** Sets text only when it changed: cheaper than letting the browser relayout for nothing. */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** `1234567` → `1.2 MiB`. */
export function bytes(n: number): string {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** `12345` → `12,345` (one shared formatter: `toLocaleString` builds one per call). */
export function count(n: number): string {
  return integer.format(n);
}

/** A scheduler time (seconds) as `HH:MM:SS.mmm` local time. */
export function clock(seconds: number): string {
  const d = new Date(seconds * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const colorCache = new Map<string, string>();

/** A stable colour per task prefix (the same on every reload and in every panel). */
export function prefixColor(name: string): string {
  let c = colorCache.get(name);
  if (c === undefined) {
    let hash = 2166136261;
    for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 16777619);
    // Golden-angle steps spread neighbouring hashes over the wheel; red is kept for errors.
    const hue = (30 + ((hash >>> 0) % 1000) * 137.508) % 300 + 30;
    c = `hsl(${hue.toFixed(0)} 62% 58%)`;
    colorCache.set(name, c);
  }
  return c;
}

/** Sizes a canvas to its CSS box at the device pixel ratio; returns the 2D context, scaled. */
export function fitCanvas(canvas: HTMLCanvasElement, cssWidth: number, cssHeight: number): CanvasRenderingContext2D {
  const dpr = globalThis.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(cssWidth * dpr));
  const hgt = Math.max(1, Math.round(cssHeight * dpr));
  if (canvas.width !== w || canvas.height !== hgt) {
    canvas.width = w;
    canvas.height = hgt;
    canvas.style.width = `${cssWidth}px`;
    canvas.style.height = `${cssHeight}px`;
  }
  const ctx = canvas.getContext("2d")!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/**
 * Draws a filled sparkline of `values` (oldest first) scaled to `max` (or to their own maximum).
 * Missing samples (`NaN`) leave a gap.
 */
export function sparkline(
  canvas: HTMLCanvasElement,
  values: ArrayLike<number>,
  options: { color: string; max?: number; width?: number; height?: number },
): void {
  const width = options.width ?? 120;
  const height = options.height ?? 26;
  const ctx = fitCanvas(canvas, width, height);
  ctx.clearRect(0, 0, width, height);
  let max = options.max ?? 0;
  if (!options.max) for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  if (!(max > 0) || values.length === 0) return;
  const step = width / Math.max(1, values.length - 1);
  // Runs of present samples, each filled down to the baseline and stroked along its top.
  const runs: Array<Array<[number, number]>> = [];
  let run: Array<[number, number]> | null = null;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(v)) {
      run = null;
      continue;
    }
    if (!run) runs.push(run = []);
    run.push([i * step, height - 1 - Math.min(1, Math.max(0, v) / max) * (height - 3)]);
  }
  ctx.fillStyle = options.color;
  ctx.strokeStyle = options.color;
  ctx.lineWidth = 1.25;
  for (const points of runs) {
    ctx.beginPath();
    ctx.moveTo(points[0][0], height);
    for (const [x, y] of points) ctx.lineTo(x, y);
    ctx.lineTo(points[points.length - 1][0], height);
    ctx.closePath();
    ctx.globalAlpha = 0.22;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
    ctx.stroke();
  }
}
