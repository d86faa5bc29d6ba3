// The REST API with the signed-in token. The token lives in this tab's
// sessionStorage only (never a cookie, never a URL) and travels as
// `Authorization: Bearer`; a 401 signs the tab out.

const KEY = 'orrery.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

function headers(extra) {
  const hd = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) hd.Authorization = `Bearer ${t}`;
  return hd;
}

async function failure(res) {
  let code = `http_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = await res.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not JSON: keep the status line */ }
  if (res.status === 401) window.dispatchEvent(new CustomEvent('orrery:unauthorized', { detail: message }));
  return new ApiError(res.status, code, message);
}

/** One JSON request: resolves to the answer's body, rejects with ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: headers(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the node: ${e.message}`);
  }
  if (!res.ok) throw await failure(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => api('GET', path);

/**
 * Follows a Server-Sent Events endpoint with fetch and a readable stream
 * (EventSource cannot send the Authorization header). Calls onEvent(type,
 * data) per event; resolves when the stream ends or `signal` aborts.
 */
export async function stream(path, onEvent, signal) {
  let res;
  try {
    res = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
  } catch (e) {
    if (signal && signal.aborted) return;
    throw new ApiError(0, 'network', `cannot reach the node: ${e.message}`);
  }
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let type = 'message';
        const data = [];
        for (const line of frame.split('\n')) {
          if (line.startsWith(':')) continue; // keep-alive comment
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let val = i < 0 ? '' : line.slice(i + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') type = val;
          else if (field === 'data') data.push(val);
        }
        if (data.length) onEvent(type, data.join('\n'));
      }
    }
  } catch (e) {
    if (!(signal && signal.aborted)) throw e;
  }
}
