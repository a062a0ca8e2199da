/**
 * The test kit's delaying TCP proxy (`testkit/proxy.ts`) against a loopback echo server and the
 * real scheduler: it delays each direction, keeps bytes and their order under its buffer bound,
 * passes a half-close through, and closes its connections and listener cleanly.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, createServer, type Server, type Socket } from "node:net";
import { api, type DelayProxy, sleep, startDelayProxy, startProcess, stopAll, tcpOpen, waitFor } from "../testkit/mod.ts";

let echo: Server;
let echoPort = 0;

beforeAll(async () => {
  echo = createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
  echoPort = (echo.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((r) => echo.close(r));
  await stopAll();
});

/** Connects to the proxy and resolves with the socket once connected. */
function open(proxy: DelayProxy): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port: proxy.port, allowHalfOpen: true });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Reads from `socket` until `bytes` bytes arrived; resolves with them. */
function read(socket: Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= bytes) {
        socket.off("data", onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
  });
}

describe("delaying TCP proxy", () => {
  test("a round trip through the proxy takes at least twice the one-way delay", async () => {
    const proxy = await startDelayProxy({ target: echoPort, delayMs: 100 });
    try {
      const socket = await open(proxy);
      const t0 = performance.now();
      socket.write("ping");
      expect((await read(socket, 4)).toString()).toBe("ping");
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(195);
      expect(ms).toBeLessThan(2_000);
      socket.destroy();
    } finally {
      await proxy.close();
    }
  });

  test("4 MiB written in small chunks arrive whole and in order past a 64 KiB buffer bound", async () => {
    const proxy = await startDelayProxy({ target: echoPort, delayMs: 5, maxBufferedBytes: 64 * 1024 });
    try {
      const socket = await open(proxy);
      const payload = Buffer.alloc(4 * 1024 * 1024);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + (i >> 11)) & 0xff;
      const received = read(socket, payload.length);
      for (let off = 0; off < payload.length; off += 16 * 1024) socket.write(payload.subarray(off, off + 16 * 1024));
      expect((await received).equals(payload)).toBe(true);
      socket.destroy();
    } finally {
      await proxy.close();
    }
  }, 30_000);

  test("a receiver that does not read makes the proxy stop reading once it holds its bound", async () => {
    const stalled = createServer((s) => {
      s.on("error", () => {});
      s.pause();
    });
    await new Promise<void>((r) => stalled.listen(0, "127.0.0.1", () => r()));
    const limit = 256 * 1024;
    const proxy = await startDelayProxy({ target: (stalled.address() as { port: number }).port, delayMs: 1, maxBufferedBytes: limit });
    try {
      const socket = await open(proxy);
      socket.on("error", () => {});
      const chunk = Buffer.alloc(64 * 1024, 7);
      for (let i = 0; i < 512; i++) socket.write(chunk);
      // 32 MiB offered: the kernel's buffers take some, the proxy stops past its bound (plus what
      // the runtime had read already) and holds steady while the sender is left with the rest.
      await waitFor("the proxy to fill up", () => proxy.buffered > limit, 5_000);
      await sleep(200);
      const held = proxy.buffered;
      await sleep(300);
      expect(proxy.buffered).toBe(held);
      expect(held).toBeLessThanOrEqual(4 * limit);
      expect(socket.writableLength).toBeGreaterThan(16 * 1024 * 1024);
      socket.destroy();
    } finally {
      await proxy.close();
      stalled.close();
    }
  });

  test("a half-close passes through after the data, and the connection ends on both sides", async () => {
    const proxy = await startDelayProxy({ target: echoPort, delayMs: 30 });
    try {
      const socket = await open(proxy);
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      const ended = new Promise<void>((r) => socket.once("end", () => r()));
      socket.end("last words");
      await ended;
      expect(Buffer.concat(chunks).toString()).toBe("last words");
      socket.destroy();
      // The proxy drops the connection once both halves are done.
      await waitFor("the proxy to drop the connection", () => proxy.connections === 0, 2_000);
    } finally {
      await proxy.close();
    }
  });

  test("close() ends open connections and frees the port, and a later delay change keeps order", async () => {
    const proxy = await startDelayProxy({ target: echoPort, delayMs: 200 });
    const socket = await open(proxy);
    const first = read(socket, 2);
    const t0 = performance.now();
    socket.write("a");
    await sleep(50);
    proxy.delayMs = 0;
    socket.write("b");
    // "b" is due at once but waits for "a": nothing overtakes.
    expect((await first).toString()).toBe("ab");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(195);
    const ended = new Promise<void>((r) => socket.once("end", () => r()));
    expect(proxy.connections).toBe(1);
    await proxy.close();
    await ended;
    socket.destroy();
    expect(proxy.connections).toBe(0);
    expect(await tcpOpen(proxy.port)).toBe(false);
  });

  test("the scheduler's HTTP API answers through the proxy, later by the delay", async () => {
    const scheduler = await startProcess(["scheduler", "--port", "0"]);
    const target = Number(new URL(scheduler.url).port);
    const proxy = await startDelayProxy({ target, delayMs: 80 });
    try {
      const far = `http://127.0.0.1:${proxy.port}`;
      const t0 = performance.now();
      const health = await api(far, "/health");
      expect(health.body).toMatchObject({ status: "ok", role: "scheduler" });
      expect(performance.now() - t0).toBeGreaterThanOrEqual(155);
    } finally {
      await proxy.close();
      await scheduler.stop();
    }
  });
});
