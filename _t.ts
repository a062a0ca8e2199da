import { createCa, createServerCertificate } from "./lib/tls/generate.ts";
import { writeFileSync } from "node:fs";
const ca = await createCa("cluster CA");
const s = await createServerCertificate(ca, { names: ["localhost"], ips: ["127.0.0.1", "::1"] });
writeFileSync("/tmp/tlsx/ca.pem", ca.cert); writeFileSync("/tmp/tlsx/ca-key.pem", ca.key);
writeFileSync("/tmp/tlsx/s.pem", s.cert); writeFileSync("/tmp/tlsx/s-key.pem", s.key);
console.log("ok");
