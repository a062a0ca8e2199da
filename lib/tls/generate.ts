/**
 * Certificate generation on WebCrypto (k3s's model: one private CA per cluster, its certificate
 * pinned by every part that connects): a CA, and certificates it signs for given DNS names and IP
 * addresses. ECDSA P-256 keys, which Bun (BoringSSL) and Deno (rustls) both serve and verify.
 *
 * @module
 */
import { isIP } from "node:net";

// tsyringe, which @peculiar/x509 uses inside, needs the Reflect metadata API before it loads.
// Imported in sequence rather than statically: Bun's bundler may evaluate a static CommonJS
// import ahead of the polyfill, and the compiled binary then fails.
await import("reflect-metadata");
const x509 = await import("@peculiar/x509");

/** A certificate and its private key, both PEM. */
export interface CertificatePair {
  /** The certificate (`-----BEGIN CERTIFICATE-----`). */
  cert: string;
  /** The PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`). */
  key: string;
}

/** What a server certificate is for. */
export interface ServerCertificateOptions {
  /** DNS names the certificate is valid for. */
  names: string[];
  /** IP addresses the certificate is valid for. */
  ips: string[];
  /** The subject's common name. @default the first name, else the first IP */
  commonName?: string;
  /** Days of validity. @default 825 */
  days?: number;
}

const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const dayMs = 86_400_000;

async function newKeys(): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/** DN values are written into `CN=…`; a comma or quote there would change the name's meaning. */
function dnValue(value: string): string {
  return value.replace(/[\\,+"<>;=#]/g, (c) => `\\${c}`);
}

function serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f; // positive, as RFC 5280 asks
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Makes a self-signed CA.
 *
 * @example
 * ```ts
 * const ca = await createCa("cluster CA");
 * await writeFile("ca.pem", ca.cert);
 * ```
 */
export async function createCa(commonName: string, options: { days?: number } = {}): Promise<CertificatePair> {
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${dnValue(commonName)}`,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + (options.days ?? 3650) * dayMs),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}

async function importCaKey(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decodeFirst(pem);
  return await crypto.subtle.importKey("pkcs8", der, algorithm, true, ["sign"]);
}

/**
 * Makes a server certificate signed by `ca`, valid for the given names and IP addresses, usable
 * for both sides of a TLS connection (serverAuth and clientAuth).
 *
 * @example
 * ```ts
 * const server = await createServerCertificate(ca, { names: ["localhost"], ips: ["127.0.0.1"] });
 * ```
 */
export async function createServerCertificate(ca: CertificatePair, options: ServerCertificateOptions): Promise<CertificatePair> {
  for (const ip of options.ips) if (isIP(ip) === 0) throw new TypeError(`Invalid IP address "${ip}"`);
  if (options.names.length + options.ips.length === 0) throw new TypeError("A certificate needs at least one name or IP address");
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await importCaKey(ca.key);
  const keys = await newKeys();
  const now = Date.now();
  const commonName = options.commonName ?? options.names[0] ?? options.ips[0];
  const notAfter = Math.min(now + (options.days ?? 825) * dayMs, caCert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${dnValue(commonName)}`,
    issuer: caCert.subject,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(notAfter),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...options.names.map((value) => ({ type: "dns" as const, value })),
        ...options.ips.map((value) => ({ type: "ip" as const, value })),
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}
