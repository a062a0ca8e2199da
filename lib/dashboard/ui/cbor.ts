/**
 * A small CBOR decoder for the browser: the event stream's batches (RFC 8949 as cbor-x writes
 * them). cbor-x's own decoder probes `new Function` when it loads, which a strict
 * Content-Security-Policy reports as a console error; this one needs no eval and is about 3 kB.
 *
 * @module
 */

const utf8 = new TextDecoder();

/**
 * Short strings seen before (field names, topics, states, worker names) are returned from this
 * table instead of being built again: the event stream repeats them hundreds of thousands of
 * times, and allocation is most of what decoding costs.
 */
const internSize = 4096;
const internStrings: (string | undefined)[] = new Array(internSize);
const internBytes: (Uint8Array | undefined)[] = new Array(internSize);

/**
 * Decodes one CBOR value. Tags are unwrapped to their content (the event stream uses none that
 * matter here); a malformed input throws a `SyntaxError`.
 *
 * @example
 * ```ts
 * decode(new Uint8Array([0x81, 0x01])); // [1]
 * ```
 */
export function decode(bytes: Uint8Array): unknown {
  return new Cursor(bytes, 0).item();
}

/** A read position in a CBOR buffer (one object per buffer: no closures per value). */
class Cursor {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  pos: number;

  constructor(bytes: Uint8Array, pos: number) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = pos;
  }

  length(info: number): number {
    if (info < 24) return info;
    const pos = this.pos;
    if (info === 24) {
      this.pos += 1;
      return this.bytes[pos];
    }
    if (info === 25) {
      this.pos += 2;
      return this.view.getUint16(pos);
    }
    if (info === 26) {
      this.pos += 4;
      return this.view.getUint32(pos);
    }
    if (info === 27) {
      this.pos += 8;
      return Number(this.view.getBigUint64(pos));
    }
    if (info === 31) return -1;
    throw new SyntaxError(`Malformed CBOR: additional info ${info} at ${pos}`);
  }

  text(n: number): string {
    const bytes = this.bytes;
    const pos = this.pos;
    this.pos += n;
    if (n > 24) return utf8.decode(bytes.subarray(pos, pos + n));
    let hash = n;
    let ascii = true;
    for (let i = pos; i < pos + n; i++) {
      const c = bytes[i];
      if (c >= 0x80) ascii = false;
      hash = Math.imul(hash ^ c, 16777619);
    }
    const slot = (hash >>> 0) & (internSize - 1);
    const known = internBytes[slot];
    if (known !== undefined && known.length === n) {
      let same = true;
      for (let i = 0; i < n; i++) {
        if (known[i] !== bytes[pos + i]) {
          same = false;
          break;
        }
      }
      if (same) return internStrings[slot]!;
    }
    const text = ascii ? String.fromCharCode.apply(null, bytes.subarray(pos, pos + n) as unknown as number[]) : utf8.decode(bytes.subarray(pos, pos + n));
    internBytes[slot] = bytes.slice(pos, pos + n);
    internStrings[slot] = text;
    return text;
  }

  item(): unknown {
    const bytes = this.bytes;
    if (this.pos >= bytes.length) throw new SyntaxError("Malformed CBOR: unexpected end of input");
    const byte = bytes[this.pos++];
    const major = byte >> 5;
    const info = byte & 0x1f;
    switch (major) {
      case 0:
        return this.length(info);
      case 1:
        return -1 - this.length(info);
      case 2: {
        const n = this.length(info);
        if (n < 0) throw new SyntaxError("Malformed CBOR: indefinite byte string");
        const out = bytes.slice(this.pos, this.pos + n);
        this.pos += n;
        return out;
      }
      case 3: {
        const n = this.length(info);
        if (n >= 0) return this.text(n);
        let s = "";
        while (bytes[this.pos] !== 0xff) s += this.item() as string;
        this.pos++;
        return s;
      }
      case 4: {
        const n = this.length(info);
        const out: unknown[] = [];
        if (n >= 0) for (let i = 0; i < n; i++) out.push(this.item());
        else {
          while (bytes[this.pos] !== 0xff) out.push(this.item());
          this.pos++;
        }
        return out;
      }
      case 5: {
        const n = this.length(info);
        const out: Record<string, unknown> = {};
        if (n >= 0) {
          for (let i = 0; i < n; i++) {
            const k = this.item();
            out[String(k)] = this.item();
          }
        } else {
          while (bytes[this.pos] !== 0xff) {
            const k = this.item();
            out[String(k)] = this.item();
          }
          this.pos++;
        }
        return out;
      }
      case 6:
        this.length(info);
        return this.item();
      default: {
        const pos = this.pos;
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if (info === 23) return undefined;
        if (info === 25) {
          this.pos += 2;
          return half(this.view.getUint16(pos));
        }
        if (info === 26) {
          this.pos += 4;
          return this.view.getFloat32(pos);
        }
        if (info === 27) {
          this.pos += 8;
          return this.view.getFloat64(pos);
        }
        if (info < 24) return info;
        if (info === 24) {
          this.pos += 1;
          return bytes[pos];
        }
        throw new SyntaxError(`Malformed CBOR: simple value ${info} at ${pos - 1}`);
      }
    }
  }
}

function half(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

/**
 * Reads a CBOR array one element at a time, so that a large batch (tens of thousands of events
 * when a big graph lands) is decoded across several animation frames instead of in one long task.
 *
 * @example
 * ```ts
 * const reader = new ArrayReader(bytes);
 * while (!reader.done) handle(reader.next());
 * ```
 */
export class ArrayReader {
  #cursor: Cursor;
  #left: number;
  /** A value that is not an array, returned once as the only element. */
  #single: unknown = undefined;

  constructor(bytes: Uint8Array) {
    this.#cursor = new Cursor(bytes, 0);
    const first = bytes[0];
    if (bytes.length > 0 && first >> 5 === 4 && (first & 0x1f) !== 31) {
      this.#cursor.pos = 1;
      this.#left = this.#cursor.length(first & 0x1f);
    } else {
      this.#single = this.#cursor.item();
      this.#left = 1;
    }
  }

  /** Whether every element has been read. */
  get done(): boolean {
    return this.#left === 0;
  }

  /** The next element. */
  next(): unknown {
    if (this.#left === 0) throw new RangeError("No more elements");
    this.#left--;
    if (this.#single !== undefined) return this.#single;
    return this.#cursor.item();
  }
}
