/**
 * docs/protocol.md against lib/messages: every op of each link's message types is in that
 * link's table, and every op the table names is in the types.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const doc = readFileSync(join(root, "docs", "protocol.md"), "utf8");

/** The ops of the unions in one lib/messages file (a `ReplyMessage` member is the `reply` op). */
function typeOps(file: string): Set<string> {
  const source = readFileSync(join(root, "lib", "messages", file), "utf8");
  const ops = new Set([...source.matchAll(/op: "([a-z-]+)"/g)].map((m) => m[1]));
  if (/\|\s*ReplyMessage/.test(source)) ops.add("reply");
  return ops;
}

/** The ops in the op column of the table under a heading. */
function docOps(heading: string, column: number): Set<string> {
  const start = doc.indexOf(heading);
  expect(start).toBeGreaterThanOrEqual(0);
  const end = doc.indexOf("\n#", start + heading.length);
  const section = doc.slice(start, end < 0 ? undefined : end);
  const ops = new Set<string>();
  for (const line of section.split("\n")) {
    if (!line.startsWith("| ") || line.startsWith("|---")) continue;
    const cell = line.split("|")[column + 1] ?? "";
    for (const m of cell.matchAll(/`([a-z-]+)`/g)) ops.add(m[1]);
    // Answers named in the last column (`reply {…}`, `welcome {…}`) are ops too.
    for (const m of line.matchAll(/`(reply|welcome) \{/g)) ops.add(m[1]);
  }
  return ops;
}

describe("docs/protocol.md matches lib/messages", () => {
  for (const [file, heading, column] of [
    ["worker.ts", "### Worker ↔ scheduler", 1],
    ["nanny.ts", "### Nanny ↔ scheduler", 1],
    ["client.ts", "### Client ↔ scheduler", 0],
  ] as const) {
    test(`the ${heading.slice(4)} table names exactly the ops of lib/messages/${file}`, () => {
      expect([...docOps(heading, column)].sort()).toEqual([...typeOps(file)].sort());
    });
  }
});
