// Key-value: raw-body routes (docs/api.md, "PUT /v1/kv/{key}" and below).

import { errorFromResponse } from "./errors.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * The path of a key. Slashes are sent as %2F so that the key is one path
 * segment: URL parsers would otherwise resolve `a/../b` before sending it.
 */
export function keyPath(key) {
  if (typeof key !== "string" || key === "") throw new TypeError("a key must be a non-empty string");
  if (key === "." || key === "..") {
    // URL parsers treat these (even percent-encoded) as dot segments.
    throw new TypeError(`the key ${JSON.stringify(key)} cannot be sent over REST`);
  }
  return `/v1/kv/${encodeURIComponent(key)}`;
}

function toBytes(value) {
  if (typeof value === "string") return enc.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError("a value must be a string, a Uint8Array or an ArrayBuffer");
}

function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export class Kv {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** Writes a value; resolves to the write's revision. */
  async put(key, value) {
    const r = await this.t.request("PUT", keyPath(key), { body: toBytes(value) });
    return r.revision;
  }

  /**
   * The value with its revision, or null when the key is absent.
   * @returns {Promise<{value: Uint8Array, revision: number|null}|null>}
   */
  async getEntry(key, { consistency } = {}) {
    const r = await this.t.request("GET", keyPath(key), {
      query: { consistency },
      full: true,
      okStatuses: [404],
    });
    if (r.status === 404) {
      // Every path under /v1/kv/ is a key, so not_found means an absent key;
      // a 404 without that body (a proxy, a wrong base URL) stays an error.
      if (r.data?.error?.code === "not_found") return null;
      throw errorFromResponse(404, r.data, { endpoint: this.t.endpoint });
    }
    // Browsers hide the header unless the server exposes it (CORS): null then.
    const rev = r.headers.get("x-orrery-revision");
    return { value: r.data, revision: rev === null ? null : Number(rev) };
  }

  /** The value as bytes, or null when absent. */
  async get(key, opts) {
    const e = await this.getEntry(key, opts);
    return e ? e.value : null;
  }

  /** The value decoded as UTF-8 text, or null when absent. */
  async getText(key, opts) {
    const e = await this.getEntry(key, opts);
    return e ? dec.decode(e.value) : null;
  }

  /** Deletes a key; `{deleted, revision}` (deleting an absent key is not an error). */
  delete(key) {
    return this.t.request("DELETE", keyPath(key));
  }

  /**
   * Compare-and-set over strings; `expected: null` means "only if absent".
   * A failed comparison resolves to `{succeeded: false, current, revision}`.
   */
  cas(key, expected, value) {
    // Not idempotent: a retried CAS after an unknown outcome could fail
    // against its own write.
    return this.t.request("POST", `${keyPath(key)}/cas`, {
      json: { expected, value },
      okStatuses: [409],
    });
  }

  /**
   * Keys by prefix, sorted; values decoded to bytes (`text` holds the
   * UTF-8 text when the server sent it as text).
   * @returns {Promise<Array<{key: string, revision: number, value: Uint8Array, text: string|null}>>}
   */
  async list({ prefix = "", limit, consistency } = {}) {
    const r = await this.t.request("GET", "/v1/kv", { query: { prefix, limit, consistency } });
    return r.items.map((it) => ({
      key: it.key,
      revision: it.revision,
      value: it.value !== undefined ? enc.encode(it.value) : fromBase64(it.value_base64),
      text: it.value !== undefined ? it.value : null,
    }));
  }

  /** Deletes every key starting with `prefix` (non-empty); resolves to the count. */
  async deletePrefix(prefix) {
    const r = await this.t.request("DELETE", "/v1/kv", { query: { prefix } });
    return r.deleted;
  }
}
