/**
 * A registered connection to the scheduler, as workers and nannies hold one: open the WebSocket,
 * authenticate both ways (lib/auth/handshake.ts: nothing the scheduler sends is obeyed before it
 * proved it knows the token), send `register`, let the owner handle `welcome`, and when an
 * established connection is lost, reconnect with backoff until closed, or until the death
 * timeout (Dask's `--death-timeout`) passes. While it waits for the scheduler it says so at once
 * and then every few seconds, with the reason worded by connect-error.ts.
 *
 * @module
 */
import { closeCodeFailure, ConnectError, diagnose } from "./connect-error.ts";
import { errorMessage } from "./errors.ts";
import type { ComponentLogger } from "./log.ts";
import { encodeFrame, type Message, socketUrl } from "./protocol.ts";
import { FrameAssembler, type FrameSender, socketSender } from "./frames.ts";
import { authenticate, HandshakeError, type PeerAuth, peerToken } from "./auth/handshake.ts";
import { clientWebSocket } from "./runtime/client.ts";

/** How often a session that waits for its scheduler says so. */
const waitLogEveryMs = 3_000;
/** How long one attempt may take to get a welcome before it counts as timed out. */
const attemptTimeoutMs = 10_000;

/** A connection attempt that closed before the welcome. */
class ClosedBeforeWelcome extends Error {
  constructor(readonly code: number, reason: string) {
    super(reason || `connection closed (code ${code})`);
  }
}

/** What a session needs from its owner. */
export interface SessionOptions {
  /** The scheduler's URL (`http://host:port`). */
  scheduler: string;
  /** The protocol's path, e.g. `/api/v1/worker`. */
  path: string;
  /** Who connects (the role its proof is bound to). */
  role: "worker" | "nanny";
  /** The register message, made anew for every (re)connection. */
  register(): Message;
  /** Handles `welcome` (with what the handshake gave); the connection counts as established once it resolves. */
  welcome(msg: Message, auth: PeerAuth): Promise<void>;
  /** Handles every other message. */
  message(msg: Message): void;
  /** An established connection was lost; a reconnection follows. */
  lost?(reason: string): void;
  /** Reconnection gave up after `deathTimeoutMs`; the session is closed. */
  gaveUp?(reason: string): void;
  /** How long to keep reconnecting to a lost scheduler; 0 or absent: for ever. */
  deathTimeoutMs?: number;
  log: ComponentLogger;
  /** The cluster token. @default peerToken("worker") */
  token?: string;
}

/**
 * A connection to the scheduler that registers and reconnects.
 *
 * @example
 * ```ts
 * const session = new SchedulerSession({ scheduler, path: "/api/v1/nanny", register, welcome, message, log });
 * await session.connect(10_000);
 * session.send([{ op: "event", topic: "log", msg: {} }]);
 * ```
 */
export class SchedulerSession {
  #options: SessionOptions;
  #socket: WebSocket | null = null;
  /** Sends the frames of the open socket, large ones split (lib/frames.ts). */
  #sender: FrameSender | null = null;
  #closed = false;
  #openWaiters: Array<() => void> = [];

  constructor(options: SessionOptions) {
    this.#options = options;
  }

  /** Whether messages can be sent now. */
  get isOpen(): boolean {
    return this.#socket?.readyState === WebSocket.OPEN;
  }

