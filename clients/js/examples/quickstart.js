// A complete example: KV, vector search, a job and a policy run.
// Run it against a cluster with
//   NODE_EXTRA_CA_CERTS=DIR/ca/ca.crt ORRERY_ENDPOINTS=https://127.0.0.1:17001 \
//   ORRERY_TOKEN=$(cat DIR/root.token) node clients/js/examples/quickstart.js
import { Client, NotFound } from "../src/index.js"; // from an install: "@orrery/client"

const client = new Client({
  endpoints: (process.env.ORRERY_ENDPOINTS ?? "https://127.0.0.1:17001").split(","),
  token: process.env.ORRERY_TOKEN,
});
const suffix = Date.now().toString(36); // names of our own, so the example can run again

// Key-value: strings or bytes in, bytes out (or text with getText); null when absent.
await client.kv.put(`greeting-${suffix}`, "hello");
console.log("kv:", await client.kv.getText(`greeting-${suffix}`));
console.log("absent:", await client.kv.get(`missing-${suffix}`));

// Vector search with a payload filter.
const docs = `docs-${suffix}`;
await client.collections.create(docs, { dim: 3, metric: "cosine" });
await client.collections.upsert(docs, [
  { id: 1, vector: [1, 0, 0], payload: { lang: "en" } },
  { id: 2, vector: [0.9, 0.1, 0], payload: { lang: "de" } },
  { id: 3, vector: [0, 1, 0], payload: { lang: "en" } },
]);
const hits = await client.collections.search(docs, [1, 0.05, 0], {
  k: 2,
  filter: { must: [{ key: "lang", match: "en" }] },
});
console.log("hits:", hits.map((h) => `${h.id}@${h.score.toFixed(3)}`).join(" "));

// A job for an external worker: submit, claim, complete.
const queue = `etl-${suffix}`;
await client.queues.create(queue);
const job = await client.jobs.submit({ queue, kind: "etl.load", params: { file: "a.csv" } });
const claimed = await client.jobs.claim(queue, { worker_id: "example", wait_s: 5 });
await client.jobs.complete(claimed.id, claimed.token, { result: { rows: 3 } });
console.log("job:", (await client.jobs.get(job.id)).state);

// A policy: one version, one run with its output and trace.
const policy = `limits-${suffix}`;
await client.policies.create(policy);
await client.policies.createVersion(policy, {
  nodes: [
    { id: "in", type: "input", config: { fields: { amount: "number" } } },
    { id: "check", type: "branch" },
    { id: "ok", type: "output", config: { fields: { decision: "'approve'" } } },
    { id: "no", type: "output", config: { fields: { decision: "'deny'" } } },
  ],
  edges: [
    { from: "in", to: "check" },
    { from: "check", to: "ok", when: "input.amount < 100.0" },
    { from: "check", to: "no" },
  ],
});
const run = await client.policies.run(policy, { amount: 120 });
console.log("policy:", run.output.decision, "via", run.trace.map((t) => t.id).join(" > "));

// Errors are classes with the server's status and code.
try {
  await client.jobs.get("0".repeat(26));
} catch (e) {
  if (!(e instanceof NotFound)) throw e;
  console.log("error:", e.status, e.code);
}
