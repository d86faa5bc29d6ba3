// The shards' job events: a page with a cursor, or a live stream.
import { readSSE } from "./sse.js";

export class Events {
  /** @param {import("./transport.js").Transport} t */
  constructor(t) {
    this.t = t;
  }

  /** A page: `{events, cursor}`; pass `cursor` back as `since`. */
  list({ since, limit } = {}) {
    return this.t.request("GET", "/v1/events", { query: { since, limit } });
  }

  /**
   * Every event from `since` (default: the oldest kept), live, forever:
   * stop with `break` or `signal`. Each event carries `cursor`, the
   * position after it: pass it as `since` to resume exactly there.
   * @returns {AsyncGenerator<object>}
   */
  async *stream({ since, signal } = {}) {
    const res = await this.t.request("GET", "/v1/events/stream", {
      query: { since },
      headers: { accept: "text/event-stream" },
      stream: true,
      signal,
    });
    for await (const ev of readSSE(res)) {
      yield { ...JSON.parse(ev.data), cursor: ev.id };
    }
  }
}
