import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Client, PermissionDenied, Unauthenticated } from "../src/index.js";
import { client, endpoints, skip, unique } from "../testing/env.js";

describe("tokens and permissions", { skip }, () => {
  const admin = skip ? null : client();

  test("a reader token reads, and its writes are refused with 403", async () => {
    const key = unique("auth");
    await admin.kv.put(key, "v");
    const made = await admin.tokens.create({ name: unique("js-reader"), role: "reader" });
    assert.match(made.token, /^orr_/);
    assert.equal(made.role, "reader");
    assert.ok((await admin.tokens.list()).some((t) => t.id === made.id));

    const reader = new Client({ endpoints, token: made.token });
    assert.equal(await reader.kv.getText(key), "v");
    await assert.rejects(reader.kv.put(key, "w"), (e) => {
      assert.ok(e instanceof PermissionDenied);
      assert.equal(e.status, 403);
      assert.equal(e.code, "forbidden");
      return true;
    });
    await assert.rejects(reader.tokens.list(), PermissionDenied);
    assert.equal(await admin.kv.getText(key), "v", "the refused write did not happen");

    await admin.tokens.revoke(made.id);
    await assert.rejects(reader.kv.get(key), (e) => e instanceof Unauthenticated && e.status === 401);
  });

  test("no token or an unknown one: 401 unauthenticated", async () => {
    await assert.rejects(new Client({ endpoints }).kv.get("x"), { status: 401, code: "unauthenticated" });
    await assert.rejects(new Client({ endpoints, token: "orr_nope" }).cluster.status(), Unauthenticated);
    // Health needs no token.
    assert.equal((await new Client({ endpoints }).cluster.health()).status, "ok");
  });
});
