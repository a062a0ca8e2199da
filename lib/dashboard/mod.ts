/**
 * The dashboard, served by the scheduler at `/`: the page and its bundled script and stylesheet
 * (lib/dashboard/_assets.ts, built from lib/dashboard/ui/ and committed, so nothing is fetched
 * or built at run time), and the login that turns the token into an HttpOnly, SameSite=Strict
 * cookie. The page's data comes from the scheduler's own API (`info`, `plugins`, the event
 * stream), which accepts that cookie (`hasSession`).
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { timingSafeEqual } from "../protocol.ts";
import { appCss, appJs, indexHtml, loginHtml, sourceHash } from "./_assets.ts";
import { hasSession, sessionCookieName, sessionValue } from "./_session.ts";
import { DashboardFeed, type FeedSource } from "./feed.ts";
import { runtime } from "../runtime/mod.ts";

export { hasSession, sessionCookieName } from "./_session.ts";
export { dashboardLink } from "./link.ts";
export { DashboardFeed } from "./feed.ts";

/** What the dashboard needs from the scheduler. */
export interface DashboardDeps {
  /**
   * The token a browser logs in with, or undefined when auth is off (the page then opens
   * directly). Asked on every request, so a changed token applies at once.
   */
  token(): string | undefined;
  /** The scheduler's event log, which the feed folds while a page is open. */
  events: FeedSource;
}

/** A week: long enough not to nag an operator, short enough that a lost laptop ages out. */
const sessionSeconds = 7 * 24 * 3600;

/** The longest token accepted from the login form (anything longer is not a token). */
const maxTokenLength = 4096;

const pageHeaders: Record<string, string> = {
  "content-type": "text/html; charset=utf-8",
  // Only our own script, style and API; no inline script, no framing, no referrer to other sites.
  // "same-origin", not "no-referrer": with no-referrer browsers send `Origin: null` on the login
  // form's POST, which the scheduler's cross-site check must refuse.
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "same-origin",
  "cache-control": "no-store",
};

function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_, name: string) => values[name] ?? "");
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function loginPage(c: Context, error: string | null, status: 200 | 400 | 401): Response {
  const html = fill(loginHtml, {
    hash: sourceHash,
    error: escapeHtml(error ?? ""),
    errorHidden: error ? "" : " hidden",
  });
  return c.body(html, status, pageHeaders);
}

/** A 303 to `/` that sets (or, with `null`, clears) the session cookie. */
function redirectHome(c: Context, cookieValue: string | null): Response {
  const secure = new URL(c.req.url).protocol === "https:" ? "; Secure" : "";
  const cookie = cookieValue === null
    ? `${sessionCookieName}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure}`
    : `${sessionCookieName}=${cookieValue}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${sessionSeconds}${secure}`;
  return c.body(null, 303, {
    location: "/",
    "set-cookie": cookie,
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
  });
}

/** Logs in with a token given in the URL or the form: cookie and redirect, or the form again. */
function login(c: Context, given: string, deps: DashboardDeps): Response {
  const token = deps.token();
  if (!token) return redirectHome(c, null);
  if (given.length > 0 && given.length <= maxTokenLength && timingSafeEqual(given.trim(), token)) {
    return redirectHome(c, sessionValue(token));
  }
  return loginPage(c, "That token is not valid for this scheduler.", 401);
}

/** The host of an `Origin` header (`null` and garbage give ""). */
function originHost(origin: string): string {
  try {
    return new URL(origin).host;
  } catch {
    return "";
  }
}

function signedIn(c: Context, token: string | undefined): boolean {
  return !token || hasSession(c.req.header("cookie"), token);
}

/**
 * The dashboard's routes: `GET /` (the page, or the login form), `POST /login`, `GET /logout`,
 * the page's feed (`WS /dashboard/feed`) and the assets under `/dashboard/`. Mount it before the scheduler's auth middleware: these
 * routes do their own (the page needs the login form unauthenticated).
 *
 * @example
 * ```ts
 * app.route("/", dashboardApp({ token: () => process.env.CLUSTER_TOKEN, events: scheduler.events }));
 * ```
 */
export function dashboardApp(deps: DashboardDeps): Hono {
  const app = new Hono();
  app.get("/", (c) => {
    const given = c.req.query("token");
    if (given !== undefined) return login(c, given, deps);
    const token = deps.token();
    if (!signedIn(c, token)) return loginPage(c, null, 200);
    return c.body(fill(indexHtml, { hash: sourceHash, logout: token ? "" : " hidden" }), 200, pageHeaders);
  });
  app.post("/login", async (c) => {
    let given = "";
    try {
      const type = c.req.header("content-type") ?? "";
      if (type.includes("application/json")) {
        const body = await c.req.json();
        given = typeof body?.token === "string" ? body.token : "";
      } else {
        const form = await c.req.parseBody();
        given = typeof form.token === "string" ? form.token : "";
      }
    } catch {
      return loginPage(c, "The form could not be read.", 400);
    }
    return login(c, given, deps);
  });
  app.get("/logout", (c) => redirectHome(c, null));
  const feed = new DashboardFeed(deps.events);
  app.get("/dashboard/feed", async (c, next) => {
    const token = deps.token();
    const bearer = c.req.header("authorization");
    const ok = signedIn(c, token) || (bearer?.startsWith("Bearer ") && timingSafeEqual(bearer.slice(7), token!));
    if (!ok) return c.json({ error: "Unauthorized: log in to the dashboard first" }, 401);
    // Another site's page cannot open the feed in the user's name (browsers send Origin here).
    const origin = c.req.header("origin");
    if (origin && originHost(origin) !== c.req.header("host")) {
      return c.json({ error: `Forbidden: origin "${origin}" is not this scheduler` }, 403);
    }
    await next();
  }, runtime.upgradeWebSocket(() => {
    let detach: (() => void) | null = null;
    return {
      onOpen: (_e, ws) => {
        runtime.prepareSocket(ws);
        detach = feed.attach((frame) => {
          // A page that cannot keep up misses frames rather than growing the scheduler's memory.
          if (runtime.bufferedAmount(ws) > 8 * 1024 * 1024) return;
          runtime.send(ws, frame);
        });
      },
      onClose: () => detach?.(),
    };
  }));
  const asset = (body: string, type: string) => (c: Context) => {
    if (c.req.header("if-none-match") === `"${sourceHash}"`) return c.body(null, 304);
    return c.body(body, 200, {
      "content-type": type,
      etag: `"${sourceHash}"`,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
    });
  };
  app.get("/dashboard/app.js", asset(appJs, "text/javascript; charset=utf-8"));
  app.get("/dashboard/app.css", asset(appCss, "text/css; charset=utf-8"));
  return app;
}
