/**
 * Messages into frames under the frame limit (lib/frames.ts): a big batch is split, a message
 * that cannot be encoded or alone passes the limit is handed back and replaced or dropped, and
 * the rest arrive in order.
 */
import { describe, expect, test } from "bun:test";
import { encodeFrames } from "../lib/frames.ts";
import { decodeFrame } from "../lib/protocol.ts";

type Msg = { op: string; id?: number; key?: string; data?: unknown; error?: string };

function decodeAll(frames: Uint8Array[]): Msg[] {
  return frames.flatMap((f) => decodeFrame(f) as Msg[]);
}

describe("encodeFrames", () => {
  test("a batch under the limit is one frame, and one past it is split into frames under it, in order", () => {
    const small: Msg[] = [{ op: "free", key: "a" }, { op: "free", key: "b" }];
    expect(encodeFrames(small, () => null, 1000)).toHaveLength(1);
    const many: Msg[] = Array.from({ length: 10 }, (_, i) => ({ op: "compute", key: `k${i}`, data: "x".repeat(300) }));
    const frames = encodeFrames(many, () => null, 1000);
    expect(frames.length).toBeGreaterThan(3);
    for (const f of frames) expect(f.byteLength).toBeLessThanOrEqual(1000);
    expect(decodeAll(frames).map((m) => m.key)).toEqual(many.map((m) => m.key));
  });

  test("a message alone over the limit, or that cannot be encoded, is handed back; a replacement goes in its place", () => {
    const handed: string[] = [];
    const messages: Msg[] = [
      { op: "compute", key: "small" },
      { op: "compute", key: "huge", data: "x".repeat(5000) },
      { op: "reply", id: 7, data: "y".repeat(5000) },
      { op: "compute", key: "symbol", data: Symbol("no") },
      { op: "compute", key: "after" },
    ];
    const frames = encodeFrames(messages, (msg, reason) => {
      handed.push(`${msg.key ?? msg.id}: ${reason}`);
      return msg.op === "reply" ? { op: "reply", id: msg.id, error: "too large" } : null;
    }, 1000);
    expect(handed).toEqual([
      "huge: message of 5031 bytes is over the frame limit of 1000 bytes",
      "7: message of 5024 bytes is over the frame limit of 1000 bytes",
      "symbol: cannot be encoded: Unknown type: symbol",
    ]);
    expect(decodeAll(frames)).toEqual([{ op: "compute", key: "small" }, { op: "reply", id: 7, error: "too large" }, { op: "compute", key: "after" }]);
  });
});
