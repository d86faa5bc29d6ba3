import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Conflict, NotFound } from "../src/index.js";
import { client, eventually, skip, unique } from "../testing/env.js";

describe("queues and jobs", { skip }, () => {
  const c = skip ? null : client();
  const q = skip ? "" : unique("jq");

  test("queues: create, list, get, delete", async () => {
    const made = await c.queues.create(q, { lease_s: 30, max_attempts: 2 });
    assert.equal(made.name, q);
    assert.equal(made.max_attempts, 2);
    assert.ok((await c.queues.list()).some((x) => x.name === q));
    const got = await c.queues.get(q);
    assert.equal(got.counts.queued, 0);
    await assert.rejects(c.queues.create(q), Conflict);
    const tmp = unique("jq-tmp");
    await c.queues.create(tmp);
    assert.equal((await c.queues.delete(tmp)).deleted, true);
    await assert.rejects(c.queues.get(tmp), NotFound);
  });

  test("submit, get, list, cancel", async () => {
    const j = await c.jobs.submit({ queue: q, kind: "ext.cancel-me", params: { n: 1 }, delay_ms: 60_000 });
    assert.equal(j.state, "queued");
    assert.equal(j.created, true);
    const again = await c.jobs.submit({ queue: q, kind: "ext.cancel-me", dedupe_key: `d-${j.id}` });
    const dup = await c.jobs.submit({ queue: q, kind: "ext.cancel-me", dedupe_key: `d-${j.id}` });
    assert.equal(dup.id, again.id);
    assert.equal(dup.created, false);
    const got = await c.jobs.get(j.id);
    assert.deepEqual(got.params, { n: 1 });
    assert.match(got.waiting, /run_at/);
    const page = await c.jobs.list({ queue: q, limit: 1 });
    assert.equal(page.jobs.length, 1);
    assert.ok(page.next_cursor);
    const rest = await c.jobs.list({ queue: q, cursor: page.next_cursor });
    assert.deepEqual(
      [...page.jobs, ...rest.jobs].map((x) => x.id).sort(),
      [j.id, again.id].sort(),
    );
    assert.equal((await c.jobs.cancel(j.id)).state, "cancelled");
    assert.equal((await c.jobs.cancel(again.id)).state, "cancelled");
    await assert.rejects(c.jobs.get("0".repeat(26)), NotFound);
  });

  test("an external worker: claim, heartbeat, complete, fail, stale lease", async () => {
    const a = await c.jobs.submit({ queue: q, kind: "ext.work", params: { x: 1 } });
    const claimed = await c.jobs.claim(q, { worker_id: "js-w1", kinds: ["ext.work"], wait_s: 5 });
    assert.equal(claimed.id, a.id);
    assert.equal(claimed.state, "running");
    const hb = await c.jobs.heartbeat(a.id, claimed.token);
    assert.equal(hb.cancelled, false);
    assert.ok(hb.lease_expires_ms > Date.now());
    const done = await c.jobs.complete(a.id, claimed.token, { result: { answer: 42 } });
    assert.equal(done.state, "succeeded");
    assert.deepEqual((await c.jobs.get(a.id)).result, { answer: 42 });
    // The lease ended with the job: its token no longer counts.
    await assert.rejects(c.jobs.complete(a.id, claimed.token), Conflict);
    await assert.rejects(c.jobs.heartbeat(a.id, claimed.token), (e) => e.status === 409);
    const runs = await c.jobs.runs(a.id);
    assert.equal(runs.length, 1);
    assert.equal(runs[0].outcome, "succeeded");

    const b = await c.jobs.submit({ queue: q, kind: "ext.work" });
    const cb = await c.jobs.claim(q, { worker_id: "js-w1", kinds: ["ext.work"], wait_s: 5 });
    assert.equal(cb.id, b.id);
    const failed = await c.jobs.fail(b.id, cb.token, { error: "boom", retry: false });
    assert.equal(failed.state, "failed");
    assert.equal(failed.last_error, "boom");

    // Nothing claimable: null after the long poll.
    assert.equal(await c.jobs.claim(q, { worker_id: "js-w1", kinds: ["ext.none"], wait_s: 1 }), null);
  });

  test("batch submit, batch claim, batch complete", async () => {
    const r = await c.jobs.submitBatch([1, 2, 3].map((i) => ({ queue: q, kind: "ext.batch", params: { i } })));
    assert.equal(r.created, 3);
    // A batch claim takes jobs from one partition at a time: claim until
    // all three are held.
    const held = [];
    await eventually(
      async () => {
        const x = await c.jobs.claim(q, { worker_id: "js-w2", kinds: ["ext.batch"], max: 10, wait_s: 1 });
        if (x) held.push(...x.jobs);
        return held.length >= 3;
      },
      { what: "three claimed jobs" },
    );
    assert.deepEqual(held.map((j) => j.params.i).sort(), [1, 2, 3]);
    const res = await c.jobs.completeBatch(held.map((j) => ({ id: j.id, token: j.token, result: j.params })));
    assert.equal(res.completed, 3);
    assert.equal(res.failed, 0);
    for (const j of held) assert.deepEqual((await c.jobs.get(j.id)).result, j.params);
  });

  test("a command job's logs, followed as they come, then read whole", async () => {
    const j = await c.jobs.submit({
      queue: q,
      kind: "command",
      params: { argv: ["sh", "-c", "echo first; sleep 1; echo second"] },
    });
    // The stream is open before the run starts: a queued job has no logs
    // yet, so wait until the engine started it.
    await eventually(async () => (await c.jobs.get(j.id)).state !== "queued", { what: "the job to start" });
    let text = "";
    for await (const ev of c.jobs.followLogs(j.id)) {
      assert.equal(ev.type, "log");
      text += ev.text;
    }
    assert.match(text, /first\n(.|\n)*second\n/);
    const done = await eventually(async () => {
      const x = await c.jobs.get(j.id);
      return x.state === "succeeded" ? x : null;
    }, { what: "the command job to succeed" });
    assert.equal(done.state, "succeeded");
    assert.match(await c.jobs.logs(j.id), /first\nsecond\n/);
  });

  test("events: a page with a cursor, and the live stream resumes from a cursor", async () => {
    const page = await c.events.list({ limit: 5 });
    assert.ok(Array.isArray(page.events) && page.events.length > 0);
    assert.equal(typeof page.cursor, "string");
    const eq = unique("jq-ev");
    await c.queues.create(eq);
    const j = await c.jobs.submit({ queue: eq, kind: "ext.ev" });
    await c.jobs.cancel(j.id);
    const ac = new AbortController();
    const seen = [];
    for await (const ev of c.events.stream({ signal: ac.signal })) {
      if (ev.queue !== eq) continue;
      seen.push(ev);
      if (ev.type === "cancelled") break;
    }
    assert.deepEqual(seen.map((e) => e.type), ["enqueued", "cancelled"]);
    assert.ok(seen.every((e) => e.job_id === j.id && typeof e.cursor === "string"));
    // From the cursor after `enqueued`, the first event of the queue is `cancelled`.
    for await (const ev of c.events.stream({ since: seen[0].cursor })) {
      if (ev.queue !== eq) continue;
      assert.equal(ev.type, "cancelled");
      break;
    }
  });
});
