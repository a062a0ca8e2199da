/**
 * What `cluster --version` prints: the version, the commit and the target, e.g.
 * `0.2.0 (abc1234) linux-x64`. A release build (scripts/build.ts) embeds the commit and the
 * target with `bun build --define`; from source the commit comes from git when the sources are a
 * checkout, else it is `dev`, and the target is the machine's.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { version } from "../lib/protocol.ts";

// Replaced by `bun build --define` in a build; undeclared (so `typeof` is "undefined") from source.
declare const CLUSTER_BUILD_COMMIT: string;
declare const CLUSTER_BUILD_TARGET: string;

/** The release target of this machine in our names: `linux-x64`, `darwin-arm64`, `windows-x64`… */
export function hostTarget(): string {
  const os = process.platform === "win32" ? "windows" : process.platform;
  return `${os}-${process.arch}`;
}

/** The short commit of the sources, or `dev` when they are not a git checkout. */
function sourceCommit(): string {
  try {
    const dir = dirname(fileURLToPath(import.meta.url));
    const git = spawnSync("git", ["rev-parse", "--short=7", "HEAD"], { cwd: dir, encoding: "utf8", timeout: 5000 });
    const commit = git.status === 0 ? git.stdout.trim() : "";
    return /^[0-9a-f]{7,}$/.test(commit) ? commit : "dev";
  } catch {
    return "dev";
  }
}

/** Version, commit and target of this build. */
export function buildInfo(): { version: string; commit: string; target: string } {
  const commit = typeof CLUSTER_BUILD_COMMIT === "string" ? CLUSTER_BUILD_COMMIT : sourceCommit();
  const target = typeof CLUSTER_BUILD_TARGET === "string" ? CLUSTER_BUILD_TARGET : hostTarget();
  return { version, commit, target };
}

/**
 * The `--version` line.
 *
 * @example
 * ```ts
 * versionLine(); // "0.2.0 (abc1234) linux-x64"
 * ```
 */
export function versionLine(): string {
  const { version, commit, target } = buildInfo();
  return `${version} (${commit}) ${target}`;
}
