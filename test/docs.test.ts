/**
 * The README and docs/ as a new user reads them: every code block marked `runnable`
 * (```` ```sh runnable ````, ```` ```ts runnable ````, ```` ```json runnable ````) runs as written
 * against a real local cluster, links point to files that exist, docs/cli.md's command tables
 * match the commands, the systemd units only set variables that are flags, and no page speaks
 * of the internal contract or issue numbers.
 *
 * How a page runs: its runnable blocks, in order, become one bash script in a temporary
 * directory where `dist/`, `examples/`, `lib/` and `node_modules/` link to the repository and
 * `cluster` is dist/cluster. Port 8786 becomes a free port. A page that starts no scheduler of
 * its own gets one (with examples/plugins.toml) and a nanny-supervised worker (with
 * examples/tasks.ts). Within a block:
 * - `npm …` lines are skipped: the test run has installed the packages and built the binary;
 * - a line ending in `&` starts a server, stopped when the page is done; the next line waits
 *   for the scheduler to answer;
 * - `CMD   # JSON` checks that CMD prints that JSON (a number, `true`, `{"b":12}`…);
 * - `CMD   # …, until Ctrl-C` runs CMD for 3 s, then SIGINT: it must have printed something;
 * - in TypeScript, `console.log(X);   // JSON` checks that X equals JSON.
 * A `json runnable` block is a graph, submitted with `cluster submit`, which must succeed.
 */
import { describe, expect, test } from "bun:test";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { commandInfo } from "../cmd/_commands.ts";
import { envName } from "../cmd/_args.ts";
import { renderCliDoc } from "../scripts/cli-docs.ts";
import { root, runCli, startProcess, tempDir } from "../testkit/mod.ts";

const pages = ["README.md", ...readdirSync(join(root, "docs")).filter((n) => n.endsWith(".md")).map((n) => `docs/${n}`)];

interface Block {
  lang: string;
  runnable: boolean;
  text: string;
}

/** The fenced code blocks of a Markdown page. */
function blocks(markdown: string): Block[] {
  const out: Block[] = [];
  const fence = /^```([^\n]*)\n([\s\S]*?)^```[ \t]*$/gm;
  for (const m of markdown.matchAll(fence)) {
    const info = m[1].trim().split(/\s+/);
    out.push({ lang: info[0] ?? "", runnable: info.includes("runnable"), text: m[2] });
  }
  return out;
}

/** A free TCP port on loopback. */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** A shell block as bash lines, with the rules of the header comment applied. */
function shellLines(text: string): string[] {
  const physical = text.replace(/\\\n\s*/g, " ").split("\n");
  const out: string[] = [];
  let heredoc: string | undefined;
  for (const line of physical) {
    if (heredoc !== undefined) {
      out.push(line);
      if (line.trim() === heredoc) heredoc = undefined;
      continue;
    }
    const here = /<<-?\s*'?"?(\w+)'?"?\s*$/.exec(line.replace(/\s+#.*$/, ""));
    if (here && !line.includes("<<<")) heredoc = here[1];
    if (/^\s*npm\s/.test(line)) {
      out.push(`: ${quote(line)} # skipped: the test run installed and built`);
      continue;
    }
    const m = /^(.*?\S)\s{2,}#\s?(.*)$/.exec(line);
    const command = m ? m[1] : line;
    const comment = m ? m[2].trim() : "";
    if (/&\s*$/.test(command)) {
      out.push(command, "__servers+=($!)", "__ready");
    } else if (/until Ctrl-C/.test(comment)) {
      out.push(`__follow ${command}`);
    } else if (comment !== "" && isJson(comment)) {
      out.push(`__out=$(${command})`, `__check "$__out" ${quote(comment)}`);
    } else out.push(command);
  }
  return out;
}

/** A TypeScript block with `console.log(X);   // JSON` turned into checks. */
function typescript(text: string): string {
  return text.split("\n").map((line) => {
    const m = /^(\s*)console\.log\((.*)\);\s*\/\/\s*(.+)$/.exec(line);
    if (!m || !isJson(m[3].trim())) return line;
    return `${m[1]}{ const __v = ${m[2]}; if (JSON.stringify(__v) !== JSON.stringify(${m[3].trim()})) throw new Error(\`expected ${m[3].trim().replace(/`/g, "")}, got \${JSON.stringify(__v)}\`); console.log(__v); }`;
  }).join("\n");
}

