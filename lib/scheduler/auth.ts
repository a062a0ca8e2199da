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
import { hasSession } from "../dashboard/mod.ts";

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
    // The dashboard's login cookie (an HMAC of the token) counts as the token.
    if (token && !hasSession(c.req.header("cookie"), token)) {
      const given = presentedToken(c);
      if (given === undefined || !timingSafeEqual(given, token)) {
        return c.json({ error: "Unauthorized: a valid bearer token is required" }, 401);
      }
    }
    await next();
  };
}
