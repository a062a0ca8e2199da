/**
 * The child-process side of the `process-pool` executor (plugins/process-pool.ts), and the frame
 * format both sides speak.
 *
 * A pool child is this same program started with `CLUSTER_EXECUTOR_CHILD=1`: cmd/cluster.ts then
 * calls {@link runExecutorChild} instead of the CLI. The child reads requests
 * `{id, fn, args, modules}` from stdin and answers `{id, value}` or `{id, error, name, stack}` on
 * stdout; its first frame is `{ready: true, pid}`. Every frame is a 4-byte big-endian length
 * followed by that many bytes of CBOR. Requests run concurrently: an async task does not hold up
 * the next one, a CPU-bound one does (that is what the pool has several children for).
 *
 * @module
 */
import { basename, extname } from "node:path";
import { pathToFileURL } from "node:url";
import { decodeCbor, encodeCbor } from "../protocol.ts";
import { builtins, type TaskFunction } from "./builtins.ts";

/** A request from the pool to a child. */
export interface ExecutorRequest {
  id: number;
  /** `builtin.NAME` or `MODULE.EXPORT`. */
  fn: string;
  args: unknown[];
  /** Absolute paths of the worker's task modules; MODULE is a file's basename without extension. */
  modules: string[];
}

/** A child's answer: its start-up greeting, a result, or an error. */
export type ExecutorReply =
  | { ready: true; pid: number }
  | { id: number; value: unknown }
  | { id: number; error: string; name?: string; stack?: string };

/** The largest frame either side accepts (bytes). */
export const maxExecutorFrameBytes = 256 * 1024 * 1024;

/**
 * Encodes one value as a length-prefixed CBOR frame. The result is a fresh buffer, safe to hand
 * to an asynchronous write (the CBOR encoder reuses its own buffer).
 *
 * @example
 * ```ts
 * child.stdin.write(encodeFrame({ id: 1, fn: "builtin.inc", args: [1], modules: [] }));
 * ```
 */
export function encodeFrame(value: unknown): Uint8Array {
  const payload = encodeCbor(value);
  const frame = new Uint8Array(4 + payload.byteLength);
  new DataView(frame.buffer).setUint32(0, payload.byteLength);
  frame.set(payload, 4);
  return frame;
}

/**
 * Splits a byte stream into decoded frames.
 *
 * @example
 * ```ts
 * const reader = new FrameReader();
 * stream.on("data", (chunk) => { for (const msg of reader.push(chunk)) handle(msg); });
 * ```
 */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  #length = 0;

  /** Adds bytes; returns the frames completed by them. Throws on a malformed stream. */
  push(chunk: Uint8Array): unknown[] {
    this.#chunks.push(chunk);
    this.#length += chunk.byteLength;
    const out: unknown[] = [];
    while (this.#length >= 4) {
      const head = this.#peek(4);
      const size = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
      if (size > maxExecutorFrameBytes) throw new RangeError(`Frame of ${size} bytes is too large`);
      if (this.#length < 4 + size) break;
      const frame = this.#take(4 + size);
      out.push(decodeCbor(frame.subarray(4)));
    }
    return out;
  }

  #peek(n: number): Uint8Array {
    return this.#chunks[0].byteLength >= n ? this.#chunks[0] : this.#join();
  }

  #take(n: number): Uint8Array {
    const first = this.#chunks[0].byteLength >= n ? this.#chunks[0] : this.#join();
    const frame = first.subarray(0, n);
    const rest = first.subarray(n);
    if (rest.byteLength) this.#chunks[0] = rest;
    else this.#chunks.shift();
    this.#length -= n;
    return frame;
  }

  #join(): Uint8Array {
    const joined = new Uint8Array(this.#length);
    let offset = 0;
    for (const c of this.#chunks) {
      joined.set(c, offset);
      offset += c.byteLength;
    }
    this.#chunks = [joined];
    return joined;
  }
}

