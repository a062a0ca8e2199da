/**
 * A small consumer for the `amqp` scheduler plugin: prints every task transition as one line,
 * skipping the duplicates a reconnecting plugin may resend and reporting gaps (messages the
 * plugin dropped while the broker was away for too long).
 *
 * ```sh
 * bun examples/amqp-consumer.ts amqp://guest:guest@127.0.0.1:5672 dask_task_status
 * deno run -A examples/amqp-consumer.ts amqp://guest:guest@127.0.0.1:5672 dask_task_status
 * ```
 *
 * Output, one line per transition:
 *
 * ```text
 * 2026-01-01T12:00:00.123Z #42 inc-3b1f waiting -> processing worker=tcp://127.0.0.1:4001 stimulus=update-graph-17
 * ```
 *
 * De-duplication relies on the plugin resending in order, from the oldest unconfirmed message:
 * with one consumer on the queue, a seq not above the highest seen is a resend. The message id
 * (`INSTANCE:SEQ`) tells a restarted scheduler, whose seqs start again at 1, from a resend.
 * Messages are acknowledged after printing, so they leave the queue.
 *
 * @module
 */
import process from "node:process";
import amqp from "amqplib";
import type { ConsumeMessage } from "amqplib";

interface Transition {
  key: string;
  start: string;
  finish: string;
  worker?: string;
  stimulusId: string;
  time: number;
  seq: number;
}

const [url, queue] = process.argv.slice(2);
if (!url || !queue) {
  console.error("Usage: bun examples/amqp-consumer.ts AMQP_URL QUEUE");
  process.exit(2);
}

/** The highest seq printed, per plugin instance. */
const highest = new Map<string, number>();
let duplicates = 0;

const conn = await amqp.connect(url);
conn.on("error", (err) => console.error(`connection error: ${err.message}`));
conn.on("close", () => {
  console.error(`connection closed (${duplicates} duplicates skipped)`);
  process.exit(1);
});
const channel = await conn.createChannel();
await channel.assertQueue(queue, { durable: true });
await channel.prefetch(1000);
await channel.consume(queue, (msg: ConsumeMessage | null) => {
  if (!msg) return;
  handle(msg);
  channel.ack(msg);
});
console.error(`consuming "${queue}"; Ctrl-C to stop`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, async () => {
    conn.removeAllListeners("close");
    await conn.close().catch(() => {});
    console.error(`stopped (${duplicates} duplicates skipped)`);
    process.exit(0);
  });
}

function handle(msg: ConsumeMessage): void {
  let t: Transition;
  try {
    t = JSON.parse(msg.content.toString("utf8"));
  } catch {
    console.error(`skipping a message that is not JSON: ${msg.content.toString("utf8").slice(0, 80)}`);
    return;
  }
  const messageId = String(msg.properties.messageId ?? "");
  const instance = messageId.includes(":") ? messageId.slice(0, messageId.lastIndexOf(":")) : "";
  const last = highest.get(instance) ?? 0;
  if (t.seq <= last) {
    duplicates++;
    return;
  }
  if (t.seq > last + 1 && last > 0) console.error(`gap: ${t.seq - last - 1} transitions dropped by the plugin`);
  highest.set(instance, t.seq);
  const when = new Date(t.time * 1000).toISOString();
  const worker = t.worker ? ` worker=${t.worker}` : "";
  console.log(`${when} #${t.seq} ${t.key} ${t.start} -> ${t.finish}${worker} stimulus=${t.stimulusId}`);
}
