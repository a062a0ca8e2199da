/**
 * The `amqp` built-in scheduler plugin: publishes every task transition to a RabbitMQ queue, as
 * in the Dask docs' RabbitMQ example, without slowing the scheduler down. This file is its entry
 * in the registry (role, options); the work is done by plugins/amqp-publisher.ts, run in a thread
 * of its own by plugins/amqp-host.ts and plugins/amqp-thread.ts. They are imported when the
 * plugin is created, so that a process that never uses it never loads amqplib.
 *
 * @module
 */
import { integerAtLeast } from "../lib/plugins/options.ts";
import type { CheckedOptionSpec } from "../lib/plugins/options.ts";
import type { BuiltinPlugin } from "../lib/plugins/registry.ts";
import { type AmqpOptions, checkAmqpUrl } from "./amqp-types.ts";

export type { AmqpOptions, AmqpStats, AmqpTransitionMessage } from "./amqp-types.ts";

const options: Record<string, CheckedOptionSpec> = {
  url: { type: "string", required: true, description: "the broker, amqp://user:password@host:port/vhost", check: checkAmqpUrl },
  queue: {
    type: "string",
    required: true,
    description: "the queue receiving transitions (declared durable)",
    check: (value) => (value === "" ? "must not be empty" : undefined),
  },
  exchange: { type: "string", description: "a durable direct exchange to publish to, bound to the queue" },
  routingKey: { type: "string", description: "routing key with exchange (default: the queue name)" },
  maxBuffered: {
    type: "number",
    default: 100_000,
    description: "unconfirmed messages kept while the broker is away; past it the oldest are dropped",
    check: integerAtLeast(1),
  },
  confirm: { type: "boolean", default: true, description: "wait for publisher confirms" },
  closeTimeoutMs: {
    type: "number",
    default: 5000,
    description: "how long close keeps delivering what is buffered",
    check: integerAtLeast(0),
  },
};

/** The `amqp` entry of `builtinPlugins`: the plugin in a thread of its own where threads exist. */
export const amqpPlugin: BuiltinPlugin = {
  role: "scheduler",
  description: "publishes every transition to a RabbitMQ queue, buffering while the broker is away",
  options,
  create: async (opts, context) =>
    typeof Worker === "function"
      ? new (await import("./amqp-host.ts")).AmqpThreadPlugin(opts as unknown as AmqpOptions, context)
      : new (await import("./amqp-publisher.ts")).AmqpPlugin(opts as unknown as AmqpOptions, context),
};

export default amqpPlugin;
