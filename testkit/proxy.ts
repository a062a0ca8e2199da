/**
 * A delaying TCP proxy on loopback, for tests of far workers: it listens on a free port of
 * 127.0.0.1, forwards every connection to a target port, and delivers each chunk `delayMs` after
 * it arrived, in both directions (a round trip gains twice the delay). Order is kept, a
 * half-close travels with the same delay, and the proxy is bounded: at most `maxConnections`
 * connections, and a direction holding more than `maxBufferedBytes` (queued, or written but not
 * yet taken by the receiver) stops reading its source until it is down to half; what the runtime
 * had read already still comes on top, so the bound is not exact to the byte. A reset on either
 * side resets both. `close()` ends every connection and the listener.
 *
 * @module
 */
import { createServer, type Server, type Socket, connect } from "node:net";

/** A running proxy. */
export interface DelayProxy {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** The connections open now. */
  readonly connections: number;
  /** Bytes held now (queued for their delay or not yet taken by the receiver), all directions. */
  readonly buffered: number;
  /** The one-way delay in milliseconds; changing it never reorders chunks. */
  delayMs: number;
  /**
   * Stops reading from the target on every connection, now and later: the target's sends pile
   * up in its own buffers, as with a receiver that stopped reading (a stalled subscriber).
   */
  stall(): void;
  /** Closes the listener and every connection; resolves once the listener is closed. */
  close(): Promise<void>;
}

/** What a connection's direction holds: chunks with the time they are due, or the end. */
interface Pending {
  due: number;
  chunk: Buffer | null;
}

/**
 * Starts a proxy from a free loopback port to `127.0.0.1:target`.
 *
 * @example
 * ```ts
 * const proxy = await startDelayProxy({ target: 8786, delayMs: 50 });
 * const far = `http://127.0.0.1:${proxy.port}`; // each request and reply 50 ms later
 * await proxy.close();
 * ```
 */
export async function startDelayProxy(options: {
  target: number;
  delayMs: number;
  /** @default 64 */
  maxConnections?: number;
  /** Per connection and direction. @default 8 MiB */
  maxBufferedBytes?: number;
}): Promise<DelayProxy> {
  const limit = options.maxBufferedBytes ?? 8 * 1024 * 1024;
  const pairs = new Set<Socket[]>();
  const directions = new Set<() => number>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let closed = false;
  const state = { delayMs: options.delayMs, stalled: false };

  /** Forwards `from` to `to` with the delay, pausing `from` past the limit. */
  function pipeDelayed(from: Socket, to: Socket, fromTarget: boolean): void {
    const queue: Pending[] = [];
    let queuedBytes = 0;
    let lastDue = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const held = () => queuedBytes + to.writableLength;
    directions.add(held);
    from.once("close", () => directions.delete(held));
    const resumeIfLow = () => {
      if (fromTarget && state.stalled) return;
      if (from.isPaused() && held() <= limit / 2 && !from.destroyed) from.resume();
    };
    const deliver = () => {
      if (timer) timers.delete(timer);
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && queue[0].due <= now) {
        const { chunk } = queue.shift()!;
        if (to.destroyed) return;
        if (chunk === null) {
          to.end();
          continue;
        }
        queuedBytes -= chunk.length;
        to.write(chunk);
      }
      resumeIfLow();
      schedule();
    };
    const schedule = () => {
      if (timer || queue.length === 0 || closed) return;
      timer = setTimeout(deliver, Math.max(0, queue[0].due - Date.now()));
      timers.add(timer);
    };
    const push = (chunk: Buffer | null) => {
      // Never earlier than the chunk before: a smaller delay must not reorder the stream.
      lastDue = Math.max(Date.now() + state.delayMs, lastDue);
      queue.push({ due: lastDue, chunk });
      if (chunk) queuedBytes += chunk.length;
      if (held() > limit) from.pause();
      schedule();
    };
    from.on("data", (chunk: Buffer) => push(chunk));
    from.on("end", () => push(null));
    to.on("drain", resumeIfLow);
  }

  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    if (closed) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: "127.0.0.1", port: options.target, allowHalfOpen: true });
    const pair = [client, upstream];
    pairs.add(pair);
    // An error (a reset, a refused upstream) ends both sides at once; a clean close of one side
    // does not, since its end still travels to the other with the delay.
    const teardown = () => {
      for (const s of pair) s.destroy();
      pairs.delete(pair);
    };
    for (const s of pair) {
      s.on("error", teardown);
      s.on("close", () => pair.every((x) => x.destroyed) && pairs.delete(pair));
    }
    pipeDelayed(client, upstream, false);
    pipeDelayed(upstream, client, true);
    if (state.stalled) upstream.pause();
  });
  server.maxConnections = options.maxConnections ?? 64;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    port,
    stall() {
      state.stalled = true;
      for (const [, upstream] of pairs) upstream.pause();
    },
    get connections() {
      return pairs.size;
    },
    get buffered() {
      let total = 0;
      for (const held of directions) total += held();
      return total;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(ms: number) {
      state.delayMs = ms;
    },
    close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const pair of pairs) for (const s of pair) s.destroy();
      pairs.clear();
      directions.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
