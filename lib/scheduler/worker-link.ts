/**
 * The scheduler's side of the worker link (`WS /api/v1/worker`, messages in
 * lib/messages/worker.ts): registration and welcome, task results into the state machine,
 * heartbeats, relays, and the requests the scheduler makes of workers (get-data, plugin-add,
 * plugin-remove) through `Requests`. Messages to a worker are batched into one frame per tick;
 * a message that cannot be encoded (or alone passes the frame limit) errs only its own task, and
 * a batch past the limit is split into several frames. The socket is authenticated first
 * (link-auth.ts); the welcome carries the cluster's peer-data key sealed for this worker.
 *
 * @module
 */
import type { WSContext } from "hono/ws";
import { errorMessage } from "../errors.ts";
import type { ComponentLogger } from "../log.ts";
import type { PluginFailure, SchedulerToWorker, WorkerToScheduler } from "../messages/worker.ts";
import type { PluginManager } from "../plugins/manager.ts";
import type { WirePluginSpec } from "../plugins/load.ts";
import type { SchedulerApi, SchedulerPlugin } from "../plugins/types.ts";
import { version } from "../protocol.ts";
import { FrameAssembler, sendFrame } from "../frames.ts";
import { seal } from "../auth/handshake.ts";
import type { LinkAuth } from "./link-auth.ts";
import { checkMessage } from "../messages/validate.ts";
import { type ReplyMessage, Requests } from "../rpc.ts";
import { runtime } from "../runtime/mod.ts";
import type { EventLog } from "./events.ts";
import type { PluginRollout } from "./rollout.ts";
import type { LogStore } from "./logs.ts";
import { WorkerMetrics } from "./worker-metrics.ts";
import type { SchedulerState, WorkerState } from "./state.ts";

/** How long the scheduler waits for a worker's answer. */
export const workerTimeouts = {
  getData: 60_000,
  /** A setup may install packages: minutes, not seconds. */
  pluginAdd: 600_000,
  pluginRemove: 60_000,
};

/** What the worker link needs of the scheduler. */
export interface WorkerLinkContext {
  readonly state: SchedulerState;
  readonly events: EventLog;
  readonly plugins: PluginManager<SchedulerPlugin>;
  readonly api: SchedulerApi;
  readonly log: ComponentLogger;
  /** Modules any worker ever reported, for checking `fn` prefixes. */
  readonly knownModules: Set<string>;
  /** The worker plugin specs a worker gets in its welcome, and their statuses. */
  remotePlugins(): PluginRollout;
  /** Applies the state machine's pending effects. */
  apply(): void;
  /** Called after every frame a worker sent. */
  afterFrame(): void;
  /** Where forwarded log records are kept. */
  readonly logs: LogStore;
  /** The cluster's peer-data key (lib/auth/peer-data.ts), sealed into every welcome. */
  readonly peerKey: Uint8Array;
}

/** Handling a registered worker's frames takes about this long at a time (ms). */
const sliceMs = 10;

/**
 * A frame's messages from `next` on, or (`messages` null) the worker's socket closing; `received`
 * is when it came (performance.now()), which round-trip samples count to, not when it is handled.
 */
interface InboxItem {
  readonly conn: WorkerConn;
  readonly messages: readonly WorkerToScheduler[] | null;
  readonly received: number;
  next: number;
}

/** One connected worker. */
export interface WorkerConn {
  readonly ws: WSContext;
  readonly state: WorkerState;
  outbox: SchedulerToWorker[];
  readonly requests: Requests;
  rss: number;
  restarts: number;
  /** The worker said it is closing: its leaving does not count as a death. */
  graceful: boolean;
  /** The worker plugins its welcome carried. */
  welcomed: string[];
  /** Settles once the worker said `ready` (its welcome's plugins set up) or left. */
  pluginsReady: Promise<void>;
  settlePluginsReady: () => void;
  /**
   * A compute sent while the worker had a thread free for it (no wait behind other tasks) and
   * when (performance.now()): its done, less its duration, is one round-trip sample.
   */
  probeKey: string | null;
  probeSent: number;
  /** Nothing was in flight on the worker when its last task finished (or it never had one). */
  idle: boolean;
  /** It reads frames in cbor-x's record extension (it said so in `register`): it is sent them. */
  records: boolean;
}


