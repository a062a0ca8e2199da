/// <reference lib="dom" />
/**
 * The dashboard page: listens to the scheduler's dashboard feed (`/dashboard/feed`, a CBOR
 * frame of what changed every 200 ms: prefix counts, finished tasks, events), polls `info` and
 * `plugins` every second, and redraws in an animation frame only when something changed, at most
 * five times a second while the feed streams in. Frames are queued as they come and applied
 * within a time budget per frame.
 *
 * @module
 */
import { ArrayReader } from "./cbor.ts";
import { bytes, count, setText, sparkline } from "./dom.ts";
import { LogPanel } from "./log.ts";
import { EventRing, PackedSegments, type PrefixCounts, Progress, Rate, type StreamEvent, TaskStream } from "./model.ts";
import { type PluginEntry, PluginsPanel, statusByPlace } from "./plugins.ts";
import { ProgressPanel } from "./progress.ts";
import { StreamPanel } from "./stream.ts";
import { type WorkerInfo, WorkersPanel } from "./workers.ts";

/**
 * Milliseconds of decoding and folding per frame; the rest waits for the next frame. More when a
 * backlog builds, so the page catches up with a fast graph and still draws every few frames.
 */
const foldBudgetMs = 8;
const catchUpBudgetMs = 12;

const model = { progress: new Progress(), stream: new TaskStream(), rate: new Rate(120), log: new EventRing(500) };
/** Received frames, decoded and applied as animation frames have time for them. */
let queue: ArrayReader[] = [];
let queueHead = 0;
/**
 * Task-stream segments received and not yet in the model, and where the first array is at: a
 * frame of a fast graph carries thousands, added a slice at a time within each frame's budget.
 */
let pendingSegments: PackedSegments[] = [];
let pendingAt = 0;
/** Segments added between two looks at the clock. */
const segmentSlice = 256;
/** Names the feed numbers workers and prefixes by. */
let workerNames: string[] = [];
let prefixNames: string[] = [];
let lastFinished = 0;
/** Browser clock minus scheduler clock (seconds), the smallest seen: the stream's "now". */
let clockSkew = Number.POSITIVE_INFINITY;
let info: Record<string, unknown> | null = null;
let plugins: Record<string, PluginEntry[]> = {};
let infoDirty = false;

const $ = (id: string) => document.getElementById(id)!;
const workersPanel = new WorkersPanel($("workers"));
const progressPanel = new ProgressPanel($("progress"), model.progress);
const streamPanel = new StreamPanel($("stream"));
const logPanel = new LogPanel($("events"));
const pluginsPanel = new PluginsPanel($("plugins"));
const rateCanvas = $("rate-chart") as HTMLCanvasElement;

function setConnection(state: "live" | "connecting" | "offline", detail = ""): void {
  const el = $("connection");
  el.className = `conn ${state}`;
  setText(el, state === "live" ? "live" : state === "connecting" ? "connecting…" : "offline");
  el.title = detail;
}

/** The scheduler's "now" on its own clock. */
function schedulerNow(): number {
  const skew = Number.isFinite(clockSkew) ? clockSkew : 0;
  return Date.now() / 1000 - skew;
}

