import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Conflict, InvalidArgument, NotFound } from "../src/index.js";
import { client, eventually, skip, unique } from "../testing/env.js";

// Approve when the amount is within the customer's limit, read from KV
// through a data source; customers without a limit get 0.
function graph(source, { deny = "'deny'" } = {}) {
  return {
    nodes: [
      { id: "in", type: "input", config: { fields: { amount: "number", customer: "string" } } },
      {
        id: "limit",
        type: "lookup",
        config: { source, key: "input.customer", as: "limit", on_error: "default", default: { max: 0.0 } },
      },
      { id: "check", type: "branch" },
      { id: "deny", type: "output", config: { fields: { decision: deny, max: "limit.max" } } },
      { id: "approve", type: "output", config: { fields: { decision: "'approve'", max: "limit.max" } } },
    ],
    edges: [
      { from: "in", to: "limit" },
      { from: "limit", to: "check" },
      { from: "check", to: "approve", when: "input.amount <= limit.max" },
      { from: "check", to: "deny" },
    ],
  };
}

describe("policies, runs and data sources", { skip }, () => {
  const c = skip ? null : client();
  const pname = skip ? "" : unique("pol");
  const src = skip ? "" : unique("limits");
  const kvPrefix = skip ? "" : unique("lim");
  let policy;

  test("data sources: create, list", async () => {
    await c.kv.put(`${kvPrefix}/alice`, JSON.stringify({ max: 100.0 }));
    const made = await c.dataSources.create({ name: src, kind: "kv", key_template: `${kvPrefix}/{key}` });
    assert.equal(made.name, src);
    assert.ok((await c.dataSources.list()).some((s) => s.name === src));
    await assert.rejects(c.dataSources.create({ name: src, kind: "kv", key_template: "x/{key}" }), Conflict);
    await assert.rejects(c.dataSources.create({ name: unique("bad"), kind: "kv" }), (e) => e.code === "invalid_source");
  });

  test("create a policy and versions", async () => {
    policy = await c.policies.create(pname, { description: "limits" });
    assert.equal(policy.name, pname);
    await assert.rejects(c.policies.create(pname), Conflict);
    const v1 = await c.policies.createVersion(pname, graph(src));
    assert.equal(v1.version, 1);
    const v2 = await c.policies.createVersion(policy.id, graph(src, { deny: "'refer'" }), { activate: false });
    assert.equal(v2.version, 2);
    assert.deepEqual((await c.policies.versions(pname)).map((v) => v.version), [1, 2]);
    assert.deepEqual((await c.policies.version(pname, 2)).graph, graph(src, { deny: "'refer'" }));
    assert.ok((await c.policies.list()).some((p) => p.id === policy.id));
    assert.equal((await c.policies.get(pname)).id, policy.id);
    await assert.rejects(
      c.policies.createVersion(pname, { nodes: [], edges: [] }),
      (e) => e instanceof InvalidArgument && e.code === "invalid_graph",
    );
  });

  test("run: output and trace; runs list and get", async () => {
    const ok = await c.policies.run(pname, { amount: 60, customer: "alice" }, { run_key: "r1" });
    assert.equal(ok.status, "succeeded");
    assert.deepEqual(ok.output, { decision: "approve", max: 100 });
    assert.equal(ok.version, 1);
    assert.deepEqual(ok.trace.map((t) => t.id), ["in", "limit", "check", "approve"]);
    assert.deepEqual(ok.trace.find((t) => t.id === "limit").output, { max: 100 });
    assert.equal(ok.trace.find((t) => t.id === "check").branch, "approve");

    const no = await c.policies.run(pname, { amount: 60, customer: "bob" });
    assert.deepEqual(no.output, { decision: "deny", max: 0 });
    assert.ok(no.trace.find((t) => t.id === "limit").error, "the fallback keeps its cause");

    const v2 = await c.policies.run(pname, { amount: 500, customer: "alice" }, { version: 2 });
    assert.deepEqual(v2.output, { decision: "refer", max: 100 });

    await assert.rejects(c.policies.run(pname, { amount: "x" }), { status: 400, code: "invalid_input" });

    const batch = await c.policies.runBatch(pname, [{ amount: 1, customer: "alice" }, { amount: 1, customer: "bob" }]);
    assert.deepEqual(batch.results.map((r) => r.output.decision), ["approve", "deny"]);

    const runs = await c.runs.list({ policy: pname });
    assert.deepEqual(runs.runs.map((r) => r.id), [v2.id, no.id, ok.id]);
    const page = await c.runs.list({ policy: pname, limit: 2 });
    assert.equal(page.runs.length, 2);
    const rest = await c.runs.list({ policy: pname, limit: 2, cursor: page.next_cursor });
    assert.deepEqual(rest.runs.map((r) => r.id), [ok.id]);
    assert.deepEqual((await c.runs.get(ok.id)).output, ok.output);
  });

  test("an async run is evaluated by a policy.run job", async () => {
    const r = await c.policies.run(pname, { amount: 10, customer: "alice" }, { mode: "async", run_key: "a1" });
    assert.equal(r.status, "running");
    const done = await eventually(async () => {
      const x = await c.runs.get(r.id);
      return x.status !== "running" ? x : null;
    }, { what: "the async run to finish" });
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.output, { decision: "approve", max: 100 });
  });

  test("allocation, archive and delete", async () => {
    const p = await c.policies.update(pname, { allocation: [{ version: 2, weight: 1 }] });
    assert.deepEqual(p.allocation.map((a) => a.version), [2]);
    assert.equal((await c.policies.run(pname, { amount: 500, customer: "alice" })).version, 2);
    assert.equal((await c.policies.archiveVersion(pname, 1)).archived, true);
    await assert.rejects(c.policies.archiveVersion(pname, 2), Conflict);
    assert.equal((await c.policies.delete(pname)).deleted, true);
    await assert.rejects(c.policies.get(pname), NotFound);
    assert.equal((await c.dataSources.delete(src)).deleted, true);
    assert.ok(!(await c.dataSources.list()).some((s) => s.name === src));
  });
});
