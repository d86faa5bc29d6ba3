// The shards' job events: a page with a cursor, or a live stream.
import { OrreryError } from "./errors.js";
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
   * Every event from `since` (default: the oldest kept), live, until
   * stopped with `break` or `signal`. Each event carries `cursor`, the
   * position after it: pass it as `since` to resume exactly there.
   *
   * When the connection breaks (the node stopped, the network failed) the
   * stream reconnects, to the next endpoint if need be, from the cursor of
   * the last event it yielded: no event is lost or repeated. It gives up
   * (throws) when a reconnect fails after the client's retries.
   * @returns {AsyncGenerator<object>}
   */
  async *stream({ since, signal } = {}) {
    let cursor = since;
    for (;;) {
      const res = await this.t.request("GET", "/v1/events/stream", {
        query: { since: cursor },
        headers: { accept: "text/event-stream" },
        stream: true,
        signal,
      });
      try {
        for await (const ev of readSSE(res)) {
          const event = { ...JSON.parse(ev.data), cursor: ev.id };
          cursor = ev.id;
          yield event;
        }
      } catch (e) {
        // Errors of the server or the caller end the stream; a broken
        // connection is resumed below.
        if (signal?.aborted || e instanceof OrreryError || e instanceof SyntaxError) throw e;
      }
      if (signal?.aborted) throw signal.reason;
      // The stream ended without being asked to: that node went away.
      this.t.current = (this.t.current + 1) % this.t.endpoints.length;
    }
  }
}
