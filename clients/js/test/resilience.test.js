// Failover to another endpoint, timeouts, and a real retry on 503 (two of
// the three nodes stopped, so the third has no quorum, then restarted).
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { Client, ConnectionError, TimeoutError, Unavailable } from "../src/index.js";
import { clusterDir, endpoints, eventually, portBase, skip, token, unique } from "../testing/env.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** A local port nothing listens on. */
async function deadPort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** The platform's fetch, recording every answer (status and time). */
function recordingFetch(log, onAnswer = () => {}) {
  return async (url, init) => {
    try {
      const res = await fetch(url, init);
      log.push({ method: init?.method, url, status: res.status, at: Date.now() });
      onAnswer(res.status);
      return res;
    } catch (e) {
      log.push({ method: init?.method, url, status: 0, at: Date.now() });
      throw e;
    }
  };
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopNode(n, signal = "SIGTERM") {
  const pid = Number(readFileSync(join(clusterDir, `n${n}.pid`), "utf8"));
  process.kill(pid, signal);
  await eventually(() => !pidAlive(pid), { what: `node ${n} to stop` });
}

/** `scripts/cluster.sh up 3`: restarts the stopped nodes on their data. */
function startNodes() {
  return new Promise((res, rej) => {
    const p = spawn("bash", ["scripts/cluster.sh", "up", "3"], { cwd: root, stdio: "ignore" });
    p.on("close", (code) => (code === 0 ? res() : rej(new Error(`cluster.sh up: exit ${code}`))));
  });
}

/** Every node ready, and knowing a leader for each shard it hosts. */
async function allReady() {
  for (const e of endpoints) {
    const c = new Client({ endpoint: e, token });
    await eventually(
      async () => {
        if ((await c.cluster.ready()).status !== "ready") return false;
        const s = await c.cluster.status();
        const mine = s.shards.filter((sh) => sh.replicas.includes(s.node_id));
        return mine.length > 0 && mine.every((sh) => sh.leader);
      },
      { what: `${e} to be ready with a leader for each of its shards`, ms: 60000 },
    );
  }
}

const ownCluster =
  clusterDir && portBase && process.env.ORRERY_BIN
    ? false
    : "needs the cluster of scripts/test-js-client.sh (ORRERY_CLUSTER_DIR, ORRERY_PORT_BASE, ORRERY_BIN)";

describe("failover, timeouts and retries", { skip }, () => {
  test("a node that is down is replaced by the next endpoint", async () => {
    const dead = `https://127.0.0.1:${await deadPort()}`;
    const log = [];
    const c = new Client({ endpoints: [dead, ...endpoints], token, fetch: recordingFetch(log) });
    const key = unique("failover");
    // A POST too: a refused connection sent nothing, so moving on is safe.
    const q = unique("fq");
    await c.queues.create(q);
    await c.kv.put(key, "v");
    assert.equal(await c.kv.getText(key), "v");
    assert.equal(c.endpoint, endpoints[0].startsWith("https://") ? endpoints[0] : `https://${endpoints[0]}`);
    assert.equal(log[0].status, 0, "the first try found no one");
    assert.ok(log[0].url.startsWith(dead));
    assert.equal(log.filter((l) => l.url.startsWith(dead)).length, 1, "the client stays on the node that answered");
  });

  test("no node reachable: ConnectionError after the retries", async () => {
    const c = new Client({ endpoints: [`127.0.0.1:${await deadPort()}`, `127.0.0.1:${await deadPort()}`], token, retries: 3 });
    await assert.rejects(c.kv.get("x"), (e) => e instanceof ConnectionError && /ECONNREFUSED/.test(e.message));
  });

  test("a runtime without the cluster CA gets a ConnectionError naming NODE_EXTRA_CA_CERTS", async () => {
    const index = pathToFileURL(resolve(root, "clients/js/src/index.js")).href;
    const script = `
      const { Client } = await import(${JSON.stringify(index)});
      try { await new Client({ endpoints: ${JSON.stringify(endpoints)}, token: "x" }).kv.get("a"); }
      catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }`;
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { env });
    const e = JSON.parse(stdout);
    assert.equal(e.name, "ConnectionError");
    assert.equal(e.code, "tls");
    assert.match(e.message, /NODE_EXTRA_CA_CERTS/);
  });

  test("an answer slower than timeoutMs is a TimeoutError", async () => {
    const c = new Client({ endpoints, token });
    const q = unique("tq");
    await c.queues.create(q);
    const t0 = Date.now();
    // The server holds an empty claim for wait_s; a non-idempotent POST is not retried.
    await assert.rejects(
      c.request("POST", `/v1/queues/${q}/claim`, { json: { worker_id: "w", wait_s: 5 }, timeoutMs: 500 }),
      (e) => e instanceof TimeoutError && e.code === "timeout",
    );
    assert.ok(Date.now() - t0 < 4000);
  });

  test(
    "the event stream survives the loss of its node: it resumes on another from its cursor",
    { skip: ownCluster, timeout: 120_000 },
    async () => {
      await allReady();
      const admin = new Client({ endpoints: [endpoints[0], endpoints[2]], token });
      const q = unique("sq");
      await admin.queues.create(q);
      const a = await admin.jobs.submit({ queue: q, kind: "ext.a" });
      // The stream starts on node 2.
      const watcher = new Client({ endpoints: [endpoints[1], endpoints[0], endpoints[2]], token });
      // A watchdog: a stream that stalls must not keep node 2 down.
      const ac = new AbortController();
      const watchdog = setTimeout(() => ac.abort(new Error("the stream stalled for 60 s")), 60_000);
      const seen = [];
      let b = null;
      try {
        for await (const ev of watcher.events.stream({ signal: ac.signal })) {
          if (ev.queue !== q) continue;
          seen.push(ev);
          if (ev.job_id === a.id && ev.type === "enqueued") {
            // SIGKILL: a node stopped with SIGTERM waits for its open
            // streams to close before it exits (see the report), so a crash
            // is what takes a stream's node away.
            await stopNode(2, "SIGKILL");
            b = await admin.jobs.submit({ queue: q, kind: "ext.b" });
          }
          if (b && ev.job_id === b.id) break;
        }
      } finally {
        clearTimeout(watchdog);
        await startNodes();
      }
      assert.deepEqual(
        seen.map((e) => [e.job_id, e.type]),
        [[a.id, "enqueued"], [b.id, "enqueued"]],
        "each event once, none lost",
      );
      assert.notEqual(watcher.endpoint, endpoints[1].startsWith("https://") ? endpoints[1] : `https://${endpoints[1]}`);
      await allReady();
    },
  );
  test(
    "503 while two nodes are down: retried after Retry-After until they are back",
    { skip: ownCluster, timeout: 120_000 },
    async () => {
      const log = [];
      const first = endpoints[0];
      const key = unique("retry");
      await allReady();
      await new Client({ endpoint: first, token }).kv.put(key, "before");
      for (const n of [2, 3]) await stopNode(n);
      // Without retries the client throws the 503 as it came.
      await assert.rejects(new Client({ endpoint: first, token, retries: 0 }).kv.put(key, "lost?"), (e) => {
        assert.ok(e instanceof Unavailable, `${e}`);
        assert.equal(e.status, 503);
        assert.ok(["unavailable", "outcome_unknown"].includes(e.code), e.code);
        assert.equal(e.retryAfter, 1);
        return true;
      });
      // With retries: the nodes come back after the client's first 503.
      let restart = null;
      const c = new Client({
        endpoint: first,
        token,
        retries: 20,
        fetch: recordingFetch(log, (status) => {
          if (status === 503 && !restart) restart = startNodes();
        }),
      });
      try {
        const rev = await c.kv.put(key, "after");
        assert.ok(rev > 0);
      } finally {
        await (restart ?? startNodes());
      }
      assert.equal(await c.kv.getText(key), "after");
      const puts = log.filter((l) => l.method === "PUT");
      const seen = JSON.stringify(puts.map((l) => [l.status, l.at]));
      assert.ok(puts.some((l) => l.status === 503), `no 503 seen: ${seen}`);
      assert.equal(puts.at(-1).status, 200, seen);
      // Retry-After: 1 was honoured: each retry came at least ~1 s after a 503.
      for (let i = 1; i < puts.length; i++) {
        if (puts[i - 1].status === 503) {
          assert.ok(puts[i].at - puts[i - 1].at >= 900, `retried ${puts[i].at - puts[i - 1].at} ms after a 503`);
        }
      }
      // The whole cluster serves again before the next tests.
      await allReady();
    },
  );

});
