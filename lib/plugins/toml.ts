/**
 * plugins.toml as a document plus the line of everything an error message may point at: each
 * `[[ROLE.plugins]]` entry and each key inside it (also for `plugins = [{…}]` and dotted keys).
 * The positions come from toml-eslint-parser's AST, the values from the same parse, so one
 * parser reads the file and there is no second scanner to disagree with it.
 *
 * @module
 */
import { getStaticTOMLValue, ParseError, parseTOML } from "toml-eslint-parser";
import type { AST } from "toml-eslint-parser";

/** Lines (1-based) of the parts of a plugins.toml, with fall-backs to the enclosing part. */
export interface Positions {
  /** A top-level key (`[scheduler]`, `client = …`). */
  rootLine(key: string): number;
  /** A key of a role's table (`[scheduler] port = 1`, `[scheduler.x]`). */
  sectionKeyLine(role: string, key: string): number;
  /** The header of a role's `index`th plugin entry. */
  entryLine(role: string, index: number): number;
  /** A key of that entry (or its header when the key is not written there). */
  entryKeyLine(role: string, index: number, key: string): number;
}

/** A TOML syntax error with its place, 1-based. */
export class TomlSyntaxError extends SyntaxError {
  override name = "TomlSyntaxError";
  readonly line: number;
  readonly column: number;
  constructor(message: string, line: number, column: number, options?: { cause?: unknown }) {
    super(message, options);
    this.line = line;
    this.column = column;
  }
}

interface EntryPositions {
  line: number;
  keys: Map<string, number>;
}

/**
 * Parses plugins.toml text into its value and the positions of its parts.
 *
 * @example
 * ```ts
 * const { doc, positions } = parseTomlWithPositions('[[worker.plugins]]\nuse = "x"\n');
 * positions.entryKeyLine("worker", 0, "use"); // 2
 * ```
 */
export function parseTomlWithPositions(text: string): { doc: Record<string, unknown>; positions: Positions } {
  let ast: AST.TOMLProgram;
  try {
    ast = parseTOML(text);
  } catch (err) {
    if (err instanceof ParseError) {
      const { line, column } = blamed(text, err.index, err.lineNumber, err.column);
      const lineText = text.split("\n")[line - 1]?.trim();
      const where = lineText ? ` in ${JSON.stringify(lineText)}` : "";
      throw new TomlSyntaxError(`${err.message}${where} (invalid TOML)`, line, column + 1, { cause: err });
    }
    throw err;
  }
  const doc = getStaticTOMLValue(ast) as Record<string, unknown>;
  return { doc, positions: positionsOf(ast) };
}

/**
 * Where to point for a parse error: the parser notices an unfinished line (`[[a.plugins]`,
 * `key =`) only at the start of the next one, so an error with nothing before it on its line is
 * blamed on the end of the previous token. Line 1-based, column 0-based.
 */
function blamed(text: string, index: number, line: number, column: number): { line: number; column: number } {
  if (text.slice(index - column, index).trim() !== "") return { line, column };
  let i = index - 1;
  let lines = 0;
  while (i >= 0 && /\s/.test(text[i])) {
    if (text[i] === "\n") lines++;
    i--;
  }
  if (i < 0 || lines === 0) return { line, column };
  const start = text.lastIndexOf("\n", i) + 1;
  return { line: line - lines, column: i - start };
}

function keyName(part: AST.TOMLBare | AST.TOMLQuoted): string {
  return part.type === "TOMLBare" ? part.name : part.value;
}

function positionsOf(ast: AST.TOMLProgram): Positions {
  const root = new Map<string, number>();
  const sections = new Map<string, { line: number; keys: Map<string, number> }>();
  const entries = new Map<string, EntryPositions[]>();
  const setOnce = (m: Map<string, number>, k: string, line: number) => {
    if (!m.has(k)) m.set(k, line);
  };
  const section = (name: string, line: number) => {
    let s = sections.get(name);
    if (!s) sections.set(name, (s = { line, keys: new Map() }));
    return s;
  };
  const entryList = (role: string) => {
    let list = entries.get(role);
    if (!list) entries.set(role, (list = []));
    return list;
  };
  /** `plugins = [{use = …}, …]`: each inline table is an entry. */
  const inlineEntries = (role: string, value: AST.TOMLContentNode) => {
    if (value.type !== "TOMLArray") return;
    for (const element of value.elements) {
      const entry = { line: element.loc.start.line, keys: new Map<string, number>() };
      if (element.type === "TOMLInlineTable") {
        for (const kv of element.body) setOnce(entry.keys, keyName(kv.key.keys[0]), kv.loc.start.line);
      }
      entryList(role).push(entry);
    }
  };
  /** A key-value written under the path `table` (empty at the top). */
  const keyValue = (table: (string | number)[], kv: AST.TOMLKeyValue) => {
    const path = [...table, ...kv.key.keys.map(keyName)];
    const line = kv.loc.start.line;
    const [top, second, third, fourth] = path;
    setOnce(root, String(top), line);
    if (path.length < 2) return;
    setOnce(section(String(top), line).keys, String(second), line);
    if (second !== "plugins") return;
    if (path.length === 2) inlineEntries(String(top), kv.value);
    else if (typeof third === "number" && fourth !== undefined) {
      const entry = entries.get(String(top))?.[third];
      if (entry) setOnce(entry.keys, String(fourth), line);
    }
  };
  for (const node of ast.body[0].body) {
    if (node.type === "TOMLKeyValue") {
      keyValue([], node);
      continue;
    }
    const path = node.resolvedKey;
    const line = node.loc.start.line;
    const [top, second, third] = path;
    setOnce(root, String(top), line);
    if (path.length === 1) {
      section(String(top), line);
    } else {
      setOnce(section(String(top), line).keys, String(second), line);
      // `[[ROLE.plugins]]` resolves to [ROLE, "plugins", index]: a new entry.
      if (second === "plugins" && node.kind === "array" && path.length === 3 && typeof third === "number") {
        entryList(String(top))[third] = { line, keys: new Map() };
      } else if (second === "plugins" && typeof third === "number" && path.length > 3) {
        // A sub-table of an entry, e.g. [scheduler.plugins.headers]: the entry's key "headers".
        const entry = entries.get(String(top))?.[third];
        if (entry) setOnce(entry.keys, String(path[3]), line);
      }
    }
    for (const kv of node.body) keyValue(path, kv);
  }

  const rootLine = (key: string) => root.get(key) ?? 1;
  const sectionKeyLine = (role: string, key: string) => {
    const s = sections.get(role);
    return s?.keys.get(key) ?? s?.line ?? rootLine(role);
  };
  const entryLine = (role: string, index: number) =>
    entries.get(role)?.[index]?.line ?? sectionKeyLine(role, "plugins");
  return {
    rootLine,
    sectionKeyLine,
    entryLine,
    entryKeyLine: (role, index, key) => entries.get(role)?.[index]?.keys.get(key) ?? entryLine(role, index),
  };
}
