// Cluster state, health and the cluster version.

export class Cluster {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** Members and the shard map as the answering node sees them (`GET /v1/cluster`). */
  status() {
    return this.t.request("GET", "/v1/cluster");
  }

  /** The cluster version: active, held, and what each member supports. */
  version() {
    return this.t.request("GET", "/v1/cluster/version");
  }

  /** `{hold: true|false}` or `{finalize: true}` (admins). */
  setVersion(body) {
    return this.t.request("POST", "/v1/cluster/version", { json: body, idempotent: true });
  }

  /** `GET /healthz` (no token needed). */
  health() {
    return this.t.request("GET", "/healthz");
  }

  /** `GET /readyz`: a placement leader is known (503 → `Unavailable`, retried). */
  ready() {
    return this.t.request("GET", "/readyz");
  }

  /** Prometheus text (`GET /metrics`). */
  metrics() {
    return this.t.request("GET", "/metrics");
  }
}
