/**
 * The scheduler's input limits: what one request, graph, task or event may hold. Each check
 * throws a `LimitError` that names the limit, the value found and the maximum, and carries the
 * HTTP status to answer with, so that one oversized input is refused on its own and nothing else
 * is harmed.
 *
 * Every walk over a value here is iterative: a value nested 100,000 deep (which `JSON.parse`
 * and the CBOR decoder build without complaint) must be refused, not overflow the JS stack.
 *
 * @module
 */

/** The limits, all configurable through the scheduler's `limits` option. */
export interface Limits {
  /** Bytes in one HTTP request body. @default 67108864 (64 MiB) */
  maxBodyBytes: number;
  /** Tasks in one submitted graph. @default 1000000 */
  maxGraphTasks: number;
  /** Nesting depth of one task's `args` (the `args` array itself is depth 1). @default 64 */
  maxArgsDepth: number;
  /** Approximate encoded size of one task's `args`. @default 16777216 (16 MiB) */
  maxArgsBytes: number;
  /** Characters in a task key or an event topic. @default 1024 */
  maxKeyLength: number;
  /** Bytes of one posted event, encoded as JSON. @default 1048576 (1 MiB) */
  maxEventBytes: number;
  /** Nesting depth of one posted event (its fields object is depth 1). @default 32 */
  maxEventDepth: number;
}

/** The defaults of every limit. */
export const defaultLimits: Readonly<Limits> = Object.freeze({
  maxBodyBytes: 64 * 1024 * 1024,
  maxGraphTasks: 1_000_000,
  maxArgsDepth: 64,
  maxArgsBytes: 16 * 1024 * 1024,
  maxKeyLength: 1024,
  maxEventBytes: 1024 * 1024,
  maxEventDepth: 32,
});

/**
 * The limits with the given ones in place of the defaults; each must be a positive integer.
 *
 * @example
 * ```ts
 * const limits = resolveLimits({ maxEventBytes: 4096 });
 * ```
 */
export function resolveLimits(given: Partial<Limits> = {}): Limits {
  const limits = { ...defaultLimits };
  for (const [name, value] of Object.entries(given)) {
    if (value === undefined) continue;
    if (!(name in defaultLimits)) throw new TypeError(`Unknown limit "${name}"`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new RangeError(`Invalid limit "${name}": expected a positive integer, got ${JSON.stringify(value)}`);
    }
    limits[name as keyof Limits] = value;
  }
  return limits;
}

/** How a limit is measured, for the message. */
const units: Record<keyof Limits, string> = {
  maxBodyBytes: "bytes",
  maxGraphTasks: "tasks",
  maxArgsDepth: "levels",
  maxArgsBytes: "bytes",
  maxKeyLength: "characters",
  maxEventBytes: "bytes",
  maxEventDepth: "levels",
};

/**
 * An input over one of the limits. Sizes and counts answer `413 Payload Too Large`; a depth or a
 * key length (the shape of the input, not its bulk) answers `400 Bad Request`.
 */
export class LimitError extends RangeError {
  override name = "LimitError";
  readonly code = "E_LIMIT";
  /** The HTTP status to answer with. */
  readonly status: 400 | 413;
  readonly limit: keyof Limits;
  /** The value found; for an input still being read, at least this much. */
  readonly value: number;
  readonly max: number;

  constructor(what: string, limit: keyof Limits, value: number, max: number) {
    const unit = units[limit];
    super(`${what} exceeds the limit "${limit}": ${value} ${unit}, at most ${max} ${unit}`);
    this.limit = limit;
    this.value = value;
    this.max = max;
    this.status = unit === "bytes" || unit === "tasks" ? 413 : 400;
  }

  /** The JSON error body: `{error, limit, value, max}`. */
  toJSON(): { error: string; limit: string; value: number; max: number } {
    return { error: this.message, limit: this.limit, value: this.value, max: this.max };
  }
}

/** An input that no limit covers but that cannot be taken as it is (an event that is not JSON); a 400. */
export class InputError extends TypeError {
  override name = "InputError";
  readonly code = "E_INPUT";
  readonly status = 400;
}

/**
 * The HTTP status for an error this module throws (413 or 400), or `null` for any other error:
 * the one place the routes ask how to answer a refused input.
 *
 * @example
 * ```ts
 * const status = inputErrorStatus(err);
 * if (status !== null) return c.json({ error: errorMessage(err) }, status);
 * ```
 */
export function inputErrorStatus(err: unknown): 400 | 413 | null {
  return err instanceof LimitError || err instanceof InputError ? err.status : null;
}

/**
 * Reads a request body up to `limit` bytes: refuses a larger `Content-Length` before reading,
 * and stops reading (cancelling the stream) as soon as more than `limit` bytes arrived, for a
 * body sent without a length or with a false one.
 *
 * @example
 * ```ts
 * const bytes = await readBodyLimited(c.req.raw, limits.maxBodyBytes);
 * ```
 */
