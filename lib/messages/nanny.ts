/**
 * The scheduler ↔ nanny link (`WS /api/v1/nanny`), as a discriminated union on `op`.
 *
 * @module
 */
import type { ReplyMessage } from "../rpc.ts";
import type { WirePluginSpec } from "../plugins/load.ts";
import type { PluginFailure } from "./worker.ts";
import type { WireLogRecord } from "../logs/record.ts";

/** Nanny → scheduler. */
export type NannyToScheduler =
  | { op: "register"; name: string; address: string; pid: number }
  /** After the welcome's plugins were set up; `failed` names those whose setup threw. */
  | { op: "ready"; failed?: PluginFailure[] }
  | { op: "worker"; worker: string | null; restarts: number; pid?: number }
  | { op: "plugin-error"; plugin: string; hook: string; error: string }
  | { op: "event"; topic: string; msg: Record<string, unknown> }
  | { op: "logs"; records: WireLogRecord[] }
  | { op: "heartbeat" }
  | ReplyMessage;

/** Scheduler → nanny. Requests carry an `id` and are answered by one `reply`. */
export type SchedulerToNanny =
  | { op: "welcome"; plugins: WirePluginSpec[]; version: string }
  | { op: "plugin-add"; id: number; spec: WirePluginSpec }
  | { op: "plugin-remove"; id: number; name: string }
  | { op: "restart-worker"; id: number; reason: string }
  /** Close the worker and the nanny for good (retirement): no restart. Answered before closing. */
  | { op: "close"; id: number; reason: string };

export type NannyToSchedulerOp = NannyToScheduler["op"];
export type SchedulerToNannyOp = SchedulerToNanny["op"];
