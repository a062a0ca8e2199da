/**
 * The dashboard's login cookie. It holds an HMAC of the token, not the token: a leaked cookie
 * opens the dashboard's API but cannot be used to join as a worker or be turned back into the
 * token, and changing the token logs every browser out.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import { timingSafeEqual } from "../protocol.ts";

/** The cookie's name. */
export const sessionCookieName = "cluster_session";

/** The cookie's value for a token. */
export function sessionValue(token: string): string {
  return createHmac("sha256", token).update("cluster dashboard session v1").digest("base64url");
}

/** One cookie's value from a `Cookie` header, or undefined. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Whether a request's `Cookie` header carries a valid dashboard session for `token`. The
 * scheduler's auth check accepts it next to the bearer header, for the page's API calls and its
 * WebSocket (browsers cannot set headers on a WebSocket).
 *
 * @example
 * ```ts
 * hasSession(request.headers.get("cookie") ?? undefined, token);
 * ```
 */
export function hasSession(cookieHeader: string | undefined, token: string): boolean {
  const given = readCookie(cookieHeader, sessionCookieName);
  return given !== undefined && timingSafeEqual(given, sessionValue(token));
}
