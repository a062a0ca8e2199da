/**
 * The Bun runtime adapter: `Bun.serve` with Hono's Bun WebSocket helper.
 *
 * @module
 */
import { upgradeWebSocket, websocket } from "hono/bun";
import type { Runtime } from "./types.ts";
import { clientFetch, clientWebSocket } from "./client.ts";
import { maxFrameBytes } from "../protocol.ts";

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
    const server = Bun.serve({
      hostname,
      port,
      ...(tls ? { tls: { cert: tls.cert, key: tls.key } } : {}),
      fetch: app.fetch,
      websocket: { ...websocket, maxPayloadLength: maxFrameBytes, idleTimeout: 0, backpressureLimit: 64 * 1024 * 1024 },
      development: false,
    });
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
    const raw = ws.raw as { send(d: string | Uint8Array): number; sendText?(d: string): number; sendBinary?(d: Uint8Array): number } | undefined;
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
