// Jobs: queues with their counts by state, a filtered and paged job
// list, and a form that submits a job.

import { api, get } from './api.js';
import { h, link, notice, query, table, time } from './dom.js';

const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead'];
const PAGE = 50;

export async function render(main, ctx) {
  const q = query();
  const status = h('p', { hidden: true });
  const queues = h('div');
  const list = h('div');
  main.append(h('h1', 'Jobs'), status,
    h('section', { 'aria-labelledby': 'queues-h' }, h('h2#queues-h', 'Queues'), queues),
    h('section', { 'aria-labelledby': 'list-h' }, h('h2#list-h', 'Jobs'), filterForm(q), list));

  let names = [];
  let stopped = false;
  let timer = null;
  async function loadQueues() {
    try {
      const r = await get('/v1/queues');
      names = r.queues.map((x) => x.name);
      const detail = await Promise.all(names.map((n) => get(`/v1/queues/${encodeURIComponent(n)}`).catch(() => null)));
      if (stopped) return;
      queues.replaceChildren(table(`${names.length} queues`, ['Queue', ...STATES, 'Oldest queued'],
        detail.filter(Boolean).map((d) => h('tr', { 'data-queue': d.name },
          h('td', h('a', { href: link('jobs', { queue: d.name }) }, d.name)),
          STATES.map((st) => h('td.num', d.counts[st] ? h('a', { href: link('jobs', { queue: d.name, state: st }) }, String(d.counts[st])) : '0')),
          h('td', d.oldest_queued_age_ms == null ? '—' : `${Math.round(d.oldest_queued_age_ms / 1000)} s`))),
      { id: 'queues' }));
    } catch (e) {
      queues.replaceChildren(h('p.error', { role: 'alert' }, `Could not list queues: ${e.message}`));
    }
    if (!stopped) timer = setTimeout(loadQueues, 3000);
  }

  async function loadJobs() {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (q.queue) params.set('queue', q.queue);
    if (q.state) params.set('state', q.state);
    if (q.cursor) params.set('cursor', q.cursor);
    try {
      const r = await get(`/v1/jobs?${params}`);
      // The API filters by queue and state; the kind filter applies to the page.
      const jobs = q.kind ? r.jobs.filter((j) => j.kind === q.kind) : r.jobs;
      const pager = h('nav.pager', { 'aria-label': 'Job pages' },
        q.cursor ? h('a', { href: link('jobs', { ...q, cursor: '' }) }, '« First page') : null,
        r.next_cursor ? h('a', { href: link('jobs', { ...q, cursor: r.next_cursor }), rel: 'next' }, 'Next page »') : null);
      list.replaceChildren(table(`${jobs.length} jobs${q.kind ? ` of kind ${q.kind} on this page` : ''}`,
        ['Job', 'Queue', 'Kind', 'State', 'Attempts', 'Created', 'Last error'],
        jobs.map((j) => h('tr', { 'data-job': j.id },
          h('td', h('a', { href: `#/job/${j.id}` }, h('code', j.id))), h('td', j.queue), h('td', j.kind),
          h('td', h(`span.state.${j.state}`, j.state)), h('td.num', `${j.attempts}/${j.max_attempts}`),
          h('td', time(j.created_ms)), h('td.clip', j.last_error || ''))),
        { id: 'jobs' }), pager);
    } catch (e) {
      list.replaceChildren(h('p.error', { role: 'alert' }, `Could not list jobs: ${e.message}`));
    }
  }

  await loadQueues();
  loadJobs();
  if (ctx.can('jobs.submit')) main.append(submitForm(names, status, ctx));
  return () => { stopped = true; clearTimeout(timer); };
}

function filterForm(q) {
  const queue = h('input#f-queue', { value: q.queue || '', placeholder: 'any' });
  const state = h('select#f-state', h('option', { value: '' }, 'any'),
    STATES.map((s) => h('option', { value: s, selected: q.state === s }, s)));
  const kind = h('input#f-kind', { value: q.kind || '', placeholder: 'any' });
  return h('form.inline', {
    role: 'search',
    'aria-label': 'Filter jobs',
    onsubmit: (e) => {
      e.preventDefault();
      location.hash = link('jobs', { queue: queue.value.trim(), state: state.value, kind: kind.value.trim() });
    },
  }, h('label', { for: 'f-queue' }, 'Queue'), queue, h('label', { for: 'f-state' }, 'State'), state,
  h('label', { for: 'f-kind' }, 'Kind'), kind, h('button', { type: 'submit' }, 'Filter'));
}

function submitForm(names, status, ctx) {
  const queue = h('select#s-queue', { required: true }, names.map((n) => h('option', { value: n }, n)));
  const kind = h('input#s-kind', { required: true, placeholder: 'command, fs.summarize, …' });
  const params = h('textarea#s-params', { rows: 5, spellcheck: 'false', placeholder: '{"argv": ["echo", "hello"]}' });
  const priority = h('input#s-priority', { type: 'number', value: 0 });
  const gpus = h('input#s-gpus', { type: 'number', min: 0, value: 0 });
  const form = h('form.stack', {
    onsubmit: async (e) => {
      e.preventDefault();
      let p;
      try {
        p = params.value.trim() ? JSON.parse(params.value) : {};
      } catch (err) {
        notice(status, `Params are not JSON: ${err.message}`, true);
        return;
      }
      const body = { queue: queue.value, kind: kind.value.trim(), params: p, priority: Number(priority.value) || 0 };
      if (Number(gpus.value) > 0) body.resources = { gpus: Number(gpus.value) };
      try {
        const j = await api('POST', '/v1/jobs', body);
        location.hash = `#/job/${j.id}`;
      } catch (err) {
        notice(status, `Submit failed: ${err.message}`, true);
        status.scrollIntoView({ block: 'nearest' });
      }
    },
  },
  h('label', { for: 's-queue' }, 'Queue'), queue,
  h('label', { for: 's-kind' }, 'Kind'), kind,
  h('label', { for: 's-params' }, 'Params (JSON)'), params,
  h('label', { for: 's-priority' }, 'Priority'), priority,
  h('label', { for: 's-gpus' }, 'GPUs'), gpus,
  ctx.can('admin') ? null : h('p.help', 'Command jobs need an admin token.'),
  h('button', { type: 'submit' }, 'Submit job'));
  return h('section', { 'aria-labelledby': 'submit-h' }, h('h2#submit-h', 'Submit a job'), form);
}
