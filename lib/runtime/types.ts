/**
 * The one interface behind which Bun and Deno differ: serving HTTP with WebSockets, and
 * re-running this program as a child process. Everything else uses web standards and `node:`
 * built-ins that both runtimes have.
 *
 * @module
 */
import type { Hono } from "hono";
import type { UpgradeWebSocket, WSContext } from "hono/ws";
import type { ClientTlsOptions } from "./client.ts";

/** The certificate and key a server presents, both PEM. */
export interface ServerTls {
  /** The certificate chain (the server's certificate first). */
  cert: string;
  /** The private key. */
  key: string;
}

/** A running HTTP server. */
export interface RunningServer {
  readonly hostname: string;
  readonly port: number;
  /** `https` when serving with TLS (then WebSockets are `wss`), else `http`. */
  readonly protocol: "http" | "https";
  /** Stops accepting connections and closes open ones. */
  stop(): Promise<void>;
}

/** What differs between runtimes. */
export interface Runtime {
  readonly name: "bun" | "deno";
  /**
   * Serves a Hono app, WebSockets included. `port: 0` takes a free port. With `tls` it serves
   * only https/wss: a plain-http request on that port fails its TLS handshake.
   */
  serve(app: Hono, options: { hostname: string; port: number; tls?: ServerTls }): Promise<RunningServer>;
  /** `fetch` for the cluster's own requests, trusting `--tls-ca` (see `client.ts`). */
  fetch(url: string | URL, init?: RequestInit, options?: ClientTlsOptions): Promise<Response>;
  /** `new WebSocket(url)` for the cluster's own sockets, trusting `--tls-ca` (see `client.ts`). */
  webSocket(url: string | URL, options?: ClientTlsOptions): WebSocket;
  /** Hono's WebSocket upgrade helper for this runtime. */
  readonly upgradeWebSocket: UpgradeWebSocket;
  /** Bytes queued on a server-side WebSocket and not yet sent. */
  bufferedAmount(ws: WSContext): number;
  /** Sends one frame on a server-side WebSocket, skipping Hono's per-call wrapper. */
  send(ws: WSContext, data: string | Uint8Array): void;
  /** Runs `fn`, sending what it sends on `ws` in as few writes as possible (Bun's cork). */
  cork(ws: WSContext, fn: () => void): void;
  /** Prepares a freshly opened server-side WebSocket (binary frames as ArrayBuffer). */
  prepareSocket(ws: WSContext): void;
  /** Asks for a full garbage collection (where the runtime allows it); false when it cannot. */
  collectGarbage(): boolean;
  /** The command (executable and leading arguments) that runs this CLI again. */
  selfCommand(): string[];
}