const prelude = `set -eo pipefail
__servers=()
__cleanup() {
  for p in "\${__servers[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "\${__servers[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap __cleanup EXIT
__ready() {
  for _ in $(seq 1 150); do
    if cluster info "http://127.0.0.1:$PORT" --json > __info.json 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "the scheduler on port $PORT did not answer" >&2
  return 1
}
__workers() {
  for _ in $(seq 1 150); do
    if cluster info "http://127.0.0.1:$PORT" --json 2>/dev/null | grep -q '"name"'; then return 0; fi
    sleep 0.2
  done
  echo "no worker joined the scheduler on port $PORT" >&2
  return 1
}
__check() {
  if ! node -e 'const [got, want] = process.argv.slice(1);
    const norm = (s) => { try { return JSON.stringify(sortKeys(JSON.parse(s))); } catch { return s.trim(); } };
    function sortKeys(v) { return Array.isArray(v) ? v.map(sortKeys) : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])])) : v; }
    process.exit(norm(got) === norm(want) ? 0 : 1);' "$1" "$2"; then
    echo "expected $2, got: $1" >&2
    return 1
  fi
  echo "$1"
}
__follow() {
  "$@" > __follow.out &
  local pid=$!
  sleep 3
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || true
  if [ ! -s __follow.out ]; then echo "no output from: $*" >&2; return 1; fi
  head -n 3 __follow.out
}
`;

/** Builds the script of one page; `undefined` when it has no runnable block. */
function pageScript(page: string, dir: string, port: number): string | undefined {
  const runnable = blocks(readFileSync(join(root, page), "utf8")).filter((b) => b.runnable);
  if (runnable.length === 0) return undefined;
  const lines: string[] = [];
  let n = 0;
  for (const block of runnable) {
    const text = block.text.replace(/8786/g, String(port));
    n++;
    if (block.lang === "sh" || block.lang === "bash") lines.push(`# block ${n}`, ...shellLines(text));
    else if (block.lang === "ts") {
      writeFileSync(join(dir, `block-${n}.ts`), typescript(text));
      lines.push(`# block ${n}`, `"$BUN" block-${n}.ts`);
    } else if (block.lang === "json") {
      writeFileSync(join(dir, `block-${n}.json`), text);
      lines.push(`# block ${n}`, `cluster submit "http://127.0.0.1:$PORT" block-${n}.json`);
    } else throw new Error(`${page}: a runnable block must be sh, ts or json, not "${block.lang}"`);
  }
  const own = lines.some((l) => /cluster (scheduler|local)\b.*&\s*$/.test(l));
  const start = own ? [] : [
    `cluster scheduler --port "$PORT" --plugins examples/plugins.toml 2> scheduler.log &`,
    "__servers+=($!)",
    "__ready",
    `cluster worker "http://127.0.0.1:$PORT" --nanny --name docs-worker --tasks examples/tasks.ts 2> worker.log &`,
    "__servers+=($!)",
    "__workers",
  ];
  return [prelude, ...start, ...lines, ""].join("\n");
}

