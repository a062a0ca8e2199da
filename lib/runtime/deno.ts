/**
 * The Deno runtime adapter: `Deno.serve` with Hono's Deno WebSocket helper.
 *
 * @module
 */
import { upgradeWebSocket } from "hono/deno";
import type { Runtime } from "./types.ts";
import { clientFetch, clientWebSocket } from "./client.ts";
import { fileURLToPath } from "node:url";
import { portError } from "./_port.ts";

declare const Deno: {
  serve(
    options: { hostname: string; port: number; cert?: string; key?: string; onListen?: (addr: { hostname: string; port: number }) => void },
    handler: (req: Request, info: unknown) => Response | Promise<Response>,
  ): { addr: { hostname: string; port: number }; shutdown(): Promise<void>; finished: Promise<void> };
  execPath(): string;
  mainModule: string;
};

/** Deno's adapter. */
export const denoRuntime: Runtime = {
  name: "deno",
  serve(app, { hostname, port, tls }) {
    const options = { hostname, port, onListen: () => {}, ...(tls ? { cert: tls.cert, key: tls.key } : {}) };
    let server;
    try {
      server = Deno.serve(options, (req, info) => app.fetch(req, info));
    } catch (err) {
      throw portError(err, port);
    }
    return Promise.resolve({
      hostname: server.addr.hostname,
      port: server.addr.port,
      protocol: tls ? "https" : "http",
      stop: async () => {
        await server.shutdown();
      },
    });
  },
  fetch: clientFetch,
  webSocket: clientWebSocket,
  upgradeWebSocket,
  bufferedAmount(ws) {
    return (ws.raw as WebSocket | undefined)?.bufferedAmount ?? 0;
  },
  send(ws, data) {
    const raw = ws.raw as WebSocket | undefined;
    if (raw) raw.send(data);
    else ws.send(data as string);
  },
  cork(_ws, fn) {
    fn();
  },
  collectGarbage() {
    // Deno exposes no collector without --v8-flags=--expose-gc.
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    return gc !== undefined;
  },
  prepareSocket(ws) {
    const raw = ws.raw as WebSocket | undefined;
    if (raw) raw.binaryType = "arraybuffer";
  },
  selfCommand() {
    return [Deno.execPath(), "run", "-A", fileURLToPath(Deno.mainModule)];
  },
};
