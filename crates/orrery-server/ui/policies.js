// Policies: the list and the runs (with filters); one policy's versions,
// the chosen version's graph drawn, and a run form that shows the output
// and highlights the path the trace took.

import { api, get } from './api.js';
import { dash, h, json, link, notice, query, table, time } from './dom.js';
import { draw } from './graph.js';

export function render(main, ctx) {
  return ctx.page === 'policy' ? one(main, ctx) : list(main);
}

async function list(main) {
  const q = query();
  const body = h('div');
  const runs = h('div');
  main.append(h('h1', 'Policies'), body,
    h('section', { 'aria-labelledby': 'runs-h' }, h('h2#runs-h', 'Runs'), runFilter(q), runs));
  try {
    const r = await get('/v1/policies');
    body.replaceChildren(table(`${r.policies.length} policies`, ['Name', 'Description', 'Latest version', 'Traffic', 'Updated'],
      r.policies.map((p) => h('tr', { 'data-policy': p.name },
        h('td', h('a', { href: `#/policy/${encodeURIComponent(p.name)}` }, p.name)), h('td', dash(p.description)),
        h('td.num', dash(p.latest_version)),
        h('td', p.allocation.map((a) => `v${a.version}: ${a.weight}`).join(', ') || '—'), h('td', time(p.updated)))),
      { id: 'policies' }));
  } catch (e) {
    body.replaceChildren(h('p.error', { role: 'alert' }, `Could not list policies: ${e.message}`));
  }
  runs.replaceChildren(await runTable(q));
}

function runFilter(q) {
  const policy = h('input#r-policy', { value: q.policy || '', placeholder: 'any' });
  const version = h('input#r-version', { type: 'number', min: 1, value: q.version || '' });
  const status = h('select#r-status', h('option', { value: '' }, 'any'),
    ['running', 'succeeded', 'failed'].map((x) => h('option', { value: x, selected: q.status === x }, x)));
  return h('form.inline', {
    role: 'search',
    'aria-label': 'Filter runs',
    onsubmit: (e) => {
      e.preventDefault();
      location.hash = link('policies', { policy: policy.value.trim(), version: version.value, status: status.value });
    },
  }, h('label', { for: 'r-policy' }, 'Policy'), policy, h('label', { for: 'r-version' }, 'Version'), version,
  h('label', { for: 'r-status' }, 'Status'), status, h('button', { type: 'submit' }, 'Filter'));
}

async function runTable(q, fixed) {
  const p = new URLSearchParams({ limit: '50' });
  for (const k of ['policy', 'version', 'status', 'cursor']) if (q[k]) p.set(k, q[k]);
  if (fixed) p.set('policy', fixed);
  try {
    const r = await get(`/v1/runs?${p}`);
    const more = r.next_cursor && !fixed
      ? h('nav.pager', { 'aria-label': 'Run pages' }, h('a', { href: link('policies', { ...q, cursor: r.next_cursor }) }, 'Next page »'))
      : null;
    return h('div', table(`${r.runs.length} runs, newest first`, ['Run', 'Policy', 'Version', 'Status', 'Output', 'Error', 'Created'],
      r.runs.map((x) => h('tr', { 'data-run': x.id },
        h('td', h('code', x.id)), h('td', x.policy_id), h('td.num', String(x.version)),
        h('td', h(`span.state.${x.status}`, x.status)), h('td.clip', x.output == null ? '—' : JSON.stringify(x.output)),
        h('td.clip', x.error || ''), h('td', time(x.created))))), more);
  } catch (e) {
    return h('p.error', { role: 'alert' }, `Could not list runs: ${e.message}`);
  }
}

