// Workflows: DAGs of step jobs, each created when the jobs of the steps it
// depends on succeeded (docs/api.md, "Workflows").
import { seg } from "./util.js";

export class Workflows {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /**
   * Starts a workflow: `{queue, steps, input?}`, each step `{name, kind,
   * params?, depends_on?, for_each?, on_failure?, priority?, resources?}`.
   * Resolves to the workflow with per-step state. Not retried after an
   * unknown outcome (it would start a second workflow).
   */
  start(workflow) {
    return this.t.request("POST", "/v1/workflows", { json: workflow });
  }

  /** The workflow with each step's state, jobs and result. */
  get(id) {
    return this.t.request("GET", `/v1/workflows/${seg(id)}`);
  }

  /**
   * Cancels a workflow: pending steps are never created, queued jobs are
   * cancelled, running ones asked to stop. Cancelling again answers the
   * same (so it is retried); one that succeeded or failed: `Conflict`.
   */
  cancel(id) {
    return this.t.request("POST", `/v1/workflows/${seg(id)}/cancel`, { idempotent: true });
  }
}
