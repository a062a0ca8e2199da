/**
 * Who may talk to the scheduler: the one middleware for every HTTP route and WebSocket. In
 * order: the `Host` must be a name of the scheduler and an `Origin` its own (DNS rebinding and
 * cross-site pages), a write's body JSON or CBOR (415), then the credentials — a bearer header or
 * the dashboard's session cookie (an HMAC of the admin token), never a token in the URL — against the scope the route
 * needs (one table, `routeScopes`; the client socket's ops use `scopeForOp`). The four WebSocket
 * links authenticate in-band after the upgrade, so they pass here without credentials; one that
 * does carry a header or cookie has it checked as on any route. Routes registered before this
 * middleware (`GET /health`) stay open.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { hasSession } from "../dashboard/_session.ts";
import { allowedHosts, bodyTypeProblem, hostProblem, type Listener, originProblem } from "../auth/cross-site.ts";
import { allows, type Scope, scopeOf, type TokenSet } from "../auth/tokens.ts";

/** What a route needs: a scope, or nothing (`open`), or nothing before an in-band handshake (`in-band`). */
export type Need = Scope | "open" | "in-band";

/**
 * The scope each route needs, first match wins; a path ending in `*` matches its prefix. Anything
 * not listed needs admin, so a new route is closed until it is put here.
 */
export const routeScopes: ReadonlyArray<readonly [method: string, path: string, need: Need]> = [
  ["GET", "/", "open"], // the dashboard's page and its login form; its data comes from the API
  ["POST", "/login", "open"], // the dashboard's login form: sets the session cookie for a valid token
  ["GET", "/logout", "open"],
  ["GET", "/dashboard/app.js", "open"],
  ["GET", "/dashboard/app.css", "open"],
  ["GET", "/dashboard/feed", "submit"], // the page's live summary (WebSocket, with the session cookie)
  ["GET", "/api/v1/worker", "in-band"], // join, proved by challenge–response on the socket
  ["GET", "/api/v1/nanny", "in-band"], // join
  ["GET", "/api/v1/client", "in-band"], // submit; its ops then as scopeForOp
  ["GET", "/api/v1/events", "in-band"], // submit
  ["GET", "/metrics", "submit"],
  ["GET", "/api/v1/info", "submit"],
  ["POST", "/api/v1/graph", "submit"],
  ["GET", "/api/v1/tasks/*", "submit"],
  ["DELETE", "/api/v1/tasks/*", "submit"],
  ["GET", "/api/v1/results/*", "submit"],
  ["GET", "/api/v1/logs", "submit"],
  ["GET", "/api/v1/plugins", "submit"],
  ["POST", "/api/v1/events/*", "submit"],
  ["POST", "/api/v1/plugins", "admin"], // runs code on the scheduler and every worker
  ["DELETE", "/api/v1/plugins/*", "admin"],
  ["POST", "/api/v1/restart", "admin"],
  ["POST", "/api/v1/workers/retire", "admin"], // closes workers
];

/** The scope a WebSocket link needs once its handshake tells who is there. */
const inBandScopes: Record<string, Scope> = {
  "/api/v1/worker": "join",
  "/api/v1/nanny": "join",
  "/api/v1/client": "submit",
  "/api/v1/events": "submit",
};

/** The scope each op on the client socket needs (the same rules as the HTTP routes). */
const opScopes: Record<string, Scope> = {
  graph: "submit",
  gather: "submit",
  release: "submit",
  event: "submit",
  info: "submit",
  "register-plugin": "admin",
  "unregister-plugin": "admin",
};

/**
 * What a request needs, by method and path.
 *
 * @example
 * ```ts
 * needFor("POST", "/api/v1/plugins"); // "admin"
 * ```
 */
export function needFor(method: string, path: string): Need {
  const m = method === "HEAD" ? "GET" : method;
  for (const [rm, rp, need] of routeScopes) {
    if (rm !== m) continue;
    if (rp.endsWith("*") ? path.startsWith(rp.slice(0, -1)) : path === rp) return need;
  }
  return "admin";
}

/**
 * The scope a WebSocket link needs after its in-band handshake (`/api/v1/worker` → `join`),
 * or null for a path that is no link.
 */