  /**
   * Connects and registers, retrying with backoff; throws a {@linkcode ConnectError} after
   * `timeoutMs`, or at once when the token is refused (waiting would not change that).
   */
  async connect(timeoutMs: number): Promise<void> {
    const started = Date.now();
    const deadline = started + timeoutMs;
    let delay = 100;
    let lastLog = 0;
    let last: ConnectError | null = null;
    while (!this.#closed) {
      try {
        await this.#open(Math.min(attemptTimeoutMs, Math.max(1000, deadline - Date.now())));
        return;
      } catch (err) {
        last = await this.#explain(err);
        // Neither a refused token nor a certificate that does not verify passes on a retry.
        if (last.kind === "unauthorized" || last.kind === "tls") throw last;
        const now = Date.now();
        if (now + delay > deadline) break;
        if (lastLog === 0) {
          this.#options.log.warn(`${last.message}; waiting for it (up to ${Math.round(timeoutMs / 1000)} s)`);
          lastLog = now;
        } else if (now - lastLog >= waitLogEveryMs) {
          this.#options.log.warn(`Still waiting for the scheduler (${Math.round((now - started) / 1000)} s): ${last.message}`);
          lastLog = now;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
    throw last ?? new ConnectError(this.#options.scheduler, "unreachable", "closed while connecting");
  }

  /** Words why an attempt failed (asks the scheduler over HTTP when the socket does not say). */
  async #explain(err: unknown): Promise<ConnectError> {
    const url = this.#options.scheduler;
    if (err instanceof ConnectError) return err;
    // We refused the scheduler (its proof was wrong, or missing): a squatter on its address, so
    // waiting may help; a scheduler that wants a token we do not have will not change.
    if (err instanceof HandshakeError) return new ConnectError(url, err.message.startsWith("The scheduler needs a token") ? "unauthorized" : "unreachable", err.message);
    if (err instanceof ClosedBeforeWelcome) {
      const failure = closeCodeFailure(err.code);
      if (failure) return new ConnectError(url, failure);
      // The scheduler said why (a name in use, another version): that is the reason.
      if (err.code !== 1006 && err.code !== 0 && err.message && !err.message.startsWith("connection closed")) {
        return new ConnectError(url, "unreachable", err.message);
      }
    }
    return await diagnose(url, { token: this.#token, fallback: errorMessage(err) });
  }

  /** Resolves once the session is registered (at once if it is); never if closed first. */
  whenOpen(): Promise<void> {
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve) => this.#openWaiters.push(resolve));
  }

  /**
   * Sends messages (one frame, or several past the frame limit); false when the connection is
   * not open. A reply that cannot go (a result too large for a frame) goes as an error reply.
   */
  send(messages: Message[]): boolean {
    if (!this.isOpen) return false;
    this.#sender!.send(messages, (msg: Message, reason: string) => {
      this.#options.log.warn(`Cannot send "${msg.op}" to the scheduler: ${reason}`);
      return msg.op === "reply" ? { op: "reply", id: msg.id, error: `Cannot send the reply: ${reason}` } : null;
    });
    return true;
  }

  /** Closes for good: no reconnection. */
  close(reason: string): void {
    this.#closed = true;
    try {
      this.#socket?.close(1000, reason);
    } catch {
      // already closed
    }
  }

  get #token(): string | undefined {
    return this.#options.token ?? peerToken("worker");
  }

  #open(timeoutMs = attemptTimeoutMs): Promise<void> {
    const options = this.#options;
    return new Promise((resolveOpen, rejectOpen) => {
      const socket = clientWebSocket(socketUrl(options.scheduler, options.path).href);
      socket.binaryType = "arraybuffer";
      const frames = new FrameAssembler();
      const sender = socketSender(socket);
      let settled = false;
      let welcomed = false;
      // No welcome in time (a silent address, a stuck scheduler): this attempt timed out.
      const timer = setTimeout(() => {
        if (welcomed || settled) return;
        settled = true;
        rejectOpen(new ConnectError(options.scheduler, "timeout", `no answer within ${Math.round(timeoutMs / 1000)} s`));
        try {
          socket.close();
        } catch {
          // not open yet
        }
      }, timeoutMs);
      let auth: PeerAuth | null = null;
      let established = false;
      const onMessage = (event: MessageEvent) => {
        let messages: Message[];
        try {
          messages = frames.decode(event.data);
        } catch (err) {
          options.log.error(`Malformed frame from the scheduler: ${errorMessage(err)}`);
          return;
        }
        for (const msg of messages) {
          if (msg.op === "welcome" && !welcomed) {
            welcomed = true;
            // A scheduler that reads records (protocol.ts) gets them from here on.
            if (msg.records === true) sender.useRecords();
            clearTimeout(timer);
            options.welcome(msg, auth!).then(() => {
              settled = true;
              established = true;
              resolveOpen();
              for (const resolve of this.#openWaiters.splice(0)) resolve();
            }, (err) => {
              settled = true;
              rejectOpen(err);
            });
          } else if (welcomed) options.message(msg);
          else options.log.warn(`Ignored "${msg.op}" from the scheduler before its welcome`);
        }
      };
      // Nothing is sent, registered or obeyed before the scheduler proved it knows the token.
      authenticate(socket, { role: options.role, token: this.#token, onMessage }).then((result) => {
        auth = result;
        if (settled) return;
        this.#socket = socket;
        this.#sender = sender;
        socket.send(encodeFrame([options.register()]));
      }, (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        rejectOpen(err);
      });
      socket.onerror = () => {};
      socket.onclose = (event) => {
        clearTimeout(timer);
        sender.clear();
        if (this.#socket === socket) this.#socket = null;
        if (!settled) {
          settled = true;
          rejectOpen(new ClosedBeforeWelcome(event.code, event.reason));
        } else if (established && !this.#closed) {
          // Only an established connection reconnects here: a failed attempt is retried by its caller.
          const reason = event.reason || `code ${event.code}`;
          options.log.warn(`Lost the scheduler (${reason}); reconnecting`);
          options.lost?.(reason);
          this.#reconnect();
        }
      };
    });
  }

  async #reconnect(): Promise<void> {
    const started = Date.now();
    const deathTimeoutMs = this.#options.deathTimeoutMs ?? 0;
    let delay = 200;
    let lastLog = 0;
    let why = "";
    while (!this.#closed) {
      if (deathTimeoutMs > 0 && Date.now() - started >= deathTimeoutMs) {
        const reason = `Gave up on the scheduler at ${this.#options.scheduler}: not back within ${Math.round(deathTimeoutMs / 1000)} s (--death-timeout)${why ? `; last: ${why}` : ""}`;
        this.#options.log.error(reason);
        this.#closed = true;
        this.#options.gaveUp?.(reason);
        return;
      }
      await sleep(deathTimeoutMs > 0 ? Math.max(0, Math.min(delay, started + deathTimeoutMs - Date.now())) : delay);
      try {
        await this.#open();
        this.#options.log.info(`Reconnected to the scheduler at ${this.#options.scheduler}`);
        return;
      } catch (err) {
        const now = Date.now();
        if (now - lastLog >= waitLogEveryMs * 3 || err instanceof HandshakeError) {
          why = (await this.#explain(err)).message;
          this.#options.log.warn(`Still waiting for the scheduler (${Math.round((now - started) / 1000)} s): ${why}`);
          lastLog = now;
        }
        delay = Math.min(delay * 2, 5000);
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
