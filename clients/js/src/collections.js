// Vector collections: docs/api.md, "Vector collections".
import { errorFromResponse } from "./errors.js";
import { seg, vec } from "./util.js";

function points(list) {
  if (!Array.isArray(list)) throw new TypeError("points must be an array of {id, vector, payload?}");
  return list.map((p) => ({ ...p, vector: vec(p.vector) }));
}

export class Collections {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /**
   * Creates a collection: `opts` = `{dim, metric?, shards?, replication?, m?,
   * ef_construction?, ef_search?}`. Creating it again with the same
   * definition is safe (so it is retried); a different one is a `Conflict`.
   */
  create(name, opts) {
    return this.t.request("POST", "/v1/collections", { json: { name, ...opts }, idempotent: true });
  }

  /** Every collection's definition. */
  async list() {
    return (await this.t.request("GET", "/v1/collections")).collections;
  }

  /** A definition with `points` and `shard_states`. */
  get(name) {
    return this.t.request("GET", `/v1/collections/${seg(name)}`);
  }

  /** Drops a collection: `{dropped}`. */
  delete(name) {
    return this.t.request("DELETE", `/v1/collections/${seg(name)}`);
  }

  /**
   * Upserts points `[{id, vector, payload?}]` (vectors as arrays or typed
   * arrays); resolves to the number upserted. Upserts are idempotent.
   */
  async upsert(name, pts) {
    const r = await this.t.request("PUT", `/v1/collections/${seg(name)}/points`, {
      json: { points: points(pts) },
    });
    return r.upserted;
  }

  /** A point `{id, vector, payload}`, or null when absent. */
  async getPoint(name, id) {
    const r = await this.t.request("GET", `/v1/collections/${seg(name)}/points/${seg(id)}`, {
      full: true,
      okStatuses: [404],
    });
    if (r.status === 404) {
      // An absent point is null; an unknown collection stays an error
      // (the server says `point N does not exist in collection "c"`).
      if (r.data?.error?.code === "not_found" && /^point /.test(r.data.error.message)) return null;
      throw errorFromResponse(404, r.data);
    }
    return r.data;
  }

  /** Deletes points by `{ids: [...]}` or `{filter}`; resolves to the count. */
  async deletePoints(name, sel) {
    const r = await this.t.request("POST", `/v1/collections/${seg(name)}/points/delete`, {
      json: sel,
      idempotent: true,
    });
    return r.deleted;
  }

  /**
   * The `k` nearest points: an array of hits `{id, score, payload?, vector?}`,
   * best first. `opts`: `{k?, filter?, ef?, exact?, with_payload?,
   * with_vector?, consistency?}`.
   */
  async search(name, vector, opts = {}) {
    const { consistency, ...body } = opts;
    const r = await this.t.request("POST", `/v1/collections/${seg(name)}/search`, {
      json: { vector: vec(vector), ...body },
      query: { consistency },
      idempotent: true,
    });
    return r.result;
  }

  /** Up to 100 searches at once: `[{vector, k?, filter?, ...}]` → an array of hit arrays. */
  async searchBatch(name, searches) {
    const r = await this.t.request("POST", `/v1/collections/${seg(name)}/search/batch`, {
      json: { searches: searches.map((s) => ({ ...s, vector: vec(s.vector) })) },
      idempotent: true,
    });
    return r.results.map((x) => x.result);
  }
}
