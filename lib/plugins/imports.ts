/**
 * The files a module plugin imports from beside it, shipped with its source: a module plugin
 * registered at the scheduler reaches workers and nannies as text, so its own relative imports
 * (`import … from "./x.ts"`, `export … from "../y.ts"`, `import("./z.ts")` with a literal path)
 * must travel too, and be written side by side before the module is loaded.
 *
 * Imports are found with Bun's own parser (`Bun.Transpiler#scanImports`, which skips type-only
 * imports) where it exists, in Bun and the compiled binary. Under Deno a regular expression
 * stands in: comments are removed first; static `import`/`export … from` and `import()` with a
 * string literal are matched; `import type`/`export type` are skipped (they vanish at run time).
 * It can be fooled by an import-looking text inside a string, which costs only an extra file (or
 * an error naming a file that does not exist). Bare imports (packages) and `node:` are left to
 * the runtime: see `package-install`.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { dirname, extname, relative, resolve, sep } from "node:path";
import { existsSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { resolveInside, safeRelativePath } from "../safe-path.ts";

/** A module's own files, keyed by path relative to `root`; `entry` is the module itself. */
export interface ModuleTree {
  /** The module's path inside the tree (`/`-separated). */
  entry: string;
  /** The other files' text by path inside the tree. */
  imports: Record<string, string>;
}

interface BunTranspiler {
  scanImports(code: string): Array<{ path: string; kind: string }>;
}
const bun = (globalThis as { Bun?: { Transpiler: new (o: { loader: string }) => BunTranspiler } }).Bun;
let transpilers: Map<string, BunTranspiler> | null = null;

const staticImport = /(?:^|[^\w$.])(?:import|export)\s+(?!type[\s{])(?:[\w$*{}\s,]+?\s+from\s+)?(["'])([^"'\n]+)\1/g;
const dynamicImport = /(?:^|[^\w$.])import\s*\(\s*(["'`])([^"'`$\n]+)\1\s*[,)]/g;

function stripComments(source: string): string {
  // Block comments, then line comments that start a line or follow a space (not `http://` in a string).
  return source.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/(^|[\s;{}()])\/\/[^\n]*/g, "$1");
}

/**
 * The specifiers a module imports at run time (relative, bare and `node:` alike), in order.
 *
 * @example
 * ```ts
 * scanImports(`import { a } from "./a.ts"; const b = await import("./b.ts");`); // ["./a.ts", "./b.ts"]
 * ```
 */
export function scanImports(source: string, path = "mod.ts"): string[] {
  if (bun) {
    const ext = extname(path).slice(1);
    const loader = ext === "js" || ext === "mjs" ? "js" : ext === "tsx" ? "tsx" : "ts";
    transpilers ??= new Map();
    let t = transpilers.get(loader);
    if (!t) transpilers.set(loader, t = new bun.Transpiler({ loader }));
    try {
      return t.scanImports(source).map((i) => i.path);
    } catch {
      // A syntax error: the runtime names it when the module is loaded; the regex does its best.
    }
  }
  return scanImportsByRegex(source);
}

/** The regular-expression scanner (used under Deno; exported for tests). */
export function scanImportsByRegex(source: string): string[] {
  const text = stripComments(source);
  const out: string[] = [];
  for (const re of [staticImport, dynamicImport]) {
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push(m[2]);
  }
  return out;
}

const isRelative = (spec: string) => spec.startsWith("./") || spec.startsWith("../");

/** The file a relative specifier names, trying the extensions Bun would when it has none. */
function resolveFile(fromDir: string, spec: string): string | null {
  const base = resolve(fromDir, spec.split(/[?#]/)[0]);
  for (const candidate of [base, `${base}.ts`, `${base}.js`, `${base}.mjs`, `${base}/index.ts`, `${base}/index.js`]) {
    if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
  }
  return null;
}

/**
 * Reads the relative imports of a module, recursively: its tree (the files under their nearest
 * common directory), or null when it imports nothing beside it. A relative import of a file
 * that does not exist is an Error naming the importer and the path.
 */
export async function collectModuleTree(modulePath: string, source: string): Promise<ModuleTree | null> {
  const main = resolve(modulePath);
  const files = new Map<string, string>([[main, source]]);
  const queue = [main];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const spec of scanImports(files.get(file)!, file)) {
      if (!isRelative(spec)) continue;
      const target = resolveFile(dirname(file), spec);
      if (target === null) throw new Error(`"${file}" imports "${spec}", which does not exist`);
      if (files.has(target)) continue;
      files.set(target, await readFile(target, "utf8"));
      queue.push(target);
    }
  }
  if (files.size === 1) return null;
  let root = dirname(main);
  for (const file of files.keys()) {
    while (!(file.startsWith(root.endsWith(sep) ? root : root + sep))) root = dirname(root);
  }
  const rel = (file: string) => relative(root, file).split(sep).join("/");
  const imports: Record<string, string> = {};
  for (const [file, text] of files) if (file !== main) imports[rel(file)] = text;
  return { entry: rel(main), imports };
}

/**
 * Writes a shipped module and its imports into a fresh folder of `dir` (named by the module and
 * a hash of every file, since runtimes cache modules by path) and returns the module's path.
 * Every name is checked (lib/safe-path.ts): a tree cannot write outside its folder.
 */
export async function writeModuleTree(dir: string, name: string, source: string, tree: ModuleTree): Promise<{ folder: string; path: string }> {
  const entry = safeRelativePath(tree.entry);
  const hash = createHash("sha256").update(entry).update("\0").update(source);
  const names = Object.keys(tree.imports).sort();
  for (const n of names) hash.update("\0").update(n).update("\0").update(tree.imports[n]);
  const folder = resolve(dir, `${name}-${hash.digest("hex").slice(0, 12)}`);
  await mkdir(folder, { recursive: true });
  for (const n of names) {
    const target = resolveInside(folder, n);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, tree.imports[n]);
  }
  const path = resolveInside(folder, entry);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, source);
  return { folder, path };
}
