/**
 * Decodes a big CBOR value (a graph body of tens of megabytes) in slices, with the event loop
 * free in between: decoding 60 MB with cbor-x in one call blocks the scheduler for a second or
 * more. The structure is walked here — maps key by key, arrays of many items in runs of items
 * whose boundaries a byte-level skip finds — and each run is decoded by cbor-x as a CBOR
 * sequence, so the values are exactly what `decodeCbor` gives for the whole.
 *
 * @module
 */
import { decodeCbor, decodeCborSequence } from "../protocol.ts";
import { yieldToLoop } from "./graph.ts";

/** Values smaller than this are decoded in one piece. */
const wholeBytes = 256 * 1024;
/** Items of a big array decoded per run. */
const runItems = 2048;
/** Arrays of at most this many items are walked item by item. */
const fewItems = 16;

/**
 * Decodes `bytes` like `decodeCbor`, yielding to the event loop about every `sliceMs`.
 * Throws a `SyntaxError` on malformed input, as `decodeCbor` does.
 */
export async function decodeCborSliced(bytes: Uint8Array, sliceMs = 10): Promise<unknown> {
  if (bytes.length < wholeBytes) return decodeCbor(bytes);
  const walker = new Walker(bytes, sliceMs);
  const value = await walker.item(0);
  if (value.end !== bytes.length) throw new SyntaxError("Malformed CBOR: bytes after the value");
  return value.value;
}

class Walker {
  #bytes: Uint8Array;
  #view: DataView;
  #sliceMs: number;
  #sliceStart = performance.now();

  constructor(bytes: Uint8Array, sliceMs: number) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#sliceMs = sliceMs;
  }

  async #maybeYield(): Promise<void> {
    if (performance.now() - this.#sliceStart < this.#sliceMs) return;
    await yieldToLoop();
    this.#sliceStart = performance.now();
  }

  /** The item at `pos` and where it ends: big arrays and maps walked, the rest decoded whole. */
  async item(pos: number): Promise<{ value: unknown; end: number }> {
    const head = this.#head(pos);
    if (head.major === 4 && head.length >= 0 && head.length <= fewItems) {
      // Few items (a client's frame: one message holding a graph): each walked, none skipped
      // first (skipping a 50 MB message is itself a block of a quarter of a second).
      const out: unknown[] = [];
      let at = head.next;
      for (let i = 0; i < head.length; i++) {
        const one = await this.item(at);
        out.push(one.value);
        at = one.end;
        await this.#maybeYield();
      }
      return { value: out, end: at };
    }
    if (head.major === 4 && head.length >= 0) {
      const out: unknown[] = [];
      let at = head.next;
      for (let i = 0; i < head.length; i += runItems) {
        const from = at;
        const n = Math.min(runItems, head.length - i);
        for (let k = 0; k < n; k++) at = this.skip(at);
        if (at - from >= wholeBytes && n > 1) {
          // A run of big items (rare: a graph's tasks are small): walk each one.
          for (let k = 0, p = from; k < n; k++) {
            const one = await this.item(p);
            out.push(one.value);
            p = one.end;
          }
        } else {
          const items = decodeCborSequence(this.#bytes.subarray(from, at));
          for (const v of items) out.push(v);
        }
        await this.#maybeYield();
      }
      return { value: out, end: at };
    }
    if (head.major === 5 && head.length >= 0) {
      const out: Record<string, unknown> = {};
      let at = head.next;
      for (let i = 0; i < head.length; i++) {
        const keyEnd = this.skip(at);
        const key = decodeCbor(this.#bytes.subarray(at, keyEnd));
        if (typeof key !== "string") return { value: decodeCbor(this.#bytes.subarray(pos, this.skip(pos))), end: this.skip(pos) };
        // Not skipped first: skipping a value of a million items would itself be a long block.
        const value = await this.item(keyEnd);
        out[key] = value.value;
        at = value.end;
        await this.#maybeYield();
      }
      return { value: out, end: at };
    }
    const end = this.skip(pos);
    return { value: decodeCbor(this.#bytes.subarray(pos, end)), end };
  }

  /** A head: major type, its argument (a length or count; -1 when indefinite) and where its content starts. */
  #head(pos: number): { major: number; length: number; next: number } {
    const bytes = this.#bytes;
    if (pos >= bytes.length) throw new SyntaxError("Malformed CBOR: unexpected end");
    const first = bytes[pos];
    const major = first >> 5;
    const info = first & 0x1f;
    if (info < 24) return { major, length: info, next: pos + 1 };
    const size = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : info === 31 ? 0 : -1;
    if (size < 0) throw new SyntaxError(`Malformed CBOR: reserved additional information ${info}`);
    if (pos + 1 + size > bytes.length) throw new SyntaxError("Malformed CBOR: unexpected end");
    if (info === 31) return { major, length: -1, next: pos + 1 };
    const v = this.#view;
    const length = size === 1 ? bytes[pos + 1] : size === 2 ? v.getUint16(pos + 1) : size === 4 ? v.getUint32(pos + 1) : Number(v.getBigUint64(pos + 1));
    return { major, length, next: pos + 1 + size };
  }

  /** Where the item at `pos` ends, without decoding it. */
  skip(pos: number): number {
    const { major, length, next } = this.#head(pos);
    switch (major) {
      case 0:
      case 1:
        return next;
      case 2:
      case 3:
        if (length >= 0) return this.#within(next + length);
        return this.#untilBreak(next, 1);
      case 4:
        if (length < 0) return this.#untilBreak(next, 1);
        return this.#items(next, length);
      case 5:
        if (length < 0) return this.#untilBreak(next, 2);
        return this.#items(next, length * 2);
      case 6:
        return this.skip(next);
      default:
        // Simple values and floats: the argument was all there is (break codes only inside indefinite items).
        if ((this.#bytes[pos] & 0x1f) === 31) throw new SyntaxError("Malformed CBOR: unexpected break");
        return next;
    }
  }

  #items(at: number, n: number): number {
    for (let i = 0; i < n; i++) at = this.skip(at);
    return at;
  }

  #untilBreak(at: number, per: number): number {
    for (;;) {
      if (at >= this.#bytes.length) throw new SyntaxError("Malformed CBOR: unexpected end");
      if (this.#bytes[at] === 0xff) return at + 1;
      for (let i = 0; i < per; i++) at = this.skip(at);
    }
  }

  #within(end: number): number {
    if (end > this.#bytes.length) throw new SyntaxError("Malformed CBOR: unexpected end");
    return end;
  }
}
