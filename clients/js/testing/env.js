// What the tests know about the cluster they run against. They need
// ORRERY_ENDPOINTS and ORRERY_TOKEN (and Node started with
// NODE_EXTRA_CA_CERTS); scripts/test-js-client.sh sets all three, and
// test/run-cluster.test.js calls that script when they are unset.
import { Client } from "../src/index.js";

export const endpoints = (process.env.ORRERY_ENDPOINTS || "")
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);
export const token = process.env.ORRERY_TOKEN || "";

/** A reason to skip cluster tests, or false. */
export const skip =
  endpoints.length === 0
    ? "ORRERY_ENDPOINTS is unset: test/run-cluster.test.js runs these against a cluster of its own"
    : false;

/** The cluster's directory and port base, when scripts/cluster.sh started it here. */
export const clusterDir = process.env.ORRERY_CLUSTER_DIR || "";
export const portBase = process.env.ORRERY_PORT_BASE || "";

/** A client for the cluster (admin token unless another is given). */
export function client(opts = {}) {
  return new Client({ endpoints, token, ...opts });
}

/** A name no other test run uses. */
export function unique(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Polls `fn` until it returns a truthy value, or throws after `ms`. */
export async function eventually(fn, { ms = 20000, every = 200, what = "condition" } = {}) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
