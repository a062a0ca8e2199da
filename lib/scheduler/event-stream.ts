/**
 * The event stream socket (`WS /api/v1/events?topic=…&since=SEQ&format=cbor&batch=1`): replay
 * from the log, then live events batched per tick; a subscriber that stops reading is closed
 * past its buffer, so it never slows the scheduler. The socket is authenticated first
 * (link-auth.ts, a submit token): the handshake's frames are CBOR whatever the stream's format.
 *
 * @module
 */
import type { Context } from "hono";
import type { WSContext } from "hono/ws";
import { runtime } from "../runtime/mod.ts";
import type { EventBatch, EventLog } from "./events.ts";

/** Bytes queued on a subscriber's socket past which it is closed. */
const maxBuffered = 16 * 1024 * 1024;

/** The WebSocket handlers of one event-stream subscriber. */
export function eventStreamSocket(c: Context, events: EventLog) {
  const topics = c.req.queries("topic");
  const topicSet = topics && topics.length > 0 ? new Set(topics.flatMap((t) => t.split(","))) : null;
  const sinceRaw = c.req.query("since");
  const since = sinceRaw === undefined ? undefined : Number(sinceRaw);
  const cbor = c.req.query("format") === "cbor";
  const batch = c.req.query("batch") === "1" || c.req.query("batch") === "true";
  let unsubscribe: (() => void) | null = null;
  return {
    onOpen: (_e: Event, ws: WSContext) => {
      if (since !== undefined && !Number.isFinite(since)) {
        ws.close(1008, `Invalid since "${sinceRaw}"`);
        return;
      }
      unsubscribe = events.subscribe({
        topics: topicSet,
        deliver: (batchOfEvents: EventBatch) => {
          if (runtime.bufferedAmount(ws) > maxBuffered) {
            unsubscribe?.();
            unsubscribe = null;
            ws.close(1013, "Subscriber too slow: event buffer full");
            return;
          }
          runtime.cork(ws, () => {
            // The batch's encodings are made once and shared by every subscriber of these topics.
            if (batch) runtime.send(ws, cbor ? batchOfEvents.cbor() : batchOfEvents.jsonArray());
            else if (cbor) for (let i = 0; i < batchOfEvents.length; i++) runtime.send(ws, batchOfEvents.cborAt(i));
            else for (let i = 0; i < batchOfEvents.length; i++) runtime.send(ws, batchOfEvents.jsonAt(i));
          });
        },
      }, since);
    },
    onClose: () => {
      unsubscribe?.();
    },
  };
}
