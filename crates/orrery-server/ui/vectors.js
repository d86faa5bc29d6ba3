// Vectors: collections with their shards' point counts and index states;
// search by a point's id (its stored vector) or a pasted vector, with a
// filter; results with scores and payloads.

import { api, get } from './api.js';
import { h, json, table } from './dom.js';

export async function render(main) {
  const body = h('div');
  main.append(h('h1', 'Vectors'), body);
  let names = [];
  try {
    const r = await get('/v1/collections');
    names = r.collections.map((c) => c.name);
    const detail = await Promise.all(names.map((n) => get(`/v1/collections/${encodeURIComponent(n)}`).catch((e) => ({ name: n, error: e.message }))));
    body.replaceChildren(table(`${names.length} collections`, ['Collection', 'Dimensions', 'Metric', 'Points', 'Shards (points, index)'],
      detail.map((c) => h('tr', { 'data-collection': c.name },
        h('td', c.name), h('td.num', String(c.dim ?? '—')), h('td', c.metric ?? '—'), h('td.num', String(c.points ?? '—')),
        h('td', c.error ? h('span.error', c.error) : (c.shard_states || []).map((st) => `${st.shard}: ${st.points}, ${st.index}`).join('; ')))),
      { id: 'collections' }));
  } catch (e) {
    body.replaceChildren(h('p.error', { role: 'alert' }, `Could not list collections: ${e.message}`));
  }
  main.append(searchForm(names));
}

function searchForm(names) {
  const coll = h('select#v-collection', { required: true }, names.map((n) => h('option', { value: n }, n)));
  const byId = h('input#v-by-id', { type: 'radio', name: 'by', value: 'id', checked: true });
  const byVec = h('input#v-by-vector', { type: 'radio', name: 'by', value: 'vector' });
  const pointId = h('input#v-point', { placeholder: 'a point id (integer or UUID)' });
  const vector = h('textarea#v-vector', { rows: 3, spellcheck: 'false', placeholder: '[0.1, 0.2, …]' });
  const filter = h('textarea#v-filter', { rows: 3, spellcheck: 'false', placeholder: '{"must": [{"key": "color", "match": "red"}]}' });
  const k = h('input#v-k', { type: 'number', min: 1, max: 1000, value: 10 });
  const out = h('div#v-results', { 'aria-live': 'polite' });
  const form = h('form.stack', {
    role: 'search',
    'aria-label': 'Search a collection',
    onsubmit: async (e) => {
      e.preventDefault();
      const c = encodeURIComponent(coll.value);
      try {
        let vec;
        if (byId.checked) {
          const p = await get(`/v1/collections/${c}/points/${encodeURIComponent(pointId.value.trim())}`);
          vec = p.vector;
        } else {
          vec = JSON.parse(vector.value);
        }
        const req = { vector: vec, k: Number(k.value) || 10, with_payload: true };
        if (filter.value.trim()) req.filter = JSON.parse(filter.value);
        const r = await api('POST', `/v1/collections/${c}/search`, req);
        out.replaceChildren(table(`${r.result.length} results in ${Number(r.took_ms).toFixed(1)} ms`, ['Id', 'Score', 'Payload'],
          r.result.map((x) => h('tr', { 'data-point': x.id }, h('td', h('code', String(x.id))),
            h('td.num', x.score.toFixed(4)), h('td', json(x.payload)))), { id: 'results' }));
      } catch (err) {
        out.replaceChildren(h('p.error', { role: 'alert' }, `Search failed: ${err.message}`));
      }
    },
  },
  h('label', { for: 'v-collection' }, 'Collection'), coll,
  h('fieldset', h('legend', 'Search by'), h('label.check', byId, ' a point id'), h('label.check', byVec, ' a pasted vector')),
  h('label', { for: 'v-point' }, 'Point id'), pointId,
  h('label', { for: 'v-vector' }, 'Vector (JSON array)'), vector,
  h('label', { for: 'v-filter' }, 'Filter (JSON, optional)'), filter,
  h('label', { for: 'v-k' }, 'Results (k)'), k,
  h('button', { type: 'submit' }, 'Search'), out);
  return h('section', { 'aria-labelledby': 'search-h' }, h('h2#search-h', 'Search'), form);
}
