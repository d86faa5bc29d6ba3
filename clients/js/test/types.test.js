// index.d.ts must describe what the module exports: every exported name,
// and every method of the client's groups (no TypeScript compiler here, so
// the declarations are read as text).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";
import * as lib from "../src/index.js";

const dts = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "index.d.ts"), "utf8");

function declaredMethods(cls) {
  const m = dts.match(new RegExp(`export declare class ${cls} [^{]*\\{([\\s\\S]*?)\\n\\}`));
  assert.ok(m, `index.d.ts declares class ${cls}`);
  return [...m[1].matchAll(/^ {2}(\w+)\(/gm)].map((x) => x[1]).sort();
}

test("every export is declared", () => {
  for (const name of Object.keys(lib)) {
    assert.match(dts, new RegExp(`export declare (class|function) ${name}\\b`), name);
  }
});

test("every group method is declared, and no more", () => {
  const c = new lib.Client({ endpoint: "127.0.0.1:1" });
  const groups = Object.entries(c).filter(([k]) => k !== "transport");
  assert.ok(groups.length >= 11);
  for (const [field, obj] of groups) {
    const cls = obj.constructor.name;
    assert.match(dts, new RegExp(`readonly ${field}: ${cls};`), `Client.${field}`);
    const actual = Object.getOwnPropertyNames(Object.getPrototypeOf(obj))
      .filter((n) => n !== "constructor")
      .sort();
    assert.deepEqual(declaredMethods(cls), actual, cls);
  }
});

test("errors map status and code to classes", () => {
  const e = lib.errorFromResponse(404, { error: { code: "not_found", message: "key \"a\" not found" } });
  assert.ok(e instanceof lib.NotFound && e instanceof lib.OrreryError && e instanceof Error);
  assert.equal(e.message, 'key "a" not found');
  assert.equal(e.name, "NotFound");
  assert.ok(lib.errorFromResponse(503, { error: { code: "outcome_unknown", message: "x" } }) instanceof lib.OutcomeUnknown);
  const plain = lib.errorFromResponse(502, "bad gateway");
  assert.equal(plain.constructor, lib.OrreryError);
  assert.equal(plain.code, "http_502");
});

test("the library is browser-safe: no node: imports, no process or Buffer", () => {
  const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
  for (const f of readdirSync(dir)) {
    const src = readFileSync(join(dir, f), "utf8");
    assert.doesNotMatch(src, /from\s+["']node:|require\(|import\(["']node:/, f);
    assert.doesNotMatch(src, /\b(process|Buffer)\./, f);
  }
});
