import { readFileSync } from "node:fs";
const cert = readFileSync("/tmp/tlsx/s.pem", "utf8"), key = readFileSync("/tmp/tlsx/s-key.pem", "utf8"), ca = readFileSync("/tmp/tlsx/ca.pem", "utf8");
const D = (globalThis as any).Deno, B = (globalThis as any).Bun;
let port: number;
if (D) {
  const s = D.serve({ hostname: "127.0.0.1", port: 0, cert, key, onListen() {} }, (req: Request) => {
    if (req.headers.get("upgrade") === "websocket") { const { socket, response } = D.upgradeWebSocket(req); socket.onmessage = (e: MessageEvent) => socket.send("echo " + e.data); return response; }
    return new Response("hi");
  });
  port = s.addr.port;
} else {
  const s = B.serve({ hostname: "127.0.0.1", port: 0, tls: { cert, key }, fetch(req: Request, server: any) { if (server.upgrade(req)) return; return new Response("hi"); }, websocket: { message(ws: any, m: any) { ws.send("echo " + m); } } });
  port = s.port;
}
console.log("port", port);
// fetch with CA
try {
  const init: any = D ? { client: D.createHttpClient({ caCerts: [ca] }) } : { tls: { ca } };
  console.log("fetch ca", await (await fetch(`https://127.0.0.1:${port}/`, init)).text());
} catch (e) { console.log("fetch ca ERR", String(e)); }
try { await fetch(`https://127.0.0.1:${port}/`); console.log("fetch noca OK?!"); } catch (e) { console.log("fetch noca ERR", String(e).slice(0, 200)); }
try { const r = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(3000) }); console.log("plain http", r.status); } catch (e) { console.log("plain http ERR", String(e).slice(0, 200)); }
async function ws(opts: any, label: string) {
  await new Promise<void>((res) => {
    const w = new (WebSocket as any)(`wss://127.0.0.1:${port}/`, opts);
    const t = setTimeout(() => { console.log(label, "TIMEOUT"); res(); }, 5000);
    w.onopen = () => w.send("x");
    w.onmessage = (e: MessageEvent) => { console.log(label, e.data); clearTimeout(t); w.close(); res(); };
    w.onerror = (e: any) => { console.log(label, "error", e.message ?? e.error?.message ?? e.type); };
    w.onclose = (e: CloseEvent) => { console.log(label, "close", e.code, e.reason); clearTimeout(t); res(); };
  });
}
await ws(D ? { client: D.createHttpClient({ caCerts: [ca] }) } : { tls: { ca } }, "ws ca");
await ws(undefined, "ws noca");
process.exit(0);
