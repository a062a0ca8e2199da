/**
 * The challenge–response of the WebSocket links and the signatures of peer-data requests, as
 * pure functions: proofs bound to both nonces, scopes per link, a peer that refuses a scheduler
 * without proof, the sealed peer key, and stale, replayed or forged data requests.
 */
import { describe, expect, test } from "bun:test";
import {
  HandshakeError,
  newNonce,
  PeerHandshake,
  peerProof,
  peerToken,
  schedulerProof,
  seal,
  ServerChallenge,
  sessionKey,
  unprovenScheduler,
  unseal,
} from "../lib/auth/handshake.ts";
import { maxSkewMs, PeerRequestVerifier, signRequest, signResponse, verifyResponse } from "../lib/auth/peer-data.ts";
import { randomBytes } from "node:crypto";
import { envTokens } from "../lib/auth/tokens.ts";

const tokens = { admin: "admin-token", submit: "submit-token", join: "join-token" };

/** Runs a whole handshake between a peer and a scheduler; returns both outcomes. */
function run(peerTokenValue: string | undefined, role: "worker" | "nanny" | "client" | "events", set = tokens) {
  const server = new ServerChallenge(set, role);
  const peer = new PeerHandshake(peerTokenValue, role);
  const first = peer.step(server.message);
  const verdict = server.verify(first.send!);
  return { server, peer, first, verdict };
}

describe("the challenge–response", () => {
  test("a worker with the join token and one with the admin token are accepted, and each checks the scheduler's proof", () => {
    for (const token of ["join-token", "admin-token"]) {
      const { peer, verdict } = run(token, "worker");
      expect(verdict.ok).toBe(true);
      if (!verdict.ok) continue;
      expect(verdict.scope).toBe(token === "join-token" ? "join" : "admin");
      const done = peer.step(verdict.reply!).done!;
      expect(done.scope).toBe(verdict.scope);
      // Both sides derived the same session key without sending it.
      expect(done.sessionKey!.equals(verdict.sessionKey!)).toBe(true);
    }
  });

  test("a submit token cannot join as a worker or nanny, and a join token cannot open the client link", () => {
    expect(run("submit-token", "worker").verdict.ok).toBe(false);
    expect(run("submit-token", "nanny").verdict.ok).toBe(false);
    expect(run("join-token", "client").verdict.ok).toBe(false);
    expect(run("join-token", "events").verdict.ok).toBe(false);
    const client = run("submit-token", "client").verdict;
    expect(client.ok && client.scope).toBe("submit");
  });

  test("a wrong token is refused with the scope it needed", () => {
    const { verdict } = run("wrong", "worker");
    expect(verdict).toEqual({ ok: false, reason: "The token was refused (a join token is needed)" });
  });

  test("a proof made for one challenge does not answer another (a fake scheduler cannot replay it)", () => {
    const fake = new ServerChallenge(tokens, "worker");
    const peer = new PeerHandshake("join-token", "worker");
    const captured = peer.step(fake.message).send!;
    const real = new ServerChallenge(tokens, "worker");
    expect(real.verify(captured).ok).toBe(false);
    // Nor does a worker's proof open the nanny link on the same challenge.
    const nannyLink = new ServerChallenge(tokens, "nanny");
    expect(nannyLink.verify(new PeerHandshake("join-token", "worker").step(nannyLink.message).send!).ok).toBe(false);
  });

  test("the proofs follow the documented formulas", () => {
    const s = newNonce();
    const p = newNonce();
    expect(s).toMatch(/^[0-9a-f]{64}$/);
    expect(peerProof("t", "worker", s, p)).not.toBe(peerProof("t", "nanny", s, p));
    expect(schedulerProof("t", s, p)).not.toBe(peerProof("t", "worker", s, p));
    expect(sessionKey("t", s, p).byteLength).toBe(32);
  });

  test("a peer refuses an auth-ok with a wrong proof, and anything but a challenge first", () => {
    const server = new ServerChallenge(tokens, "worker");
    const peer = new PeerHandshake("join-token", "worker");
    peer.step(server.message);
    expect(() => peer.step({ op: "auth-ok", proof: "00".repeat(32), scope: "admin" })).toThrow(unprovenScheduler);
    expect(() => new PeerHandshake("join-token", "worker").step({ op: "welcome", plugins: [] })).toThrow(HandshakeError);
    const answered = new PeerHandshake("join-token", "worker");
    answered.step(server.message);
    expect(() => answered.step({ op: "compute", key: "x" })).toThrow(unprovenScheduler);
  });

  test("a peer with a token refuses a scheduler that claims auth is off; one without a token proceeds", () => {
    const off = new ServerChallenge(null, "worker");
    expect(off.message).toMatchObject({ op: "challenge", auth: false });
    expect(() => new PeerHandshake("join-token", "worker").step(off.message)).toThrow(unprovenScheduler);
    expect(new PeerHandshake(undefined, "worker").step(off.message).done).toEqual({ scope: "admin", sessionKey: null });
    expect(off.verify({ op: "register" })).toMatchObject({ ok: true, scope: "admin" });
    // A peer without a token cannot answer a scheduler that needs one.
    expect(() => new PeerHandshake(undefined, "worker").step(new ServerChallenge(tokens, "worker").message)).toThrow("needs a token");
  });

  test("a first message that is not a well-formed auth is refused", () => {
    const server = new ServerChallenge(tokens, "client");
    expect(server.verify({ op: "graph" }).ok).toBe(false);
    expect(server.verify({ op: "auth", nonce: "short", proof: "x" }).ok).toBe(false);
    expect(server.verify({ op: "auth", nonce: newNonce(), proof: 42 }).ok).toBe(false);
  });

  test("tokens come from the environment; the peer uses the admin token, else its role's", () => {
    expect(envTokens({})).toBeNull();
    expect(envTokens({ CLUSTER_TOKEN: "a\n", CLUSTER_JOIN_TOKEN: "j" })).toEqual({ admin: "a", submit: undefined, join: "j" });
    expect(peerToken("worker", { CLUSTER_JOIN_TOKEN: "j", CLUSTER_SUBMIT_TOKEN: "s" })).toBe("j");
    expect(peerToken("client", { CLUSTER_JOIN_TOKEN: "j", CLUSTER_SUBMIT_TOKEN: "s" })).toBe("s");
    expect(peerToken("nanny", { CLUSTER_TOKEN: "a", CLUSTER_JOIN_TOKEN: "j" })).toBe("a");
  });

  test("the peer key sealed with one session key opens only with it", () => {
    const secret = randomBytes(32);
    const key = sessionKey("t", newNonce(), newNonce());
    const sealed = seal(secret, key);
    expect(unseal(sealed, key).equals(secret)).toBe(true);
    expect(() => unseal(sealed, sessionKey("t", newNonce(), newNonce()))).toThrow();
    expect(() => unseal({ ...sealed, data: Buffer.from("x".repeat(32)).toString("base64") }, key)).toThrow();
  });
});

