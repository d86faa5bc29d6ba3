import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidArgument, NotFound, MethodNotAllowed, OrreryError } from "../src/index.js";
import { client, skip, unique } from "../testing/env.js";

describe("kv", { skip }, () => {
  const c = skip ? null : client();
  const p = skip ? "" : unique("kv");

  test("put, get, getText, getEntry and delete", async () => {
    const rev = await c.kv.put(`${p}/colour`, "blue");
    assert.ok(Number.isInteger(rev) && rev > 0, `revision ${rev}`);
    assert.deepEqual(await c.kv.get(`${p}/colour`), new TextEncoder().encode("blue"));
    assert.equal(await c.kv.getText(`${p}/colour`), "blue");
    const e = await c.kv.getEntry(`${p}/colour`, { consistency: "stale" });
    assert.equal(new TextDecoder().decode(e.value), "blue");
    assert.equal(e.revision, rev);
    const d = await c.kv.delete(`${p}/colour`);
    assert.equal(d.deleted, true);
    assert.equal(await c.kv.get(`${p}/colour`), null);
    assert.equal((await c.kv.delete(`${p}/colour`)).deleted, false);
  });

  test("binary values and awkward keys round-trip", async () => {
    const bytes = new Uint8Array([0xff, 0x00, 0x10, 0x80]);
    for (const key of [`${p}/bin`, `${p}/a b/ü?#%`, `${p}/x/../y`]) {
      await c.kv.put(key, bytes);
      assert.deepEqual(await c.kv.get(key), bytes, key);
    }
    const items = await c.kv.list({ prefix: `${p}/` });
    assert.deepEqual(
      items.map((i) => i.key),
      [`${p}/a b/ü?#%`, `${p}/bin`, `${p}/x/../y`],
    );
    for (const i of items) {
      assert.deepEqual(i.value, bytes);
      assert.equal(i.text, null, "non-UTF-8 values come as bytes only");
    }
  });

  test("list by prefix with a limit, then delete the prefix", async () => {
    const q = `${p}/list/`;
    for (const k of ["c", "a", "b"]) await c.kv.put(q + k, `v-${k}`);
    const all = await c.kv.list({ prefix: q });
    assert.deepEqual(
      all.map((i) => [i.key, i.text]),
      [[`${q}a`, "v-a"], [`${q}b`, "v-b"], [`${q}c`, "v-c"]],
    );
    assert.equal((await c.kv.list({ prefix: q, limit: 2 })).length, 2);
    assert.equal(await c.kv.deletePrefix(q), 3);
    assert.deepEqual(await c.kv.list({ prefix: q }), []);
  });

  test("compare-and-set", async () => {
    const k = `${p}/cas`;
    const a = await c.kv.cas(k, null, "first");
    assert.equal(a.succeeded, true);
    const b = await c.kv.cas(k, "wrong", "x");
    assert.equal(b.succeeded, false);
    assert.equal(b.current, "first");
    assert.equal((await c.kv.cas(k, "first", "second")).succeeded, true);
    assert.equal(await c.kv.getText(k), "second");
  });

  test("errors carry status and code", async () => {
    await assert.rejects(c.kv.list({ limit: 0 }), (e) => {
      assert.ok(e instanceof InvalidArgument && e instanceof OrreryError);
      assert.equal(e.status, 400);
      assert.equal(e.code, "invalid_limit");
      assert.match(e.message, /limit/);
      return true;
    });
    await assert.rejects(c.kv.get("k", { consistency: "weird" }), { status: 400, code: "invalid_consistency" });
    await assert.rejects(c.kv.deletePrefix(""), { code: "empty_prefix" });
    await assert.rejects(c.request("PATCH", "/v1/kv/a"), (e) => e instanceof MethodNotAllowed && e.status === 405);
    await assert.rejects(c.request("GET", "/v1/nowhere"), (e) => e instanceof NotFound && e.code === "not_found");
    await assert.rejects(c.kv.put("", "x"), TypeError);
  });
});
