// Small DOM helpers. Pages build elements and set text, never HTML
// strings, so nothing the API returns can become markup or script.

/** h('tag.class#id', {attr: value, onclick: fn}, ...children) */
export function h(spec, attrs, ...children) {
  const m = spec.match(/^([a-z0-9]+)((?:[.#][\w-]+)*)$/i);
  const el = document.createElement(m ? m[1] : spec);
  if (m) {
    for (const part of m[2].match(/[.#][\w-]+/g) || []) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** SVG elements (presentation attributes only: the CSP allows no inline style). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** A table with a caption, column headers and rows of cells (or rows as <tr>). */
export function table(caption, headers, rows, attrs) {
  return h('table', attrs || {},
    h('caption', caption),
    h('thead', h('tr', headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', rows.length ? rows.map((r) => (r instanceof Node ? r : h('tr', r.map((c) => h('td', c)))))
      : h('tr', h('td', { colspan: headers.length, class: 'empty' }, 'None.'))));
}

export function json(v) {
  return h('pre.json', v === undefined ? '' : JSON.stringify(v, null, 2));
}

export function time(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleTimeString());
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function dash(v) {
  return v === null || v === undefined || v === '' ? '—' : String(v);
}

/** A status line for a page: errors in role=alert, the rest polite. */
export function notice(el, msg, isError) {
  el.textContent = msg || '';
  el.className = isError ? 'error' : 'status';
  el.setAttribute('role', isError ? 'alert' : 'status');
  el.hidden = !msg;
}

/** Asks in the page's <dialog>; resolves true on Confirm. */
export function confirmAction(text) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
    document.getElementById('confirm-ok').focus();
  });
}

/** The page's query (#/jobs?state=failed → {state: 'failed'}). */
export function query() {
  const i = location.hash.indexOf('?');
  return Object.fromEntries(new URLSearchParams(i < 0 ? '' : location.hash.slice(i + 1)));
}

export function link(page, params) {
  const q = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v !== '' && v != null));
  const qs = q.toString();
  return `#/${page}${qs ? `?${qs}` : ''}`;
}
