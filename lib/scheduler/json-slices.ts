/**
 * Parses a big JSON body (a graph of tens of megabytes) in slices, with the event loop free in
 * between: `JSON.parse` of 55 MB blocks the scheduler for half a second or more. The structure
 * is walked here — objects key by key, arrays in runs of items whose boundaries a byte-level
 * scan finds — and each run is parsed by `JSON.parse` as an array, so the values are exactly
 * what `JSON.parse` gives for the whole (the JSON twin of cbor-slices.ts).
 *
 * Why the runs may be parsed apart: the walk checks what lies between them (a comma, white
 * space, the closing bracket), and arrays of valid JSON joined by commas are valid JSON. A
 * boundary that a malformed item misleads the scan into is inside a run `JSON.parse` rejects.
 *
 * @module
 */
import { yieldToLoop } from "./graph.ts";

// Each run is decoded apart: a byte order mark inside the text stays a character (and an error),
// as it is when the whole body is decoded; only the body's first is dropped, by the walk.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** How {@linkcode parseJsonSliced} cuts its work. */
export interface JsonSliceOptions {
  /** Work between two turns of the event loop (ms). @default 10 */
  sliceMs?: number;
  /** Texts (and runs of items) shorter than this are parsed in one piece (bytes). @default 262144 */
  wholeBytes?: number;
  /** Items of a big array parsed per run. @default 2048 */
  runItems?: number;
}

/**
 * Parses the UTF-8 JSON text `bytes` like `JSON.parse` (of the text decoded as
 * `TextDecoder` does), yielding to the event loop about every `sliceMs`. Throws a `SyntaxError`
 * on malformed input, as `JSON.parse` does.
 *
 * @example
 * ```ts
 * const graph = await parseJsonSliced(new TextEncoder().encode('{"tasks": []}'));
 * ```
 */
export async function parseJsonSliced(bytes: Uint8Array, options: JsonSliceOptions = {}): Promise<unknown> {
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const walker = new Walker(bytes, { sliceMs: options.sliceMs ?? 10, wholeBytes: options.wholeBytes ?? 256 * 1024, runItems: options.runItems ?? 2048 });
  if (bytes.length < walker.wholeBytes) return JSON.parse(decoder.decode(bytes.subarray(bom)));
  const value = await walker.item(walker.space(bom));
  if (walker.space(value.end) !== bytes.length) throw new SyntaxError(`Unexpected data after the JSON value at byte ${value.end}`);
  return value.value;
}

/** Levels walked: a graph, its tasks array, a task, its args, an arg. */
const walkDepth = 5;

const quote = 0x22;
const backslash = 0x5c;
const comma = 0x2c;
const colon = 0x3a;
const openBrace = 0x7b;
const closeBrace = 0x7d;
const openBracket = 0x5b;
const closeBracket = 0x5d;

class Walker {
  readonly wholeBytes: number;
  #bytes: Uint8Array;
  #sliceMs: number;
  #runItems: number;
  #sliceStart = performance.now();

  constructor(bytes: Uint8Array, options: Required<JsonSliceOptions>) {
    this.#bytes = bytes;
    this.#sliceMs = options.sliceMs;
    this.wholeBytes = options.wholeBytes;
    this.#runItems = options.runItems;
  }

  async #maybeYield(): Promise<void> {
    if (performance.now() - this.#sliceStart < this.#sliceMs) return;
    await yieldToLoop();
    this.#sliceStart = performance.now();
  }

