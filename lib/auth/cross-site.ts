/**
 * Cross-site and DNS-rebinding defences, as pure functions the scheduler's middleware applies to
 * every request, with or without auth. A web page can make a browser send a "simple" request
 * (a form post, `text/plain`) to any address, and DNS rebinding makes a foreign name resolve to
 * 127.0.0.1; so a write must carry a JSON or CBOR body (which a page cannot send cross-site
 * without a preflight), an `Origin` must be the scheduler's own, and the `Host` must be a name the
 * scheduler knows itself by.
 *
 * @module
 */
import { networkInterfaces } from "node:os";
import { isWildcard } from "../address.ts";

/** What the checks need to know about the listener. */
export interface Listener {
  /** `http` or `https`. */
  protocol: string;
  /** The address bound (may be a wildcard). */
  hostname: string;
  port: number;
  /** The host the scheduler announces (its URL's host). */
  announced: string;
}

/** A host name or address as compared: lower case, no IPv6 brackets, no trailing dot. */
export function normalHost(host: string): string {
  return host.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
}

/**
 * The names a request's `Host` (and `Origin`) may carry: the bound address, `localhost`,
 * `127.0.0.1`, `::1`, the announced address, every local interface address when bound to a
 * wildcard, and the names given with `--allow-host`.
 *
 * @example
 * ```ts
 * allowedHosts({ protocol: "http", hostname: "127.0.0.1", port: 8786, announced: "127.0.0.1" }, ["cluster.lan"]);
 * ```
 */
export function allowedHosts(listener: Listener, extra: readonly string[] = []): Set<string> {
  // `--allow-host name:port` means the name: the port is the listener's anyway.
  const named = extra.map((h) => hostOfHeader(h) ?? normalHost(h));
  const hosts = new Set([...["localhost", "127.0.0.1", "::1", listener.hostname, listener.announced].map(normalHost), ...named]);
  if (isWildcard(listener.hostname)) {
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) hosts.add(normalHost(a.address.replace(/%.*$/, "")));
    }
  }
  hosts.delete("");
  return hosts;
}

/** The host name of a `Host` header value (`name:port`, `[::1]:port`), or null when malformed. */
export function hostOfHeader(value: string): string | null {
  try {
    const url = new URL(`http://${value}`);
    if (url.pathname !== "/" || url.username || url.search) return null;
    return normalHost(url.hostname);
  } catch {
    return null;
  }
}

/** Why a `Host` header is refused, or null when it names this scheduler. A missing one passes (no browser sends none). */
export function hostProblem(host: string | undefined, allowed: ReadonlySet<string>): string | null {
  if (host === undefined || host === "") return null;
  const name = hostOfHeader(host);
  if (name !== null && allowed.has(name)) return null;
  return `Host "${host}" is not a name of this scheduler (add it with --allow-host)`;
}

/** Why an `Origin` header is refused, or null when absent or the scheduler's own. */
export function originProblem(origin: string | undefined, listener: Listener, allowed: ReadonlySet<string>): string | null {
  if (origin === undefined) return null;
  let url: URL | null = null;
  try {
    url = new URL(origin);
  } catch {
    // "null" (a sandboxed page, a file) and garbage are foreign.
  }
  if (url !== null) {
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    if (url.protocol === `${listener.protocol}:` && port === listener.port && allowed.has(normalHost(url.hostname))) return null;
  }
  return `Cross-origin request refused: Origin "${origin}" is not this scheduler's`;
}

/** The body types a write accepts. */
export const bodyTypes: readonly string[] = ["application/json", "application/cbor"];

/**
 * Why a write's body type is refused, or null: a body must be JSON or CBOR; a write with no body
 * (a DELETE, a bare POST) passes.
 */
export function bodyTypeProblem(contentType: string | undefined, hasBody: boolean): string | null {
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  if (bodyTypes.includes(type)) return null;
  if (!hasBody && type === "") return null;
  return `Unsupported content type "${contentType ?? ""}": send application/json or application/cbor`;
}
