/**
 * The scheduler's side of the handshake (lib/auth/handshake.ts) around a link's WebSocket
 * handlers: the challenge goes out on open, the first answer is checked, and only then are the
 * link's own handlers made (with the scope the token has) and opened. A wrong proof, a first
 * message that is not `auth`, or silence past the time limit closes the socket with 4401.
 *
 * @module
 */
import type { WSContext } from "hono/ws";
import { authCloseCode, handshakeTimeoutMs, type LinkRole, ServerChallenge } from "../auth/handshake.ts";
import type { Scope, TokenSet } from "../auth/tokens.ts";
import { errorMessage } from "../errors.ts";
import type { ComponentLogger } from "../log.ts";
import { decodeFrame, encodeFrame } from "../protocol.ts";
import { runtime } from "../runtime/mod.ts";

/** The largest frame an unauthenticated peer may send: an `auth` is about 200 bytes. */
const maxHandshakeBytes = 4096;

/** A link's WebSocket handlers, as Hono's upgrade helper takes them. */
export interface LinkHandlers {
  onOpen?: (event: Event, ws: WSContext) => void;
  onMessage?: (event: MessageEvent, ws: WSContext) => void;
  onClose?: (event: CloseEvent, ws: WSContext) => void;
}

/** What an authenticated link knows of its peer. */
export interface LinkAuth {
  scope: Scope;
  /** The session key (null with auth off): seals the peer-data key in a worker's welcome. */
  sessionKey: Uint8Array | null;
}

/**
 * Wraps a link: `make` runs once the peer is authenticated.
 *
 * @example
 * ```ts
 * app.get("/api/v1/worker", upgrade(() => authenticatedLink({ tokens, role: "worker", log }, (auth) => workers.socket(auth))));
 * ```
 */
export function authenticatedLink(
  options: { tokens: TokenSet | null; role: LinkRole; log: ComponentLogger },
  make: (auth: LinkAuth) => LinkHandlers,
): LinkHandlers {
  const challenge = new ServerChallenge(options.tokens, options.role);
  let inner: LinkHandlers | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const refuse = (ws: WSContext, reason: string) => {
    clearTimeout(timer);
    options.log.warn(`Refused a ${options.role} connection: ${reason}`);
    try {
      ws.close(authCloseCode, reason.slice(0, 120));
    } catch {
      // already closed
    }
  };
  return {
    onOpen: (event, ws) => {
      runtime.prepareSocket(ws);
      ws.send(encodeFrame([challenge.message]));
      if (!challenge.required) {
        inner = make({ scope: "admin", sessionKey: null });
        inner.onOpen?.(event, ws);
        return;
      }
      timer = setTimeout(() => refuse(ws, `No answer to the challenge within ${handshakeTimeoutMs / 1000} s`), handshakeTimeoutMs);
    },
    onMessage: (event, ws) => {
      if (inner) return inner.onMessage?.(event, ws);
      // Before the proof, nobody gets the scheduler to decode megabytes.
      const size = event.data instanceof ArrayBuffer || ArrayBuffer.isView(event.data) ? event.data.byteLength : String(event.data).length;
      if (size > maxHandshakeBytes) return refuse(ws, `Handshake frame of ${size} bytes is too large`);
      let messages;
      try {
        messages = decodeFrame(event.data);
      } catch (err) {
        return refuse(ws, `Malformed handshake: ${errorMessage(err)}`);
      }
      if (messages.length === 0) return;
      const verdict = challenge.verify(messages[0]);
      if (!verdict.ok) return refuse(ws, verdict.reason);
      clearTimeout(timer);
      // auth-ok leaves in its own frame, before anything the link sends.
      if (verdict.reply) ws.send(encodeFrame([verdict.reply]));
      inner = make({ scope: verdict.scope, sessionKey: verdict.sessionKey });
      inner.onOpen?.(event, ws);
      if (messages.length > 1) inner.onMessage?.(new MessageEvent("message", { data: encodeFrame(messages.slice(1)).buffer }), ws);
    },
    onClose: (event, ws) => {
      clearTimeout(timer);
      inner?.onClose?.(event, ws);
    },
  };
}
