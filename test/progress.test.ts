/**
 * `cluster submit`'s progress bar: the model and the drawing in process; the binary through a
 * pseudo-terminal (util-linux `script`) shows the bar per prefix with its total and clears it,
 * and shows nothing when its stderr is a pipe.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { keyPrefix, Progress, ProgressDisplay, renderProgress } from "../lib/progress.ts";
import { binary, runCli, startCluster, stopAll, tempDir } from "../testkit/mod.ts";

afterAll(stopAll);

describe("the progress model and its drawing", () => {
  test("a key's prefix is the key up to its last dash", () => {
    expect(keyPrefix("inc-12")).toBe("inc");
    expect(keyPrefix("load-csv-3")).toBe("load-csv");
    expect(keyPrefix("total")).toBe("total");
    expect(keyPrefix("-x")).toBe("-x");
  });

  test("each key counts once, memory as done and erred as erred, per prefix in the order first seen", () => {
    const p = new Progress(["inc-1", "inc-2", "inc-3", "sum", "inc-1"]);
    p.finished("inc-1", "processing");
    p.finished("inc-1", "memory");
    p.finished("inc-1", "memory");
    p.finished("inc-2", "erred");
    p.finished("other-1", "memory");
    expect(p.prefixes()).toEqual([{ prefix: "inc", total: 3, done: 1, erred: 1 }, { prefix: "sum", total: 1, done: 0, erred: 0 }]);
    expect(p.counts).toEqual({ finished: 2, total: 4 });
  });

  test("the drawing shows a bar, done/total and erred per prefix, then elapsed time and rate", () => {
    const p = new Progress([...Array.from({ length: 100 }, (_, i) => `inc-${i}`), "sum"]);
    for (let i = 0; i < 40; i++) p.finished(`inc-${i}`, "memory");
    p.finished("inc-99", "erred");
    const lines = renderProgress(p, { elapsedMs: 2000, width: 80 });
    expect(lines[0]).toMatch(/^inc +\[#+x+-+\] {2}41\/100 \(1 erred\)$/);
    expect(lines[1]).toMatch(/^sum +\[-+\] {3}0\/1$/);
    expect(lines[2]).toBe("41/101 tasks  elapsed 2.0 s  20.5 tasks/s");
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
  });

  test("many prefixes are summed on one line", () => {
    const p = new Progress(Array.from({ length: 30 }, (_, i) => `p${i}-1`));
    const lines = renderProgress(p, { elapsedMs: 0 });
    expect(lines.length).toBe(13);
    expect(lines[11]).toMatch(/^\(19 more\) +\[-+\] {2}0\/19$/);
  });

  test("the display redraws in place only when something changed and erases itself at the end", () => {
    const writes: string[] = [];
    const p = new Progress(["a-1", "a-2"]);
    const display = new ProgressDisplay(p, { write: (t: string) => writes.push(t), columns: 60 }, { intervalMs: 60_000 });
    display.start();
    display.draw();
    expect(writes.length).toBe(1);
    p.finished("a-1", "memory");
    display.draw();
    expect(writes.length).toBe(2);
    expect(writes[1]).toStartWith("\r\x1b[2A");
    expect(writes[1]).toContain("1/2");
    display.stop();
    expect(writes[2]).toBe("\r\x1b[2A\x1b[J");
  });
});

const hasScript = spawnSync("script", ["--version"]).status === 0;

describe("cluster submit on a terminal and on a pipe", () => {
  test.skipIf(!hasScript)("on a terminal the bar shows each prefix with its total and is cleared before the result; piped, there is none", async () => {
    const cluster = await startCluster({ workers: 1 });
    try {
      const dir = tempDir();
      const file = join(dir, "graph.json");
      const tasks = [
        ...Array.from({ length: 8 }, (_, i) => ({ key: `nap-${i}`, fn: "builtin.sleep", args: [250, i] })),
        ...Array.from({ length: 5 }, (_, i) => ({ key: `add-one-${i}`, fn: "builtin.inc", args: [{ $ref: `nap-${i}` }] })),
      ];
      writeFileSync(file, JSON.stringify({ tasks, keys: tasks.slice(8).map((t) => t.key) }));
      const command = `${binary} submit ${cluster.url} ${file}`;
      const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
        const child = spawn("script", ["-qec", command, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
        let text = "";
        child.stdout.setEncoding("utf8").on("data", (c: string) => (text += c));
        const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
        child.on("exit", (code) => {
          clearTimeout(timer);
          resolve({ code, text });
        });
      });
      expect({ code: out.code, end: out.code === 0 ? "" : out.text.slice(-500) }).toEqual({ code: 0, end: "" });
      expect(out.text).toMatch(/nap +\[[-#]+\] +\d\/8/);
      expect(out.text).toMatch(/add-one +\[[-#]+\] +\d\/5/);
      expect(out.text).toMatch(/\d+\/13 tasks {2}elapsed \d+\.\d s/);
      // Erased (cursor up, clear to the end) before the result is printed.
      const erased = out.text.lastIndexOf("\x1b[J");
      const result = out.text.indexOf('{"add-one-0":1');
      expect(erased).toBeGreaterThan(0);
      expect(result).toBeGreaterThan(erased);

      const piped = await runCli(["submit", cluster.url, file]);
      expect(piped.code).toBe(0);
      expect(JSON.parse(piped.stdout)).toEqual({ "add-one-0": 1, "add-one-1": 2, "add-one-2": 3, "add-one-3": 4, "add-one-4": 5 });
      expect(piped.stderr).toBe("");
    } finally {
      await cluster.stop();
    }
  });
});
