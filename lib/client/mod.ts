/**
 * The TypeScript client: submit tasks and graphs, gather results, register plugins, log and
 * follow events. It speaks CBOR over one WebSocket (`/api/v1/client`); tasks submitted in the
 * same tick travel as one graph.
 *
 * @example
 * ```ts
 * import { Client } from "./lib/client/mod.ts";
 * const client = await Client.connect("http://127.0.0.1:8786");
 * const [a, b] = client.map("builtin.inc", [1, 2]);
 * console.log(await client.gather([a, b])); // [2, 3]
 * await client.close();
 * ```
 *
 * @module
 */
import { closeCodeFailure, ConnectError, diagnose } from "../connect-error.ts";
import type { ClientToScheduler, SchedulerToClient } from "../messages/client.ts";
import { socketUrl } from "../protocol.ts";
import { decodeEventBatch } from "./event-batch.ts";
import { FrameAssembler, type FrameSender, socketSender } from "../frames.ts";
import { authenticate, HandshakeError, peerToken } from "../auth/handshake.ts";
import { preparePluginFiles } from "../plugins/prepare.ts";
import { clientWebSocket } from "../runtime/client.ts";
import { type ReplyMessage, RequestError, Requests } from "../rpc.ts";

/** A task's result, to be had later. Pass it as an argument to make a dependency. */
export class Future {
  constructor(readonly key: string, readonly client: Client) {}
  /** Waits for the result; throws the task's error. */
  async result(): Promise<unknown> {
    const [value] = await this.client.gather([this]);
    return value;
  }
  /** The client no longer needs this result. */
  release(): Promise<void> {
    return this.client.release([this.key]);
  }
  toJSON(): { $ref: string } {
    return { $ref: this.key };
  }
}

/** A task that failed on the cluster. */
export class TaskError extends Error {
  override name = "TaskError";
  constructor(readonly key: string, message: string, readonly traceback: string) {
    super(message);
  }
}

/** One task of a graph, as in SPEC section 2. */
export interface GraphTask {
  key: string;
  fn: string;
  args?: unknown[];
  retries?: number;
  annotations?: Record<string, unknown>;
}

/** A plugin registration: one plugins.toml entry plus its role. */
export interface PluginRegistration {
  role: "scheduler" | "worker" | "nanny";
  use: string;
  name?: string;
  [option: string]: unknown;
}

/** What the scheduler sends, plus the ops an older scheduler answers with. */
type FromScheduler = SchedulerToClient;

/** A request without its id (the helper numbers it). */
type Request = ClientToScheduler extends infer M ? M extends { op: string } ? Omit<M, "id"> : never : never;

function toArg(value: unknown): unknown {
  if (value instanceof Future) return { $ref: value.key };
  if (Array.isArray(value)) return value.map(toArg);
  if (value !== null && typeof value === "object" && value.constructor === Object) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = toArg(v);
    return out;
  }
  return value;
}

/** A connection to a scheduler. */
export class Client {
  readonly url: string;
  id = "";
  #socket: WebSocket;
  /** Frames of any size, large ones split (lib/frames.ts). */
  #sender: FrameSender;
  #token?: string;
  /** Requests wait as long as it takes (a gather may): the link closing rejects them. */
  #requests: Requests;
  #batch: GraphTask[] = [];
  #batchKeys: string[] = [];
  #closed = false;
  #subscriptions = new Set<WebSocket>();
  /** The CA trusted for `wss:` (`ca` of `connect`; else the process's `--tls-ca`). */
  #ca?: string;

  private constructor(url: string, socket: WebSocket, token?: string) {
    this.url = url;
    this.#socket = socket;
    this.#sender = socketSender(socket);
    this.#token = token;
    this.#requests = new Requests({ peer: `the scheduler at ${url}`, timeoutMs: 0 });
  }

