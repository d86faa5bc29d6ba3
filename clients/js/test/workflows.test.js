import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { Conflict, InvalidArgument, NotFound, PermissionDenied } from "../src/index.js";
import { client, endpoints, eventually, skip, unique } from "../testing/env.js";

const DIAMOND = [
  { name: "a", kind: "wf.a", params: { x: 1 } },
  { name: "b", kind: "wf.b", depends_on: ["a"] },
  { name: "c", kind: "wf.c", depends_on: ["a"] },
  { name: "d", kind: "wf.d", depends_on: ["b", "c"] },
];

const step = (w, name) => w.steps.find((s) => s.name === name);

describe("workflows", { skip }, () => {
  const c = skip ? null : client();
  const q = skip ? "" : unique("wq");

  // Workflows need cluster version 7: wait until every node's copy says so.
  before(async () => {
    for (const endpoint of endpoints) {
      const one = client({ endpoint, endpoints: undefined });
      await eventually(async () => (await one.cluster.status()).cluster_version?.active >= 7, {
        ms: 60000,
        what: `cluster version 7 on ${endpoint}`,
      });
    }
  });

  /** What is claimable now, by step name. */
  async function claimSteps() {
    const r = await c.jobs.claim(q, { worker_id: "js-wf", wait_s: 0.5, max: 10 });
    return Object.fromEntries((r?.jobs ?? []).map((j) => [j.params.workflow.step, j]));
  }

  test("a diamond: each step after its dependencies, with their results", async () => {
    await c.queues.create(q);
    let w = await c.workflows.start({ queue: q, steps: DIAMOND, input: { dataset: "cats" } });
    assert.equal(w.state, "running");
    assert.equal(step(w, "a").state, "claimable");
    assert.equal(step(w, "d").state, "pending");
    const done = new Set();
    for (const want of [["a"], ["b", "c"], ["d"]]) {
      const got = await claimSteps();
      assert.deepEqual(Object.keys(got).sort(), want);
      for (const [name, job] of Object.entries(got)) {
        assert.deepEqual(job.params.input, { dataset: "cats" });
        for (const dep of Object.keys(job.params.deps)) {
          assert.ok(done.has(dep), `${name} claimed before ${dep} succeeded`);
        }
        if (name === "d") assert.deepEqual(job.params.deps, { b: "result b", c: "result c" });
        await c.jobs.complete(job.id, job.token, { result: `result ${name}` });
      }
      for (const name of Object.keys(got)) done.add(name);
    }
    w = await c.workflows.get(w.id);
    assert.equal(w.state, "succeeded");
    assert.deepEqual(w.steps.map((s) => s.state), ["succeeded", "succeeded", "succeeded", "succeeded"]);
    assert.equal(step(w, "d").result, "result d");
    await assert.rejects(c.workflows.cancel(w.id), Conflict);
  });

  test("cancel, errors, permissions", async () => {
    let w = await c.workflows.start({ queue: q, steps: DIAMOND });
    w = await c.workflows.cancel(w.id);
    assert.equal(w.state, "cancelled");
    assert.equal(step(w, "a").state, "cancelled");
    assert.equal(step(w, "d").state, "skipped");
    assert.equal((await c.workflows.cancel(w.id)).state, "cancelled");
    assert.deepEqual(await claimSteps(), {});

    const cycle = [
      { name: "a", kind: "k", depends_on: ["b"] },
      { name: "b", kind: "k", depends_on: ["a"] },
    ];
    await assert.rejects(c.workflows.start({ queue: q, steps: cycle }), (e) => {
      assert.ok(e instanceof InvalidArgument);
      assert.equal(e.code, "invalid_workflow");
      assert.match(e.message, /cycle/);
      return true;
    });
    await assert.rejects(c.workflows.start({ queue: `${q}-absent`, steps: [{ name: "a", kind: "k" }] }), NotFound);
    await assert.rejects(c.workflows.get("0".repeat(25) + "a"), NotFound);

    const reader = await c.tokens.create({ name: unique("js-wf-reader"), role: "reader" });
    const r = client({ token: reader.token });
    assert.equal((await r.workflows.get(w.id)).state, "cancelled");
    await assert.rejects(r.workflows.start({ queue: q, steps: [{ name: "a", kind: "k" }] }), PermissionDenied);
    await assert.rejects(r.workflows.cancel(w.id), PermissionDenied);
  });
});
