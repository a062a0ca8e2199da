/**
 * The Bun runtime adapter: `Bun.serve` with Hono's Bun WebSocket upgrade, and WebSocket handlers
 * of its own (see `websocket` below).
 *
 * @module
 */
import { upgradeWebSocket } from "hono/bun";
import { WSContext, type WSEvents } from "hono/ws";
import type { Runtime } from "./types.ts";
import { clientFetch, clientWebSocket } from "./client.ts";
import { maxFrameBytes } from "../protocol.ts";
import { portError } from "./_port.ts";

declare const Bun: {
  serve(options: Record<string, unknown>): {
    port: number;
    hostname: string;
    stop(closeActive?: boolean): Promise<void> | void;
  };
  main: string;
  argv: string[];
  gc(force: boolean): void;
};

/** A Bun server socket as Hono's upgrade leaves it: its `data` holds the route's handlers. */
interface BunSocket {
  data: { events: WSEvents; url: URL; protocol: string; context?: WSContext };
  readyState: number;
  send(data: string | ArrayBufferLike | Uint8Array, compress?: boolean): number;
  close(code?: number, reason?: string): void;
}

/** The socket's one context, made when first needed (its `readyState` read live). */
function contextOf(ws: BunSocket): WSContext {
  return ws.data.context ??= new WSContext({
    send: (source, options) => {
      ws.send(source as string | Uint8Array, options?.compress);
    },
    raw: ws,
    get readyState() {
      return ws.readyState as 0 | 1 | 2 | 3;
    },
    url: ws.data.url,
    protocol: ws.data.protocol,
    close: (code, reason) => ws.close(code, reason),
  });
}

/** What a handler threw (or rejected with) goes to the route's `onError`, as in Hono. */
function failed(ws: BunSocket, error: unknown): void {
  const onError = ws.data.events.onError;
  if (!onError) throw error;
  onError(Object.assign(new Event("error"), { error }), contextOf(ws));
}

/** Calls a route's handler with the event and the socket's context. */
function deliver<E>(ws: BunSocket, handler: (event: E, ws: WSContext) => unknown, event: E): void {
  try {
    const result = handler(event, contextOf(ws));
    if (result instanceof Promise) result.catch((error) => failed(ws, error));
  } catch (error) {
    failed(ws, error);
  }
}

/**
 * Bun's WebSocket handlers for routes upgraded by Hono's `upgradeWebSocket`. Hono's own make a
 * context (and parse the socket's URL) and a DOM `MessageEvent` for every frame — 4–5 % of the
 * scheduler's CPU in a map of small tasks; here a socket has one context, and a frame's event is
 * just its `data` (all the links read of it): a string, or the frame's bytes as the `Uint8Array`
 * Bun gives.
 */
const websocket = {
  open(ws: BunSocket) {
    const { onOpen } = ws.data.events;
    if (onOpen) deliver(ws, onOpen, new Event("open"));
  },
  close(ws: BunSocket, code: number, reason: string) {
    const { onClose } = ws.data.events;
    if (onClose) deliver(ws, onClose, new CloseEvent("close", { code, reason }));
  },
  message(ws: BunSocket, message: string | Uint8Array) {
    const { onMessage } = ws.data.events;
    // A binary frame stays the Uint8Array Bun gives (the links decode it as it is).
    if (onMessage) deliver(ws, onMessage, { data: message } as MessageEvent);
  },
};

/** Bun's adapter. */
export const bunRuntime: Runtime = {
  name: "bun",
  serve(app, { hostname, port, tls }) {
    let server;
    try {
      server = Bun.serve({
        hostname,
        port,
        // Bun's default on Linux is SO_REUSEPORT: a second server on the port would start and
        // split the connections. One listener per port.
        reusePort: false,
        ...(tls ? { tls: { cert: tls.cert, key: tls.key } } : {}),
        // Bun closes a request idle for 10 s: a long-poll (`?timeout=S`) gets S seconds and more.
        fetch: (req: Request, srv: { timeout(req: Request, seconds: number): void }) => {
          if (req.url.includes("timeout=")) {
            const seconds = Number(new URL(req.url).searchParams.get("timeout"));
            if (seconds > 0) srv.timeout(req, seconds + 10 > 255 ? 0 : Math.ceil(seconds) + 10);
          }
          return app.fetch(req, srv);
        },
        websocket: {
          ...websocket,
          maxPayloadLength: maxFrameBytes,
          idleTimeout: 0,
          backpressureLimit: 64 * 1024 * 1024,
        },
        development: false,
      });
    } catch (err) {
      throw portError(err, port);
    }
    return Promise.resolve({
      hostname: server.hostname,
      port: server.port,
      protocol: tls ? "https" : "http",
      stop: async () => {
        await server.stop(true);
      },
    });
  },
  fetch: clientFetch,
  webSocket: clientWebSocket,
  upgradeWebSocket,
  bufferedAmount(ws) {
    const raw = ws.raw as { getBufferedAmount?: () => number } | undefined;
    return raw?.getBufferedAmount?.() ?? 0;
  },
  send(ws, data) {
    const raw = ws.raw as {
      send(d: string | Uint8Array): number;
      sendText?(d: string): number;
      sendBinary?(d: Uint8Array): number;
    } | undefined;
    if (!raw) ws.send(data as string);
    else if (typeof data === "string") raw.sendText ? raw.sendText(data) : raw.send(data);
    else raw.sendBinary ? raw.sendBinary(data) : raw.send(data);
  },
  cork(ws, fn) {
    const raw = ws.raw as { cork?: (cb: () => void) => void } | undefined;
    if (raw?.cork) raw.cork(fn);
    else fn();
  },
  prepareSocket() {},
  collectGarbage() {
    Bun.gc(true);
    return true;
  },
  selfCommand() {
    // In a compiled binary Bun.main is a virtual path under /$bunfs; the binary is the command.
    const main = Bun.main;
    if (main.startsWith("/$bunfs") || main.startsWith("B:/~BUN")) return [process.execPath];
    return [process.execPath, main];
  },
};