/** Finds and runs task functions for a child, importing each task module once. */
class TaskRunner {
  #imports = new Map<string, Promise<Record<string, unknown>>>();

  async run(request: ExecutorRequest): Promise<unknown> {
    const fn = await this.#resolve(request.fn, request.modules ?? []);
    return await (fn as (...a: unknown[]) => unknown)(...(request.args ?? []));
  }

  async #resolve(name: string, modules: string[]): Promise<TaskFunction> {
    const dot = name.indexOf(".");
    if (dot <= 0) throw new TypeError(`Invalid task function "${name}": expected "MODULE.EXPORT"`);
    const prefix = name.slice(0, dot);
    const exportName = name.slice(dot + 1);
    if (prefix === "builtin") {
      const fn = Object.hasOwn(builtins, exportName) ? builtins[exportName] : undefined;
      if (!fn) throw new Error(`Unknown task function "${name}" in executor process ${process.pid}`);
      return fn;
    }
    // The last module loaded under a name wins, as in the worker.
    const path = modules.findLast((m) => basename(m, extname(m)) === prefix);
    if (!path) throw new Error(`Unknown task function "${name}": no task module "${prefix}" on this worker`);
    let loading = this.#imports.get(path);
    if (!loading) {
      loading = import(pathToFileURL(path).href) as Promise<Record<string, unknown>>;
      this.#imports.set(path, loading);
      // A module that failed to import may be fixed and sent again: do not cache the failure.
      loading.catch(() => this.#imports.delete(path));
    }
    const mod = await loading;
    const fn = mod[exportName];
    if (typeof fn !== "function") throw new Error(`Unknown task function "${name}": "${path}" exports no function "${exportName}"`);
    return fn as TaskFunction;
  }
}

function send(reply: ExecutorReply): void {
  let frame: Uint8Array;
  try {
    frame = encodeFrame(reply);
  } catch (err) {
    const id = "id" in reply ? reply.id : 0;
    frame = encodeFrame({ id, error: `Cannot send the result back: ${err instanceof Error ? err.message : String(err)}`, name: "TypeError" });
  }
  process.stdout.write(frame);
}

/**
 * Runs the child loop until stdin closes (the pool closed, or the worker died).
 *
 * @example
 * ```ts
 * if (process.env.CLUSTER_EXECUTOR_CHILD === "1") await runExecutorChild();
 * ```
 */
export function runExecutorChild(): Promise<void> {
  // Programs this child starts (a task may run the CLI) must not become pool children too.
  delete process.env.CLUSTER_EXECUTOR_CHILD;
  // stdout carries frames: what tasks print goes to stderr instead.
  const toStderr = (...args: unknown[]) => console.error(...args);
  console.log = toStderr;
  console.info = toStderr;
  console.debug = toStderr;
  const runner = new TaskRunner();
  const reader = new FrameReader();
  const handle = (request: ExecutorRequest) => {
    runner.run(request).then(
      (value) => send({ id: request.id, value: value === undefined ? null : value }),
      (err) =>
        send(
          err instanceof Error
            ? { id: request.id, error: err.message, name: err.name, stack: err.stack }
            : { id: request.id, error: String(err) },
        ),
    );
  };
  return new Promise((resolveDone) => {
    process.stdin.on("data", (chunk: Uint8Array) => {
      let requests: unknown[];
      try {
        requests = reader.push(chunk);
      } catch (err) {
        process.stderr.write(`executor child ${process.pid}: malformed request stream: ${err instanceof Error ? err.message : err}\n`);
        process.exit(70);
      }
      for (const request of requests) handle(request as ExecutorRequest);
    });
    process.stdin.on("end", () => {
      resolveDone();
      process.exit(0);
    });
    process.stdin.on("error", () => process.exit(0));
    process.on("unhandledRejection", (err) => {
      process.stderr.write(`executor child ${process.pid}: unhandled error: ${err instanceof Error ? err.message : err}\n`);
    });
    send({ ready: true, pid: process.pid });
  });
}