function connect(): void {
  const url = new URL("/dashboard/feed", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  setConnection("connecting");
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => setConnection("live");
  socket.onmessage = (m) => {
    if (m.data instanceof ArrayBuffer && m.data.byteLength > 0) {
      queue.push(new ArrayReader(new Uint8Array(m.data)));
      wake();
    }
  };
  socket.onclose = (e) => {
    setConnection("offline", e.reason || `closed (${e.code})`);
    // The next connection starts with a snapshot.
    queue = [];
    queueHead = 0;
    pendingSegments = [];
    pendingAt = 0;
    setTimeout(connect, 1000);
  };
}

/** One message of the feed: a snapshot (start over) or a delta. */
interface FeedMessage {
  op: "snapshot" | "delta";
  time: number;
  workers: string[];
  prefixNames: string[];
  prefixes: PrefixCounts[];
  /** Finished tasks, packed (`packSegments`). */
  segments: Uint8Array;
  events: StreamEvent[];
  topics: Record<string, number>;
  finished?: number;
}

function apply(msg: FeedMessage): void {
  const skew = Date.now() / 1000 - msg.time;
  if (skew < clockSkew) clockSkew = skew;
  if (msg.op === "snapshot") {
    model.progress.clear();
    model.stream.reset();
    model.log.clear();
    workerNames = [];
    prefixNames = [];
    pendingSegments = [];
    pendingAt = 0;
  }
  workerNames.push(...msg.workers);
  prefixNames.push(...msg.prefixNames);
  model.progress.apply(msg.prefixes);
  const segments = new PackedSegments(msg.segments);
  if (segments.length > 0) pendingSegments.push(segments);
  for (const e of msg.events) model.log.add(e, true);
  for (const [topic, n] of Object.entries(msg.topics)) model.log.topics.set(topic, n);
  if (msg.events.length > 0 || msg.op === "snapshot") model.log.version++;
  if (msg.op === "delta" && typeof msg.finished === "number") {
    if (msg.finished > lastFinished) model.rate.add(msg.time, msg.finished - lastFinished);
    lastFinished = msg.finished;
  } else lastFinished = 0;
}

async function poll(): Promise<void> {
  try {
    const [i, p] = await Promise.all([fetch("/api/v1/info"), fetch("/api/v1/plugins")]);
    if (i.status === 401 || p.status === 401) {
      // The cookie expired or the token changed: back to the login form.
      location.replace("/");
      return;
    }
    if (i.ok) info = await i.json();
    if (p.ok) plugins = await p.json();
    infoDirty = true;
  } catch {
    // The scheduler is away; the connection badge says so and the next poll retries.
  }
}

/** Adds pending segments to the task stream until the deadline; returns whether all are in. */
function addSegments(deadline: number): boolean {
  while (pendingSegments.length > 0) {
    const seg = pendingSegments[0];
    const end = Math.min(seg.length, pendingAt + segmentSlice);
    for (let i = pendingAt; i < end; i++) {
      model.stream.add(workerNames[seg.worker(i)], prefixNames[seg.prefix(i)], seg.start(i), seg.stop(i), seg.erred(i));
    }
    pendingAt = end;
    if (pendingAt >= seg.length) {
      pendingSegments.shift();
      pendingAt = 0;
    }
    if (performance.now() > deadline) return pendingSegments.length === 0;
  }
  return true;
}

/** Applies queued feed messages (and their segments) until the frame's budget is spent. */
function fold(deadline: number): void {
  while (addSegments(deadline) && queueHead < queue.length) {
    const reader = queue[queueHead];
    if (!reader.done) apply(reader.next() as FeedMessage);
    if (reader.done) queueHead++;
    if (performance.now() > deadline) break;
  }
  if (queueHead > 256 || queueHead === queue.length) {
    queue.splice(0, queueHead);
    queueHead = 0;
  }
}

function renderSummary(): void {
  if (!info) return;
  const workers = (info.workers ?? []) as WorkerInfo[];
  const tasks = (info.tasks ?? {}) as Record<string, number>;
  setText($("address"), String(info.address ?? location.host));
  setText($("version"), `v${info.version ?? "?"}`);
  const threads = workers.reduce((n, w) => n + (w.nthreads ?? 0), 0);
  const nbytes = workers.reduce((n, w) => n + (w.nbytes ?? 0), 0);
  setText($("sum-workers"), count(workers.length));
  setText($("sum-threads"), count(threads));
  for (const state of ["waiting", "queued", "processing", "memory", "erred"]) setText($(`sum-${state}`), count(tasks[state] ?? 0));
  setText($("sum-bytes"), bytes(nbytes));
  $("stat-erred").classList.toggle("bad", (tasks.erred ?? 0) > 0);
  for (const w of workers) if (w.nthreads) model.stream.setThreads(w.name, w.nthreads);
}

let lastInfoRender = 0;
let lastProgressRender = 0;
let framePending = false;

/** The page's own work per frame, for bench/dashboard.ts (read as `__dashboardStats`). */
const stats = { maxFrameMs: 0, frames: 0, slowest: {} as Record<string, number> };
/** Times one part of a frame; keeps each part's longest, so a slow frame says where it went. */
function timed<T>(part: string, fn: () => T): T {
  const t0 = performance.now();
  const out = fn();
  const ms = performance.now() - t0;
  if (ms > (stats.slowest[part] ?? 0)) stats.slowest[part] = ms;
  return out;
}
(globalThis as unknown as { __dashboardStats: typeof stats }).__dashboardStats = stats;

/**
 * Frames at most this often while the feed streams in (it brings news every 200 ms): every frame
 * the page draws costs the browser style, layout, paint and compositing work, on a small machine
 * the cluster's CPU. Clicks, typing and catching up with a backlog draw at once.
 */
const frameGapMs = 200;
let lastFrameAt = Number.NEGATIVE_INFINITY;
let frameTimer: ReturnType<typeof setTimeout> | 0 = 0;

/**
 * Asks for a frame unless one is coming: the page draws only when there is something new, and
 * `frameGapMs` after its last frame at the soonest unless `now`.
 */
function wake(now = false): void {
  if (framePending && !(now && frameTimer)) return;
  if (frameTimer) clearTimeout(frameTimer);
  frameTimer = 0;
  framePending = true;
  const wait = now ? 0 : lastFrameAt + frameGapMs - performance.now();
  if (wait <= 0) requestAnimationFrame(frame);
  else {
    frameTimer = setTimeout(() => {
      frameTimer = 0;
      requestAnimationFrame(frame);
    }, wait);
  }
}

function frame(): void {
  framePending = false;
  const start = performance.now();
  lastFrameAt = start;
  timed("feed", () => fold(start + (queue.length - queueHead > 4 || pendingSegments.length > 2 ? catchUpBudgetMs : foldBudgetMs)));
  if (infoDirty) {
    infoDirty = false;
    timed("workers", () => {
      renderSummary();
      workersPanel.update((info?.workers ?? []) as WorkerInfo[], statusByPlace(plugins));
      pluginsPanel.update(plugins);
    });
  }
  if (start - lastProgressRender > 100) {
    lastProgressRender = start;
    timed("progress", () => progressPanel.render(model.progress));
  }
  const now = schedulerNow();
  const streaming = timed("stream", () => streamPanel.render(model.stream, now));
  timed("log", () => logPanel.render(model.log));
  if (start - lastInfoRender > 500) {
    lastInfoRender = start;
    const series = model.rate.series(now);
    sparkline(rateCanvas, series, { color: "#5ee3a1", width: 160, height: 30 });
    setText($("rate"), `${count(series[series.length - 2] ?? 0)}/s`);
  }
  const took = performance.now() - start;
  if (took > stats.maxFrameMs) stats.maxFrameMs = took;
  stats.frames++;
  // A backlog is folded on the next frames at once; throttled panels and the moving time axis
  // wait for the next paced frame; an idle page requests none.
  if (queueHead < queue.length || pendingSegments.length > 0) wake(true);
  else if (streaming || model.progress.version !== progressPanel.drawnVersion || model.log.version !== logPanel.drawnVersion) wake();
}

addEventListener("resize", () => streamPanel.render(model.stream, schedulerNow(), true));
// Buttons and the filter change what is shown: draw it.
addEventListener("click", () => setTimeout(() => wake(true)));
addEventListener("input", () => setTimeout(() => wake(true)));
connect();
poll();
setInterval(() => {
  poll().then(() => wake());
}, 1000);
wake();
