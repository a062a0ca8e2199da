/**
 * The one check for every file name that comes from outside (uploads, shipped plugin files):
 * a relative path of plain segments, resolved inside a base directory and verified to stay there.
 *
 * The name is judged as text, the same on every OS: a backslash is refused (on Windows it
 * separates segments, so `a\..\..\x` would climb out), as are `..` segments, absolute paths,
 * drive letters (`C:x`) and NUL. Only then is it resolved, and the result checked once more.
 *
 * @module
 */
import { isAbsolute, relative, resolve, sep } from "node:path";

/** A file name from outside that may not be used; `code` says why, the message names the file. */
export class UnsafePathError extends RangeError {
  override name = "UnsafePathError";
  readonly code = "E_UNSAFE_PATH";
}

/**
 * Checks a relative file name from outside and returns it normalised: `/`-separated, without
 * empty or `.` segments. Throws `UnsafePathError` for anything that could leave a directory.
 *
 * @example
 * ```ts
 * safeRelativePath("pkg/./mod.ts"); // "pkg/mod.ts"
 * safeRelativePath("a\\..\\..\\x"); // throws UnsafePathError
 * ```
 */
export function safeRelativePath(name: string): string {
  const refuse = (why: string) => new UnsafePathError(`Invalid file name ${JSON.stringify(name.slice(0, 200))}: ${why}`);
  if (typeof name !== "string" || name === "") throw refuse("it is empty");
  if (name.includes("\0")) throw refuse("it contains NUL");
  if (name.includes("\\")) throw refuse("it contains a backslash");
  if (/^[a-zA-Z]:/.test(name)) throw refuse("it starts with a drive letter");
  if (name.startsWith("/") || isAbsolute(name)) throw refuse("it is an absolute path");
  const parts = name.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) throw refuse(`it contains a ".." segment`);
  if (parts.length === 0) throw refuse("it names no file");
  return parts.join("/");
}

/**
 * Resolves a file name from outside inside `base`: checked by `safeRelativePath`, then resolved
 * and verified to lie strictly inside `base` (so a name can never be `base` itself either).
 *
 * @example
 * ```ts
 * const target = resolveInside("/var/lib/worker", "tasks/mod.ts"); // "/var/lib/worker/tasks/mod.ts"
 * ```
 */
export function resolveInside(base: string, name: string): string {
  const rel = safeRelativePath(name);
  const root = resolve(base);
  const target = resolve(root, ...rel.split("/"));
  const back = relative(root, target);
  if (back === "" || back === ".." || back.startsWith(`..${sep}`) || isAbsolute(back) || !target.startsWith(root.endsWith(sep) ? root : root + sep)) {
    throw new UnsafePathError(`Invalid file name ${JSON.stringify(name.slice(0, 200))}: it resolves outside "${root}"`);
  }
  return target;
}
