/**
 * The shape of the code, checked from outside as a reviewer would: no source file in cmd/, lib/
 * or plugins/ over 600 lines, no import cycle among them (type-only and dynamic imports count
 * too), the plugin framework (lib/) never imports a built-in (plugins/), and the TypeScript
 * client's bundle pulls in no built-in plugin and no amqplib (from bun build's metafile).
 *
 * @module
 */
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const FOLDERS = ["cmd", "lib", "plugins"];
const MAX_LINES = 600;

/** Every .ts file under the source folders, relative to the repository root. */
function sourceFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ts")) out.push(path);
    }
  };
  for (const folder of FOLDERS) walk(folder);
  return out.sort();
}

/** The relative imports of a file (static, type-only, re-exports and literal dynamic ones), resolved. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(root, file), "utf8");
  const specifiers = new Set<string>();
  const patterns = [
    /^\s*(?:import|export)\s[^;]*?\sfrom\s+["']([^"']+)["']/gms,
    /^\s*import\s+["']([^"']+)["']/gm,
    /\bimport\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) for (const m of text.matchAll(pattern)) specifiers.add(m[1]);
  return [...specifiers]
    .filter((s) => s.startsWith("./") || s.startsWith("../"))
    .map((s) => relative(root, resolve(root, dirname(file), s)).split("\\").join("/"));
}

/** The import cycles of a graph, each as the list of files around it (one per strongly connected group). */
function cycles(graph: Map<string, string[]>): string[][] {
  // Tarjan's strongly connected components.
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    indices.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, indices.get(w)!));
      }
    }
    if (low.get(v) === indices.get(v)) {
      const group: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        group.push(w);
      } while (w !== v);
      const selfLoop = (graph.get(v) ?? []).includes(v);
      if (group.length > 1 || selfLoop) found.push(group.sort());
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) visit(v);
  return found;
}

test("no source file in cmd/, lib/ or plugins/ is over 600 lines", () => {
  const long = sourceFiles()
    .map((file) => ({ file, lines: readFileSync(join(root, file), "utf8").split("\n").length - 1 }))
    .filter((f) => f.lines > MAX_LINES)
    .map((f) => `${f.file} (${f.lines} lines)`);
  expect(long).toEqual([]);
});

test("there is no import cycle among cmd/, lib/ and plugins/", () => {
  const files = sourceFiles();
  const graph = new Map(files.map((file) => [file, importsOf(file).filter((target) => files.includes(target))]));
  expect(cycles(graph)).toEqual([]);
});

test("the plugin framework and the rest of lib/ import nothing from plugins/", () => {
  const offending = sourceFiles()
    .filter((file) => file.startsWith("lib/"))
    .flatMap((file) => importsOf(file).filter((target) => target.startsWith("plugins/")).map((target) => `${file} → ${target}`));
  expect(offending).toEqual([]);
});

test("the cycle finder finds a cycle, so the check above can fail", () => {
  const graph = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
  expect(cycles(graph)).toEqual([["a", "b", "c"]]);
});

test("the TypeScript client's bundle pulls in no built-in plugin and no amqplib", () => {
  const out = mkdtempSync(join(tmpdir(), "cluster-client-bundle-"));
  try {
    const metafile = join(out, "meta.json");
    const build = spawnSync(
      process.execPath,
      ["build", "lib/client/mod.ts", "--target=bun", "--outdir", out, `--metafile=${metafile}`],
      { cwd: root, encoding: "utf8" },
    );
    expect(build.stderr).not.toContain("error");
    expect(build.status).toBe(0);
    const inputs = Object.keys(JSON.parse(readFileSync(metafile, "utf8")).inputs as Record<string, unknown>);
    expect(inputs).toContain("lib/client/mod.ts");
    expect(inputs.filter((path) => path.startsWith("plugins/") || path.includes("/plugins/mod.ts"))).toEqual([]);
    expect(inputs.filter((path) => path.includes("node_modules/amqplib"))).toEqual([]);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("hook calls are checked by the compiler: a misspelt hook or wrong arguments do not compile", () => {
  const deno = join(root, "node_modules", ".bin", "deno");
  const result = spawnSync(deno, ["check", "test/fixtures/typed-hooks.ts"], { cwd: root, encoding: "utf8", timeout: 120_000 });
  // deno-lint-ignore no-control-regex -- strips deno's terminal colours
  const output = `${result.stdout}${result.stderr}`.replace(/\x1b\[[0-9;]*m/g, "");
  expect(output).not.toContain("ERROR");
  expect(result.status).toBe(0);
}, 150_000);