  /**
   * The value at `pos` (its first byte) and where it ends: big arrays and objects walked, the
   * rest parsed whole. Only the outer `walkDepth` levels are walked: a value nested 200,000 deep
   * is one `JSON.parse` (which judges it), not 200,000 nested walks.
   */
  async item(pos: number, depth = 0): Promise<{ value: unknown; end: number }> {
    const first = this.#bytes[pos];
    if (depth < walkDepth && first === openBracket) return await this.#array(pos, depth);
    if (depth < walkDepth && first === openBrace) return await this.#object(pos, depth);
    const end = this.skip(pos);
    return { value: this.#parse(pos, end), end };
  }

  async #array(pos: number, depth: number): Promise<{ value: unknown[]; end: number }> {
    const out: unknown[] = [];
    let at = this.space(pos + 1);
    if (this.#bytes[at] === closeBracket) return { value: out, end: at + 1 };
    for (;;) {
      // A run: up to `runItems` items and the commas between them, ending after an item.
      const from = at;
      let last = at;
      let closed = false;
      for (let n = 0; n < this.#runItems; n++) {
        last = this.skip(at);
        at = this.space(last);
        const next = this.#bytes[at];
        if (next === closeBracket) {
          closed = true;
          break;
        }
        if (next !== comma) throw this.#unexpected(at, "',' or ']' in an array");
        at = this.space(at + 1);
      }
      if (last - from >= this.wholeBytes) {
        // A run of big items (rare: a graph's tasks are small): walk each one.
        for (let p = from;;) {
          const one = await this.item(p, depth + 1);
          out.push(one.value);
          if (one.end === last) break;
          const next = this.space(one.end);
          if (one.end > last || this.#bytes[next] !== comma) throw this.#unexpected(next, "',' in an array");
          p = this.space(next + 1);
        }
      } else {
        const items = JSON.parse(`[${decoder.decode(this.#bytes.subarray(from, last))}]`) as unknown[];
        for (let i = 0; i < items.length; i++) out.push(items[i]);
      }
      await this.#maybeYield();
      if (closed) return { value: out, end: at + 1 };
    }
  }

  async #object(pos: number, depth: number): Promise<{ value: Record<string, unknown>; end: number }> {
    const out: Record<string, unknown> = {};
    let at = this.space(pos + 1);
    if (this.#bytes[at] === closeBrace) return { value: out, end: at + 1 };
    for (;;) {
      if (this.#bytes[at] !== quote) throw this.#unexpected(at, "a string key in an object");
      const keyEnd = this.skip(at);
      const key = this.#parse(at, keyEnd) as string;
      at = this.space(keyEnd);
      if (this.#bytes[at] !== colon) throw this.#unexpected(at, "':' after an object key");
      const value = await this.item(this.space(at + 1), depth + 1);
      // As JSON.parse: an own property, even "__proto__"; a repeated key keeps the last value.
      if (key === "__proto__") Object.defineProperty(out, key, { value: value.value, writable: true, enumerable: true, configurable: true });
      else out[key] = value.value;
      at = this.space(value.end);
      const next = this.#bytes[at];
      if (next === closeBrace) return { value: out, end: at + 1 };
      if (next !== comma) throw this.#unexpected(at, "',' or '}' in an object");
      at = this.space(at + 1);
      await this.#maybeYield();
    }
  }

  #parse(from: number, to: number): unknown {
    return JSON.parse(decoder.decode(this.#bytes.subarray(from, to)));
  }

  #unexpected(at: number, wanted: string): SyntaxError {
    if (at >= this.#bytes.length) return new SyntaxError(`Unexpected end of JSON input: expected ${wanted}`);
    return new SyntaxError(`Unexpected character "${String.fromCharCode(this.#bytes[at])}" at byte ${at}: expected ${wanted}`);
  }

  /** The first byte at or after `pos` that is not JSON white space. */
  space(pos: number): number {
    const bytes = this.#bytes;
    while (pos < bytes.length) {
      const c = bytes[pos];
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      pos++;
    }
    return pos;
  }

  /** Where the value at `pos` ends, without parsing it (brackets counted, strings skipped). */
  skip(pos: number): number {
    const bytes = this.#bytes;
    const first = bytes[pos];
    if (first === quote) return this.#string(pos);
    if (first === openBrace || first === openBracket) {
      let depth = 0;
      for (let i = pos; i < bytes.length; i++) {
        const c = bytes[i];
        if (c === quote) i = this.#string(i) - 1;
        else if (c === openBrace || c === openBracket) depth++;
        else if ((c === closeBrace || c === closeBracket) && --depth === 0) return i + 1;
      }
      throw new SyntaxError("Unexpected end of JSON input");
    }
    // A number, true, false or null: up to the next delimiter (JSON.parse judges its spelling).
    let i = pos;
    for (; i < bytes.length; i++) {
      const c = bytes[i];
      if (c === comma || c === closeBracket || c === closeBrace || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) break;
    }
    if (i === pos) throw this.#unexpected(pos, "a value");
    return i;
  }

  /** Where the string starting at `pos` (a quote) ends, just after its closing quote. */
  #string(pos: number): number {
    const bytes = this.#bytes;
    let at = pos + 1;
    for (;;) {
      const end = bytes.indexOf(quote, at);
      if (end < 0) throw new SyntaxError("Unexpected end of JSON input: unterminated string");
      // Escaped when an odd number of backslashes precedes it.
      let k = end - 1;
      while (k > pos && bytes[k] === backslash) k--;
      if ((end - 1 - k) % 2 === 0) return end + 1;
      at = end + 1;
    }
  }
}

/**
 * The JSON text of `{[name]: items}` as a stream made `every` items at a time, with the event
 * loop free between parts: the answer to a graph of a million tasks lists a million keys, and
 * `JSON.stringify` of them in one piece blocks the scheduler for about 100 ms.
 *
 * @example
 * ```ts
 * return new Response(jsonArrayStream("keys", keys), { headers: { "content-type": "application/json" } });
 * ```
 */
export function jsonArrayStream(name: string, items: readonly unknown[], every = 32_768): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  let at = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (at > 0) await yieldToLoop();
      const end = Math.min(items.length, at + every);
      const part = JSON.stringify(items.slice(at, end));
      // The part's own brackets go: the parts are one array.
      const head = at === 0 ? `{${JSON.stringify(name)}:[` : ",";
      controller.enqueue(encoder.encode(end === at ? `${head}]}` : `${head}${part.slice(1, -1)}${end === items.length ? "]}" : ""}`));
      at = end;
      if (at >= items.length) controller.close();
    },
  });
}
