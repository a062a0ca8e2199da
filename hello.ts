import { Client } from "./lib/client/mod.ts";

const client = await Client.connect("http://127.0.0.1:44975");
const xs = client.map("builtin.inc", [1, 2, 3]);
const total = client.submit("builtin.sum", xs);     // futures become dependencies
console.log(await total.result());                  // 9
const stop = client.subscribe("transition", (e) => console.log(e.key, e.start, "→", e.finish));
await client.registerPlugin({ role: "worker", use: "./examples/plugins/timer.ts" });  // relative to the current directory
stop();
await client.close();
