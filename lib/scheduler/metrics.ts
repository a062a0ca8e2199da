/**
 * The scheduler's Prometheus text for `GET /metrics`: tasks by state, transitions, workers,
 * plugin errors, event subscribers, per-worker CPU, memory and tasks (from heartbeats), and the
 * numeric `stats()` of plugins that have one.
 *
 * @module
 */
import type { PluginManager } from "../plugins/manager.ts";
import type { SchedulerPlugin } from "../plugins/types.ts";
import type { EventLog } from "./events.ts";
import type { SchedulerState } from "./state.ts";
import type { WorkerMetrics } from "./worker-metrics.ts";
import { formatLabels } from "../prometheus.ts";

/** What the metrics are read from. */
export interface MetricsSources {
  state: SchedulerState;
  plugins: PluginManager<SchedulerPlugin>;
  events: EventLog;
  /** Keys relayed through the scheduler between workers. */
  relayedTotal: number;
  /** What workers' heartbeats report. */
  workerMetrics?: WorkerMetrics;
}

/**
 * Renders the metrics of a scheduler.
 *
 * @example
 * ```ts
 * app.get("/metrics", (c) => c.text(metricsText({ state, plugins, events })));
 * ```
 */
export function metricsText({ state, plugins, events, relayedTotal, workerMetrics }: MetricsSources): string {
  const lines: string[] = [];
  const metric = (name: string, help: string, type: string, samples: Array<[string, number]>) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  metric("cluster_tasks", "Tasks by state", "gauge",
    Object.entries(state.counts).filter(([s]) => s !== "forgotten").map(([s, n]) => [formatLabels({ state: s }), n]));
  metric("cluster_transitions_total", "Task transitions", "counter", [["", state.transitionsTotal]]);
  metric("cluster_workers", "Connected workers", "gauge", [["", state.workers.size]]);
  metric("cluster_relayed_total", "Keys relayed through the scheduler between workers", "counter", [["", relayedTotal]]);
  metric("cluster_plugin_errors_total", "Plugin hook errors", "counter", [["", plugins.errorsTotal]]);
  const byPlugin = [...plugins.errors].map(([name, n]) => [formatLabels({ plugin: name }), n] as [string, number]);
  if (byPlugin.length > 0) metric("cluster_plugin_errors", "Plugin hook errors by plugin", "counter", byPlugin);
  metric("cluster_event_subscribers", "Event-stream subscribers", "gauge", [["", events.subscriberCount]]);
  metric("cluster_events_total", "Events logged", "counter", [["", events.lastSeq]]);
  if (state.workers.size > 0) {
    const ws = [...state.workers.values()];
    const latest = ws.map((w) => [formatLabels({ worker: w.name }), workerMetrics?.latest(w.name)] as const);
    metric("cluster_worker_cpu", "Worker process CPU, % of one core, at its last heartbeat", "gauge", latest.map(([l, s]) => [l, s?.cpu ?? 0]));
    metric("cluster_worker_memory_bytes", "Worker process resident memory (RSS) at its last heartbeat", "gauge", latest.map(([l, s]) => [l, s?.rss ?? 0]));
    metric("cluster_worker_executing", "Tasks executing on a worker at its last heartbeat", "gauge", latest.map(([l, s]) => [l, s?.executing ?? 0]));
    metric("cluster_worker_held", "Task results a worker holds", "gauge", ws.map((w) => [formatLabels({ worker: w.name }), w.heldTasks.size]));
  }
  for (const entry of plugins.entries) {
    const stats = (entry.plugin as { stats?: () => Record<string, number | boolean> }).stats?.();
    if (!stats) continue;
    for (const [k, v] of Object.entries(stats)) {
      if (typeof v === "number" || typeof v === "boolean") {
        lines.push(`cluster_plugin_stat${formatLabels({ plugin: entry.name, stat: k })} ${Number(v)}`);
      }
    }
  }
  return lines.join("\n") + "\n";
}
