// @orrery/client: a dependency-free client for Orrery's REST API.
import { Cluster } from "./cluster.js";
import { Collections } from "./collections.js";
import { Events } from "./events.js";
import { Gpus } from "./gpus.js";
import { Jobs } from "./jobs.js";
import { Kv } from "./kv.js";
import { DataSources, Policies, Runs } from "./policies.js";
import { Queues } from "./queues.js";
import { Tokens } from "./tokens.js";
import { Transport } from "./transport.js";
import { Workflows } from "./workflows.js";

export * from "./errors.js";

/**
 * @typedef {object} ClientOptions
 * @property {string} [endpoint] one node, `https://host:port` or `host:port`
 * @property {string[]} [endpoints] several nodes: a node that cannot be reached is replaced by the next
 * @property {string} [token] bearer token (`orr_...`)
 * @property {number} [timeoutMs] per attempt (default 30000)
 * @property {number} [retries] further attempts after a 503 or an unreachable node (default 5)
 * @property {number} [maxRetryDelayMs] cap on one wait for `Retry-After` (default 10000)
 * @property {typeof fetch} [fetch] a fetch implementation (default: the global one)
 */

export class Client {
  /** @param {ClientOptions} opts */
  constructor(opts) {
    const t = new Transport(opts);
    /** @private */
    this.transport = t;
    this.kv = new Kv(t);
    this.cluster = new Cluster(t);
    this.queues = new Queues(t);
    this.jobs = new Jobs(t);
    this.workflows = new Workflows(t);
    this.events = new Events(t);
    this.gpus = new Gpus(t);
    this.collections = new Collections(t);
    this.policies = new Policies(t);
    this.runs = new Runs(t);
    this.dataSources = new DataSources(t);
    this.tokens = new Tokens(t);
  }

  /** The endpoint requests currently go to (it moves on after a failure). */
  get endpoint() {
    return this.transport.endpoint;
  }

  /**
   * Any request: `method`, `path` (e.g. `/v1/cluster/version`) and
   * `{query?, json?, body?, idempotent?}`; resolves to the decoded body.
   */
  request(method, path, opts) {
    return this.transport.request(method, path, opts);
  }
}
