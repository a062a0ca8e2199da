/**
 * Talking to a running scheduler from tests and benchmarks: JSON over HTTP, the event stream
 * over a WebSocket, one sample of `/metrics`, the task counts, and waiting until it is idle.
 *
 * @module
 */
import { waitFor } from "./wait.ts";
import { authenticate, peerToken } from "../lib/auth/handshake.ts";

/** The bearer header for `token` (default: this process's CLUSTER_TOKEN, the kit's `testToken`). */
export function authHeaders(token: string | undefined = process.env.CLUSTER_TOKEN): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/**
 * JSON over HTTP: the status and the parsed body (the text when it is not JSON). The bearer
 * header carries `token`, by default this process's CLUSTER_TOKEN; `token: ""` sends none.
 */
export async function api(
  url: string,
  path: string,
  init: { method?: string; body?: unknown; token?: string; raw?: BodyInit; contentType?: string } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = authHeaders(init.token);
  let body: BodyInit | undefined = init.raw;
  if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers["content-type"] = "application/json";
  }
  if (init.contentType) headers["content-type"] = init.contentType;
  const res = await fetch(url + path, { method: init.method ?? (body ? "POST" : "GET"), headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: keep the text.
  }
  return { status: res.status, body: parsed };
}

/**
 * Collects events from `GET /api/v1/events?QUERY` until `until` returns true (or the timeout);
 * `ready` resolves once the socket is open, so a test can cause the events after it.
 */
export function collectEvents(
  url: string,
  query: string,
  until: (events: any[]) => boolean,
  timeoutMs = 20_000,
): { ready: Promise<void>; done: Promise<any[]>; close(): void } {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/v1/events?${query}`);
  ws.binaryType = "arraybuffer";
  const events: any[] = [];
  let resolveReady!: () => void;
  const ready = new Promise<void>((r) => (resolveReady = r));
  const done = new Promise<any[]>((resolveDone, reject) => {
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(`Timed out with ${events.length} events: ${JSON.stringify(events.slice(-5))}`));
    }, timeoutMs);
    // Every link opens with the challenge–response (lib/auth/handshake.ts); ready once subscribed.
    authenticate(ws, {
      role: "events",
      token: peerToken("events"),
      onMessage: (e) => {
        const data = JSON.parse(String(e.data));
        if (Array.isArray(data)) events.push(...data);
        else events.push(data);
        if (until(events)) {
          clearTimeout(timer);
          ws.close();
          resolveDone(events);
        }
      },
    }).then(() => resolveReady(), reject);
  });
  return { ready, done, close: () => ws.close() };
}

/**
 * Every kept event of a topic (`since=0` replay) and what comes within `waitMs`, through the
 * handshake as any subscriber.
 */
export async function replayEvents(url: string, topic: string, waitMs = 200): Promise<any[]> {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/v1/events?topic=${encodeURIComponent(topic)}&since=0&batch=1`);
  ws.binaryType = "arraybuffer";
  const events: any[] = [];
  await authenticate(ws, { role: "events", token: peerToken("events"), onMessage: (e) => events.push(...JSON.parse(String(e.data))) });
  await new Promise((r) => setTimeout(r, waitMs));
  ws.close();
  return events;
}

/** One unlabelled sample of the scheduler's Prometheus text (`GET /metrics`). */
export async function readMetric(url: string, name: string): Promise<number> {
  const text = await fetch(`${url}/metrics`, { headers: authHeaders() }).then((r) => r.text());
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`Metric "${name}" is missing from ${url}/metrics`);
  return Number(m[1]);
}

/** The scheduler's task counts by state (`GET /api/v1/info`). */
export async function taskCounts(url: string): Promise<Record<string, number>> {
  const info = await fetch(`${url}/api/v1/info`, { headers: authHeaders() }).then((r) => r.json()) as { tasks: Record<string, number> };
  return info.tasks;
}

/** Waits until the scheduler holds no task at all (what the last run released is forgotten). */
export async function waitIdle(url: string, timeoutMs = 30_000): Promise<void> {
  await waitFor("the scheduler to forget every task", async () => {
    const counts = await taskCounts(url);
    return Object.values(counts).every((n) => n === 0);
  }, { timeoutMs });
}
