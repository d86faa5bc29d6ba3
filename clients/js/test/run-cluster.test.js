// `node --test clients/js` with no cluster given: start one and run the
// whole suite against it through scripts/test-js-client.sh (Node must be
// started with NODE_EXTRA_CA_CERTS, so the suite runs in a child process).
// With ORRERY_ENDPOINTS set, this file has nothing to do.
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import test from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

test(
  "the suite against a fresh secure 3-node cluster (scripts/test-js-client.sh)",
  { skip: process.env.ORRERY_ENDPOINTS ? "running against ORRERY_ENDPOINTS" : false, timeout: 900_000 },
  async () => {
    // NODE_TEST_CONTEXT would make the child `node --test` believe it runs
    // inside this one and skip every file.
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const child = spawn("bash", ["scripts/test-js-client.sh"], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    // The child's report goes to our stderr as it comes (stdout belongs to
    // the test runner's protocol).
    child.stdout.on("data", (d) => {
      out += d;
      process.stderr.write(d);
    });
    child.stderr.on("data", (d) => {
      out += d;
      process.stderr.write(d);
    });
    const code = await new Promise((r) => child.on("close", r));
    assert.equal(code, 0, `scripts/test-js-client.sh failed (exit ${code}):\n${out.slice(-4000)}`);
    // The suite really ran: its summary counts the tests against the cluster.
    const pass = Number(out.match(/^# pass (\d+)$/m)?.[1] ?? 0);
    for (const what of ["fail", "cancelled"]) {
      const n = Number(out.match(new RegExp(`^# ${what} (\\d+)$`, "m"))?.[1] ?? -1);
      assert.equal(n, 0, `${what}: ${n}\n${out.slice(-4000)}`);
    }
    assert.ok(pass >= 30, `only ${pass} tests passed:\n${out.slice(-4000)}`);
  },
);
