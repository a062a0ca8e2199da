/**
 * Frames on a socket (lib/frames.ts): a large frame goes in chunks that the other side puts back
 * together in order, and a message that cannot be encoded is handed back and replaced or
 * dropped while the rest of its batch goes.
 */
import { describe, expect, test } from "bun:test";
import { chunkBytes, FrameAssembler, FrameSender, splitFrameBytes } from "../lib/frames.ts";

type Msg = { op: string; id?: number; key?: string; data?: unknown; error?: string };

/** A sender over an in-memory socket, and what arrived through an assembler. */
function pipe() {
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
});
