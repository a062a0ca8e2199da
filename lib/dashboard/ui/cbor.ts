/**
 * A small CBOR decoder for the browser: the event stream's batches (RFC 8949 as cbor-x writes
 * them). cbor-x's own decoder probes `new Function` when it loads, which a strict
 * Content-Security-Policy reports as a console error; this one needs no eval and is about 3 kB.
 *
 * @module
 */

const utf8 = new TextDecoder();

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
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;

  function length(info: number): number {
    if (info < 24) return info;
    if (info === 24) return bytes[pos++];
    if (info === 25) {
      const v = view.getUint16(pos);
      pos += 2;
      return v;
    }
    if (info === 26) {
      const v = view.getUint32(pos);
      pos += 4;
      return v;
    }
    if (info === 27) {
      const v = Number(view.getBigUint64(pos));
      pos += 8;
      return v;
    }
    if (info === 31) return -1;
    throw new SyntaxError(`Malformed CBOR: additional info ${info} at ${pos}`);
  }

  function text(n: number): string {
    // Short ASCII strings (keys, topics) are faster by hand than through TextDecoder.
    if (n < 32) {
      let s = "";
      for (let i = pos; i < pos + n; i++) {
        const c = bytes[i];
        if (c >= 0x80) {
          s = utf8.decode(bytes.subarray(pos, pos + n));
          pos += n;
          return s;
        }
        s += String.fromCharCode(c);
      }
      pos += n;
      return s;
    }
    const s = utf8.decode(bytes.subarray(pos, pos + n));
    pos += n;
    return s;
  }

  function half(h: number): number {
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    const sign = h & 0x8000 ? -1 : 1;
    if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
    if (exp === 31) return mant ? NaN : sign * Infinity;
    return sign * 2 ** (exp - 15) * (1 + mant / 1024);
  }

  function item(): unknown {
    if (pos >= bytes.length) throw new SyntaxError("Malformed CBOR: unexpected end of input");
    const byte = bytes[pos++];
    const major = byte >> 5;
    const info = byte & 0x1f;
    switch (major) {
      case 0:
        return length(info);
      case 1:
        return -1 - length(info);
      case 2: {
        const n = length(info);
        if (n < 0) throw new SyntaxError("Malformed CBOR: indefinite byte string");
        const out = bytes.slice(pos, pos + n);
        pos += n;
        return out;
      }
      case 3: {
        const n = length(info);
        if (n >= 0) return text(n);
        let s = "";
        while (bytes[pos] !== 0xff) s += item() as string;
        pos++;
        return s;
      }
      case 4: {
        const n = length(info);
        const out: unknown[] = [];
        if (n >= 0) for (let i = 0; i < n; i++) out.push(item());
        else {
          while (bytes[pos] !== 0xff) out.push(item());
          pos++;
        }
        return out;
      }
      case 5: {
        const n = length(info);
        const out: Record<string, unknown> = {};
        if (n >= 0) {
          for (let i = 0; i < n; i++) {
            const k = item();
            out[String(k)] = item();
          }
        } else {
          while (bytes[pos] !== 0xff) {
            const k = item();
            out[String(k)] = item();
          }
          pos++;
        }
        return out;
      }
      case 6:
        length(info);
        return item();
      default: {
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if (info === 23) return undefined;
        if (info === 25) {
          const v = half(view.getUint16(pos));
          pos += 2;
          return v;
        }
        if (info === 26) {
          const v = view.getFloat32(pos);
          pos += 4;
          return v;
        }
        if (info === 27) {
          const v = view.getFloat64(pos);
          pos += 8;
          return v;
        }
        if (info < 24) return info;
        if (info === 24) return bytes[pos++];
        throw new SyntaxError(`Malformed CBOR: simple value ${info} at ${pos - 1}`);
      }
    }
  }

  return item();
}
