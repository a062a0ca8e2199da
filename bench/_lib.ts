/**
 * What only the benchmarks measure: a process's memory and CPU time from `/proc` (Linux), and
 * the statistics of the report. Starting and stopping processes, graphs and waiting come from
 * the test kit (`testkit/mod.ts`).
 *
 * @module
 */
import { readdirSync, readFileSync } from "node:fs";

/** The resident set size (`VmRSS`) and its peak (`VmHWM`) of a process in bytes, from `/proc/PID/status`. */
export function readMemory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m").exec(status);
    if (!m) throw new Error(`Cannot read the memory of process ${pid}: no ${name} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rss: field("VmRSS"), peak: field("VmHWM") };
}

/** The resident set size of a process in bytes. */
export function readRss(pid: number): number {
  return readMemory(pid).rss;
}

/** Per process, each thread's name and CPU time (ns) when last read, ended threads included. */
const threadTimes = new Map<number, Map<string, { name: string; ns: number }>>();

/**
 * Reads the CPU time of each thread of a process from `/proc/PID/task/TID/schedstat` (in
 * nanoseconds) into `threadTimes`; a thread that has ended keeps the time it had when last read,
 * so that totals never go back. Returns the process's threads, or null without a task directory.
 */
function readThreads(pid: number): Map<string, { name: string; ns: number }> | null {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let threads = threadTimes.get(pid);
  if (!threads) threadTimes.set(pid, threads = new Map());
  for (const tid of tids) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      const known = threads.get(tid);
      if (known && ns >= known.ns) known.ns = ns;
      else {
        // A new thread, or a new one under an ended thread's id: the ended one keeps its time.
        if (known) threads.set(`${tid}-ended-${threads.size}`, known);
        threads.set(tid, { name: readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim(), ns });
      }
    } catch {
      // That thread ended meanwhile.
    }
  }
  return threads;
}

/**
 * The CPU time a process has used so far, in milliseconds (Linux `/proc`): the sum of its
 * threads' time on a CPU from `/proc/PID/task/TID/schedstat`, kept in nanoseconds (`stat`'s
 * user and system times come in 10 ms ticks, a tenth of a 10,000-task map's scheduler CPU). A
 * thread that ends counts with the time it had when last read (the runtimes end idle compiler
 * threads now and then); without `schedstat`, the ticks of `stat`.
 */
export function readCpuMs(pid: number): number {
  const threads = readThreads(pid);
  if (threads !== null && threads.size > 0) {
    let total = 0;
    for (const { ns } of threads.values()) total += ns;
    return total / 1e6;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of stat, in clock ticks (100 a second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * The CPU time (ms) of a process's JIT compiler threads (JavaScriptCore names them
 * `JITWorker`), read as `readCpuMs` reads: how much of a process's CPU went to compiling its
 * hot code rather than running it. 0 where there are none or no `/proc`.
 */
export function readJitCpuMs(pid: number): number {
  let total = 0;
  for (const { name, ns } of readThreads(pid)?.values() ?? []) if (name.startsWith("JITWorker")) total += ns;
  return total / 1e6;
}

/**
 * CPU time (ms) of a process and all its descendants alive now (a browser's renderer, GPU and
 * utility processes); a process gone meanwhile is skipped.
 */
export function readTreeCpuMs(root: number): number {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parentOf.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // Gone.
    }
  }
  let total = 0;
  for (const pid of parentOf.keys()) {
    let p: number | undefined = pid;
    while (p !== undefined && p !== root && p > 1) p = parentOf.get(p);
    if (p !== root) continue;
    try {
      total += readCpuMs(pid);
    } catch {
      // Gone.
    }
  }
  return total;
}

/** The median of the samples (the mean of the middle two for an even count). */
export function median(samples: number[]): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The `p`-th percentile (0–100) by the nearest-rank method. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}
