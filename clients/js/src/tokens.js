// API tokens (admins only): docs/security.md.
import { seg } from "./util.js";

export class Tokens {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /**
   * Creates a token: `{name, role, queues?, ttl_s?}`. The answer holds the
   * secret `token` (shown once) and the record.
   */
  create(body) {
    return this.t.request("POST", "/v1/auth/tokens", { json: body });
  }

  /** Token records (never secrets). */
  async list() {
    const r = await this.t.request("GET", "/v1/auth/tokens");
    return r.tokens ?? r;
  }

  /** Revokes a token by id. */
  revoke(id) {
    return this.t.request("DELETE", `/v1/auth/tokens/${seg(id)}`);
  }
}