export function scopeForLink(path: string): Scope | null {
  return inBandScopes[path] ?? null;
}

/**
 * The scope an op on the client socket needs; an unknown op needs admin.
 *
 * @example
 * ```ts
 * scopeForOp("register-plugin"); // "admin"
 * ```
 */
export function scopeForOp(op: string): Scope {
  return opScopes[op] ?? "admin";
}

/** The message of a 403 for a token whose scope is too narrow. */
export function scopeMessage(need: Scope, have: Scope): string {
  return `This needs the "${need}" scope; the token given has "${have}"`;
}

/** The token a request presents in its bearer header; never the URL. */
export function presentedToken(c: Context): string | undefined {
  const header = c.req.header("authorization");
  if (header !== undefined) return header.startsWith("Bearer ") ? header.slice(7).trim() : "";
  return undefined;
}

/** What the middleware sets on the context, for routes, operations and the links. */
export interface AuthVariables {
  /** The caller's scope; null on a WebSocket link before its in-band handshake. */
  scope: Scope | null;
  /** The scope of a token (null: none), for the dashboard's login; always admin with auth off. */
  scopeOfToken: (token: string) => Scope | null;
}

/** Options of `authMiddleware`. */
export interface AuthOptions {
  /** The tokens accepted; null turns auth off (`--no-auth`): everyone is admin. */
  tokens: TokenSet | null;
  /** More names the scheduler answers to (`--allow-host`). */
  allowHosts?: readonly string[];
  /** The listener, once bound (its port and announced address are known only then). */
  listener(): Listener | null;
}

/**
 * The middleware. It sets `scope` on the context (the caller's scope, or null before an in-band
 * handshake) and `scopeOfToken` (for the dashboard's login), so operations and the client socket
 * can check ops against the same rules.
 *
 * @example
 * ```ts
 * app.get("/health", health);
 * app.use("*", authMiddleware({ tokens: { admin: token }, listener: () => server }));
 * ```
 */
export function authMiddleware(options: AuthOptions): MiddlewareHandler<{ Variables: AuthVariables }> {
  const tokens = options.tokens;
  let allowed: Set<string> | null = null;
  const scopeOfToken = (token: string): Scope | null => tokens === null ? "admin" : scopeOf(tokens, token);
  return async (c, next) => {
    const listener = options.listener();
    if (listener === null) return c.json({ error: "The scheduler is still starting" }, 503);
    allowed ??= allowedHosts(listener, options.allowHosts);
    const req = c.req;
    const refused = hostProblem(req.header("host"), allowed) ?? originProblem(req.header("origin"), listener, allowed);
    if (refused !== null) return c.json({ error: refused }, 403);
    // The dashboard's login form posts form data (an HTML form can send nothing else); the
    // Origin check above keeps other sites from posting it.
    if (req.method !== "GET" && req.method !== "HEAD" && req.method !== "OPTIONS" && req.path !== "/login") {
      const length = req.header("content-length");
      const hasBody = (length !== undefined && length !== "0") || req.header("transfer-encoding") !== undefined;
      const problem = bodyTypeProblem(req.header("content-type"), hasBody);
      if (problem !== null) return c.json({ error: problem }, 415);
    }
    c.set("scopeOfToken", scopeOfToken);
    const need = needFor(req.method, req.path);
    const given = presentedToken(c);
    if (need === "open" || (need === "in-band" && given === undefined)) {
      c.set("scope", given === undefined ? (tokens === null ? "admin" : null) : scopeOfToken(given));
      return await next();
    }
    const wanted: Scope = need === "in-band" ? inBandScopes[req.path] : need;
    let scope: Scope | null = "admin";
    if (tokens !== null) {
      // Without a bearer header, the dashboard's session cookie stands for the admin token.
      scope = given !== undefined ? scopeOf(tokens, given) : hasSession(req.header("cookie"), tokens.admin) ? "admin" : null;
      if (scope === null) return c.json({ error: "Unauthorized: a valid bearer token is required" }, 401);
    }
    if (!allows(scope, wanted)) return c.json({ error: scopeMessage(wanted, scope) }, 403);
    c.set("scope", scope);
    await next();
  };
}
