/**
 * The handshake that opens every WebSocket link (worker, nanny, client, event stream), before
 * the link's own messages: a mutual challenge–response over nonces from each side (see
 * lib/auth/handshake.ts and docs/protocol.md).
 *
 * @module
 */
import type { Scope } from "../auth/tokens.ts";

/** Scheduler → peer first, then peer → scheduler, then scheduler → peer. */
export type HandshakeMessage =
  | { op: "challenge"; nonce: string; auth?: false }
  | { op: "auth"; nonce: string; proof: string }
  | { op: "auth-ok"; proof: string; scope: Scope };

export type HandshakeOp = HandshakeMessage["op"];
