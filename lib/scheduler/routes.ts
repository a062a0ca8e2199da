/**
 * The HTTP API under `/api/v1` as a Hono sub-app: each route reads its input and calls one
 * operation (operations.ts); errors become statuses in the scheduler's one error handler.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { type Limits, readBodyLimited } from "../limits.ts";
import { errorMessage } from "../errors.ts";
import { decodeCbor } from "../protocol.ts";
import { decodeCborSliced } from "./cbor-slices.ts";
import { jsonArrayStream, parseJsonSliced } from "./json-slices.ts";
import { BadRequestError } from "./errors.ts";
import type { Operations } from "./operations.ts";
import { resultResponse } from "./result-route.ts";
import type { ClientState } from "./state.ts";

/**
 * The `/api/v1` routes; graph submissions over HTTP belong to `httpClient`.
 *
 * @example
 * ```ts
 * app.route("/api/v1", apiRoutes(operations, httpClient));
 * ```
 */
export function apiRoutes(ops: Operations, httpClient: ClientState, limits: Limits): Hono {
  const readBody = (c: Context) => readBodyOf(c, limits.maxBodyBytes);
  const api = new Hono();
  api.get("/info", (c) => c.json(ops.info()));
  api.get("/logs", (c) => c.json(ops.logs({ worker: c.req.query("worker"), since: c.req.query("since"), level: c.req.query("level") })));
  api.post("/graph", async (c) => {
    const answer = await ops.submitGraph(httpClient, await readBody(c));
    if (answer.keys.length < 32_768) return c.json(answer, 202);
    // Every wanted key: a million of them in one JSON.stringify would block the loop for 100 ms.
    return c.body(jsonArrayStream("keys", answer.keys), 202, { "content-type": "application/json" });
  });
  api.get("/tasks/:key{.+}", (c) => c.json(ops.task(c.req.param("key"))));
  api.delete("/tasks/:key{.+}", async (c) => {
    await ops.release(httpClient, [c.req.param("key")], { mustExist: true });
    return c.body(null, 204);
  });
  api.get("/results/:key{.+}", async (c) => {
    const raw = c.req.query("timeout") ?? "0";
    const timeout = Number(raw);
    if (!Number.isFinite(timeout) || timeout < 0) {
      ops.task(c.req.param("key")); // an unknown key is 404 before a bad timeout is 400
      throw new BadRequestError(`Invalid timeout "${raw}"`);
    }
    return await resultResponse(c, ops, c.req.param("key"), timeout);
  });
  api.get("/plugins", (c) => c.json(ops.listPlugins()));
  api.post("/plugins", async (c) => c.json(await ops.registerPlugin(await readBody(c)), 201));
  api.delete("/plugins/:role/:name", async (c) => {
    await ops.unregisterPlugin(c.req.param("role"), c.req.param("name"));
    return c.body(null, 204);
  });
  api.post("/restart", async (c) => c.json(await ops.restart(), 200));
  api.post("/workers/retire", async (c) => c.json(await ops.retireWorkers(await readBody(c)), 200));
  api.post("/events/:topic", async (c) => c.json(ops.logEvent(c.req.param("topic"), await readBody(c)), 200));
  return api;
}

/** Reads a JSON or CBOR body of at most `limit` bytes (else a LimitError, 413); a malformed one is a BadRequestError (400). */
async function readBodyOf(c: Context, limit: number): Promise<unknown> {
  const type = c.req.header("content-type") ?? "application/json";
  const bytes = await readBodyLimited(c.req.raw, limit);
  try {
    // A big body (a graph of a million tasks) is decoded in slices: the scheduler stays responsive.
    if (type.includes("cbor")) return bytes.length >= 256 * 1024 ? await decodeCborSliced(bytes) : decodeCbor(bytes);
    return bytes.length >= 256 * 1024 ? await parseJsonSliced(bytes) : JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new BadRequestError(`Malformed ${type.includes("cbor") ? "CBOR" : "JSON"} body: ${errorMessage(err)}`);
  }
}
