/**
 * The scheduler's side of the nanny link (`WS /api/v1/nanny`, messages in
 * lib/messages/nanny.ts): registration and welcome with the nanny plugins, the worker each
 * nanny runs, and the requests the scheduler makes of nannies (plugin-add, plugin-remove,
 * restart-worker) through `Requests`, each with a time limit. The socket is authenticated first
 * (link-auth.ts); a nanny whose name is taken is refused (the first one keeps its plugins), and a
 * nanny silent past the heartbeat timeout is removed, as workers are.
 *
 * @module
 */
import type { WSContext } from "hono/ws";
import { errorMessage } from "../errors.ts";
import type { ComponentLogger } from "../log.ts";
import type { NannyToScheduler, SchedulerToNanny } from "../messages/nanny.ts";
import type { PluginManager } from "../plugins/manager.ts";
import type { WirePluginSpec } from "../plugins/load.ts";
import type { SchedulerPlugin } from "../plugins/types.ts";
import { decodeFrame, encodeFrame, version } from "../protocol.ts";
import { checkMessage } from "../messages/validate.ts";
import { Requests } from "../rpc.ts";
import type { EventLog } from "./events.ts";
import type { PluginRollout } from "./rollout.ts";
import type { LogStore } from "./logs.ts";

/** How long the scheduler waits for a nanny's answer. */
export const nannyTimeouts = {
  /** A setup may install packages: minutes, not seconds. */
  pluginAdd: 600_000,
  pluginRemove: 60_000,
};

/** What the nanny link needs of the scheduler. */
export interface NannyLinkContext {
  readonly events: EventLog;
  readonly plugins: PluginManager<SchedulerPlugin>;
  readonly log: ComponentLogger;
  /** The nanny plugin specs a nanny gets in its welcome, and their statuses. */
  remotePlugins(): PluginRollout;
  /** Where forwarded log records are kept. */
  readonly logs: LogStore;
}

/** One connected nanny. */
export interface NannyConn {
  readonly ws: WSContext;
  readonly name: string;
  readonly address: string;
  readonly pid: number;
  /** The name of the worker it runs, once it said. */
  workerName: string | null;
  restarts: number;
  readonly requests: Requests;
  /** The nanny plugins its welcome carried. */
  welcomed: string[];
  /** Settles once the nanny said `ready` (its welcome's plugins set up) or left. */
  pluginsReady: Promise<void>;
  settlePluginsReady: () => void;
  /** When the nanny was last heard from (ms). */
  lastSeen: number;
}

/** The connected nannies and their protocol. */
export class NannyLinks {
  /** Connected nannies by name. */
  readonly conns = new Map<string, NannyConn>();
  #ctx: NannyLinkContext;

  constructor(context: NannyLinkContext) {
    this.#ctx = context;
  }

