/**
 * The mutual challenge–response that opens every WebSocket link (worker, nanny, client, event
 * stream). The token never travels: the scheduler sends `challenge {nonce}`, the peer answers
 * `auth {nonce, proof}` with an HMAC over both nonces and its role, and the scheduler answers
 * `auth-ok {proof, scope}` with an HMAC over the nonces the other way round. Each proof is bound
 * to nonces from both sides, so one seen by a fake scheduler cannot be replayed to the real
 * one, and a peer that holds a token obeys nothing before the scheduler proved it holds it too.
 *
 * Both sides derive a session key from the token and the nonces, with which the scheduler seals
 * the cluster's peer-data key for a worker (see peer-data.ts).
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { HandshakeMessage } from "../messages/handshake.ts";
import { decodeFrame, encodeFrame } from "../protocol.ts";
import { type Scope, type TokenSet, tokensFor } from "./tokens.ts";

/** The close code of a failed handshake (lib/connect-error.ts words it "the token was refused"). */
export const authCloseCode = 4401;

/** How long a socket may take to authenticate before the scheduler closes it. */
export const handshakeTimeoutMs = 10_000;

/** The links and the scope each needs. */
export type LinkRole = "worker" | "nanny" | "client" | "events";

/** The scope a link's token must allow. */
export const linkScope: Record<LinkRole, Scope> = { worker: "join", nanny: "join", client: "submit", events: "submit" };

/** The reason a peer gives when the scheduler's proof is wrong or missing. */
export const unprovenScheduler = "the scheduler could not prove it knows the token";

export type { HandshakeMessage };

const nonceBytes = 32;

/** 32 random bytes, hex. */
export function newNonce(): string {
  return randomBytes(nonceBytes).toString("hex");
}

function hmac(key: string | Uint8Array, text: string): Buffer {
  return createHmac("sha256", key).update(text).digest();
}

/** The peer's proof: HMAC-SHA256(token, "cluster-v1|ROLE|serverNonce|peerNonce"), hex. */
export function peerProof(token: string, role: LinkRole, serverNonce: string, peerNonce: string): string {
  return hmac(token, `cluster-v1|${role}|${serverNonce}|${peerNonce}`).toString("hex");
}

/** The scheduler's proof: HMAC-SHA256(token, "cluster-v1|scheduler|peerNonce|serverNonce"), hex. */
export function schedulerProof(token: string, serverNonce: string, peerNonce: string): string {
  return hmac(token, `cluster-v1|scheduler|${peerNonce}|${serverNonce}`).toString("hex");
}

/** The key both sides derive for this connection (never sent): seals the peer-data key. */
export function sessionKey(token: string, serverNonce: string, peerNonce: string): Buffer {
  return hmac(token, `cluster-v1|key|${serverNonce}|${peerNonce}`);
}

/** Compares two hex proofs in constant time (a malformed one is simply unequal). */
export function sameProof(a: unknown, b: string): boolean {
  if (typeof a !== "string" || a.length !== b.length || !/^[0-9a-f]*$/.test(a)) return false;
  return timingSafeEqual(Buffer.from(a, "hex"), Buffer.from(b, "hex"));
}

/** A secret sealed with AES-256-GCM: `iv`, ciphertext and `tag`, each base64. */
export interface Sealed {
  iv: string;
  data: string;
  tag: string;
}

/** Seals a secret for one peer with its session key. */
export function seal(secret: Uint8Array, key: Uint8Array): Sealed {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const data = Buffer.concat([cipher.update(secret), cipher.final()]);
  return { iv: iv.toString("base64"), data: data.toString("base64"), tag: cipher.getAuthTag().toString("base64") };
}

/** Opens a sealed secret; throws when it was not sealed with this key or was altered. */
export function unseal(sealed: Sealed, key: Uint8Array): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(sealed.iv, "base64"));
  decipher.setAuthTag(Buffer.from(sealed.tag, "base64"));
  return Buffer.concat([decipher.update(Buffer.from(sealed.data, "base64")), decipher.final()]);
}


/**
 * The token a peer proves it holds: `CLUSTER_TOKEN` (the admin token, or what `--token-file`
 * read), else the narrower token of its role (`CLUSTER_JOIN_TOKEN` for workers and nannies,
 * `CLUSTER_SUBMIT_TOKEN` for clients).
 */
export function peerToken(role: LinkRole, env: Record<string, string | undefined> = process.env): string | undefined {
  const narrow = role === "worker" || role === "nanny" ? "CLUSTER_JOIN_TOKEN" : "CLUSTER_SUBMIT_TOKEN";
  return env.CLUSTER_TOKEN?.trim() || env[narrow]?.trim() || undefined;
}

/** What the scheduler learned from a peer's `auth`. */
export type Verdict =
  | { ok: true; scope: Scope; reply: HandshakeMessage | null; sessionKey: Buffer | null }
  | { ok: false; reason: string };

/**
 * The scheduler's side of one link's handshake.
 *
 * @example
 * ```ts
 * const challenge = new ServerChallenge(envTokens(), "worker");
 * socket.send(encodeFrame([challenge.message]));
 * // on the first message:
 * const verdict = challenge.verify(msg); // close 4401 unless verdict.ok, else send verdict.reply
 * ```
 */
export class ServerChallenge {
  readonly nonce: string = newNonce();
  #tokens: TokenSet | null;
  #role: LinkRole;

  constructor(tokens: TokenSet | null, role: LinkRole) {
    this.#tokens = tokens;
    this.#role = role;
  }

  /** Whether the peer must answer (auth is on). */
  get required(): boolean {
    return this.#tokens !== null;
  }

