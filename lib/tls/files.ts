/**
 * `cluster tls init` on disk: a CA kept in a directory (made once, reused for every further
 * certificate) and certificates it signs, private keys written with mode 0600.
 *
 * @module
 */
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type CertificatePair, createCa, createServerCertificate } from "./generate.ts";

/** What `initTlsDirectory` wrote. */
export interface TlsInitResult {
  /** The CA certificate, for `--tls-ca`. */
  ca: string;
  /** The CA's private key (0600). */
  caKey: string;
  /** Whether the CA was made now (false: an existing one was reused). */
  caCreated: boolean;
  /** The server certificate, for `--tls-cert`. */
  cert: string;
  /** Its private key (0600), for `--tls-key`. */
  key: string;
  /** DNS names and IP addresses the certificate is valid for. */
  names: string[];
  ips: string[];
}

/** Names every certificate holds, so that same-host parts connect by loopback. */
export const defaultNames = ["localhost"];
/** IP addresses every certificate holds. */
export const defaultIps = ["127.0.0.1", "::1"];

/** Writes through a temporary file created with `mode`, so no reader sees a partial or wider file. */
async function writeSecure(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

async function existingCa(dir: string): Promise<CertificatePair | undefined> {
  try {
    return { cert: await readFile(join(dir, "ca.pem"), "utf8"), key: await readFile(join(dir, "ca-key.pem"), "utf8") };
  } catch {
    return undefined;
  }
}

/**
 * Makes (or reuses) the CA in `dir` and writes a certificate named `name` for the given DNS
 * names and IP addresses, besides localhost, 127.0.0.1 and ::1.
 *
 * @example
 * ```ts
 * const out = await initTlsDirectory("./tls", { names: ["edge-1.lan"], ips: ["10.0.0.5"] });
 * // out.ca = "/abs/tls/ca.pem", out.cert = "/abs/tls/scheduler.pem", out.key = "/abs/tls/scheduler-key.pem"
 * ```
 */
export async function initTlsDirectory(
  dir: string,
  options: { names?: string[]; ips?: string[]; name?: string; days?: number } = {},
): Promise<TlsInitResult> {
  const root = resolve(dir);
  const name = options.name ?? "scheduler";
  if (!/^[\w.-]+$/.test(name) || name === "ca") throw new TypeError(`Invalid certificate name "${name}"`);
  await mkdir(root, { recursive: true, mode: 0o700 });
  let ca = await existingCa(root);
  const caCreated = ca === undefined;
  if (!ca) {
    ca = await createCa("cluster CA");
    await writeSecure(join(root, "ca-key.pem"), ca.key, 0o600);
    await writeSecure(join(root, "ca.pem"), ca.cert, 0o644);
  }
  const names = [...new Set([...defaultNames, ...(options.names ?? [])])];
  const ips = [...new Set([...defaultIps, ...(options.ips ?? [])])];
  const pair = await createServerCertificate(ca, { names, ips, commonName: options.names?.[0], days: options.days });
  const cert = join(root, `${name}.pem`), key = join(root, `${name}-key.pem`);
  await writeSecure(key, pair.key, 0o600);
  await writeSecure(cert, pair.cert, 0o644);
  return { ca: join(root, "ca.pem"), caKey: join(root, "ca-key.pem"), caCreated, cert, key, names, ips };
}
