// GPUs as the nodes last reported them.

export class Gpus {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** `{gpus: [...], nodes: [...]}` (empty without NVML). */
  list() {
    return this.t.request("GET", "/v1/gpus");
  }
}
