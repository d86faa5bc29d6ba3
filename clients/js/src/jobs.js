// Jobs: submit and watch them, and the external-worker protocol
// (claim, heartbeat, complete, fail). docs/api.md, "Jobs".
import { readSSE } from "./sse.js";
import { seg } from "./util.js";

export class Jobs {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /**
   * Submits a job: `{queue, kind, params?, priority?, run_at_ms?, delay_ms?,
   * resources?, dedupe_key?, submitted_by?}`. Resolves to the job (with
   * `created: false` when its `dedupe_key` matched an existing job).
   * Not retried after an unknown outcome unless it has a `dedupe_key`.
   */
  submit(job) {
    return this.t.request("POST", "/v1/jobs", { json: job, idempotent: !!job?.dedupe_key });
  }

  /** Submits 1..=1000 jobs at once: `{jobs, created, existing, failed}`. */
  submitBatch(jobs) {
    return this.t.request("POST", "/v1/jobs/batch", { json: { jobs } });
  }

  /** A job, with `waiting` (why a queued job is not running). */
  get(id) {
    return this.t.request("GET", `/v1/jobs/${seg(id)}`);
  }

  /** A page of jobs: `{jobs, next_cursor}`; pass `next_cursor` back as `cursor`. */
  list({ queue, state, limit, cursor } = {}) {
    return this.t.request("GET", "/v1/jobs", { query: { queue, state, limit, cursor } });
  }

  /** Cancels a job (a running one gets `cancel_requested`). */
  cancel(id) {
    return this.t.request("POST", `/v1/jobs/${seg(id)}/cancel`, { idempotent: true });
  }

  /** The job's attempts. */
  async runs(id) {
    return (await this.t.request("GET", `/v1/jobs/${seg(id)}/runs`)).runs;
  }

  /** The kept output of an attempt (default: the last), as text. */
  logs(id, { attempt } = {}) {
    return this.t.request("GET", `/v1/jobs/${seg(id)}/logs`, { query: { attempt } });
  }

  /**
   * Follows an attempt's output until the run ends: yields
   * `{type: "log", text}` per chunk and `{type: "lagged", text}` when the
   * reader fell behind and output was skipped; returns after the server's
   * `end` event. Stop early with `break` or `signal`.
   * @returns {AsyncGenerator<{type: "log"|"lagged", text: string}>}
   */
  async *followLogs(id, { attempt, signal } = {}) {
    const res = await this.t.request("GET", `/v1/jobs/${seg(id)}/logs`, {
      query: { attempt, follow: "true" },
      headers: { accept: "text/event-stream" },
      stream: true,
      signal,
    });
    const type = res.headers.get("content-type") || "";
    if (!type.startsWith("text/event-stream")) {
      // A run that already ended on a node that keeps no stream: the text.
      const text = await res.text();
      if (text) yield { type: "log", text };
      return;
    }
    for await (const ev of readSSE(res)) {
      if (ev.event === "end") return;
      if (ev.event === "log" || ev.event === "lagged") yield { type: ev.event, text: ev.data };
    }
  }

  /**
   * Claims work from a queue as an external worker: `{worker_id, kinds?,
   * lease_s?, wait_s?, max?, free_gpus?, shared_gpus?, free_cpus?, complete?}`.
   * Resolves to the job (with its lease `token`), `null` when nothing was
   * claimable within `wait_s`, or `{jobs, ...}` with `max` or `complete`.
   */
  claim(queue, req) {
    const waitMs = (req?.wait_s ?? 0) * 1000;
    return this.t.request("POST", `/v1/queues/${seg(queue)}/claim`, {
      json: req,
      // A long poll must not time out while the server is still waiting.
      timeoutMs: this.t.timeoutMs + waitMs,
    });
  }

  /** Extends a lease: `{cancelled, lease_expires_ms}` (409 `Conflict`: the lease is lost). */
  heartbeat(id, token) {
    return this.t.request("POST", `/v1/jobs/${seg(id)}/heartbeat`, { json: { token }, idempotent: true });
  }

  /** Completes a claimed job: `{result?, run?}`; resolves to the job. */
  complete(id, token, { result, run } = {}) {
    return this.t.request("POST", `/v1/jobs/${seg(id)}/complete`, { json: { token, result, run } });
  }

  /** Fails a claimed job: `{error?, retry?, run?}`; resolves to the job. */
  fail(id, token, { error, retry, run } = {}) {
    return this.t.request("POST", `/v1/jobs/${seg(id)}/fail`, { json: { token, error, retry, run } });
  }

  /** Completes many claimed jobs: `[{id, token, result?, run?}]` → `{results, completed, failed}`. */
  completeBatch(completions) {
    return this.t.request("POST", "/v1/jobs/complete", { json: { completions } });
  }
}
