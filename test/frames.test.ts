/**
 * Frames on a socket (lib/frames.ts): a large frame goes in chunks that the other side puts back
 * together in order, and a message that cannot be encoded is handed back and replaced or
 * dropped while the rest of its batch goes.
 */
import { describe, expect, test } from "bun:test";
import { chunkBytes, FrameAssembler, FrameSender, splitFrameBytes } from "../lib/frames.ts";

type Msg = { op: string; id?: number; key?: string; data?: unknown; error?: string };

/** A sender over an in-memory socket, and what arrived through an assembler. */
function pipe(options: { records?: boolean } = {}) {
  const received: Msg[] = [];
  const frames: Uint8Array[] = [];
  const assembler = new FrameAssembler();
  const sender = new FrameSender({
    send: (bytes) => {
      frames.push(bytes);
      for (const msg of assembler.decode(bytes.slice())) received.push(msg as unknown as Msg);
    },
    buffered: () => 0,
    open: () => true,
  }, options);
  return { sender, received, frames };
}

describe("FrameSender and FrameAssembler", () => {
  test("a frame past the split size goes in chunks and arrives whole and in order with what follows", async () => {
    const { sender, received, frames } = pipe();
    const big = "x".repeat(splitFrameBytes + 3 * chunkBytes);
    sender.send([{ op: "reply", id: 1, data: big }]);
    sender.send([{ op: "free", key: "after" }]);
    for (let i = 0; i < 100 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
    expect(frames.length).toBeGreaterThan(8);
    expect(received.map((m) => m.op)).toEqual(["reply", "free"]);
    expect((received[0].data as string).length).toBe(big.length);
  });

  test("a message that cannot be encoded is handed back; a replacement goes in its place and the rest of the batch goes", () => {
    const { sender, received } = pipe();
    const handed: string[] = [];
    sender.send([
      { op: "compute", key: "small" },
      { op: "reply", id: 7, data: Symbol("no") },
      { op: "compute", key: "symbol", data: Symbol("no") },
      { op: "compute", key: "after" },
    ], (msg: Msg, reason: string) => {
      handed.push(`${msg.key ?? msg.id}: ${reason}`);
      return msg.op === "reply" ? { op: "reply", id: msg.id, error: "cannot send" } : null;
    });
    expect(handed).toEqual(["7: cannot be encoded: Unknown type: symbol", "symbol: cannot be encoded: Unknown type: symbol"]);
    expect(received).toEqual([{ op: "compute", key: "small" }, { op: "reply", id: 7, error: "cannot send" }, { op: "compute", key: "after" }]);
  });

  test("frames in cbor-x's record extension (worker links) arrive as the same messages, in about half the bytes", async () => {
    const done = (i: number) => ({
      op: "done",
      key: `inc-${i}`,
      nbytes: 8,
      value: { total: i, parts: [{ a: i }, { b: "x" }], when: new Date(0), tags: new Map([["k", i]]), blob: new Uint8Array([i & 255]) },
      hasValue: true,
      stimulusId: `task-finished-${i}`,
      startstops: [{ action: "compute", start: 1_790_000_000.25 + i, stop: 1_790_000_000.5 + i }],
    });
    const batch = Array.from({ length: 200 }, (_, i) => done(i));
    const plain = pipe();
    const records = pipe({ records: true });
    plain.sender.send(batch);
    records.sender.send(batch);
    // A large binary value still travels as a part, and an object with a `__proto__` key stays an own key.
    const big = new Uint8Array(splitFrameBytes + 5).fill(7);
    records.sender.send([{ op: "reply", id: 2, data: { big } }, JSON.parse('{"op":"free","__proto__":{"x":1}}')]);
    for (let i = 0; i < 200 && records.received.length < 202; i++) await new Promise((r) => setTimeout(r, 5));
    expect(records.received.slice(0, 200)).toEqual(plain.received);
    expect(records.received.slice(0, 200)).toEqual(batch as unknown as Msg[]);
    expect(((records.received[0] as Record<string, unknown>).value as { tags: unknown }).tags).toBeInstanceOf(Map);
    expect(((records.received[200].data as { big: Uint8Array }).big).byteLength).toBe(big.byteLength);
    expect(Object.getPrototypeOf(records.received[201])).toBe(Object.prototype);
    expect(Object.keys(records.received[201])).toEqual(["op", "__proto_"]);
    expect(records.frames[0].byteLength).toBeLessThan(plain.frames[0].byteLength * 0.6);
  });
});
