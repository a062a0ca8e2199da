import { Client } from "../lib/client/mod.ts";
import { graphs } from "../test/_cluster.ts";
import { startCluster, stopAll, waitIdle } from "./_lib.ts";
const cluster = await startCluster();
const { chromium } = await import("playwright-core");
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
const client = await Client.connect(cluster.url);
try {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
  await page.goto(cluster.url + "/");
  await page.locator("#connection.live").waitFor();
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.start");
  const m0 = (await cdp.send("Performance.getMetrics")).metrics;
  const t0 = performance.now();
  const g = graphs.map(Number(process.argv[2] ?? 20000), "prof");
  await client.compute(g);
  await client.gather(g.keys);
  const wall = performance.now() - t0;
  await page.waitForTimeout(1000);
  const m1 = (await cdp.send("Performance.getMetrics")).metrics;
  const { profile } = await cdp.send("Profiler.stop");
  const get = (m: any[], n: string) => m.find((x) => x.name === n)?.value ?? 0;
  console.log("wall ms", wall.toFixed(0), "TaskDuration s", (get(m1, "TaskDuration") - get(m0, "TaskDuration")).toFixed(3), "ScriptDuration s", (get(m1, "ScriptDuration") - get(m0, "ScriptDuration")).toFixed(3), "Layout s", (get(m1, "LayoutDuration") - get(m0, "LayoutDuration")).toFixed(3), "Style s", (get(m1, "RecalcStyleDuration") - get(m0, "RecalcStyleDuration")).toFixed(3));
  const self = new Map<string, number>();
  const dt = profile.timeDeltas as number[];
  const byId = new Map(profile.nodes.map((n: any) => [n.id, n]));
  profile.samples.forEach((id: number, i: number) => {
    const n: any = byId.get(id);
    const name = `${n.callFrame.functionName || "(anon)"}:${n.callFrame.lineNumber}:${n.callFrame.columnNumber}`;
    self.set(name, (self.get(name) ?? 0) + (dt[i] ?? 0));
  });
  console.log([...self].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `${(v / 1000).toFixed(0)}ms ${k}`).join("\n"));
  await client.release(g.keys);
  await waitIdle(cluster.url, 60000);
} finally {
  await client.close();
  await browser.close();
  await cluster.stop();
  await stopAll();
}
