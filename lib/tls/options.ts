/**
 * The `--tls-*` flags in one place: their definitions, which every serving or connecting
 * command spreads into its args, and reading them into a server certificate and a trusted CA.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import { trustCa } from "../runtime/client.ts";
import type { ServerTls } from "../runtime/types.ts";

/** The TLS flags (citty ArgsDef fragment). */
export const tlsArgs = {
  "tls-cert": { type: "string", description: "Serve https/wss with this certificate (PEM file; needs --tls-key)" },
  "tls-key": { type: "string", description: "Private key (PEM file) of --tls-cert" },
  "tls-ca": { type: "string", description: "Trust this CA certificate (PEM file) for the cluster's https/wss connections" },
} as const;

/** What the `--tls-*` flags say. */
export interface TlsSettings {
  /** The certificate and key to serve with, from `--tls-cert` and `--tls-key`. */
  server?: ServerTls;
  /** The CA certificate(s) to trust, from `--tls-ca`. */
  ca?: string;
}

function readPem(path: string, flag: string, marker: RegExp, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`Cannot read "--${flag}" file "${path}": ${errorMessage(err)}`);
  }
  if (!marker.test(text)) throw new ConfigError(`File "${path}" given to "--${flag}" holds no PEM ${what}`);
  return text;
}

/** Checked here because the runtimes' own errors say only "KEY_VALUES_MISMATCH" or "KeyMismatch". */
function checkServerTls(tls: ServerTls, certPath: string, keyPath: string): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(tls.cert);
  } catch (err) {
    throw new ConfigError(`Cannot parse "--tls-cert" file "${certPath}": ${errorMessage(err)}`);
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(tls.key));
  } catch (err) {
    throw new ConfigError(`Cannot parse "--tls-key" file "${keyPath}": ${errorMessage(err)}`);
  }
  if (!matches) throw new ConfigError(`"--tls-key" file "${keyPath}" is not the key of "--tls-cert" file "${certPath}"`);
  const expires = new Date(cert.validTo);
  if (expires.getTime() < Date.now()) {
    throw new ConfigError(`Certificate "${certPath}" expired on ${expires.toISOString()}: make a new one (cluster tls init)`);
  }
}

/**
 * Reads the `--tls-*` flags of a parsed args object.
 *
 * @example
 * ```ts
 * const tls = readTlsArgs({ "tls-cert": "scheduler.pem", "tls-key": "scheduler-key.pem" });
 * await runtime.serve(app, { hostname, port, tls: tls.server });
 * ```
 */
export function readTlsArgs(args: Record<string, unknown>): TlsSettings {
  const cert = args["tls-cert"], key = args["tls-key"], ca = args["tls-ca"];
  const given = (v: unknown): v is string => typeof v === "string" && v !== "";
  if (given(cert) !== given(key)) throw new ConfigError(`"--tls-cert" and "--tls-key" go together: give both or neither`);
  const settings: TlsSettings = {};
  if (given(cert) && given(key)) {
    settings.server = {
      cert: readPem(cert, "tls-cert", /-----BEGIN CERTIFICATE-----/, "certificate"),
      key: readPem(key, "tls-key", /-----BEGIN [A-Z ]*PRIVATE KEY-----/, "private key"),
    };
    checkServerTls(settings.server, cert, key);
  }
  if (given(ca)) settings.ca = readPem(ca, "tls-ca", /-----BEGIN CERTIFICATE-----/, "certificate");
  return settings;
}

/**
 * Reads the `--tls-*` flags and trusts `--tls-ca` for every cluster connection this process
 * makes; returns the certificate to serve with, if any.
 */
export function applyTlsArgs(args: Record<string, unknown>): ServerTls | undefined {
  const settings = readTlsArgs(args);
  if (settings.ca !== undefined) trustCa(settings.ca);
  return settings.server;
}

/**
 * The `--tls-*` flags of a raw command line, paths made absolute, to hand on to a child process
 * (the nanny's worker).
 *
 * @example
 * ```ts
 * tlsFlags(["http://s:8786", "--tls-ca", "ca.pem"]); // ["--tls-ca", "/abs/ca.pem"]
 * ```
 */
export function tlsFlags(rawArgs: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const raw = rawArgs[i];
    if (raw === "--") break;
    for (const flag of Object.keys(tlsArgs)) {
      let value: string | undefined;
      if (raw === `--${flag}`) value = rawArgs[++i];
      else if (raw.startsWith(`--${flag}=`)) value = raw.slice(flag.length + 3);
      if (value !== undefined && value !== "") out.push(`--${flag}`, resolve(value));
    }
  }
  return out;
}