  /**
   * Connects to a scheduler (`http://host:port`). Fails with a {@linkcode ConnectError} that says
   * why: connection refused, the token was refused, timed out, or a TLS failure.
   */
  static connect(url: string, options: { token?: string; timeoutMs?: number; ca?: string } = {}): Promise<Client> {
    const token = options.token ?? peerToken("client");
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      let socket: WebSocket;
      try {
        socket = clientWebSocket(socketUrl(url, "/api/v1/client").href, { ca: options.ca });
      } catch (err) {
        reject(new ConnectError(url, "unreachable", (err as Error).message));
        return;
      }
      socket.binaryType = "arraybuffer";
      const client = new Client(url, socket, token);
      client.#ca = options.ca;
      let welcomed = false;
      const frames = new FrameAssembler();
      const timer = setTimeout(() => {
        welcomed = true; // the close that follows is not a failure to explain
        socket.close();
        reject(new ConnectError(url, "timeout", `no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      // The token never travels: both sides prove they hold it before anything else.
      authenticate(socket, {
        role: "client",
        token,
        onMessage: (event) => {
          for (const msg of frames.decode(event.data) as unknown as FromScheduler[]) {
            if (msg.op === "welcome" && !welcomed) {
              welcomed = true;
              client.id = String(msg.client);
              clearTimeout(timer);
              resolve(client);
              continue;
            }
            client.#onMessage(msg);
          }
        },
      }).catch((err: HandshakeError) => {
        if (welcomed) return;
        welcomed = true;
        clearTimeout(timer);
        reject(new ConnectError(url, err.message.startsWith("The scheduler needs a token") ? "unauthorized" : "unreachable", err.message));
      });
      socket.onclose = (event) => {
        clearTimeout(timer);
        if (!welcomed) {
          welcomed = true;
          const failure = closeCodeFailure(event.code);
          if (failure) reject(new ConnectError(url, failure));
          else if (event.reason) reject(new ConnectError(url, "unreachable", event.reason));
          else diagnose(url, { token, fallback: `connection closed (code ${event.code})` }).then(reject);
          return;
        }
        client.#closed = true;
        client.#sender.clear();
        client.#requests.rejectAll(`connection closed: ${event.reason || `code ${event.code}`}`, { final: true });
      };
    });
  }

  #onMessage(msg: FromScheduler): void {
    switch (msg.op) {
      case "reply":
        this.#requests.settle({ ...msg, op: "reply" } as ReplyMessage);
        break;
    }
  }

  #request(msg: Request): Promise<ReplyMessage> {
    if (this.#closed) return Promise.reject(new RequestError("The client is closed", { code: "E_CLOSED" }));
    return this.#requests.send((id) => this.#sender.send([{ ...msg, id }]));
  }

  /** Submits one task; tasks submitted in the same tick go as one graph. */
  submit(fn: string, ...args: unknown[]): Future {
    const key = `${fn.split(".").pop()}-${crypto.randomUUID()}`;
    this.#queue({ key, fn, args: args.map(toArg) });
    return new Future(key, this);
  }

  /** Submits `fn(item)` for every item. */
  map(fn: string, items: Iterable<unknown>): Future[] {
    const prefix = `${fn.split(".").pop()}-${crypto.randomUUID().slice(0, 8)}`;
    const futures: Future[] = [];
    let i = 0;
    for (const item of items) {
      const key = `${prefix}-${i++}`;
      this.#queue({ key, fn, args: [toArg(item)] });
      futures.push(new Future(key, this));
    }
    return futures;
  }

  #queue(task: GraphTask): void {
    this.#batch.push(task);
    this.#batchKeys.push(task.key);
    if (this.#batch.length === 1) queueMicrotask(() => this.#sendBatch());
  }

  #sendBatch(): void {
    // A flush or result() sent the batch already: the queued microtask has nothing to send.
    if (this.#batch.length === 0) return;
    const tasks = this.#batch;
    const keys = this.#batchKeys;
    this.#batch = [];
    this.#batchKeys = [];
    const sent = this.#request({ op: "graph", graph: { tasks, keys }, echo: false });
    // A rejected batch surfaces at the next flush/gather, not as an unhandled rejection.
    sent.catch(() => {});
    this.#lastBatch = sent;
  }

  #lastBatch: Promise<ReplyMessage> | null = null;

  /** Waits until what was submitted so far has been accepted (throws a rejected graph's error). */
  async flush(): Promise<void> {
    if (this.#batch.length > 0) this.#sendBatch();
    await this.#settleBatch(this.#lastBatch);
  }

  /** Waits for a submitted batch; its rejection is thrown once, to the first who waits. */
  async #settleBatch(batch: Promise<ReplyMessage> | null): Promise<void> {
    if (!batch) return;
    try {
      await batch;
    } finally {
      if (this.#lastBatch === batch) this.#lastBatch = null;
    }
  }

  /**
   * Submits a whole graph (SPEC section 2) and returns a future per wanted key.
   * Throws when the scheduler rejects it (with the message naming the key).
   */
  async compute(graph: { tasks: GraphTask[]; keys?: string[] }): Promise<Record<string, Future>> {
    const reply = await this.#request({ op: "graph", graph, echo: false });
    // The wanted keys: the graph's own, or every task's (as the scheduler takes them). A
    // scheduler from before `echo` sends them back.
    const keys = Array.isArray(reply.keys) ? reply.keys as string[] : graph.keys ?? graph.tasks.map((t) => t.key);
    const out: Record<string, Future> = {};
    for (const key of keys) out[key] = new Future(key, this);
    return out;
  }

  /** Waits for results; throws a `TaskError` for the first erred task unless `errors: "skip"`. */
  async gather(futures: Array<Future | string>, options: { errors?: "raise" | "skip" } = {}): Promise<unknown[]> {
    await this.flush();
    const keys = futures.map((f) => (typeof f === "string" ? f : f.key));
    const { values, errors, missing } = await this.#gather(keys);
    const lost = missing.length > 0 ? new Set(missing) : null;
    const out: unknown[] = [];
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      if (Object.hasOwn(errors, key)) {
        if (options.errors !== "skip") throw new TaskError(key, errors[key].error, errors[key].traceback);
        out.push(undefined);
      } else if (lost?.has(key)) {
        if (options.errors !== "skip") throw new TaskError(key, `Key "${key}" was lost or released`, "");
        out.push(undefined);
      } else out.push(values[i]);
    }
    return out;
  }

  /** Waits for results and returns values and errors by key, without throwing for erred tasks. */
  async results(keys: string[]): Promise<{ values: Record<string, unknown>; errors: Record<string, { error: string; traceback: string }> }> {
    const { values: list, errors, missing } = await this.#gather(keys);
    const lost = missing.length > 0 ? new Set(missing) : null;
    const values: Record<string, unknown> = {};
    for (let i = 0; i < keys.length; i++) if (!Object.hasOwn(errors, keys[i]) && !lost?.has(keys[i])) values[keys[i]] = list[i];
    return { values, errors };
  }

  /**
   * The scheduler's answer to a gather: the values in the keys' order (a list is 25 times
   * cheaper to make, send and read than an object of the keys), the errors by key and the keys
   * that are gone. Each key is in exactly one of them.
   */
  async #gather(keys: string[]): Promise<{ values: unknown[]; errors: Record<string, { error: string; traceback: string }>; missing: string[] }> {
    // The gather goes right behind the pending graph (the scheduler starts them in order), so
    // a submit → result round trip costs one exchange; a rejected graph still throws here.
    if (this.#batch.length > 0) this.#sendBatch();
    const graphAccepted = this.#lastBatch;
    const gathered = this.#request({ op: "gather", keys, list: true });
    gathered.catch(() => {});
    await this.#settleBatch(graphAccepted);
    const reply = await gathered;
    const errors = (reply.errors ?? {}) as Record<string, { error: string; traceback: string }>;
    const missing = (reply.missing ?? []) as string[];
    if (Array.isArray(reply.values)) return { values: reply.values, errors, missing };
    // A scheduler that answers with an object of the keys (before lists).
    const byKey = (reply.values ?? {}) as Record<string, unknown>;
    const gone = keys.filter((key) => !Object.hasOwn(byKey, key) && !Object.hasOwn(errors, key) && !missing.includes(key));
    return { values: keys.map((key) => byKey[key]), errors, missing: [...missing, ...gone] };
  }

  /** The client no longer wants these keys. */
  async release(keys: Array<Future | string>): Promise<void> {
    await this.flush();
    await this.#request({ op: "release", keys: keys.map((k) => (typeof k === "string" ? k : k.key)) });
  }

  /**
   * Registers a plugin on the cluster. A module plugin (`use` a path) is read here and sent as
   * source; files of `upload-file`/`upload-directory` are read here too.
   */
  async registerPlugin(spec: PluginRegistration): Promise<{ name: string; warnings: string[] }> {
    const prepared = await preparePluginFiles(spec, process.cwd());
    const reply = await this.#request({ op: "register-plugin", spec: prepared });
    return { name: reply.name as string, warnings: (reply.warnings as string[]) ?? [] };
  }

  /** Unregisters a plugin (its teardown/close run). */
  async unregisterPlugin(role: "scheduler" | "worker" | "nanny", name: string): Promise<void> {
    await this.#request({ op: "unregister-plugin", role, name });
  }

  /** Logs an event to a topic (Dask's `log_event`). */
  async logEvent(topic: string, msg: Record<string, unknown>): Promise<void> {
    await this.#request({ op: "event", topic, msg });
  }

  /** What `/api/v1/info` shows. */
  async info(): Promise<Record<string, unknown>> {
    return (await this.#request({ op: "info" })).info as Record<string, unknown>;
  }

  /**
   * Calls `handler` for every event of a topic; returns a function that stops it.
   * Pass `since` to replay kept events first.
   */
  subscribe(topic: string, handler: (event: Record<string, unknown>) => void, options: { since?: number } = {}): () => void {
    const url = socketUrl(this.url, "/api/v1/events");
    url.searchParams.set("topic", topic);
    url.searchParams.set("format", "cbor");
    url.searchParams.set("batch", "1");
    if (options.since !== undefined) url.searchParams.set("since", String(options.since));
    const socket = clientWebSocket(url.href, { ca: this.#ca });
    socket.binaryType = "arraybuffer";
    authenticate(socket, {
      role: "events",
      token: this.#token,
      onMessage: (event) => {
        // Transition batches are read in the scheduler's own layout, the rest by cbor-x.
        const batch = decodeEventBatch(new Uint8Array(event.data as ArrayBuffer)) as Record<string, unknown>[];
        for (const e of batch) handler(e);
      },
    }).catch(() => {
      // The socket is closed with the reason; the subscription delivers nothing.
    });
    this.#subscriptions.add(socket);
    return () => {
      this.#subscriptions.delete(socket);
      socket.close();
    };
  }

  /** Closes the connection; the scheduler releases what this client wanted. */
  async close(): Promise<void> {
    if (this.#batch.length > 0) this.#sendBatch();
    for (const s of this.#subscriptions) s.close();
    this.#subscriptions.clear();
    if (this.#closed) return;
    this.#closed = true;
    await new Promise<void>((resolve) => {
      // The close handshake is usually quick; a silent scheduler gets a second, and the timer
      // is cleared so it keeps no process alive.
      const timer = setTimeout(resolve, 1000);
      this.#socket.addEventListener("close", () => {
        clearTimeout(timer);
        resolve();
      });
      this.#socket.close(1000, "client closing");
    });
  }
}
