import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { client, endpoints, skip } from "../testing/env.js";

describe("cluster", { skip }, () => {
  const c = skip ? null : client();

  test("status lists the members and shards", async () => {
    const s = await c.cluster.status();
    assert.equal(s.members.length, endpoints.length >= 3 ? 3 : s.members.length);
    assert.ok(s.shards.length > 0);
    assert.ok(s.members.every((m) => m.state === "voter"));
    assert.ok(typeof s.cluster_id === "string" && s.cluster_id.length > 0);
  });

  test("version, health, readiness and metrics", async () => {
    const v = await c.cluster.version();
    assert.ok(v.active >= 1 && v.supported >= v.active);
    assert.deepEqual(await c.cluster.health(), { status: "ok" });
    assert.equal((await c.cluster.ready()).status, "ready");
    const m = await c.cluster.metrics();
    assert.equal(typeof m, "string");
    assert.match(m, /^# (HELP|TYPE) /m);
  });

  test("the cluster version can be held and released (admins)", async () => {
    const held = await c.cluster.setVersion({ hold: true });
    assert.equal(held.held, true);
    assert.equal((await c.cluster.version()).held, true);
    const released = await c.cluster.setVersion({ hold: false });
    assert.equal(released.held, false);
    await assert.rejects(c.cluster.setVersion({}), { status: 400, code: "invalid_body" });
  });

  test("gpus answers a list (empty without NVML)", async () => {
    const g = await c.gpus.list();
    assert.ok(Array.isArray(g.gpus));
    assert.ok(Array.isArray(g.nodes));
  });
});
