/**
 * `cluster tls init DIR`: a private CA and a certificate it signs, for `--tls-cert`/`--tls-key`
 * on the scheduler and `--tls-ca` everywhere else (k3s's way: the server's CA, pinned by agents).
 * Made with WebCrypto in-process, no openssl needed.
 *
 * @module
 */
import { defineCommand } from "citty";
import { isIP } from "node:net";
import { checkFlags, collect, commonArgs, UsageError } from "./_args.ts";

const initArgs = {
  dir: { type: "positional", description: "Directory for ca.pem, ca-key.pem, NAME.pem, NAME-key.pem", required: true },
  name: { type: "string", description: "DNS name the certificate is valid for (besides localhost); repeatable" },
  ip: { type: "string", description: "IP address the certificate is valid for (besides 127.0.0.1, ::1); repeatable" },
  cert: { type: "string", description: "File name of the certificate (NAME.pem); the CA in DIR is reused", default: "scheduler" },
  days: { type: "string", description: "Days the certificate is valid", default: "825" },
  ...commonArgs,
} as const;

/** `cluster tls init`. */
export const tlsInitCommand = defineCommand({
  meta: { name: "init", description: "Write a CA (made once per DIR) and a certificate it signs" },
  args: initArgs,
  async run({ args: a, rawArgs }) {
    checkFlags(rawArgs, initArgs);
    const ips = collect(rawArgs, "ip");
    for (const ip of ips) if (isIP(ip) === 0) throw new UsageError(`Invalid value for "--ip": "${ip}" (expected an IP address)`);
    const names = collect(rawArgs, "name");
    for (const name of names) {
      if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(name)) {
        throw new UsageError(`Invalid value for "--name": "${name}" (expected a DNS name)`);
      }
    }
    const days = Number(a.days);
    if (!Number.isInteger(days) || days < 1) throw new UsageError(`Invalid value for "--days": "${a.days}" (expected an integer >= 1)`);
    if (!/^[\w.-]+$/.test(String(a.cert)) || a.cert === "ca") throw new UsageError(`Invalid value for "--cert": "${a.cert}"`);
    // Loaded here only: the other commands never pay for the X.509 library.
    const { initTlsDirectory } = await import("../lib/tls/files.ts");
    const out = await initTlsDirectory(String(a.dir), { names, ips, name: String(a.cert), days });
    console.log(out.caCreated ? `wrote CA ${out.ca} (key ${out.caKey}, mode 0600)` : `reused CA ${out.ca}`);
    console.log(`wrote ${out.cert} and ${out.key} (mode 0600) for ${[...out.names, ...out.ips].join(", ")}`);
    console.log(`serve with:   --tls-cert ${out.cert} --tls-key ${out.key}`);
    console.log(`connect with: --tls-ca ${out.ca} (and an https:// URL)`);
  },
});

/** `cluster tls`. */
export const tlsCommand = defineCommand({
  meta: { name: "tls", description: "TLS certificates for the cluster (tls init DIR)" },
  subCommands: { init: tlsInitCommand },
});