function run(script: string, dir: string, port: number): Promise<{ code: number | null; output: string }> {
  const bin = join(dir, "bin");
  mkdirSync(bin, { recursive: true });
  symlinkSync(join(root, "dist", "cluster"), join(bin, "cluster"));
  for (const name of ["dist", "examples", "lib", "node_modules", "plugins"]) symlinkSync(join(root, name), join(dir, name));
  writeFileSync(join(dir, "page.sh"), script);
  return new Promise((resolveRun) => {
    const child = spawn("bash", ["page.sh"], {
      cwd: dir,
      env: {
        ...process.env,
        PATH: `${bin}:${dirname(process.execPath)}:${process.env.PATH}`,
        PORT: String(port),
        BUN: process.execPath,
        TMPDIR: dir,
        NO_COLOR: "1",
        CLUSTER_EVENTS_FILE: join(dir, "events.jsonl"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout!.setEncoding("utf8").on("data", (c: string) => (output += c));
    child.stderr!.setEncoding("utf8").on("data", (c: string) => (output += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), 150_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolveRun({ code, output });
    });
  });
}

describe("runnable examples", () => {
  for (const page of pages) {
    const has = blocks(readFileSync(join(root, page), "utf8")).some((b) => b.runnable);
    test.skipIf(!has)(`the runnable examples of ${page} run as written against a local cluster`, async () => {
      const dir = tempDir();
      const port = await freePort();
      const script = pageScript(page, dir, port)!;
      const { code, output } = await run(script, dir, port);
      if (code !== 0) console.error(`${page}:\n${output.slice(-4000)}`);
      expect(code).toBe(0);
    }, 180_000);
  }
});

describe("the pages", () => {
  test("README and docs never mention the internal contract or issue numbers", () => {
    for (const page of pages) {
      const text = readFileSync(join(root, page), "utf8");
      expect({ page, spec: /\bSPEC\b/.test(text) }).toEqual({ page, spec: false });
      expect({ page, issue: /\bissues?\s*#?\d+/i.exec(text)?.[0] }).toEqual({ page, issue: undefined });
    }
  });

  test("every relative link points to a file that exists", () => {
    for (const page of pages) {
      const text = readFileSync(join(root, page), "utf8");
      for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/.test(target)) continue;
        expect({ page, target, exists: existsSync(resolve(root, dirname(page), target)) }).toEqual({ page, target, exists: true });
      }
    }
  });

  test("docs/cli.md documents every command, flag and variable as defined", () => {
    const current = readFileSync(join(root, "docs", "cli.md"), "utf8");
    // When this fails after a flag was added or changed: run `npx bun scripts/cli-docs.ts`.
    expect(renderCliDoc(current)).toBe(current);
  });

  test("the systemd units set only variables that are flags of the command they run", () => {
    const info = commandInfo();
    const dir = join(root, "examples", "systemd");
    const units = readdirSync(dir).filter((n) => n.endsWith(".service"));
    expect(units.sort()).toEqual(["cluster-scheduler.service", "cluster-worker@.service"]);
    for (const unit of units) {
      const text = readFileSync(join(dir, unit), "utf8");
      const command = /^ExecStart=\S+ (\w+)/m.exec(text)![1];
      const known = new Set(Object.keys(info[command].args).map((f) => envName(f)).filter(Boolean));
      for (const m of text.matchAll(/^#?\s*(?:Environment=)?(CLUSTER_[A-Z_]+)=/gm)) {
        if (m[1] === "CLUSTER_TOKEN") continue;
        expect({ unit, variable: m[1], known: known.has(m[1]) }).toEqual({ unit, variable: m[1], known: true });
      }
    }
  });

  test("systemd-analyze accepts the units, where it is installed", () => {
    if (spawnSync("systemd-analyze", ["--version"]).status !== 0) return;
    const dir = tempDir();
    const units = join(root, "examples", "systemd");
    for (const [from, to] of [["cluster-scheduler.service", "cluster-scheduler.service"], ["cluster-worker@.service", "cluster-worker@1.service"]]) {
      writeFileSync(join(dir, to), readFileSync(join(units, from), "utf8").replaceAll("/usr/local/bin/cluster", join(root, "dist", "cluster")));
    }
    const r = spawnSync("systemd-analyze", ["verify", join(dir, "cluster-scheduler.service"), join(dir, "cluster-worker@1.service")], { encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  test("the units' environment alone configures a scheduler and a nanny-supervised worker", async () => {
    const env = (unit: string) => {
      const text = readFileSync(join(root, "examples", "systemd", unit), "utf8").replaceAll("%i", "1").replaceAll("%H", "host");
      return Object.fromEntries([...text.matchAll(/^Environment=(CLUSTER_[A-Z_]+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
    };
    const dir = tempDir();
    // Loopback, a free port and the repository's files instead of the machine's.
    const scheduler = await startProcess(["scheduler"], {
      env: { ...env("cluster-scheduler.service"), CLUSTER_HOST: "127.0.0.1", CLUSTER_PORT: "0", CLUSTER_PLUGINS: join(root, "examples", "plugins.toml"), CLUSTER_EVENTS_FILE: join(dir, "events.jsonl") },
    });
    try {
      const nanny = await startProcess(["nanny"], {
        env: { ...env("cluster-worker@.service"), CLUSTER_SCHEDULER: scheduler.url, CLUSTER_LOCAL_DIRECTORY: join(dir, "worker-1") },
        timeoutMs: 60_000,
      });
      const info = JSON.parse((await runCli(["info", scheduler.url, "--json"])).stdout);
      expect(info.workers.map((w: { name: string; nthreads: number; nanny: boolean }) => [w.name, w.nthreads, w.nanny])).toEqual([["host-1", 2, true]]);
      await nanny.stop();
    } finally {
      await scheduler.stop();
    }
  }, 90_000);
});
