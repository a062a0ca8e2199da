/**
 * One wording, on every runtime, for a port another program listens on: Bun says `EADDRINUSE`,
 * Deno `AddrInUse: Address already in use`.
 *
 * @module
 */

/** The error to throw for a failed listen: `Port N is already in use` when it is that, else `err`. */
export function portError(err: unknown, port: number): unknown {
  const e = err as { code?: unknown; name?: unknown; message?: unknown } | null;
  const text = `${e?.code ?? ""} ${e?.name ?? ""} ${e?.message ?? ""}`;
  if (/EADDRINUSE|AddrInUse|address already in use|in use/i.test(text)) return new Error(`Port ${port} is already in use`, { cause: err });
  return err;
}
