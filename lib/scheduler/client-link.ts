/**
 * The client socket (`WS /api/v1/client`, messages in lib/messages/client.ts): each request
 * calls one operation and is answered by one `reply` — `{op: "reply", id, ...payload}`, or
 * `{op: "reply", id, error, status}` with the same status the HTTP API gives. Requests start in
 * the order they came; the plugins' `addClient` and `removeClient` are awaited in that order too.
 * The socket is authenticated before any of this (link-auth.ts): a submit token may do every op
 * but registering and removing plugins, which need the admin token (403 naming the scope).
 *
 * @module
 */
import type { WSContext } from "hono/ws";
import { errorMessage } from "../errors.ts";
import type { ClientToScheduler, SchedulerToClient } from "../messages/client.ts";
import type { PluginManager } from "../plugins/manager.ts";
import type { SchedulerApi, SchedulerPlugin } from "../plugins/types.ts";
import { type Message, maxFrameBytes, version } from "../protocol.ts";
import { chunkBytes, FrameAssembler, sendFrame } from "../frames.ts";
import { runtime } from "../runtime/mod.ts";
import { checkMessage } from "../messages/validate.ts";
import { allows, type Scope } from "../auth/tokens.ts";
import { scopeForOp, scopeMessage } from "./auth.ts";
import { BadRequestError, ForbiddenError, httpStatus } from "./errors.ts";
import { decodeCborSliced } from "./cbor-slices.ts";
import type { EventLog } from "./events.ts";
import type { Operations } from "./operations.ts";
import type { ClientState, SchedulerState } from "./state.ts";

/** What the client socket needs of the scheduler. */
export interface ClientLinkContext {
  readonly state: SchedulerState;
  readonly events: EventLog;
  readonly plugins: PluginManager<SchedulerPlugin>;
  readonly api: SchedulerApi;
  readonly operations: Operations;
  /** Applies the state machine's pending effects. */
  apply(): void;
  /** Bytes in one client message, however it was split (the graph body limit). */
  readonly maxMessageBytes?: number;
}

type Handler = (ops: Operations, client: ClientState, msg: never) => unknown;

/** The client ops, each one operation; the result is the reply's payload. */
const handlers: { [Op in ClientToScheduler["op"]]: (ops: Operations, client: ClientState, msg: Extract<ClientToScheduler, { op: Op }>) => unknown } = {
  // With `echo: false` the wanted keys are not sent back (the client has them): a million keys
  // are 200 ms of encoding in one piece.
  graph: async (ops, client, msg) => {
    const { keys } = await ops.submitGraph(client, msg.graph);
    return msg.echo === false ? { count: keys.length } : { keys };
  },
  gather: (ops, _client, msg) => msg.list === true ? ops.gatherList(msg.keys) : ops.gather(msg.keys),
  release: (ops, client, msg) => ops.release(client, msg.keys),
  event: (ops, _client, msg) => ops.logEvent(String(msg.topic), msg.msg),
  "register-plugin": (ops, _client, msg) => ops.registerPlugin(msg.spec),
  "unregister-plugin": (ops, _client, msg) => ops.unregisterPlugin(msg.role, msg.name),
  info: (ops) => ({ info: ops.info() }),
};

/** The scope each op needs; the rest need `submit`, which every client link has. */

