// The README's complete example is examples/quickstart.js: run it against
// the cluster, and check that the README shows exactly that file.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { skip } from "../testing/env.js";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");
const example = join(here, "examples", "quickstart.js");

test("the README's complete example is examples/quickstart.js", () => {
  const readme = readFileSync(join(here, "README.md"), "utf8");
  const src = readFileSync(example, "utf8");
  const m = readme.match(/<!-- example: examples\/quickstart\.js -->\n```js\n([\s\S]*?)```/);
  assert.ok(m, "README.md has the marked example block");
  assert.equal(m[1], src, "README.md's example differs from examples/quickstart.js");
});

describe("examples/quickstart.js", { skip }, () => {
  test("runs against the cluster", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [example], { env: process.env, timeout: 60_000 });
    const lines = stdout.trim().split("\n");
    const cos = (a, b) =>
      a.reduce((s, x, i) => s + x * b[i], 0) / (Math.hypot(...a) * Math.hypot(...b));
    const q = [1, 0.05, 0];
    assert.deepEqual(lines, [
      "kv: hello",
      "absent: null",
      `hits: 1@${cos(q, [1, 0, 0]).toFixed(3)} 3@${cos(q, [0, 1, 0]).toFixed(3)}`,
      "job: succeeded",
      "policy: deny via in > check > no",
      "error: 404 not_found",
    ]);
  });
});
