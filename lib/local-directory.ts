/**
 * Where a worker or nanny keeps its files (uploads, packages, plugins): the directory given with
 * `--local-directory`, which is the user's and stays, or one of its own under the system's
 * temporary directory, which it removes when it closes (as Dask's scratch space), so that
 * workers started and stopped leave nothing behind.
 *
 * @module
 */
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** The directory given, else `cluster-ROLE-NAME` under the temporary directory. */
export function localDirectory(given: string | undefined, role: "worker" | "nanny", name: string): string {
  return resolve(given ?? join(tmpdir(), `cluster-${role}-${name.replace(/[^\w.-]/g, "_")}`));
}

/** Removes a directory the process made for itself (none was given); never throws. */
export async function removeOwnDirectory(given: string | undefined, path: string): Promise<void> {
  if (given === undefined && path) await rm(path, { recursive: true, force: true }).catch(() => {});
}
