/**
 * Flags from `CLUSTER_…` environment variables (cmd/_args.ts), in process: which variable a
 * flag reads, that the command line wins, booleans, repeatable flags and positionals.
 */
import { describe, expect, test } from "bun:test";
import type { ArgsDef } from "citty";
import { argsWithEnv, envName, intFlag, stripColour, UsageError } from "../cmd/_args.ts";

const def = {
  scheduler: { type: "positional", description: "Scheduler URL", required: true },
  port: { type: "string", description: "Port", default: "0" },
  "worker-ttl": { type: "string", description: "Seconds" },
  tasks: { type: "string", description: "Task module; repeatable" },
  nanny: { type: "boolean", description: "Under a nanny" },
  demo: { type: "boolean", description: "Demo" },
  color: { type: "boolean", description: "Colour", default: true },
} as const satisfies ArgsDef;

describe("argsWithEnv", () => {
  test("a flag's variable is CLUSTER_ and its name in capitals with underscores", () => {
    expect(envName("worker-ttl")).toBe("CLUSTER_WORKER_TTL");
    expect(envName("port")).toBe("CLUSTER_PORT");
    expect(envName("nanny")).toBeUndefined();
  });

  test("variables fill in flags the command line does not give, and the command line wins", () => {
    const env = { CLUSTER_PORT: "9000", CLUSTER_WORKER_TTL: "30" };
    expect(argsWithEnv(["http://s"], def, env)).toEqual(["--port=9000", "--worker-ttl=30", "http://s"]);
    expect(argsWithEnv(["http://s", "--port", "1"], def, env)).toEqual(["--worker-ttl=30", "http://s", "--port", "1"]);
    expect(argsWithEnv(["http://s", "--workerTtl=5"], def, env)).toEqual(["--port=9000", "http://s", "--workerTtl=5"]);
    expect(argsWithEnv(["http://s"], def, { CLUSTER_PORT: "" })).toEqual(["http://s"]);
  });

  test("booleans take 1/0, true/false, yes/no, on/off; anything else is a usage error naming the variable", () => {
    expect(argsWithEnv(["u"], def, { CLUSTER_DEMO: "yes" })).toEqual(["--demo", "u"]);
    expect(argsWithEnv(["u"], def, { CLUSTER_DEMO: "0" })).toEqual(["u"]);
    expect(argsWithEnv(["u"], def, { CLUSTER_COLOR: "off" })).toEqual(["--no-color", "u"]);
    expect(() => argsWithEnv(["u"], def, { CLUSTER_DEMO: "maybe" })).toThrow(UsageError);
    expect(() => argsWithEnv(["u"], def, { CLUSTER_DEMO: "maybe" })).toThrow("CLUSTER_DEMO");
  });

  test("CLUSTER_NANNY, which a nanny sets for its worker, never turns on --nanny", () => {
    expect(argsWithEnv(["u"], def, { CLUSTER_NANNY: "1" })).toEqual(["u"]);
  });

  test("a repeatable flag takes a comma-separated list", () => {
    expect(argsWithEnv(["u"], def, { CLUSTER_TASKS: "a.ts, b.ts" })).toEqual(["--tasks=a.ts", "--tasks=b.ts", "u"]);
    expect(argsWithEnv(["u", "--tasks", "c.ts"], def, { CLUSTER_TASKS: "a.ts" })).toEqual(["u", "--tasks", "c.ts"]);
  });

  test("a missing positional comes from its variable, after the flags' values are skipped", () => {
    expect(argsWithEnv(["--port", "5"], def, { CLUSTER_SCHEDULER: "http://s" })).toEqual(["--port", "5", "http://s"]);
    expect(argsWithEnv(["http://t"], def, { CLUSTER_SCHEDULER: "http://s" })).toEqual(["http://t"]);
    expect(argsWithEnv(["--", "x"], def, { CLUSTER_SCHEDULER: "http://s" })).toEqual(["--", "x"]);
  });
});

describe("intFlag", () => {
  test("a port is checked against 0..65535 and the message names the flag and the range", () => {
    expect(intFlag("8786", "port", { fallback: 0 })).toBe(8786);
    expect(() => intFlag("99999", "port", { fallback: 0 })).toThrow('Invalid value for "--port": "99999" (expected an integer from 0 to 65535)');
    expect(() => intFlag("0", "nthreads", { fallback: 1, min: 1 })).toThrow("(expected an integer >= 1)");
  });
});

test("stripColour removes terminal colour codes", () => {
  expect(stripColour("\x1b[1mUSAGE\x1b[22m \x1b[36mcluster\x1b[39m")).toBe("USAGE cluster");
});
