/**
 * Forwarded logs: what workers, nannies, plugins and task functions log reaches the scheduler
 * (`GET /api/v1/logs`, `cluster logs`), bounded at both ends; `log` events show in the
 * scheduler's own log. The queue and the ring are tested in process; the rest against the binary.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { LogForwarder } from "../lib/logs/forwarder.ts";
import { parseLevel } from "../lib/logs/record.ts";
import { LogStore, logTopicEvent } from "../lib/scheduler/logs.ts";
import { api, binary, root, runCli, sleep, startCluster, stopAll, type TestCluster, waitFor } from "../testkit/mod.ts";

afterAll(stopAll);

const fixtures = join(root, "test", "fixtures");
const rec = (message: string, level = "info") => ({ time: 1, level: level as "info", source: "worker", message });

describe("the forwarding queue and the scheduler's ring", () => {
  test("a full forwarding queue drops the oldest records and the next batch says how many", () => {
    const f = new LogForwarder({ maxQueued: 3 });
    for (let i = 0; i < 10; i++) f.push(rec(`m${i}`));
    const batch = f.take();
    expect(batch.map((r) => r.message)).toEqual(["m7", "m8", "m9", "7 earlier log records dropped (forwarding queue full)"]);
    expect(f.take()).toEqual([]);
    expect(f.droppedTotal).toBe(7);
  });

  test("an attached forwarder receives what createLogger writes, without its own role in the source", () => {
    const f = new LogForwarder({ role: "worker" });
    f.attach();
    try {
      createLogger("worker").child("plugin:timer").warn("tick late");
      createLogger("task", { key: "inc-1" }).info("hello");
    } finally {
      f.detach();
    }
    createLogger("worker").info("not forwarded after detach");
    const batch = f.take();
    expect(batch.map((r) => [r.source, r.level, r.message, r.key])).toEqual([
      ["plugin:timer", "warn", "tick late", undefined],
      ["task", "info", "hello", "inc-1"],
    ]);
  });

  test("the scheduler keeps a bounded ring per sender, numbered by one seq, filtered by sender, seq and level", () => {
    const store = new LogStore({ perSource: 5 });
    store.add("worker", "a", Array.from({ length: 8 }, (_, i) => rec(`a${i}`, i % 2 ? "warn" : "info")));
    store.add("nanny", "a", [rec("nanny a")]);
    store.add("worker", "b", [rec("b0", "error")]);
    expect(store.lastSeq).toBe(10);
    const all = store.query();
    // Worker a keeps its newest 5; one chatty sender does not push out the others.
    expect(all.map((r) => r.message)).toEqual(["a3", "a4", "a5", "a6", "a7", "nanny a", "b0"]);
    expect(all.map((r) => r.seq)).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(store.query({ worker: "a" }).map((r) => `${r.role}:${r.message}`)).toEqual(["worker:a3", "worker:a4", "worker:a5", "worker:a6", "worker:a7", "nanny:nanny a"]);
    expect(store.query({ since: 8 }).map((r) => r.message)).toEqual(["nanny a", "b0"]);
    expect(store.query({ level: "warn" }).map((r) => r.message)).toEqual(["a3", "a5", "a7", "b0"]);
    expect(parseLevel("WARNING")).toBe("warn");
  });

  test("a ring is bounded in characters too, and a message past 8,000 characters is cut", () => {
    const store = new LogStore();
    store.add("worker", "big", Array.from({ length: 500 }, () => rec("x".repeat(8000))));
    expect(store.query().length).toBe(Math.floor((1024 * 1024) / 8000));
    store.add("worker", "huge", [rec("y".repeat(100_000))]);
    expect(store.query({ worker: "huge" })[0].message).toEndWith("… (truncated)");
    expect(store.query({ worker: "huge" })[0].message.length).toBeLessThan(8100);
    expect(parseLevel("loud")).toBeNull();
  });
});

describe("logs from real workers and nannies", () => {
  let cluster: TestCluster;
  const logsOf = async (query = "") => (await api(cluster.url, `/api/v1/logs${query}`)).body as Array<Record<string, any>>;

  test("worker, nanny, plugin and task records reach GET /api/v1/logs with their source, key and level", async () => {
    cluster = await startCluster({ workers: 0 });
    await cluster.addWorker(["--tasks", join(fixtures, "log-tasks.ts")]);
    await cluster.addWorker(["--nanny", "--tasks", join(fixtures, "log-tasks.ts")]);
    const [plain, nannied] = cluster.workers.map((w) => /--name (\S+)/.exec(w.child.spawnargs.join(" "))![1]);
    const registered = await api(cluster.url, "/api/v1/plugins", { body: { role: "worker", use: join(fixtures, "log-plugin.ts") } });
    expect(registered.status).toBe(201);
    const graph = { tasks: [{ key: "chatty-1", fn: "log-tasks.chatty", args: [1], annotations: { workers: [plain] } }], keys: ["chatty-1"] };
    expect((await api(cluster.url, "/api/v1/graph", { body: graph })).status).toBe(202);
    expect((await api(cluster.url, "/api/v1/results/chatty-1?timeout=20")).body).toEqual({ key: "chatty-1", value: 2 });

    const records = await waitFor("the task's records", async () => {
      const all = await logsOf();
      const plugins = all.filter((r) => r.source === "plugin" && /log-plugin set up/.test(r.message));
      return all.some((r) => r.source === "task" && /errs/.test(r.message)) && all.some((r) => r.role === "nanny") && plugins.length === 2 ? all : undefined;
    }, 15_000).catch(async (err) => {
      console.log(JSON.stringify(await logsOf(), null, 1));
      throw err;
    });
    const task = records.filter((r) => r.source === "task");
    expect(task.map((r) => [r.level, r.message, r.key, r.worker])).toEqual([
      ["info", `chatty 1 starts on ${plain}`, "chatty-1", plain],
      ["warn", "chatty 1 warns", "chatty-1", plain],
      ["error", "chatty 1 errs (not really)", "chatty-1", plain],
    ]);
    for (const r of records) expect(Object.keys(r)).toEqual(expect.arrayContaining(["seq", "time", "level", "source", "worker", "message"]));
    expect(records.map((r) => r.seq)).toEqual([...records.map((r) => r.seq)].sort((a, b) => a - b));
    // The worker's own lines, the plugin's (on both workers) and the nanny's.
    expect(records.some((r) => r.worker === plain && r.source === "worker" && /Registered with the scheduler/.test(r.message))).toBe(true);
    for (const name of [plain, nannied]) {
      expect(records.some((r) => r.worker === name && r.source === "plugin" && r.message === `log-plugin set up on ${name}`)).toBe(true);
    }
    expect(records.some((r) => r.worker === nannied && r.role === "nanny" && /Started worker process/.test(r.message))).toBe(true);

    // Filters: level and above, one worker, after a seq; bad values are 400.
    expect((await logsOf("?level=error")).every((r) => r.level === "error")).toBe(true);
    expect((await logsOf(`?worker=${nannied}`)).every((r) => r.worker === nannied)).toBe(true);
    const last = records[records.length - 1].seq;
    expect((await logsOf(`?since=${last}`)).every((r) => r.seq > last)).toBe(true);
    expect((await api(cluster.url, "/api/v1/logs?level=loud")).status).toBe(400);
    expect((await api(cluster.url, "/api/v1/logs?since=x")).status).toBe(400);

    // The task's events went to the event log; `log` events (task's and plugin's) to the scheduler's stderr.
    const events = await api(cluster.url, "/api/v1/info");
    expect(events.body.logs.lastSeq).toBeGreaterThanOrEqual(last);
    await waitFor("the log events in the scheduler's log", () => {
      const err = cluster.scheduler.stderr.join("");
      return err.includes("chatty 1 says hello to the scheduler") && err.includes(`log-plugin on ${nannied} reports an error`);
    }, 10_000);
    const err = cluster.scheduler.stderr.join("");
    expect(err).toMatch(/WARN \[scheduler\] event: chatty 1 says hello to the scheduler \(worker=\S+ key=chatty-1\)/);
    expect(err).toMatch(/ERROR \[scheduler\] event: log-plugin on \S+ reports an error/);
  });

  test("cluster logs prints the records, filters them, and --follow prints new ones until Ctrl-C", async () => {
    const plain = /--name (\S+)/.exec(cluster.workers[0].child.spawnargs.join(" "))![1];
    const text = await runCli(["logs", cluster.url, "--worker", plain, "--level", "warning"]);
    expect(text.code).toBe(0);
    const lines = text.stdout.trim().split("\n");
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^\\S+Z WARN  worker ${plain} \\[task key=chatty-1\\] chatty 1 warns$`)));
    expect(lines.every((l) => / (WARN |ERROR) /.test(l))).toBe(true);
    const json = await runCli(["logs", cluster.url, "--json", "--level", "error"]);
    expect(json.stdout.trim().split("\n").map((l) => JSON.parse(l).level)).toContain("error");
    expect((await runCli(["logs", cluster.url, "--level", "loud"])).code).toBe(2);

    const since = String((await api(cluster.url, "/api/v1/info")).body.logs.lastSeq);
    const follow = spawn(binary, ["logs", cluster.url, "--follow", "--since", since], { stdio: ["ignore", "pipe", "pipe"] });
    let followed = "";
    follow.stdout.setEncoding("utf8").on("data", (c: string) => (followed += c));
    const exited = new Promise((r) => follow.once("exit", (code) => r(code)));
    await sleep(500);
    const graph = { tasks: [{ key: "chatty-2", fn: "log-tasks.chatty", args: [2], annotations: { workers: [plain] } }], keys: ["chatty-2"] };
    await api(cluster.url, "/api/v1/graph", { body: graph });
    await waitFor("the followed record", () => followed.includes("chatty 2 warns"), 15_000);
    follow.kill("SIGINT");
    expect(await exited).toBe(0);
  });

  test("a task that logs far more than the bound loses its oldest records, says so, and the worker goes on", async () => {
    const plain = /--name (\S+)/.exec(cluster.workers[0].child.spawnargs.join(" "))![1];
    const graph = { tasks: [{ key: "flood-1", fn: "log-tasks.flood", args: [5000], annotations: { workers: [plain] } }], keys: ["flood-1"] };
    await api(cluster.url, "/api/v1/graph", { body: graph });
    expect((await api(cluster.url, "/api/v1/results/flood-1?timeout=30")).body.value).toBe(5000);
    const records = await waitFor("the flood's last record", async () => {
      const r = await logsOf(`?worker=${plain}`);
      return r.some((x) => x.message === "flood 4999") ? r : undefined;
    }, 15_000);
    expect(records.some((r) => /log records dropped/.test(r.message))).toBe(true);
    // The scheduler keeps at most 1,000 per worker.
    expect(records.filter((r) => r.role === "worker").length).toBeLessThanOrEqual(1000);
    expect(records.some((r) => r.message === "flood 0")).toBe(false);
    await cluster.stop();
  });
});

describe("log events in the scheduler's own log", () => {
  test("a log event is one line at its level, naming who sent it, however its message is made", () => {
    const lines: string[] = [];
    const log = {
      info: (m: string) => lines.push(`INFO ${m}`),
      warn: (m: string) => lines.push(`WARN ${m}`),
      error: (m: string) => lines.push(`ERROR ${m}`),
      debug: (m: string) => lines.push(`DEBUG ${m}`),
      child: () => log,
    };
    logTopicEvent(log, { seq: 1, topic: "log", time: 0, level: "warning", message: "disk\nfull", worker: "w1" });
    logTopicEvent(log, { seq: 2, topic: "log", time: 0, note: "no message" });
    logTopicEvent(log, { seq: 3, topic: "log", time: 0, level: "error", message: "x".repeat(5000) });
    expect(lines[0]).toBe("WARN event: disk\\nfull (worker=w1)");
    expect(lines[1]).toBe('INFO event: {"note":"no message"}');
    expect(lines[2]).toStartWith("ERROR event: xxx");
    expect(lines[2].length).toBeLessThan(2100);
  });
});
