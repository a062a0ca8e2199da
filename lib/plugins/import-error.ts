/**
 * Words for a module that fails to import: Bun reports a parse error as a `BuildMessage` (one)
 * or an `AggregateError` of them ("3 errors building …", with no message or line of its own);
 * Deno as a `SyntaxError` text naming the file. Either way the user gets the first error's
 * message, the file as they named it, the line and the column.
 *
 * @module
 */

interface Position {
  file?: string;
  line?: number;
  column?: number;
}

interface BuildMessageLike {
  name?: unknown;
  message?: unknown;
  position?: Position | null;
}

/**
 * The message of an import failure: `SyntaxError: Unexpected ; at ./broken.ts:3:23`, with
 * `(and N more errors)` when Bun found several.
 *
 * @param err what `import()` threw
 * @param path the file that was imported (may be a copy under a temporary directory)
 * @param shown how to name it in the message (the path as the user wrote it)
 *
 * @example
 * ```ts
 * try { await import(url); } catch (err) { throw new Error(describeImportError(err, path, "./x.ts")); }
 * ```
 */
export function describeImportError(err: unknown, path: string, shown: string = path): string {
  const list = err instanceof AggregateError && err.errors.length > 0 ? err.errors : [err];
  const first = list[0] as BuildMessageLike | null;
  let text: string;
  if (first && typeof first.message === "string") {
    const name = first.name === "BuildMessage" ? "SyntaxError" : String(first.name ?? "Error");
    // Deno wraps the parse error's own text ("SyntaxError: …") in a TypeError.
    text = first.message.startsWith(`SyntaxError: `) ? first.message : `${name}: ${first.message}`;
  } else {
    text = String(first);
  }
  const position = first?.position;
  if (position && typeof position.line === "number") {
    text += ` at ${shown}:${position.line}:${position.column ?? 0}`;
  }
  const more = list.length - 1;
  if (more > 0) text += ` (and ${more} more error${more === 1 ? "" : "s"})`;
  // Deno's text names the file by URL: show the user's name for it, and keep to one line
  // per fact (the excerpt lines with `|` are dropped).
  const url = `file://${path}`;
  return text
    .split("\n")
    .filter((line) => !/^\s*\d*\s*\|/.test(line))
    .map((line) => line.trim())
    .join(" ")
    .split(url).join(shown)
    .split(path).join(shown);
}
