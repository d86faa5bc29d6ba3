import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Conflict, InvalidArgument, NotFound } from "../src/index.js";
import { client, skip, unique } from "../testing/env.js";

// The point count as the answering node's replicas see it (docs/api.md):
// it may lag a write acknowledged a moment ago.
async function pointsSettle(c, name, want, withinMs = 10000) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const got = (await c.collections.get(name)).points;
    if (got === want || Date.now() > deadline) return got;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("collections", { skip }, () => {
  const c = skip ? null : client();
  const name = skip ? "" : unique("vc");

  test("create (a retry is safe), list, get", async () => {
    const d = await c.collections.create(name, { dim: 3, metric: "l2" });
    assert.equal(d.name, name);
    assert.equal(d.dim, 3);
    assert.equal(d.metric, "l2");
    assert.deepEqual(await c.collections.create(name, { dim: 3, metric: "l2" }), d);
    await assert.rejects(c.collections.create(name, { dim: 4, metric: "l2" }), Conflict);
    assert.ok((await c.collections.list()).some((x) => x.name === name));
  });

  test("upsert, search with a filter, get and delete points", async () => {
    const pts = [];
    for (let i = 1; i <= 20; i++) {
      // Typed arrays are accepted as vectors.
      const v = i % 2 ? [i, 0, 0] : new Float32Array([i, 1, 0]);
      pts.push({ id: i, vector: v, payload: { parity: i % 2 ? "odd" : "even", n: i } });
    }
    assert.equal(await c.collections.upsert(name, pts), 20);
    assert.equal(await pointsSettle(c, name, 20), 20);

    const hits = await c.collections.search(name, [4.2, 0, 0], { k: 3 });
    assert.equal(hits.length, 3);
    // The expected order, by brute force over what was stored.
    const dist = (v) => Math.hypot(v[0] - 4.2, v[1], v[2]);
    const want = [...pts].sort((a, b) => dist(a.vector) - dist(b.vector)).slice(0, 3);
    assert.deepEqual(hits.map((h) => h.id), want.map((p) => p.id));
    assert.ok(Math.abs(hits[0].score - dist(want[0].vector)) < 1e-5);
    assert.ok(hits[0].score <= hits[1].score && hits[1].score <= hits[2].score, "l2: nearest first");
    assert.ok(hits.every((h) => typeof h.payload.parity === "string"));

    const even = await c.collections.search(name, [4.2, 0, 0], {
      k: 2,
      filter: { must: [{ key: "parity", match: "even" }], must_not: [{ key: "n", range: { lt: 4 } }] },
    });
    assert.deepEqual(even.map((h) => h.id), [4, 6]);
    assert.ok(even.every((h) => h.payload.parity === "even"));

    const noPayload = await c.collections.search(name, new Float64Array([1, 0, 0]), { k: 1, with_payload: false, with_vector: true });
    assert.equal(noPayload[0].id, 1);
    assert.equal(noPayload[0].payload, undefined);
    assert.deepEqual(noPayload[0].vector, [1, 0, 0]);

    const batch = await c.collections.searchBatch(name, [{ vector: [1, 0, 0], k: 1 }, { vector: [20, 1, 0], k: 1 }]);
    assert.deepEqual(batch.map((r) => r[0].id), [1, 20]);

    const p7 = await c.collections.getPoint(name, 7);
    assert.deepEqual(p7, { id: 7, vector: [7, 0, 0], payload: { parity: "odd", n: 7 } });
    assert.equal(await c.collections.getPoint(name, 999), null);

    assert.equal(await c.collections.deletePoints(name, { ids: [1, 2] }), 2);
    assert.equal(await c.collections.deletePoints(name, { filter: { must: [{ key: "n", range: { gte: 19 } }] } }), 2);
    assert.equal(await pointsSettle(c, name, 16), 16);
    assert.equal(await c.collections.getPoint(name, 1), null);
  });

  test("bad input: wrong dimension, bad k, bad filter, unknown collection", async () => {
    await assert.rejects(c.collections.search(name, [1, 2]), (e) => e instanceof InvalidArgument && e.code === "invalid_vector");
    await assert.rejects(c.collections.search(name, [1, 2, 3], { k: 0 }), { status: 400, code: "invalid_k" });
    await assert.rejects(
      c.collections.search(name, [1, 2, 3], { filter: { must: [{ key: "n", range: { gt: "x" } }] } }),
      { code: "invalid_filter" },
    );
    await assert.rejects(c.collections.search(unique("nope"), [1, 2, 3]), NotFound);
    await assert.rejects(c.collections.getPoint(unique("nope"), 1), NotFound);
    await assert.rejects(c.collections.search(name, "not a vector"), TypeError);
  });

  test("drop", async () => {
    assert.ok((await c.collections.delete(name)).dropped);
    await assert.rejects(c.collections.get(name), NotFound);
  });
});
