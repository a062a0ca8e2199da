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
  });
  if (options.records) sender.useRecords();
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

  test("frames in cbor-x's record extension (worker links) arrive as the same messages, each shape defined once a connection", async () => {
    const done = (i: number) => ({
      op: "done",
      key: `inc-${i}`,
      nbytes: 8,
      value: { total: i, parts: [{ a: i }, { b: "x" }], when: new Date(0), tags: new Map([["k", i]]), blob: new Uint8Array([i & 255]) },
      hasValue: true,
      stimulusId: `task-finished-${i}`,
      startstops: [{ action: "compute", start: 1_790_000_000.25 + i, stop: 1_790_000_000.5 + i }],
    });
    const plain = pipe();
    const records = pipe({ records: true });
    for (const { sender } of [plain, records]) {
      sender.send([done(0)]);
      sender.send([done(1)]);
      sender.send(Array.from({ length: 50 }, (_, i) => done(2 + i)));
    }
    expect(records.received).toEqual(plain.received);
    expect(records.received.slice(0, 3)).toEqual([done(0), done(1), done(2)] as unknown as Msg[]);
    expect(((records.received[0] as Record<string, unknown>).value as { tags: unknown }).tags).toBeInstanceOf(Map);
    // The second frame of the same shapes carries no definitions: well under the first, and half a plain one.
    expect(records.frames[1].byteLength).toBeLessThan(records.frames[0].byteLength * 0.7);
    expect(records.frames[2].byteLength).toBeLessThan(plain.frames[2].byteLength * 0.6);

    // A message that cannot be encoded: the others go, and frames after it still decode (the
    // encoder that may have defined shapes in the frame not sent is replaced).
    const handed: string[] = [];
    records.sender.send([{ op: "new-shape", x: 1 }, { op: "bad", data: Symbol("no") }, done(60)], (msg: Msg) => (handed.push(msg.op), null));
    records.sender.send([{ op: "new-shape", x: 2 }, done(61)]);
    // A large binary value still travels as a part, and a `__proto__` key stays an own key.
    const big = new Uint8Array(splitFrameBytes + 5).fill(7);
    records.sender.send([{ op: "reply", id: 2, data: { big } }, JSON.parse('{"op":"free","__proto__":{"x":1}}')]);
    records.sender.send([done(62)]);
    for (let i = 0; i < 200 && records.received.length < 59; i++) await new Promise((r) => setTimeout(r, 5));
    expect(handed).toEqual(["bad"]);
    expect(records.received.slice(52).map((m) => m.op)).toEqual(["new-shape", "done", "new-shape", "done", "reply", "free", "done"]);
    expect(records.received[54]).toEqual({ op: "new-shape", x: 2 } as unknown as Msg);
    expect(records.received[58]).toEqual(done(62) as unknown as Msg);
    expect(((records.received[56].data as { big: Uint8Array }).big).byteLength).toBe(big.byteLength);
    expect(Object.getPrototypeOf(records.received[57])).toBe(Object.prototype);
    expect(Object.keys(records.received[57])).toEqual(["op", "__proto_"]);
  });
});
