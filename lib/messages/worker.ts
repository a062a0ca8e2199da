/**
 * The scheduler ↔ worker link (`WS /api/v1/worker`): every message either side may send, as a
 * discriminated union on `op`, so both ends are checked by the compiler. docs/protocol.md
 * describes the same table for people.
 *
 * @module
 */
import type { ReplyMessage } from "../rpc.ts";
import type { WirePluginSpec } from "../plugins/load.ts";
import type { WireLogRecord } from "../logs/record.ts";
import type { Startstop } from "../plugins/types.ts";
import type { Sealed } from "../auth/handshake.ts";

/** Where a dependency of a `compute` is: inline (`value`), at peers (`who`), or here (neither). */
export interface DepInfo {
  key: string;
  nbytes: number;
  value?: unknown;
  /** Data addresses of the workers that hold it. */
  who?: string[];
}

/** A plugin whose setup threw, with the message. */
export interface PluginFailure {
  plugin: string;
  error: string;
}

/** Worker → scheduler. */
export type WorkerToScheduler =
  | { op: "register"; name: string; nthreads: number; address: string; nanny: boolean; pid: number; modules: string[]; restarts: number; version: string; records?: boolean }
  /** After the welcome's plugins were set up; `failed` names those whose setup threw. */
  | { op: "ready"; failed?: PluginFailure[] }
  | { op: "done"; key: string; nbytes: number; duration: number; value?: unknown; hasValue?: boolean; stimulusId?: string; startstops?: Startstop[] }
  | { op: "erred"; key: string; exception: string; traceback: string; duration: number; stimulusId?: string; startstops?: Startstop[] }
  | { op: "missing-data"; key: string; dep: string }
  | { op: "heartbeat"; rss: number; cpu?: number; executing: number; ready: number }
  | { op: "logs"; records: WireLogRecord[] }
  | { op: "relay"; id: number; keys: string[] }
  | { op: "plugin-error"; plugin: string; hook: string; error: string }
  | { op: "modules"; modules: string[] }
  | { op: "event"; topic: string; msg: Record<string, unknown> }
  | { op: "closing" }
  | ReplyMessage;

/** Scheduler → worker. Requests carry an `id` and are answered by one `reply`. */
export type SchedulerToWorker =
  /** `peerKey`: the cluster's peer-data key, sealed with this connection's session key (auth on). */
  | { op: "welcome"; plugins: WirePluginSpec[]; version: string; peerKey?: Sealed; records?: boolean }
  | {
    op: "compute";
    key: string;
    fn: string;
    args: unknown[];
    deps: DepInfo[];
    annotations?: Record<string, unknown>;
    /** Lower runs first on the worker (ties: arrival order). */
    priority?: number;
    stimulusId: string;
  }
  | { op: "free"; keys: string[]; stimulusId: string }
  | { op: "get-data"; id: number; keys: string[] }
  /** Fetch these results from their holders and keep them (data moved off a retiring worker); reply `{keys}` got. */
  | { op: "acquire-data"; id: number; deps: DepInfo[] }
  | { op: "plugin-add"; id: number; spec: WirePluginSpec }
  | { op: "plugin-remove"; id: number; name: string }
  | { op: "close"; reason: string }
  | ReplyMessage;

/** The ops of each direction, for checking docs/protocol.md against the types. */
export type WorkerToSchedulerOp = WorkerToScheduler["op"];
export type SchedulerToWorkerOp = SchedulerToWorker["op"];