export async function readBodyLimited(request: Request, limit: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  if (declared !== null) {
    const length = Number(declared);
    if (Number.isFinite(length) && length > limit) throw new LimitError("Request body", "maxBodyBytes", length, limit);
  }
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw new LimitError("Request body", "maxBodyBytes", total, limit);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** What `measureValue` found. */
export interface Measure {
  /** The deepest nesting: a primitive is 0, `[]` or `{}` is 1, `[[1]]` is 2. */
  depth: number;
  /** The approximate encoded size in bytes (strings by length, numbers as 9 bytes). */
  bytes: number;
}

/**
 * Walks a decoded JSON/CBOR value without recursion, stopping as soon as it is deeper than
 * `maxDepth` or larger than `maxBytes` (the measure returned then is where it stopped, already
 * over the limit). `onObject` sees every plain object on the way (for `$ref`s); when it returns
 * `true`, the object's fields are counted but not walked into.
 *
 * A value shared at two places is counted at each, as its encoding would be; a cycle cannot
 * come from a decoder, and is cut by the depth limit.
 */
export function measureValue(
  value: unknown,
  maxDepth: number,
  maxBytes: number,
  onObject?: (object: Record<string, unknown>) => boolean | void,
): Measure {
  // The common case, args of plain values only: no stacks to allocate (a graph has 100,000s of these).
  if (Array.isArray(value)) {
    let flatBytes = 2;
    let i = 0;
    for (; i < value.length; i++) {
      const child = value[i];
      if (child !== null && typeof child === "object") break;
      flatBytes += typeof child === "string" ? child.length + 3 : 10;
    }
    if (i === value.length) return { depth: 1, bytes: flatBytes };
  }
  // Parallel stacks of values and their depths: no closures, no recursion. Reused between calls
  // (a graph walks 100,000s of args), unless a callback walks another value meanwhile.
  const reuse = !walking;
  const stack: unknown[] = reuse ? sharedStack : [];
  const depths: number[] = reuse ? sharedDepths : [];
  walking = true;
  try {
    stack.push(value);
    depths.push(1);
    return walk(stack, depths, maxDepth, maxBytes, onObject);
  } finally {
    if (reuse) {
      walking = false;
      stack.length = 0;
      depths.length = 0;
    }
  }
}

const sharedStack: unknown[] = [];
const sharedDepths: number[] = [];
let walking = false;

function walk(
  stack: unknown[],
  depths: number[],
  maxDepth: number,
  maxBytes: number,
  onObject: ((object: Record<string, unknown>) => boolean | void) | undefined,
): Measure {
  let bytes = 0;
  let depth = 0;
  while (stack.length > 0) {
    const item = stack.pop();
    const level = depths.pop()!;
    switch (typeof item) {
      case "string":
        bytes += item.length + 2;
        continue;
      case "number":
      case "bigint":
        bytes += 9;
        continue;
      case "object":
        break;
      default:
        bytes += 1;
        continue;
    }
    if (item === null) {
      bytes += 1;
      continue;
    }
    if (ArrayBuffer.isView(item)) {
      bytes += item.byteLength + 5;
      continue;
    }
    if (level > depth) {
      depth = level;
      if (depth > maxDepth) return { depth, bytes };
    }
    bytes += 2;
    if (Array.isArray(item)) {
      for (let i = 0; i < item.length; i++) {
        const child = item[i];
        if (child !== null && typeof child === "object") {
          stack.push(child);
          depths.push(level + 1);
        } else {
          bytes += typeof child === "string" ? child.length + 3 : 10;
        }
      }
    } else {
      const leaf = onObject?.(item as Record<string, unknown>) === true;
      for (const key in item) {
        const child = (item as Record<string, unknown>)[key];
        bytes += key.length + 4;
        if (child !== null && typeof child === "object" && !leaf) {
          stack.push(child);
          depths.push(level + 1);
        } else {
          bytes += typeof child === "string" ? child.length + 3 : 10;
        }
      }
    }
    if (bytes > maxBytes) return { depth, bytes };
  }
  return { depth, bytes };
}

/** Refuses a task key (or topic) longer than `maxKeyLength`. */
export function checkKeyLength(what: string, key: string, limits: Limits): void {
  if (key.length > limits.maxKeyLength) {
    throw new LimitError(`${what} "${clip(key)}"`, "maxKeyLength", key.length, limits.maxKeyLength);
  }
}

/**
 * Checks the fields of an event posted from outside (HTTP, a client, a worker, a plugin):
 * its nesting first (iteratively, so a deep one cannot overflow the stack), then its exact size
 * as JSON. Returns the JSON text of the fields, so that the caller need not encode them again.
 *
 * @example
 * ```ts
 * checkEvent("log", { message: "hello" }, defaultLimits); // '{"message":"hello"}'
 * ```
 */
export function checkEvent(topic: string, fields: unknown, limits: Limits): string {
  checkKeyLength("Event topic", topic, limits);
  const what = `Event on topic "${clip(topic)}"`;
  // The approximate size is a guard before stringifying: a 50 MB event is refused here.
  const measure = measureValue(fields, limits.maxEventDepth, limits.maxEventBytes * 4);
  if (measure.depth > limits.maxEventDepth) throw new LimitError(what, "maxEventDepth", measure.depth, limits.maxEventDepth);
  if (measure.bytes > limits.maxEventBytes * 4) throw new LimitError(what, "maxEventBytes", measure.bytes, limits.maxEventBytes);
  let json: string;
  try {
    json = JSON.stringify(fields) ?? "null";
  } catch (err) {
    throw new InputError(`${what} cannot be encoded as JSON: ${(err as Error).message}`);
  }
  // UTF-16 length bounds the UTF-8 size from below and by 3× from above; count exactly only when close.
  const bytes = json.length * 3 <= limits.maxEventBytes ? json.length : utf8Length(json);
  if (bytes > limits.maxEventBytes) throw new LimitError(what, "maxEventBytes", bytes, limits.maxEventBytes);
  return json;
}

/** A name for a message: its first 40 characters, and an ellipsis when there is more. */
function clip(name: string): string {
  return name.length > 40 ? `${name.slice(0, 40)}…` : name;
}

/** The UTF-8 length of a string, without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff) {
      bytes += 2;
      i++;
    } else bytes += 2;
  }
  return bytes;
}
