// Job queues: docs/api.md, "Job queues".
import { seg } from "./util.js";

export class Queues {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /**
   * Creates a queue; `opts` are the REST fields (`partitions`, `lease_s`,
   * `max_attempts`, `backoff`, `concurrency_limit`).
   */
  create(name, opts = {}) {
    return this.t.request("POST", "/v1/queues", { json: { name, ...opts } });
  }

  /** Every queue. */
  async list() {
    return (await this.t.request("GET", "/v1/queues")).queues;
  }

  /** A queue with `counts` per state and `oldest_queued_age_ms`. */
  get(name) {
    return this.t.request("GET", `/v1/queues/${seg(name)}`);
  }

  /** Deletes an idle queue (409 `Conflict` while it has queued or running jobs). */
  delete(name) {
    return this.t.request("DELETE", `/v1/queues/${seg(name)}`);
  }
}