async function one(main, ctx) {
  const id = ctx.arg;
  const q = query();
  const status = h('p', { hidden: true });
  main.append(h('p', h('a', { href: '#/policies' }, '« Policies')), h('h1', 'Policy ', id), status);
  let policy;
  let versions;
  try {
    [policy, versions] = await Promise.all([
      get(`/v1/policies/${encodeURIComponent(id)}`),
      get(`/v1/policies/${encodeURIComponent(id)}/versions`).then((r) => r.versions),
    ]);
  } catch (e) {
    notice(status, `Could not read the policy: ${e.message}`, true);
    return undefined;
  }
  const chosen = Number(q.v) || (policy.allocation[0] ? policy.allocation[0].version : policy.latest_version);
  const version = versions.find((v) => v.version === chosen) || versions[versions.length - 1];
  const traffic = new Map(policy.allocation.map((a) => [a.version, a.weight]));
  main.append(h('p', dash(policy.description)),
    h('nav.versions', { 'aria-label': 'Versions' }, h('span', 'Versions: '),
      versions.map((v) => h('a', {
        href: `#/policy/${encodeURIComponent(id)}?v=${v.version}`,
        'aria-current': version && v.version === version.version ? 'true' : null,
        class: v.archived ? 'archived' : null,
      }, `v${v.version}${traffic.has(v.version) ? ` (${traffic.get(v.version)})` : ''}${v.archived ? ' archived' : ''}`))));
  if (!version) {
    main.append(h('p', 'No versions yet.'));
    return undefined;
  }
  const figure = h('figure.graph-box', h('figcaption', `Version ${version.version}, created ${new Date(version.created).toLocaleString()}${version.created_by ? ` by ${version.created_by}` : ''}`),
    h('div#graph.scroll', draw(version.graph, [])));
  main.append(h('section', { 'aria-labelledby': 'graph-h' }, h('h2#graph-h', 'Graph'), figure));

  if (ctx.can('write')) main.append(runForm(id, version, figure));
  const runs = h('div');
  main.append(h('section', { 'aria-labelledby': 'pruns-h' }, h('h2#pruns-h', 'Recent runs'), runs));
  runs.replaceChildren(await runTable({}, policy.id));
  return undefined;
}

/** A sample input from the input node's fields, to edit. */
function sample(graph) {
  const input = (graph.nodes || []).find((n) => n.type === 'input');
  const out = {};
  const fields = (input && input.config && input.config.fields) || {};
  for (const [k, t] of Object.entries(fields)) {
    if (t.endsWith('?')) continue;
    out[k] = { number: 0, integer: 0, string: '', bool: false, object: {}, array: [] }[t] ?? null;
  }
  return out;
}

function runForm(id, version, figure) {
  const input = h('textarea#run-input', { rows: 6, spellcheck: 'false' });
  input.value = JSON.stringify(sample(version.graph), null, 2);
  const result = h('div#run-result', { 'aria-live': 'polite' });
  const form = h('form.stack', {
    onsubmit: async (e) => {
      e.preventDefault();
      let value;
      try {
        value = JSON.parse(input.value);
      } catch (err) {
        result.replaceChildren(h('p.error', { role: 'alert' }, `The input is not JSON: ${err.message}`));
        return;
      }
      try {
        const run = await api('POST', `/v1/policies/${encodeURIComponent(id)}/runs`, { input: value, version: version.version });
        const path = (run.trace || []).map((t) => t.id);
        figure.querySelector('#graph').replaceChildren(draw(version.graph, path));
        result.replaceChildren(...[
          h('p', 'Run ', h('code', run.id), ': ', h(`span.state.${run.status}#run-status`, run.status),
            ` — path ${path.join(' → ')}`),
          run.error ? h('p.error#run-error', run.error) : null,
          h('h3', 'Output'), h('div#run-output', json(run.output)),
          h('details', h('summary', 'Trace'), json(run.trace))].filter(Boolean));
      } catch (err) {
        result.replaceChildren(h('p.error', { role: 'alert' }, `Run failed: ${err.message}`));
      }
    },
  }, h('label', { for: 'run-input' }, `Input for version ${version.version} (JSON)`), input,
  h('button', { type: 'submit' }, 'Run'), result);
  return h('section', { 'aria-labelledby': 'run-h' }, h('h2#run-h', 'Run'), form);
}