/** The connected workers and their protocol. */
export class WorkerLinks {
  /** Connected workers by name (registered, ready or not). */
  readonly conns = new Map<string, WorkerConn>();
  /** Keys workers asked the scheduler to relay (peers they could not reach): `cluster_relayed_total`. */
  relayedTotal = 0;
  /** What heartbeats report (CPU, memory, tasks), with a short history per worker. */
  readonly metrics = new WorkerMetrics();
  #ctx: WorkerLinkContext;
  #dirty = new Set<WorkerConn>();
  #flushScheduled = false;
  /** A message of this flush could not be delivered. */
  #undelivered = false;
  /**
   * Registered workers' frames (and closes) not handled yet, in the order they came: a frame of
   * thousands of results is handled about `sliceMs` at a time, the event loop running between
   * (`/health`, clients, the other workers' sockets), and whatever comes meanwhile waits its turn.
   */
  #inbox: InboxItem[] = [];
  #inboxHead = 0;
  /** A later turn of the event loop goes on with the inbox. */
  #inboxScheduled = false;

  constructor(context: WorkerLinkContext) {
    this.#ctx = context;
  }

  /** The connection of a worker the state machine knows, if it is still the same one. */
  connOf(ws: WorkerState): WorkerConn | undefined {
    const conn = this.conns.get(ws.name);
    return conn && conn.state === ws ? conn : undefined;
  }

  /** Queues a message for a worker; every queued message leaves in one frame per tick. */
  send(ws: WorkerState, msg: SchedulerToWorker): void {
    const conn = this.conns.get(ws.name);
    if (!conn || conn.state !== ws) return;
    const box = conn.outbox;
    const last = box[box.length - 1];
    if (msg.op === "free") {
      // Frees of one tick travel as one message.
      if (last?.op === "free") {
        for (const key of msg.keys) last.keys.push(key);
      } else {
        box.push({ op: "free", keys: [...msg.keys], stimulusId: msg.stimulusId });
      }
    } else {
      if (msg.op === "compute" && conn.idle) this.#probe(conn, msg.key);
      box.push(msg);
    }
    this.#dirty.add(conn);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /**
   * Starts a round-trip sample with the first compute sent to an idle worker (it waits behind
   * nothing there), unless a sample runs (one lost for 10 s is given up).
   */
  #probe(conn: WorkerConn, key: string): void {
    if (!conn.idle) return;
    conn.idle = false;
    const now = performance.now();
    if (conn.probeKey !== null && now - conn.probeSent < 10_000) return;
    conn.probeKey = key;
    conn.probeSent = now;
  }

