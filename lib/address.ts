/**
 * Which address a server announces. A worker started without `--host` listens on, and tells its
 * peers, the address its own host uses toward the scheduler (as Dask does): on one machine that
 * is 127.0.0.1, across hosts it is the interface that reaches the scheduler, so peers on the same
 * network reach it too. A server bound to a wildcard (`0.0.0.0`, `::`) shows an address someone
 * can connect to instead of the wildcard.
 *
 * @module
 */
import { connect } from "node:net";
import { networkInterfaces } from "node:os";
import { classifyError, connectErrorMessage } from "./connect-error.ts";

/** Whether `host` binds every interface (and so is no address to connect to). */
export function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "[::]" || host === "";
}

/** `host` as it goes in a URL (IPv6 in brackets). */
export function urlHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** `::ffff:10.0.0.2` (an IPv4 peer on a dual-stack socket) as `10.0.0.2`. */
function plainAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/**
 * This host's primary non-loopback address: the first IPv4 one, else the first global IPv6
 * one, else `127.0.0.1`. For the ready line of a server bound to a wildcard.
 */
export function primaryAddress(): string {
  const all = Object.values(networkInterfaces()).flatMap((list) => list ?? []).filter((a) => !a.internal);
  const v4 = all.find((a) => a.family === "IPv4");
  if (v4) return v4.address;
  const v6 = all.find((a) => a.family === "IPv6" && !a.address.toLowerCase().startsWith("fe80"));
  return v6?.address ?? "127.0.0.1";
}

/** The address of the host that a connectable URL for a server bound to `bound` shows. */
export function connectableHost(bound: string): string {
  return urlHost(isWildcard(bound) ? primaryAddress() : bound);
}

function localAddressOnce(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      const address = socket.localAddress;
      socket.destroy();
      if (address) resolve(plainAddress(address));
      else reject(new Error("the socket has no local address"));
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

/**
 * The local address of a TCP connection to `url`'s host and port: the address this host reaches
 * it from. Retries (the scheduler may start after the worker) until `deadline` (epoch ms), then
 * returns null.
 */
export async function localAddressToward(url: string, deadline: number, onWait?: (message: string) => void): Promise<string | null> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  const port = Number(u.port) || (u.protocol === "https:" || u.protocol === "wss:" ? 443 : 80);
  let delay = 100;
  let lastSaid = 0;
  const started = Date.now();
  for (;;) {
    try {
      return await localAddressOnce(host, port, Math.max(500, Math.min(5000, deadline - Date.now())));
    } catch (err) {
      if (Date.now() + delay > deadline) return null;
      // Say at once that the scheduler is not there yet, then every few seconds: not silence.
      if (onWait && Date.now() - lastSaid >= 3_000) {
        const { kind, detail } = classifyError(err);
        const message = connectErrorMessage(url, kind, detail);
        onWait(lastSaid === 0 ? `${message}; waiting for it` : `Still waiting for the scheduler (${Math.round((Date.now() - started) / 1000)} s): ${message}`);
        lastSaid = Date.now();
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1000);
    }
  }
}

/**
 * Where a worker's (or nanny's) data endpoint listens and which host it announces. With `host`
 * given and not a wildcard: that host, both. Without it: the address toward the scheduler, both.
 * With a wildcard: listen on it, announce the address toward the scheduler. When the scheduler
 * cannot be reached before `deadline`, 127.0.0.1 (the connection that follows reports why).
 */
export async function chooseDataHost(
  host: string | undefined,
  scheduler: string,
  deadline: number,
  onWait?: (message: string) => void,
): Promise<{ listen: string; announce: string }> {
  if (host && !isWildcard(host)) return { listen: host, announce: urlHost(host) };
  const toward = (await localAddressToward(scheduler, deadline, onWait)) ?? "127.0.0.1";
  return { listen: host || toward, announce: urlHost(toward) };
}
