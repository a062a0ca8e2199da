/**
 * A registered connection to the scheduler, as workers and nannies hold one: open the WebSocket,
 * send `register`, let the owner handle `welcome`, and when an established connection is lost,
 * reconnect with backoff until closed.
 *
 * @module
 */
import { errorMessage } from "./errors.ts";
import type { ComponentLogger } from "./log.ts";
import { decodeFrame, encodeFrame, type Message, socketUrl } from "./protocol.ts";
import { clientWebSocket, describeConnectError, isCertificateError } from "./runtime/client.ts";

/** What a session needs from its owner. */
export interface SessionOptions {
  /** The scheduler's URL (`http://host:port`). */
  scheduler: string;
  /** The protocol's path, e.g. `/api/v1/worker`. */
  path: string;
  /** The register message, made anew for every (re)connection. */
  register(): Message;
  /** Handles `welcome`; the connection counts as established once it resolves. */
  welcome(msg: Message): Promise<void>;
  /** Handles every other message. */
  message(msg: Message): void;
  /** An established connection was lost; a reconnection follows. */
  lost?(reason: string): void;
  log: ComponentLogger;
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
  #closed = false;

  constructor(options: SessionOptions) {
    this.#options = options;
  }

  /** Whether messages can be sent now. */
  get isOpen(): boolean {
    return this.#socket?.readyState === WebSocket.OPEN;
  }

  /** Connects and registers, retrying with backoff; throws after `timeoutMs`. */
  async connect(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 100;
    let lastError = "";
    while (!this.#closed) {
      try {
        await this.#open();
        return;
      } catch (err) {
        lastError = errorMessage(err);
        // A certificate that does not verify will not verify on a retry either.
        if (Date.now() + delay > deadline || isCertificateError(lastError)) break;
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
    throw new Error(`Cannot reach scheduler at "${this.#options.scheduler}": ${describeConnectError(lastError)}`);
  }

  /** Sends one frame; false when the connection is not open. */
  send(messages: Message[]): boolean {
    if (!this.isOpen) return false;
    this.#socket!.send(encodeFrame(messages));
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

  #open(): Promise<void> {
    const options = this.#options;
    return new Promise((resolveOpen, rejectOpen) => {
      const socket = clientWebSocket(socketUrl(options.scheduler, options.path).href);
      socket.binaryType = "arraybuffer";
      let settled = false;
      let welcomed = false;
      socket.onopen = () => {
        this.#socket = socket;
        socket.send(encodeFrame([options.register()]));
      };
      socket.onmessage = (event) => {
        let messages: Message[];
        try {
          messages = decodeFrame(event.data);
        } catch (err) {
          options.log.error(`Malformed frame from the scheduler: ${errorMessage(err)}`);
          return;
        }
        for (const msg of messages) {
          if (msg.op === "welcome" && !welcomed) {
            welcomed = true;
            options.welcome(msg).then(() => {
              settled = true;
              resolveOpen();
            }, (err) => {
              settled = true;
              rejectOpen(err);
            });
          } else options.message(msg);
        }
      };
      let failure = "";
      socket.onerror = (event) => (failure = (event as ErrorEvent).message ?? "");
      socket.onclose = (event) => {
        if (this.#socket === socket) this.#socket = null;
        if (!settled) {
          settled = true;
          rejectOpen(new Error(event.reason || failure || `connection closed (code ${event.code})`));
        } else if (!this.#closed) {
          const reason = event.reason || `code ${event.code}`;
          options.log.warn(`Lost the scheduler (${reason}); reconnecting`);
          options.lost?.(reason);
          this.#reconnect();
        }
      };
    });
  }

  async #reconnect(): Promise<void> {
    let delay = 200;
    while (!this.#closed) {
      await sleep(delay);
      try {
        await this.#open();
        return;
      } catch (err) {
        this.#options.log.debug(`Reconnect failed: ${errorMessage(err)}`);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
