/**
 * `GET /api/v1/results/KEY`: the answer as JSON, or as CBOR streamed from the value's own memory
 * when the client asks with `Accept: application/cbor` (lib/transfer.ts) — the way to fetch a
 * large or binary result. A large `Uint8Array` is not turned into JSON (every byte a number in an
 * object: several times the data): such a request is answered 406 and told to ask for CBOR.
 *
 * @module
 */
import type { Context } from "hono";
import { splitFrameBytes } from "../frames.ts";
import { resultBody } from "../transfer.ts";
import type { Operations } from "./operations.ts";

/** Answers one result in the format the client accepts. */
export async function resultResponse(c: Context, ops: Operations, key: string, timeoutSeconds: number): Promise<Response> {
  const { value } = await ops.result(key, timeoutSeconds);
  if ((c.req.header("accept") ?? "").includes("application/cbor")) {
    return new Response(resultBody(key, value), { headers: { "content-type": "application/cbor" } });
  }
  if (value instanceof Uint8Array && value.byteLength > splitFrameBytes) {
    return c.json({ key, error: `The result is ${value.byteLength} bytes of binary data: ask for it with "Accept: application/cbor"` }, 406);
  }
  return c.json({ key, value });
}