  /** Ends the round-trip sample of a finished task: the worker's estimate moves toward it. */
  #probeDone(conn: WorkerConn, key: string, duration: number | undefined, received: number): void {
    if (conn.probeKey !== key) return;
    conn.probeKey = null;
    const sample = Math.max(0, (received - conn.probeSent) / 1000 - (duration ?? 0));
    const ws = conn.state;
    ws.rttSeconds = ws.rttSeconds === 0 ? sample : ws.rttSeconds * 0.7 + sample * 0.3;
  }

  /** Sends every queued message now. */
  flush(): void {
    this.#flushScheduled = false;
    this.#undelivered = false;
    for (const conn of this.#dirty) {
      const box = conn.outbox;
      if (box.length === 0) continue;
      conn.outbox = [];
      try {
        // Records (protocol.ts) to a worker that said it reads them.
        sendFrame(conn.ws, box, runtime.bufferedAmount, (msg: SchedulerToWorker, reason: string) => this.#undeliverable(conn, msg, reason), conn.records);
      } catch (err) {
        this.#ctx.log.warn(`Cannot send to worker "${conn.state.name}": ${errorMessage(err)}`);
      }
    }
    this.#dirty.clear();
    if (!this.#undelivered) return;
    // Tasks erred by #undeliverable: their effects (a retry elsewhere, waiters woken) apply now.
    this.#ctx.apply();
  }

  /**
   * A message that cannot reach its worker (it cannot be encoded, or alone passes the frame
   * limit): its task errs with the reason, a request gets an error reply in its place.
   */
  #undeliverable(conn: WorkerConn, msg: SchedulerToWorker, reason: string): SchedulerToWorker | null {
    const state = this.#ctx.state;
    this.#undelivered = true;
    if (msg.op === "compute") {
      const exception = `Cannot send task "${msg.key}" to worker "${conn.state.name}": ${reason}`;
      this.#ctx.log.warn(exception);
      state.taskErred(conn.state, { key: msg.key, exception, traceback: "" }, state.stimulusId("send-failed"));
      return null;
    }
    if (msg.op === "reply") return { op: "reply", id: msg.id, error: `Cannot send the reply: ${reason}` };
    this.#ctx.log.warn(`Dropped a "${msg.op}" message to worker "${conn.state.name}": ${reason}`);
    return null;
  }

  /** Fetches results a worker holds (keys it no longer has are absent). */
  async getData(conn: WorkerConn, keys: string[]): Promise<Record<string, unknown>> {
    const reply = await conn.requests.send((id) => this.send(conn.state, { op: "get-data", id, keys }), {
      timeoutMs: workerTimeouts.getData,
    });
    return (reply.data ?? {}) as Record<string, unknown>;
  }

  /** Sets a plugin up on a worker; rejects with the worker's error, resolves with its warning if any. */
  async addPlugin(conn: WorkerConn, spec: WirePluginSpec): Promise<string | undefined> {
    const reply = await conn.requests.send((id) => this.send(conn.state, { op: "plugin-add", id, spec }), {
      timeoutMs: workerTimeouts.pluginAdd,
    });
    return typeof reply.warning === "string" ? reply.warning : undefined;
  }

  /** Tears a plugin down on a worker. */
  async removePlugin(conn: WorkerConn, name: string): Promise<void> {
    await conn.requests.send((id) => this.send(conn.state, { op: "plugin-remove", id, name }), {
      timeoutMs: workerTimeouts.pluginRemove,
    });
  }

  /** The WebSocket handlers of one worker connection, once authenticated. */
  socket(auth: LinkAuth) {
    let conn: WorkerConn | null = null;
    const frames = new FrameAssembler();
    return {
      onMessage: (event: MessageEvent, ws: WSContext) => {
        let messages: WorkerToScheduler[];
        try {
          messages = frames.decode(event.data) as unknown as WorkerToScheduler[];
        } catch (err) {
          this.#ctx.log.warn(`Closing a worker socket: ${errorMessage(err)}`);
          ws.close(1007, errorMessage(err).slice(0, 120));
          return;
        }
        if (conn) {
          conn.state.lastSeen = Date.now();
          this.#receive({ conn, messages, received: performance.now(), next: 0 });
          return;
        }
        for (let i = 0; i < messages.length; i++) {
          const msg = messages[i];
          const invalid = checkMessage("worker", msg);
          if (invalid !== null) {
            this.#ctx.log.warn(`Dropped a message sent before the worker's register: ${invalid}`);
            continue;
          }
          if (msg.op !== "register") {
            ws.close(4002, "Expected a register message first");
            return;
          }
          if (!(conn = this.#register(ws, msg, auth))) return;
          // What came in the same frame after the register message.
          if (i + 1 < messages.length) this.#receive({ conn, messages, received: performance.now(), next: i + 1 });
          else this.#ctx.apply();
          return;
        }
      },
      onClose: () => {
        // After the frames that came before it.
        if (conn) this.#receive({ conn, messages: null, received: performance.now(), next: 0 });
      },
    };
  }

  /** Takes a frame's messages (or a close) in turn: handled now, unless earlier ones still wait. */
  #receive(item: InboxItem): void {
    this.#inbox.push(item);
    if (!this.#inboxScheduled) this.#drain();
  }

  /**
   * Handles the inbox for about `sliceMs`, then leaves the rest to a later turn of the event loop.
   * The effects of everything handled go out in one pass at the end of each slice.
   */
  #drain(): void {
    this.#inboxScheduled = false;
    const inbox = this.#inbox;
    const t0 = performance.now();
    let handled = 0;
    try {
      while (this.#inboxHead < inbox.length) {
        const item = inbox[this.#inboxHead];
        const { conn, messages } = item;
        if (messages === null) {
          this.#inboxHead++;
          this.#ctx.apply();
          void this.remove(conn, "connection closed");
          continue;
        }
        // A worker removed meanwhile (silent past its TTL, or replaced): its results no longer count.
        if (this.conns.get(conn.state.name) !== conn) {
          this.#inboxHead++;
          continue;
        }
        while (item.next < messages.length) {
          const msg = messages[item.next++];
          // Field types checked first (lib/messages/validate.ts): a bad message is dropped with a reason.
          const invalid = checkMessage("worker", msg);
          if (invalid !== null) {
            this.#ctx.log.warn(`Dropped a message from worker "${conn.state.name}": ${invalid}`);
            continue;
          }
          try {
            this.#handle(conn, msg, item.received);
          } catch (err) {
            // A bug, not the worker's doing: said, and the rest of the inbox still handled.
            this.#ctx.log.error(`Handling "${msg.op}" from worker "${conn.state.name}" failed: ${errorMessage(err)}`);
          }
          if ((++handled & 63) === 0 && performance.now() - t0 > sliceMs && (item.next < messages.length || this.#inboxHead + 1 < inbox.length)) {
            this.#inboxScheduled = true;
            setTimeout(() => this.#drain(), 0);
            return;
          }
        }
        this.#inboxHead++;
      }
      // All handled: the same array takes the next frames (no new one a frame).
      inbox.length = 0;
      this.#inboxHead = 0;
    } finally {
      // One pass over the effects of every result handled.
      this.#ctx.apply();
      this.#ctx.afterFrame();
    }
  }

  /** `received`: when the message's frame came (performance.now()). */
  #handle(conn: WorkerConn, msg: WorkerToScheduler, received: number): void {
    const ctx = this.#ctx;
    const state = ctx.state;
    const ws = conn.state;
    switch (msg.op) {
      case "done":
        if (conn.probeKey !== null) this.#probeDone(conn, msg.key, msg.duration, received);
        state.taskFinished(ws, msg, msg.stimulusId ?? state.stimulusId("task-finished"));
        if (ws.processingTasks.size === 0) conn.idle = true;
        break;
      case "erred":
        state.taskErred(ws, msg, msg.stimulusId ?? state.stimulusId("task-erred"));
        break;
      case "missing-data":
        state.missingData(ws, msg.key, msg.dep, state.stimulusId("missing-data"));
        break;
      case "heartbeat":
        if (typeof msg.rss === "number") conn.rss = msg.rss;
        this.metrics.record(ws.name, {
          time: Date.now() / 1000,
          cpu: msg.cpu ?? 0,
          rss: conn.rss,
          executing: msg.executing ?? 0,
          held: ws.heldTasks.size,
        });
        break;
      case "logs":
        if (Array.isArray(msg.records)) ctx.logs.add("worker", ws.name, msg.records);
        break;
      case "closing":
        conn.graceful = true;
        break;
      case "ready":
        this.#ready(conn, Array.isArray(msg.failed) ? msg.failed.filter((f) => typeof f?.plugin === "string") : []);
        break;
      case "reply":
        conn.requests.settle(msg);
        break;
      case "relay":
        this.#relay(conn, msg.id, msg.keys);
        break;
      case "modules":
        for (const m of msg.modules) {
          ws.modules.add(m);
          ctx.knownModules.add(m);
        }
        break;
      case "event":
        try {
          ctx.events.post(String(msg.topic), msg.msg, { worker: ws.name });
        } catch (err) {
          ctx.log.warn(`Dropped an event from worker "${ws.name}": ${errorMessage(err)}`);
        }
        break;
      case "plugin-error":
        ctx.plugins.reportError(`${ws.name}/${msg.plugin}`, String(msg.hook), msg.error);
        ctx.events.append("plugin", { action: "error", role: "worker", worker: ws.name, plugin: msg.plugin, hook: msg.hook, error: msg.error });
        break;
      default:
        ctx.log.warn(`Unknown message "${(msg as { op: string }).op}" from worker "${ws.name}"`);
    }
  }

  #register(ws: WSContext, msg: Extract<WorkerToScheduler, { op: "register" }>, auth: LinkAuth): WorkerConn | null {
    const ctx = this.#ctx;
    const { name, nthreads } = msg;
    if (typeof name !== "string" || name === "" || typeof nthreads !== "number" || nthreads < 1) {
      ws.close(4002, "Invalid register message: needs name and nthreads");
      return null;
    }
    if (ctx.state.workers.has(name)) {
      ws.close(4009, `A worker named "${name}" is already connected`);
      return null;
    }
    const modules = Array.isArray(msg.modules) ? msg.modules : [];
    for (const m of modules) ctx.knownModules.add(m);
    const state = ctx.state.addWorker({
      name,
      address: String(msg.address ?? ""),
      nthreads,
      nanny: !!msg.nanny,
      modules,
      pid: Number(msg.pid ?? 0),
    }, Date.now());
    let settlePluginsReady = () => {};
    const pluginsReady = new Promise<void>((r) => (settlePluginsReady = r));
    const remote = ctx.remotePlugins();
    const plugins = [...remote.worker];
    const conn: WorkerConn = {
      ws,
      state,
      outbox: [],
      requests: new Requests({ peer: `worker "${name}"` }),
      rss: 0,
      restarts: Number(msg.restarts ?? 0),
      graceful: false,
      welcomed: plugins.map((s) => s.name!),
      pluginsReady,
      settlePluginsReady,
      probeKey: null,
      probeSent: 0,
      idle: true,
      records: msg.records === true,
    };
    this.conns.set(name, conn);
    // Plugins first: the worker confirms them with "ready" before it gets any task.
    remote.welcomed("worker", name, conn.welcomed);
    const peerKey = auth.sessionKey ? seal(ctx.peerKey, auth.sessionKey) : undefined;
    // `records`: this scheduler reads frames in cbor-x's record extension (protocol.ts).
    this.send(state, { op: "welcome", plugins, version, records: true, ...(peerKey ? { peerKey } : {}) });
    return conn;
  }

  /**
   * The worker set up its welcome's plugins: their statuses are recorded (a registration in
   * progress waits for this), then it gets tasks — or none, quarantined, when a plugin failed.
   */
  async #ready(conn: WorkerConn, failed: PluginFailure[]): Promise<void> {
    const ctx = this.#ctx;
    const ws = conn.state;
    const remote = ctx.remotePlugins();
    remote.ready("worker", ws.name, conn.welcomed, failed);
    conn.settlePluginsReady();
    // Logged with the plugin's name and message, counted, published.
    for (const f of failed) ctx.plugins.reportError(`${ws.name}/${f.plugin}`, "setup", f.error);
    if (ctx.plugins.has("addWorker")) await ctx.plugins.callAsync("addWorker", ctx.api, ws.name);
    if (this.conns.get(ws.name) !== conn) return;
    const quarantine = remote.quarantineReason(ws);
    if (quarantine) {
      ctx.state.quarantineWorker(ws, quarantine);
      ctx.log.warn(`Worker "${ws.name}" quarantined (it gets no task): ${quarantine}`);
    } else {
      ctx.state.workerReady(ws, ctx.state.stimulusId("worker-ready"));
      ctx.apply();
    }
    ctx.events.append("worker", { action: "add", worker: ws.name, address: ws.address, nthreads: ws.nthreads, nanny: ws.nanny, status: ws.status });
    ctx.log.info(`Worker "${ws.name}" joined (${ws.nthreads} threads${ws.nanny ? ", nanny" : ""})`);
  }

  /** Forgets a worker whose socket closed or who went silent; its tasks go elsewhere. */
  async remove(conn: WorkerConn, reason: string): Promise<void> {
    const ctx = this.#ctx;
    const name = conn.state.name;
    if (this.conns.get(name) !== conn) return;
    this.conns.delete(name);
    this.#dirty.delete(conn);
    this.metrics.delete(name);
    conn.requests.rejectAll(`worker "${name}" left`, { final: true });
    conn.settlePluginsReady();
    const wasRunning = conn.state.status === "running" || conn.state.status === "quarantined";
    const stimulusId = ctx.state.stimulusId("remove-worker");
    ctx.state.removeWorker(name, stimulusId, { graceful: conn.graceful });
    ctx.apply();
    if (wasRunning) {
      ctx.events.append("worker", { action: "remove", worker: name, reason });
      ctx.log.info(`Worker "${name}" left: ${reason}`);
      if (ctx.plugins.has("removeWorker")) await ctx.plugins.callAsync("removeWorker", ctx.api, name, { stimulusId });
    }
  }

  /**
   * Closes and removes the workers not heard from for `timeoutMs` at time `now`, counting from
   * `listeningSince` at the earliest (the scheduler itself was stalled before: it did not listen).
   */
  checkHeartbeats(timeoutMs: number, now: number, listeningSince = 0): void {
    for (const conn of this.conns.values()) {
      const silent = now - Math.max(conn.state.lastSeen, listeningSince);
      if (silent > timeoutMs) {
        this.#ctx.log.warn(`Worker "${conn.state.name}" missed heartbeats for ${Math.round(silent / 1000)} s`);
        try {
          conn.ws.close(4008, "Heartbeat timeout");
        } catch {
          // already closed
        }
        this.remove(conn, "heartbeat timeout");
      }
    }
  }

  /** A worker could not reach its peers: the scheduler fetches the data for it. */
  async #relay(conn: WorkerConn, id: number, keys: string[]): Promise<void> {
    this.relayedTotal += keys.length;
    const data: Record<string, unknown> = {};
    const byHolder = new Map<WorkerConn, string[]>();
    for (const key of keys) {
      const ts = this.#ctx.state.tasks.get(key);
      if (!ts) continue;
      if (ts.hasValue) {
        data[key] = ts.value;
        continue;
      }
      let holder: WorkerConn | undefined;
      for (const w of ts.whoHas) {
        const c = this.connOf(w);
        if (c && c !== conn) {
          holder = c;
          break;
        }
      }
      if (!holder) continue;
      let list = byHolder.get(holder);
      if (!list) byHolder.set(holder, list = []);
      list.push(key);
    }
    await Promise.all([...byHolder].map(async ([holder, list]) => {
      try {
        Object.assign(data, await this.getData(holder, list));
      } catch {
        // reported as missing: the worker asks again or reports missing-data
      }
    }));
    const reply: ReplyMessage = { op: "reply", id, data };
    this.send(conn.state, reply);
  }

  /** Tells every worker to close (the scheduler is closing) and sends it now. */
  closeAll(reason: string): void {
    for (const conn of this.conns.values()) this.send(conn.state, { op: "close", reason });
    this.flush();
  }
}
