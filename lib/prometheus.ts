/**
 * Prometheus text exposition helpers: label values escaped as the text format requires, so that
 * a name from outside (a plugin's, a worker's) cannot end a sample line and inject others.
 *
 * @module
 */

/**
 * Escapes a label value for the Prometheus text format: backslash as `\\`, double quote as `\"`,
 * line feed as `\n` — the only three escapes the format has (a reader refuses any other, so a
 * carriage return stays as it is: only a line feed ends a line).
 *
 * @example
 * ```ts
 * `cluster_plugin_errors{plugin="${escapeLabelValue('a"b\nc')}"} 1`; // plugin="a\"b\nc"
 * ```
 */
export function escapeLabelValue(value: string): string {
  return String(value).replace(/[\\"\n]/g, (c) => (c === "\\" ? "\\\\" : c === '"' ? '\\"' : "\\n"));
}

/**
 * Labels as Prometheus text: `{a="x",b="y"}`, or `""` for none. Names must already be valid
 * label names (they come from our code); values are escaped.
 *
 * @example
 * ```ts
 * formatLabels({ plugin: "jsonl", stat: "written" }); // {plugin="jsonl",stat="written"}
 * ```
 */
export function formatLabels(labels: Record<string, string | number>): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  return `{${entries.map(([name, value]) => `${name}="${escapeLabelValue(String(value))}"`).join(",")}}`;
}