/** The WebSocket handlers of one client connection, authenticated with `scope`. */
export function clientSocket(ctx: ClientLinkContext, scope: Scope) {
  const id = `client-${crypto.randomUUID()}`;
  let client: ClientState | null = null;
  // Hooks and requests of this client, in order.
  let chain: Promise<unknown> = Promise.resolve();
  const frames = new FrameAssembler({ maxBytes: ctx.maxMessageBytes, takeAbove: slicedFrameBytes });
  const send = (ws: WSContext, msg: SchedulerToClient) => {
    try {
      sendFrame(ws, [msg], runtime.bufferedAmount, (m: SchedulerToClient, reason: string) =>
        m.op === "reply" ? { op: "reply", id: m.id, error: `Cannot send the reply: ${reason}`, status: 500 } : null);
    } catch {
      // the client left
    }
  };
  /** Checks a message's fields; a bad one is answered with 400 (when it has an id) and dropped. */
  const accepted = (ws: WSContext, msg: ClientToScheduler): boolean => {
    const invalid = checkMessage("client", msg);
    if (invalid === null) return true;
    const id = (msg as { id?: unknown }).id;
    if (typeof id === "number") send(ws, { op: "reply", id, status: 400, error: invalid });
    return false;
  };
  const run = async (ws: WSContext, msg: ClientToScheduler) => {
    try {
      const handler = handlers[msg.op] as Handler | undefined;
      if (!handler) throw new BadRequestError(`Unknown op "${(msg as { op: string }).op}"`);
      // The same rules as the HTTP routes (auth.ts): plugins need admin, the rest submit.
      const need = scopeForOp(msg.op);
      if (!allows(scope, need)) throw new ForbiddenError(scopeMessage(need, scope));
      const payload = await handler(ctx.operations, client!, msg as never);
      if (msg.id !== undefined) send(ws, { ...(payload as Record<string, unknown>), op: "reply", id: msg.id });
    } catch (err) {
      if (msg.id !== undefined) send(ws, { op: "reply", id: msg.id, error: errorMessage(err), status: httpStatus(err) });
    }
  };
  /** The messages of a frame decoded at once, each in its turn. */
  const handle = (ws: WSContext, messages: ClientToScheduler[]) => {
    // A gather sent right after its graph finds the graph applied, but a gather's long wait
    // does not hold up what follows it.
    for (const msg of messages) {
      if (!accepted(ws, msg)) continue;
      chain = chain.then(() => {
        const running = run(ws, msg);
        return msg.op === "gather" ? undefined : running;
      });
    }
  };
  return {
    onOpen: (_e: Event, ws: WSContext) => {
      client = ctx.state.addClient(id);
      ctx.events.append("client", { action: "add", client: id });
      if (ctx.plugins.has("addClient")) chain = chain.then(() => ctx.plugins.callAsync("addClient", ctx.api, id));
      send(ws, { op: "welcome", client: id, version });
    },
    onMessage: (event: MessageEvent, ws: WSContext) => {
      let data = event.data;
      if (!((data instanceof Uint8Array || data instanceof ArrayBuffer) && data.byteLength >= slicedFrameBytes && data.byteLength <= maxFrameBytes)) {
        let received: Message[] | Uint8Array;
        try {
          received = frames.receive(data);
        } catch (err) {
          ws.close(1007, errorMessage(err).slice(0, 120));
          return;
        }
        if (!(received instanceof Uint8Array)) return handle(ws, received as unknown as ClientToScheduler[]);
        data = received; // a big frame sent in chunks, now whole
      }
      // A big frame (a graph of a million tasks): decoded in slices, in its place in the order.
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      chain = chain.then(async () => {
        let messages: ClientToScheduler[];
        try {
          messages = frameMessages(await decodeCborSliced(bytes)) as ClientToScheduler[];
        } catch (err) {
          ws.close(1007, errorMessage(err).slice(0, 120));
          return;
        }
        for (const msg of messages) {
          if (!accepted(ws, msg)) continue;
          const running = run(ws, msg);
          if (msg.op !== "gather") await running;
        }
      });
    },
    onClose: () => {
      chain = chain.then(async () => {
        await ctx.operations.removeClient(id);
        ctx.events.append("client", { action: "remove", client: id });
        if (ctx.plugins.has("removeClient")) await ctx.plugins.callAsync("removeClient", ctx.api, id);
      });
    },
  };
}

/** Frames from clients of this many bytes or more are decoded in slices (see cbor-slices.ts). */
// Above a chunk's size (lib/frames.ts): chunks go to the assembler, whole frames this big here.
const slicedFrameBytes = 2 * chunkBytes;

/** A decoded frame's messages, checked as `decodeFrame` checks them. */
function frameMessages(value: unknown): unknown[] {
  const messages = Array.isArray(value) ? value : [value];
  for (const msg of messages) {
    if (msg === null || typeof msg !== "object" || typeof (msg as { op?: unknown }).op !== "string") {
      throw new TypeError("Expected messages of the form {op: string, ...}");
    }
  }
  return messages;
}
