/**
 * The Bun runtime adapter: `Bun.serve` with Hono's Bun WebSocket helper.
 *
 * @module
 */
import { upgradeWebSocket, websocket } from "hono/bun";
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
