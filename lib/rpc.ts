/**
 * One request/response helper for every link (scheduler↔worker, scheduler↔nanny, client↔scheduler,
 * the amqp thread): it numbers requests, times them out, and rejects whatever is still pending
 * when the link closes. Every answer on the wire is one op, `reply {id, error?, status?, ...}`.
 *
 * @module
 */

/** The one answer op of every link. `error` set means the request failed. */
export interface ReplyMessage {
  op: "reply";
  id: number;
  error?: string;
  /** An HTTP-like status for errors that callers map (400, 403, 404, 409, 422, 500). */
  status?: number;
  [field: string]: unknown;
}

/** A request that failed on the other side, timed out or lost its link. */
export class RequestError extends Error {
  override name = "RequestError";
  readonly code: string;
  readonly status: number | undefined;
  constructor(message: string, options: { code?: string; status?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = options.code ?? "E_REQUEST";
    this.status = options.status;
  }
}

interface Pending {
  resolve(reply: ReplyMessage): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** Options of {@linkcode Requests}. */
export interface RequestsOptions {
  /** What the other side is, for error messages (`worker "w1"`). */
  peer: string;
  /** A request without an answer this long is rejected. `0` waits forever. @default 30000 */
  timeoutMs?: number;
}

/**
 * Pending requests of one link.
 *
 * @example
 * ```ts
 * const requests = new Requests({ peer: 'nanny "n1"', timeoutMs: 10_000 });
 * const reply = await requests.send((id) => socket.send(encodeFrame([{ op: "restart-worker", id }])));
 * // on every incoming {op: "reply"}:
 * requests.settle(msg);
 * // when the socket closes:
 * requests.rejectAll("connection closed");
 * ```
 */
export class Requests {
  #next = 0;
  #pending = new Map<number, Pending>();
  #peer: string;
  #timeoutMs: number;
  #closed: string | null = null;

  constructor(options: RequestsOptions) {
    this.#peer = options.peer;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** How many requests wait for an answer. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Sends a request through `send(id)` and resolves with its reply; rejects with a
   * {@linkcode RequestError} on an error reply, a time-out, or the link closing.
   */
  send(send: (id: number) => void, options: { timeoutMs?: number } = {}): Promise<ReplyMessage> {
    if (this.#closed !== null) {
      return Promise.reject(new RequestError(`Cannot reach ${this.#peer}: ${this.#closed}`, { code: "E_CLOSED" }));
    }
    const id = ++this.#next;
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    return new Promise<ReplyMessage>((resolve, reject) => {
      const timer = timeoutMs > 0
        ? setTimeout(() => {
          this.#pending.delete(id);
          reject(new RequestError(`No answer from ${this.#peer} within ${timeoutMs / 1000} s`, { code: "E_TIMEOUT" }));
        }, timeoutMs)
        : undefined;
      this.#pending.set(id, { resolve, reject, timer });
      try {
        send(id);
      } catch (err) {
        this.#pending.delete(id);
        if (timer) clearTimeout(timer);
        reject(new RequestError(`Cannot send to ${this.#peer}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      }
    });
  }

  /** Settles the request a reply answers; false when no request has that id (late or unknown). */
  settle(reply: ReplyMessage): boolean {
    const pending = this.#pending.get(reply.id);
    if (!pending) return false;
    this.#pending.delete(reply.id);
    if (pending.timer) clearTimeout(pending.timer);
    if (reply.error !== undefined) {
      pending.reject(new RequestError(reply.error, { code: "E_REMOTE", status: reply.status }));
    } else {
      pending.resolve(reply);
    }
    return true;
  }

  /** Rejects every pending request (the link closed); later `send`s reject at once. */
  rejectAll(reason: string, options: { final?: boolean } = {}): void {
    if (options.final) this.#closed = reason;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(new RequestError(`Lost ${this.#peer}: ${reason}`, { code: "E_CLOSED" }));
    }
  }
}
