/**
 * A worker's CPU use between heartbeats.
 *
 * @module
 */
/**
 * Measures this process's CPU use between calls, as Dask's `SystemMonitor` does with psutil:
 * CPU time used over wall time passed, in % of one core.
 *
 * @example
 * ```ts
 * const cpu = cpuMeter();
 * setInterval(() => console.log(cpu()), 1000);
 * ```
 */
export function cpuMeter(): () => number {
  let last = process.cpuUsage();
  let lastTime = performance.now();
  return () => {
    const now = performance.now();
    const current = process.cpuUsage();
    const usedMs = (current.user - last.user + current.system - last.system) / 1000;
    const wallMs = now - lastTime;
    last = current;
    lastTime = now;
    if (wallMs <= 0) return 0;
    return Math.round((usedMs / wallMs) * 1000) / 10;
  };
}
