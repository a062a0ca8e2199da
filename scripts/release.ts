/**
 * `npm run release`: one binary per target in dist/release/ — `cluster-VERSION-TARGET[.exe]` for
 * linux-x64, linux-arm64, darwin-x64, darwin-arm64 and windows-x64 — plus `SHA256SUMS` in the
 * format of `sha256sum`, which install.sh checks.
 *
 * Cross-compiling needs Bun's executable for each target. Bun would download it itself; we take
 * it from the npm registry instead (the `@oven/bun-…` packages that `npm ci` installs for this
 * machine), with `npm pack`, so that it comes through npm's cache and configuration like every
 * other package, and hand it to `bun build --compile-executable-path`. The unpacked executables
 * are kept in dist/.bun-runtimes/.
 *
 * `--if-stale` skips the build when dist/release/ was built from the same sources (the tests use
 * it, so that a test run builds the release once).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { build, gitCommit, hostTarget, root } from "./build.ts";

/** Our target names and the npm package holding Bun's executable for each. */
export const targets: Record<string, string> = {
  "linux-x64": "@oven/bun-linux-x64",
  "linux-arm64": "@oven/bun-linux-aarch64",
  "darwin-x64": "@oven/bun-darwin-x64",
  "darwin-arm64": "@oven/bun-darwin-aarch64",
  "windows-x64": "@oven/bun-windows-x64",
};

const releaseDir = join(root, "dist", "release");
const runtimesDir = join(root, "dist", ".bun-runtimes");

/** The file name of a target's binary. */
export function binaryName(version: string, target: string): string {
  return `cluster-${version}-${target}${target.startsWith("windows") ? ".exe" : ""}`;
}

/** Bun's executable for a target, from node_modules when it is this machine's, else `npm pack`. */
function bunExecutable(pkg: string, bunVersion: string): string {
  const exe = pkg.includes("windows") ? "bun.exe" : "bun";
  const installed = join(root, "node_modules", pkg);
  if (existsSync(join(installed, "bin", exe))) {
    const { version } = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
    if (version === bunVersion) return join(installed, "bin", exe);
  }
  const dir = join(runtimesDir, `${pkg.replace("@oven/", "")}-${bunVersion}`);
  const path = join(dir, "package", "bin", exe);
  if (existsSync(path)) return path;
  mkdirSync(dir, { recursive: true });
  const pack = spawnSync("npm", ["pack", `${pkg}@${bunVersion}`, "--pack-destination", dir, "--silent"], { cwd: dir, encoding: "utf8" });
  const tarball = pack.stdout.trim().split("\n").pop() ?? "";
  if (pack.status !== 0 || !tarball) throw new Error(`npm pack ${pkg}@${bunVersion} failed: ${pack.stderr.trim()}`);
  const untar = spawnSync("tar", ["-xzf", join(dir, tarball), "-C", dir], { encoding: "utf8" });
  if (untar.status !== 0) throw new Error(`Cannot unpack "${tarball}": ${untar.stderr.trim()}`);
  rmSync(join(dir, tarball));
  return path;
}

/** A hash of everything that goes into the binaries, to skip a build that would change nothing. */
function sourceStamp(bunVersion: string): string {
  const hash = createHash("sha256").update(`${bunVersion}\n${gitCommit()}\n`);
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.(ts|json)$/.test(name)) hash.update(`${relative(root, path)}\n`).update(readFileSync(path));
    }
  };
  for (const dir of ["cmd", "lib", "plugins"]) walk(join(root, dir));
  hash.update(readFileSync(join(root, "package.json")));
  return hash.digest("hex");
}

/** Builds every target into dist/release/ and writes SHA256SUMS; returns the file names. */
export function release(options: { ifStale?: boolean; log?: (line: string) => void } = {}): string[] {
  const log = options.log ?? ((line: string) => console.log(line));
  const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const bunVersion = process.versions.bun ?? "";
  const stampFile = join(releaseDir, ".stamp");
  const stamp = sourceStamp(bunVersion);
  const names = Object.keys(targets).map((t) => binaryName(version, t));
  if (options.ifStale && existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp && names.every((n) => existsSync(join(releaseDir, n)))) {
    log(`dist/release is up to date (${names.length} binaries)`);
    return names;
  }
  rmSync(releaseDir, { recursive: true, force: true });
  mkdirSync(releaseDir, { recursive: true });
  const commit = gitCommit();
  const sums: string[] = [];
  for (const [target, pkg] of Object.entries(targets)) {
    const started = performance.now();
    const name = binaryName(version, target);
    const executable = target === hostTarget() ? undefined : bunExecutable(pkg, bunVersion);
    build({ target, outfile: join(releaseDir, name), executable, commit });
    const digest = createHash("sha256").update(readFileSync(join(releaseDir, name))).digest("hex");
    // Two spaces: the text mode of `sha256sum`, which `sha256sum -c` and install.sh read.
    sums.push(`${digest}  ${name}`);
    log(`dist/release/${name} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
  writeFileSync(join(releaseDir, "SHA256SUMS"), sums.join("\n") + "\n");
  writeFileSync(stampFile, stamp);
  log("dist/release/SHA256SUMS");
  return names;
}

if (import.meta.main) {
  try {
    release({ ifStale: process.argv.includes("--if-stale") });
  } catch (err) {
    console.error(`release: ${(err as Error).message}`);
    process.exit(1);
  }
}
