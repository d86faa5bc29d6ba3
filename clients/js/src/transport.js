// The one place that talks HTTP: endpoints, the bearer token, timeouts,
// response decoding, error mapping, retries and failover. Only the
// platform's `fetch`, `AbortController` and `TextDecoder` are used, so the
// library runs unchanged in Node 20+ and in browsers.

import { ConnectionError, OrreryError, TimeoutError, Unavailable, errorFromResponse } from "./errors.js";

const IDEMPOTENT = new Set(["GET", "HEAD", "PUT", "DELETE"]);

// Failures of Node's fetch (undici) that happen before a request was sent:
// trying the next node cannot apply a write twice.
const NOT_SENT = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
]);

// TLS failures: a configuration problem that every node would repeat.
const TLS_HINT =
  "TLS verification failed; give Node the cluster CA with NODE_EXTRA_CA_CERTS=path/ca.crt (read at start)";

/** "127.0.0.1:17001" → "https://127.0.0.1:17001"; no trailing slash. */
export function normalizeEndpoint(e) {
  if (typeof e !== "string" || !e.trim()) throw new TypeError("an endpoint must be a non-empty string");
  let s = e.trim().replace(/\/+$/, "");
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) s = `https://${s}`;
  return s;
}

function causeCode(err) {
  let c = err;
  for (let i = 0; c && i < 5; i++, c = c.cause) {
    if (typeof c.code === "string") return c.code;
  }
  return undefined;
}

function retryAfterMs(headers) {
  const v = headers.get("retry-after");
  if (!v) return 1000;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? 1000 : Math.max(0, t - Date.now());
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Decodes a response body by its content type: JSON, text, or bytes. */
async function decode(res) {
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  const buf = new Uint8Array(await res.arrayBuffer());
  if (type.includes("json")) {
    const text = new TextDecoder().decode(buf);
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  if (type.startsWith("text/")) return new TextDecoder().decode(buf);
  return buf;
}

export class Transport {
  /**
   * @param {import("./index.js").ClientOptions} opts
   */
  constructor(opts = {}) {
    const list = opts.endpoints ?? (opts.endpoint !== undefined ? [opts.endpoint] : null);
    if (!list || !Array.isArray(list) || list.length === 0) {
      throw new TypeError("Client needs `endpoint` or a non-empty `endpoints` list");
    }
    this.endpoints = list.map(normalizeEndpoint);
    this.token = opts.token ?? null;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.retries = opts.retries ?? 5;
    this.maxRetryDelayMs = opts.maxRetryDelayMs ?? 10_000;
    this.fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    /** The node requests go to; it moves on when a node cannot be reached. */
    this.current = 0;
  }

  /** The endpoint requests currently go to. */
  get endpoint() {
    return this.endpoints[this.current];
  }

  url(base, path, query) {
    const u = new URL(base + path);
    if (query) {
      for (const [k, v] of Object.entries(query)) {
        if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
      }
    }
    return u.toString();
  }

  /**
   * One request with retries: 503 `unavailable`/`not_initialized` (nothing
   * was written) waits `Retry-After` and tries again; `outcome_unknown`
   * only for idempotent requests; a node that cannot be reached is
   * replaced by the next endpoint.
   *
   * @param {string} method
   * @param {string} path starting with "/"
   * @param {{query?: object, json?: unknown, body?: string|Uint8Array, headers?: object,
   *   timeoutMs?: number, idempotent?: boolean, stream?: boolean, signal?: AbortSignal,
   *   full?: boolean}} [o]
   *   `stream`: return the Response once headers arrived (no timeout after that);
   *   `full`: return `{status, headers, data}` instead of the decoded body.
   */
  async request(method, path, o = {}) {
    const idempotent = o.idempotent ?? IDEMPOTENT.has(method);
    const headers = { ...(o.headers || {}) };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body;
    if (o.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(o.json);
    } else if (o.body !== undefined) {
      headers["content-type"] ??= "application/octet-stream";
      body = o.body;
    }
    const n = this.endpoints.length;
    for (let attempt = 0; ; attempt++) {
      if (o.signal?.aborted) throw o.signal.reason;
      const base = this.endpoints[this.current];
      const timeoutMs = o.timeoutMs ?? this.timeoutMs;
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(new Error("timeout")), timeoutMs);
      const onAbort = () => ctl.abort(o.signal.reason);
      o.signal?.addEventListener("abort", onAbort, { once: true });
      let res;
      let data;
      try {
        res = await this.fetch(this.url(base, path, o.query), { method, headers, body, signal: ctl.signal });
        if (o.stream && res.ok) {
          // The caller's signal keeps cancelling the stream; no timeout now.
          clearTimeout(timer);
          return res;
        }
        data = await decode(res);
      } catch (e) {
        if (o.signal?.aborted) throw o.signal.reason;
        const err = this.networkError(e, base, ctl.signal.aborted, timeoutMs);
        // Whether the request may have reached the node: then only an
        // idempotent request may be sent again.
        const sent = res !== undefined || ctl.signal.aborted || !NOT_SENT.has(causeCode(e));
        if (err.code === "tls" || attempt >= this.retries || (sent && !idempotent)) throw err;
        this.current = (this.current + 1) % n;
        // Every node failed once in a row: wait a little before the next round.
        if ((attempt + 1) % n === 0) await sleep(Math.min(2000, 100 * 2 ** ((attempt + 1) / n)), o.signal);
        continue;
      } finally {
        if (!(o.stream && res?.ok)) {
          clearTimeout(timer);
          o.signal?.removeEventListener("abort", onAbort);
        }
      }
      if (res.ok || (o.okStatuses && o.okStatuses.includes(res.status))) {
        return o.full ? { status: res.status, headers: res.headers, data } : data;
      }
      const waitMs = res.status === 503 ? retryAfterMs(res.headers) : null;
      const err = errorFromResponse(res.status, data, {
        endpoint: base,
        requestId: res.headers.get("x-request-id"),
        retryAfter: waitMs === null ? null : waitMs / 1000,
      });
      const retryable =
        err instanceof Unavailable && (err.code !== "outcome_unknown" || idempotent);
      if (!retryable || attempt >= this.retries) throw err;
      await sleep(Math.min(waitMs, this.maxRetryDelayMs), o.signal);
    }
  }

  networkError(e, endpoint, timedOut, timeoutMs) {
    if (e instanceof OrreryError) return e;
    if (timedOut) {
      return new TimeoutError(`no answer from ${endpoint} within ${timeoutMs} ms`, {
        code: "timeout",
        endpoint,
        cause: e,
      });
    }
    const code = causeCode(e);
    const tls = code && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/i.test(code);
    const detail = code ? `${code}` : e?.message || String(e);
    return new ConnectionError(
      tls ? `${endpoint}: ${detail}: ${TLS_HINT}` : `cannot reach ${endpoint}: ${detail}`,
      { code: tls ? "tls" : "connection", endpoint, cause: e },
    );
  }
}