  /** The first message on the link. */
  get message(): HandshakeMessage {
    return this.#tokens ? { op: "challenge", nonce: this.nonce } : { op: "challenge", nonce: this.nonce, auth: false };
  }

  /**
   * Checks a peer's `auth`: every token that may take the link's scope is tried (all of them, so
   * the time says nothing about which matched).
   */
  verify(msg: { op: string; nonce?: unknown; proof?: unknown }): Verdict {
    if (!this.#tokens) return { ok: true, scope: "admin", reply: null, sessionKey: null };
    if (msg.op !== "auth") return { ok: false, reason: "Expected an auth message first" };
    const peerNonce = msg.nonce;
    if (typeof peerNonce !== "string" || !/^[0-9a-f]{64}$/.test(peerNonce)) return { ok: false, reason: "Invalid auth message: bad nonce" };
    let match: [Scope, string] | null = null;
    for (const candidate of tokensFor(this.#tokens, linkScope[this.#role])) {
      if (sameProof(msg.proof, peerProof(candidate[1], this.#role, this.nonce, peerNonce)) && match === null) match = candidate;
    }
    if (!match) return { ok: false, reason: `The token was refused (a ${linkScope[this.#role]} token is needed)` };
    const [scope, token] = match;
    return {
      ok: true,
      scope,
      reply: { op: "auth-ok", proof: schedulerProof(token, this.nonce, peerNonce), scope },
      sessionKey: sessionKey(token, this.nonce, peerNonce),
    };
  }
}

/** The peer's view of a finished handshake. */
export interface PeerAuth {
  /** The scope the scheduler granted; `admin` when auth is off. */
  scope: Scope;
  /** The session key (null when auth is off). */
  sessionKey: Buffer | null;
}

/** A handshake the peer refused, or the scheduler refused. */
export class HandshakeError extends Error {
  override name = "HandshakeError";
  constructor(message: string, readonly code: number = authCloseCode) {
    super(message);
  }
}

/**
 * The peer's side of one handshake as a pure step function: feed it each message from the
 * scheduler until it returns `done`. A peer with a token accepts nothing but a challenge and a
 * correct `auth-ok`; a scheduler that says auth is off is refused by a peer that holds a token
 * (otherwise a fake one would skip the proof).
 */
export class PeerHandshake {
  readonly nonce: string = newNonce();
  #token: string | undefined;
  #role: LinkRole;
  #serverNonce: string | null = null;

  constructor(token: string | undefined, role: LinkRole) {
    this.#token = token || undefined;
    this.#role = role;
  }

  /** Takes one message; returns what to send, or that the handshake is done. Throws a HandshakeError. */
  step(msg: { op: string; [field: string]: unknown }): { send?: HandshakeMessage; done?: PeerAuth } {
    if (this.#serverNonce === null) {
      if (msg.op !== "challenge" || typeof msg.nonce !== "string") throw new HandshakeError(`${unprovenScheduler} (it sent "${msg.op}" before a challenge)`);
      if (msg.auth === false) {
        if (this.#token) throw new HandshakeError(`${unprovenScheduler} (it runs without auth, but this ${this.#role} has a token)`);
        return { done: { scope: "admin", sessionKey: null } };
      }
      if (!this.#token) throw new HandshakeError("The scheduler needs a token (set CLUSTER_TOKEN or --token-file)");
      this.#serverNonce = msg.nonce;
      return { send: { op: "auth", nonce: this.nonce, proof: peerProof(this.#token, this.#role, msg.nonce, this.nonce) } };
    }
    if (msg.op !== "auth-ok" || !sameProof(msg.proof, schedulerProof(this.#token!, this.#serverNonce, this.nonce))) {
      throw new HandshakeError(unprovenScheduler);
    }
    const scope = msg.scope === "admin" || msg.scope === "submit" || msg.scope === "join" ? msg.scope : "join";
    return { done: { scope, sessionKey: sessionKey(this.#token!, this.#serverNonce, this.nonce) } };
  }
}

/**
 * Runs the peer's handshake on a client WebSocket (already created, binary frames): resolves
 * once the scheduler proved itself; every later frame goes to `onMessage` (none is lost or
 * seen twice). On failure the socket is closed with 4401 and the promise rejects with the reason.
 *
 * @example
 * ```ts
 * const auth = await authenticate(socket, { role: "client", token, onMessage: (e) => handle(e) });
 * ```
 */
export function authenticate(
  socket: WebSocket,
  options: { role: LinkRole; token: string | undefined; onMessage: (event: MessageEvent) => void },
): Promise<PeerAuth> {
  const handshake = new PeerHandshake(options.token, options.role);
  let done = false;
  return new Promise((resolve, reject) => {
    socket.onmessage = (event) => {
      if (done) return options.onMessage(event);
      try {
        // The handshake's frames are CBOR on every link, the event stream's too.
        if (typeof event.data === "string") throw new HandshakeError(`${unprovenScheduler} (it sent no challenge)`);
        const messages = decodeFrame(event.data);
        for (let i = 0; i < messages.length; i++) {
          const out = handshake.step(messages[i]);
          if (out.send) socket.send(encodeFrame([out.send]));
          if (out.done) {
            done = true;
            resolve(out.done);
            // Whatever shared the frame with the last handshake message is the link's.
            if (i + 1 < messages.length) options.onMessage(new MessageEvent("message", { data: encodeFrame(messages.slice(i + 1)).buffer }));
            return;
          }
        }
      } catch (err) {
        done = true;
        const error = err instanceof HandshakeError ? err : new HandshakeError(`${unprovenScheduler} (${(err as Error).message})`);
        try {
          socket.close(authCloseCode, error.message.slice(0, 120));
        } catch {
          // already closed
        }
        reject(error);
      }
    };
  });
}
