/**
 * Run-time checks of messages arriving on the worker, nanny and client links: the field types
 * of each op, as the unions in this folder declare them. A decoded CBOR frame can hold anything;
 * a `modules` that is not an array or a `relay` whose `keys` is a number must be refused with a
 * reason, not throw halfway through the frame.
 *
 * Only the fields the scheduler reads are checked, and optional ones only when present, so that
 * whatever the real workers, nannies and clients send passes.
 *
 * @module
 */

/** The links whose incoming messages are checked. */
export type Link = "worker" | "nanny" | "client";

/** A field's expected type; a trailing `?` makes it optional (absent or `undefined`). */
type FieldType = "string" | "number" | "boolean" | "string[]" | "string|null" | "startstops";
type Fields = Record<string, FieldType | `${FieldType}?`>;

const pluginError: Fields = { plugin: "string", hook: "string", error: "string?" };
const reply: Fields = { id: "number", error: "string?" };

const schemas: Record<Link, Record<string, Fields>> = {
  worker: {
    register: {
      name: "string",
      nthreads: "number?",
      address: "string?",
      nanny: "boolean?",
      pid: "number?",
      modules: "string[]?",
      restarts: "number?",
      version: "string?",
      records: "boolean?",
    },
    ready: {},
    done: { key: "string", nbytes: "number?", duration: "number?", hasValue: "boolean?", stimulusId: "string?", startstops: "startstops?" },
    erred: { key: "string", exception: "string?", traceback: "string?", duration: "number?", stimulusId: "string?", startstops: "startstops?" },
    "missing-data": { key: "string", dep: "string" },
    heartbeat: { rss: "number?", cpu: "number?", executing: "number?", ready: "number?" },
    logs: {},
    relay: { id: "number", keys: "string[]" },
    "plugin-error": pluginError,
    modules: { modules: "string[]" },
    event: { topic: "string" },
    closing: {},
    reply,
    ack: reply,
    data: { id: "number" },
  },
  nanny: {
    register: { name: "string", address: "string?", pid: "number?" },
    ready: {},
    worker: { worker: "string|null?", restarts: "number?", pid: "number?" },
    "plugin-error": pluginError,
    event: { topic: "string" },
    logs: {},
    heartbeat: {},
    reply,
  },
  client: {
    graph: { id: "number?", echo: "boolean?" },
    gather: { id: "number?", keys: "string[]", list: "boolean?" },
    release: { id: "number?", keys: "string[]" },
    event: { id: "number?", topic: "string" },
    "register-plugin": { id: "number?" },
    "unregister-plugin": { id: "number?", role: "string", name: "string" },
    info: { id: "number?" },
  },
};

function matches(value: unknown, type: FieldType): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number";
    case "boolean":
      return typeof value === "boolean";
    case "string|null":
      return value === null || typeof value === "string";
    case "string[]":
      return Array.isArray(value) && value.every((item) => typeof item === "string");
    case "startstops":
      // Passed on to events and plugins as they are: each must be {action, start, stop}.
      return Array.isArray(value) && value.every((s) =>
        s !== null && typeof s === "object" && typeof s.action === "string" && typeof s.start === "number" && typeof s.stop === "number"
      );
  }
}

/** A value's kind for a message: `array`, `null` or its `typeof`. */
function kind(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

/**
 * Checks one incoming message: `null` when its fields have the types its op needs (or its op is
 * unknown, which the caller answers as it does today), else the reason, naming the op and field.
 *
 * @example
 * ```ts
 * checkMessage("worker", { op: "relay", id: 1, keys: 5 }); // 'Invalid "relay" message: "keys" must be string[], got number'
 * ```
 */
export function checkMessage(link: Link, msg: { op: unknown; [field: string]: unknown }): string | null {
  if (typeof msg.op !== "string") return `Invalid message: "op" must be a string, got ${kind(msg.op)}`;
  const checks = Object.hasOwn(compiled[link], msg.op) ? compiled[link][msg.op] : undefined;
  if (!checks) return null;
  for (let i = 0; i < checks.length; i++) {
    const { name, type, optional } = checks[i];
    const value = msg[name];
    if (value === undefined && optional) continue;
    if (!matches(value, type)) return `Invalid "${msg.op}" message: "${name}" must be ${type}, got ${kind(value)}`;
  }
  return null;
}

/** One field's check, parsed from its schema once (a message is checked per field, per message). */
interface FieldCheck {
  name: string;
  type: FieldType;
  optional: boolean;
}

const compiled = Object.fromEntries(
  Object.entries(schemas).map(([link, ops]) => [
    link,
    Object.fromEntries(
      Object.entries(ops).map(([op, fields]) => [
        op,
        Object.entries(fields).map(([name, spec]): FieldCheck => {
          const optional = spec.endsWith("?");
          return { name, type: (optional ? spec.slice(0, -1) : spec) as FieldType, optional };
        }),
      ]),
    ),
  ]),
) as Record<Link, Record<string, FieldCheck[]>>;
