/**
 * Messages into WebSocket frames under the frame limit, with nothing silently lost: a batch that
 * passes the limit goes in several frames, and a message that cannot be encoded or that alone
 * passes the limit is handed to the caller, who errs its task or answers its request instead.
 *
 * @module
 */
import { errorMessage } from "./errors.ts";
import { encodeCbor, encodeFrame, maxFrameBytes } from "./protocol.ts";

/** Room for a frame's array header. */
const headerBytes = 16;

/**
 * Encodes `messages` as frames of at most `limit` bytes. `undeliverable(msg, reason)` is called
 * for each message that cannot go; what it returns (a replacement, e.g. an error reply) goes
 * in its place when that can.
 *
 * @example
 * ```ts
 * for (const frame of encodeFrames(box, (msg, reason) => null)) socket.send(frame);
 * ```
 */
export function encodeFrames<M extends { op: string }>(
  messages: M[],
  undeliverable: (msg: M, reason: string) => M | null,
  limit: number = maxFrameBytes,
): Uint8Array<ArrayBuffer>[] {
  try {
    const whole = encodeFrame(messages);
    if (whole.byteLength <= limit) return [whole];
  } catch {
    // one of them cannot be encoded: find it below
  }
  const frames: Uint8Array<ArrayBuffer>[] = [];
  let group: M[] = [];
  let groupBytes = headerBytes;
  const add = (msg: M, replacement: boolean) => {
    let bytes: number;
    try {
      bytes = encodeCbor(msg).byteLength;
    } catch (err) {
      return replacement ? undefined : retry(msg, `cannot be encoded: ${errorMessage(err)}`);
    }
    if (bytes + headerBytes > limit) {
      return replacement ? undefined : retry(msg, `message of ${bytes} bytes is over the frame limit of ${limit} bytes`);
    }
    if (groupBytes + bytes > limit && group.length > 0) {
      frames.push(encodeFrame(group));
      group = [];
      groupBytes = headerBytes;
    }
    group.push(msg);
    groupBytes += bytes;
  };
  const retry = (msg: M, reason: string) => {
    const instead = undeliverable(msg, reason);
    if (instead) add(instead, true);
  };
  for (const msg of messages) add(msg, false);
  if (group.length > 0) frames.push(encodeFrame(group));
  return frames;
}
