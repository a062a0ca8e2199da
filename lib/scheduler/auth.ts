/**
 * Who may talk to the scheduler: the one authentication middleware for every HTTP route and
 * WebSocket. With `CLUSTER_TOKEN` set, a request needs `Authorization: Bearer TOKEN`, or
 * `?token=TOKEN` (browsers cannot set headers on a WebSocket); the token is compared in constant
 * time. Routes registered before this middleware (`GET /health`) stay open.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { timingSafeEqual } from "../protocol.ts";

/** The WebSocket upgrades that authenticate themselves (link-auth.ts). */
const inBandPaths = new Set(["/api/v1/worker", "/api/v1/nanny", "/api/v1/client", "/api/v1/events"]);

/** The token a request presents: the bearer header first, else the `token` query parameter. */
export function presentedToken(c: Context): string | undefined {
  const header = c.req.header("authorization");
  return header?.startsWith("Bearer ") ? header.slice(7) : c.req.query("token");
}

/**
 * The authentication middleware; with no token configured every request passes.
 *
 * @example
 * ```ts
 * app.get("/health", health);
 * app.use("*", authMiddleware({ token: clusterToken() }));
 * ```
 */
export function authMiddleware(options: { token: string | undefined }): MiddlewareHandler {
  const token = options.token;
  return async (c, next) => {
    // The WebSocket links authenticate in-band by challenge–response (lib/scheduler/link-auth.ts).
    if (c.req.header("upgrade")?.toLowerCase() === "websocket" && inBandPaths.has(c.req.path)) return await next();
    if (token) {
      const given = presentedToken(c);
      if (given === undefined || !timingSafeEqual(given, token)) {
        return c.json({ error: "Unauthorized: a valid bearer token is required" }, 401);
      }
    }
    await next();
  };
}
