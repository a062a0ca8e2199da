/**
 * Fast tests of the pure helpers behind the Dask-parity features: the import scanner that finds
 * a module plugin's own files, and Dask's key_split for task prefixes and groups.
 */
import { describe, expect, test } from "bun:test";
import { scanImports, scanImportsByRegex } from "../lib/plugins/imports.ts";
import { keyGroup, keySplit } from "../lib/scheduler/task-view.ts";

const sample = `import type { X } from "./types.ts";
import { a } from "./a.ts";
import b, { c as d } from './b.js';
export * from "./c.ts";
export { e } from "./d.ts";
export type { F } from "./f-types.ts";
import "./side.ts";
import {
  g,
  h,
} from "./multi.ts";
const i = await import("./dyn.ts");
const j = await import(\`./tpl.ts\`);
const k = await import(name);
import fs from "node:fs";
import lodash from "lodash-es";
// import { no } from "./line-comment.ts";
/* import { no } from "./block-comment.ts"; */
const url = "http://example.org/x"; import { l } from "./after-url.ts";
`;

const expected = ["./a.ts", "./b.js", "./c.ts", "./d.ts", "./side.ts", "./multi.ts", "node:fs", "lodash-es", "./after-url.ts", "./dyn.ts", "./tpl.ts"];

describe("finding a module's imports", () => {
  test("the regular expression finds static, re-exported, side-effect and literal dynamic imports, skipping type-only ones and comments", () => {
    expect(scanImportsByRegex(sample).sort()).toEqual([...expected].sort());
  });

  test("Bun's parser and the regular expression agree on the sample", () => {
    expect(scanImports(sample).sort()).toEqual([...expected].sort());
  });
});

describe("Dask's key_split", () => {
  test("prefixes are the key's leading words, without indexes and hex tokens", () => {
    expect(keySplit("x")).toBe("x");
    expect(keySplit("x-1")).toBe("x");
    expect(keySplit("x-y-3")).toBe("x-y");
    expect(keySplit("inc-1a2b3c4d-0")).toBe("inc");
    expect(keySplit("hello-world-abcdefab")).toBe("hello-world");
    expect(keySplit("('sum-abc', 0)")).toBe("sum");
    expect(keySplit("c40ea6d6d3b24a4b8cf4b7ceee9ed3c4")).toBe("data");
  });

  test("groups are the key without its last -N index", () => {
    expect(keyGroup("inc-1a2b3c4d-7")).toBe("inc-1a2b3c4d");
    expect(keyGroup("total")).toBe("total");
    expect(keyGroup("x-y")).toBe("x-y");
  });
});
