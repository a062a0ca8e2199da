/**
 * The client ↔ scheduler link (`WS /api/v1/client`), as a discriminated union on `op`. Every
 * request carries an `id` and is answered by one `reply` (with `error` and `status` on failure).
 *
 * @module
 */
import type { ReplyMessage } from "../rpc.ts";

/** Client → scheduler. */
export type ClientToScheduler =
  | { op: "graph"; id: number; graph: unknown; echo?: boolean }
  | { op: "gather"; id: number; keys: string[]; list?: boolean }
  | { op: "release"; id?: number; keys: string[] }
  | { op: "event"; id?: number; topic: string; msg: Record<string, unknown> }
  | { op: "register-plugin"; id: number; spec: unknown }
  | { op: "unregister-plugin"; id: number; role: string; name: string }
  | { op: "info"; id: number };

/** Scheduler → client. */
export type SchedulerToClient =
  | { op: "welcome"; client: string; version: string }
  | ReplyMessage;

export type ClientToSchedulerOp = ClientToScheduler["op"];
