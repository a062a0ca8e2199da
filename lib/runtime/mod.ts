/**
 * Picks the runtime adapter once, at start-up.
 *
 * @module
 */
import type { Runtime } from "./types.ts";

export type { RunningServer, Runtime, ServerTls } from "./types.ts";
export {
  type ClientTlsOptions,
  clientFetch,
  clientWebSocket,
  describeConnectError,
  isCertificateError,
  trustCa,
  trustedCa,
} from "./client.ts";

/** Whether this process runs under Deno. */
export const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

/** The adapter for the runtime this process runs on. */
export const runtime: Runtime = isDeno
  ? (await import("./deno.ts")).denoRuntime
  : (await import("./bun.ts")).bunRuntime;