  #request(nanny: NannyConn, make: (id: number) => SchedulerToNanny, timeoutMs: number) {
    return nanny.requests.send((id) => nanny.ws.send(encodeFrame([make(id)])), { timeoutMs });
  }

  /** Sets a plugin up on a nanny; rejects with the nanny's error, resolves with its warning if any. */
  async addPlugin(nanny: NannyConn, spec: WirePluginSpec): Promise<string | undefined> {
    const reply = await this.#request(nanny, (id) => ({ op: "plugin-add", id, spec }), nannyTimeouts.pluginAdd);
    return typeof reply.warning === "string" ? reply.warning : undefined;
  }

  /** Tears a plugin down on a nanny. */
  async removePlugin(nanny: NannyConn, name: string): Promise<void> {
    await this.#request(nanny, (id) => ({ op: "plugin-remove", id, name }), nannyTimeouts.pluginRemove);
  }

  /** Asks a nanny to restart its worker; resolves once the new worker registered. */
  async restartWorker(nanny: NannyConn, reason: string, timeoutMs: number): Promise<void> {
    await this.#request(nanny, (id) => ({ op: "restart-worker", id, reason }), timeoutMs);
  }

  /** The nanny running a worker, by the worker's name. */
  byWorker(): Map<string, NannyConn> {
    const out = new Map<string, NannyConn>();
    for (const n of this.conns.values()) if (n.workerName) out.set(n.workerName, n);
    return out;
  }

  /** The WebSocket handlers of one nanny connection, once authenticated. */
  socket() {
    let nanny: NannyConn | null = null;
    return {
      onMessage: (event: MessageEvent, ws: WSContext) => {
        if (nanny) nanny.lastSeen = Date.now();
        try {
          for (const msg of decodeFrame(event.data) as unknown as NannyToScheduler[]) {
            const invalid = checkMessage("nanny", msg);
            if (invalid !== null) {
              this.#ctx.log.warn(`Dropped a message from nanny "${nanny?.name ?? "?"}": ${invalid}`);
              continue;
            }
            if (nanny) this.#handle(nanny, msg);
            else if (!(nanny = this.#register(ws, msg))) return;
          }
        } catch (err) {
          ws.close(1007, errorMessage(err).slice(0, 120));
        }
      },
      onClose: () => {
        if (nanny) this.#remove(nanny, "nanny left");
      },
    };
  }

  #remove(nanny: NannyConn, reason: string): void {
    if (this.conns.get(nanny.name) !== nanny) return;
    this.conns.delete(nanny.name);
    nanny.requests.rejectAll(reason, { final: true });
    nanny.settlePluginsReady();
  }

  /**
   * Closes and removes the nannies not heard from for `timeoutMs` at time `now`, counting from
   * `listeningSince` at the earliest (the scheduler itself was stalled before).
   */
  checkHeartbeats(timeoutMs: number, now: number, listeningSince = 0): void {
    for (const nanny of this.conns.values()) {
      const silent = now - Math.max(nanny.lastSeen, listeningSince);
      if (silent <= timeoutMs) continue;
      this.#ctx.log.warn(`Nanny "${nanny.name}" missed heartbeats for ${Math.round(silent / 1000)} s`);
      try {
        nanny.ws.close(4008, "Heartbeat timeout");
      } catch {
        // already closed
      }
      this.#remove(nanny, "heartbeat timeout");
    }
  }

  #register(ws: WSContext, msg: NannyToScheduler): NannyConn | null {
    if (msg.op !== "register" || typeof msg.name !== "string") {
      ws.close(4002, "Expected a register message first");
      return null;
    }
    if (this.conns.has(msg.name)) {
      // Not replaced: the connected one keeps its plugins' settings (secrets in `environ`).
      this.#ctx.log.warn(`Refused a second nanny named "${msg.name}"`);
      ws.close(4009, `A nanny named "${msg.name}" is already connected`);
      return null;
    }
    let settlePluginsReady = () => {};
    const pluginsReady = new Promise<void>((r) => (settlePluginsReady = r));
    const remote = this.#ctx.remotePlugins();
    const plugins = [...remote.nanny];
    const conn: NannyConn = {
      ws,
      name: msg.name,
      address: String(msg.address ?? ""),
      pid: Number(msg.pid ?? 0),
      workerName: null,
      restarts: 0,
      requests: new Requests({ peer: `nanny "${msg.name}"` }),
      welcomed: plugins.map((s) => s.name!),
      pluginsReady,
      settlePluginsReady,
      lastSeen: Date.now(),
    };
    this.conns.set(conn.name, conn);
    // A registration in progress waits for this nanny's `ready` (see remote-plugins.ts).
    remote.welcomed("nanny", conn.name, conn.welcomed);
    const welcome: SchedulerToNanny = { op: "welcome", plugins, version };
    ws.send(encodeFrame([welcome]));
    return conn;
  }

  #handle(nanny: NannyConn, msg: NannyToScheduler): void {
    const ctx = this.#ctx;
    switch (msg.op) {
      case "reply":
        nanny.requests.settle(msg);
        break;
      case "ready": {
        const failed = Array.isArray(msg.failed) ? msg.failed.filter((f) => typeof f?.plugin === "string") : [];
        const remote = ctx.remotePlugins();
        remote.ready("nanny", nanny.name, nanny.welcomed, failed);
        for (const f of failed) ctx.plugins.reportError(`${nanny.name}/${f.plugin}`, "setup", f.error);
        nanny.settlePluginsReady();
        remote.refreshQuarantine();
        break;
      }
      case "heartbeat":
        break;
      case "worker":
        nanny.workerName = msg.worker ?? null;
        nanny.restarts = Number(msg.restarts ?? nanny.restarts);
        ctx.remotePlugins().refreshQuarantine();
        break;
      case "event":
        try {
          ctx.events.post(String(msg.topic), msg.msg, { nanny: nanny.name });
        } catch (err) {
          ctx.log.warn(`Dropped an event from nanny "${nanny.name}": ${errorMessage(err)}`);
        }
        break;
      case "logs":
        if (Array.isArray(msg.records)) ctx.logs.add("nanny", nanny.name, msg.records);
        break;
      case "plugin-error":
        ctx.plugins.reportError(`${nanny.name}/${msg.plugin}`, String(msg.hook), msg.error);
        ctx.events.append("plugin", { action: "error", role: "nanny", nanny: nanny.name, plugin: msg.plugin, hook: msg.hook, error: msg.error });
        break;
      default:
        ctx.log.warn(`Unknown message "${msg.op}" from nanny "${nanny.name}"`);
    }
  }
}