describe("signed peer-data requests", () => {
  const key = randomBytes(32);
  const body = new Uint8Array([1, 2, 3]);
  const path = "/api/v1/data";

  test("a signed request passes once; its replay, a stale one, a forged one and none at all are refused", () => {
    const verifier = new PeerRequestVerifier();
    const { header, nonce } = signRequest(key, { method: "POST", path, body });
    expect(verifier.verify(key, { method: "POST", path, body, header })).toEqual({ ok: true, nonce });
    expect(verifier.verify(key, { method: "POST", path, body, header })).toEqual({ ok: false, reason: "Replayed request" });
    const old = signRequest(key, { method: "POST", path, body, now: Date.now() - maxSkewMs - 1000 });
    expect(verifier.verify(key, { method: "POST", path, body, header: old.header })).toMatchObject({ ok: false, reason: expect.stringContaining("Stale") });
    const other = signRequest(randomBytes(32), { method: "POST", path, body });
    expect(verifier.verify(key, { method: "POST", path, body, header: other.header })).toMatchObject({ ok: false, reason: "Bad signature" });
    const fresh = signRequest(key, { method: "POST", path, body });
    expect(verifier.verify(key, { method: "POST", path, body: new Uint8Array([9]), header: fresh.header }).ok).toBe(false);
    expect(verifier.verify(key, { method: "POST", path, body, header: undefined }).ok).toBe(false);
    expect(verifier.verify(null, { method: "POST", path, body, header: fresh.header }).ok).toBe(false);
  });

  test("an answer is signed for the request's nonce and its body", () => {
    const sig = signResponse(key, "ab".repeat(16), body);
    expect(verifyResponse(key, "ab".repeat(16), body, sig)).toBe(true);
    expect(verifyResponse(key, "cd".repeat(16), body, sig)).toBe(false);
    expect(verifyResponse(key, "ab".repeat(16), new Uint8Array([0]), sig)).toBe(false);
    expect(verifyResponse(key, "ab".repeat(16), body, null)).toBe(false);
  });
});
