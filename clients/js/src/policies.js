// Policies, their versions and runs, runs by id, and data sources:
// docs/api.md, "Policies". `id` is a policy's id or its name.
import { seg } from "./util.js";

export class Policies {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** Creates a policy (409 `Conflict` if the name exists). */
  create(name, { description } = {}) {
    return this.t.request("POST", "/v1/policies", { json: { name, description } });
  }

  /** Every policy, by name. */
  async list() {
    return (await this.t.request("GET", "/v1/policies")).policies;
  }

  /** A policy by id or name. */
  get(id) {
    return this.t.request("GET", `/v1/policies/${seg(id)}`);
  }

  /** Changes `description` and/or `allocation: [{version, weight}]`. */
  update(id, patch) {
    return this.t.request("PATCH", `/v1/policies/${seg(id)}`, { json: patch, idempotent: true });
  }

  /** Deletes a policy and its versions (its runs stay). */
  delete(id) {
    return this.t.request("DELETE", `/v1/policies/${seg(id)}`);
  }

  /**
   * Adds a version: `graph` = `{nodes, edges, deadline_ms?}`; `opts` =
   * `{activate?, created_by?}`. Resolves to the version.
   */
  createVersion(id, graph, opts = {}) {
    return this.t.request("POST", `/v1/policies/${seg(id)}/versions`, { json: { graph, ...opts } });
  }

  /** Every version, oldest first. */
  async versions(id) {
    return (await this.t.request("GET", `/v1/policies/${seg(id)}/versions`)).versions;
  }

  /** One version with its graph as submitted. */
  version(id, v) {
    return this.t.request("GET", `/v1/policies/${seg(id)}/versions/${seg(v)}`);
  }

  /** Archives a version that receives no traffic. */
  archiveVersion(id, v) {
    return this.t.request("POST", `/v1/policies/${seg(id)}/versions/${seg(v)}/archive`, {
      idempotent: true,
    });
  }

  /**
   * Runs a policy on `input`: `opts` = `{version?, run_key?, mode?}`.
   * Sync (default): the finished run `{id, status, output, trace, error, ...}`;
   * `mode: "async"`: the run with `status: "running"` (poll `runs.get`).
   * A run past its deadline throws `EvaluationTimeout` (422, never retried).
   */
  run(id, input, opts = {}) {
    return this.t.request("POST", `/v1/policies/${seg(id)}/runs`, { json: { input, ...opts } });
  }

  /** Evaluates 1..=10000 inputs without recording runs: `{version, results}`. */
  runBatch(id, inputs, { version } = {}) {
    return this.t.request("POST", `/v1/policies/${seg(id)}/runs/batch`, {
      json: { inputs, version },
      idempotent: true,
    });
  }
}

export class Runs {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** A recorded run. */
  get(id) {
    return this.t.request("GET", `/v1/runs/${seg(id)}`);
  }

  /** A page of runs, newest first: `{runs, next_cursor}`. */
  list({ policy, version, status, limit, cursor } = {}) {
    return this.t.request("GET", "/v1/runs", { query: { policy, version, status, limit, cursor } });
  }
}

export class DataSources {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** Creates a data source (`kv`, `http` or `vector`; see docs/api.md). */
  create(source) {
    return this.t.request("POST", "/v1/data-sources", { json: source });
  }

  /** Every data source. */
  async list() {
    return (await this.t.request("GET", "/v1/data-sources")).data_sources;
  }

  /** Deletes a data source. */
  delete(name) {
    return this.t.request("DELETE", `/v1/data-sources/${seg(name)}`);
  }
}
