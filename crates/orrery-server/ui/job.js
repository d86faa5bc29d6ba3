// One job: its fields, params and result, every run (exit code,
// duration, GPU peak memory and utilisation), and the live log of its
// latest attempt, streamed as Server-Sent Events over fetch.

import { api, ApiError, get, stream } from './api.js';
import { confirmAction, dash, duration, h, json, notice, table, time } from './dom.js';

const DONE = ['succeeded', 'failed', 'cancelled', 'dead'];

export function render(main, ctx) {
  const id = ctx.arg;
  const status = h('p', { hidden: true });
  const fields = h('div');
  const runs = h('div');
  const log = h('pre#log.log', { tabindex: 0, 'aria-label': 'Log of the latest attempt' });
  const logState = h('p#log-state.muted', { 'aria-live': 'polite' });
  const cancel = h('button#cancel.danger', { type: 'button', hidden: true }, 'Cancel job');
  main.append(h('p', h('a', { href: '#/jobs' }, '« Jobs')), h('h1', 'Job ', h('code', id)), status, cancel, fields,
    h('section', { 'aria-labelledby': 'runs-h' }, h('h2#runs-h', 'Runs'), runs),
    h('section', { 'aria-labelledby': 'log-h' }, h('h2#log-h', 'Log'), logState, log));

  const abort = new AbortController();
  let stopped = false;
  let timer = null;
  let job = null;
  let following = 0; // the attempt whose log is being streamed

  cancel.addEventListener('click', async () => {
    if (!(await confirmAction(`Cancel job ${id}?`))) return;
    try {
      await api('POST', `/v1/jobs/${id}/cancel`);
      notice(status, 'Cancel requested.');
    } catch (e) {
      notice(status, `Cancel failed: ${e.message}`, true);
    }
    refresh();
  });

  let inflight = false;
  async function refresh() {
    // One refresh at a time (the timer and a stream's end both ask).
    if (inflight) return;
    inflight = true;
    clearTimeout(timer);
    try {
      const [j, r] = await Promise.all([get(`/v1/jobs/${id}`), get(`/v1/jobs/${id}/runs`)]);
      if (stopped) return;
      job = j;
      drawJob(fields, j);
      runs.replaceChildren(runTable(r.runs));
      cancel.hidden = !ctx.can('jobs.submit') || DONE.includes(j.state);
      if (r.runs.length && r.runs[r.runs.length - 1].attempt !== following) follow(r.runs[r.runs.length - 1].attempt);
      else if (!r.runs.length) logState.textContent = j.waiting || 'No run yet.';
    } catch (e) {
      if (!stopped) notice(status, `Could not read the job: ${e.message}`, true);
    }
    inflight = false;
    if (!stopped && !(job && DONE.includes(job.state))) timer = setTimeout(refresh, 1500);
  }

  // Follows an attempt's log. The stream replays what the run printed so
  // far, then new lines; a dropped connection (a proxy, a restarted
  // node, a flaky network) is followed again from the start.
  async function follow(attempt, tries = 0) {
    following = attempt;
    log.replaceChildren();
    logState.textContent = `Attempt ${attempt}: following…`;
    let ended = false;
    let lost = null;
    try {
      await stream(`/v1/jobs/${id}/logs?follow=true&attempt=${attempt}`, (type, data) => {
        if (attempt !== following) return;
        if (type === 'log' || type === 'lagged') {
          log.append(type === 'lagged' ? h('span.muted', `${data}\n`) : data);
          log.scrollTop = log.scrollHeight;
        } else if (type === 'end') {
          ended = true;
          logState.textContent = `Attempt ${attempt}: ended.`;
        }
      }, abort.signal);
      if (!ended) lost = 'the stream closed early';
    } catch (e) {
      // An API answer (404: no log kept, 403) is final; a broken
      // connection or a 5xx is worth another try.
      if (e instanceof ApiError && e.status > 0 && e.status < 500) {
        if (!stopped && attempt === following) logState.textContent = `Attempt ${attempt}: no log (${e.message}).`;
        return;
      }
      lost = e.message;
    }
    if (stopped || attempt !== following) return;
    if (lost && tries < 5) {
      logState.textContent = `Attempt ${attempt}: connection lost (${lost}); reconnecting…`;
      await new Promise((r) => { setTimeout(r, 1000); });
      if (!stopped && attempt === following) follow(attempt, tries + 1);
      return;
    }
    if (lost) logState.textContent = `Attempt ${attempt}: log stream lost (${lost}).`;
    refresh();
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); abort.abort(); };
}

function drawJob(el, j) {
  const rows = [
    ['State', h(`span.state.${j.state}`, { id: 'job-state' }, j.state + (j.cancel_requested && !DONE.includes(j.state) ? ' (cancel requested)' : ''))],
    ['Queue', j.queue], ['Kind', j.kind], ['Priority', String(j.priority)],
    ['Attempts', `${j.attempts} of ${j.max_attempts}`], ['Created', time(j.created_ms)],
    ['Finished', time(j.finished_ms)], ['Submitted by', dash(j.submitted_by)],
  ];
  if (j.waiting) rows.push(['Waiting', j.waiting]);
  if (j.last_error) rows.push(['Last error', h('span#job-error', j.last_error)]);
  el.replaceChildren(h('dl.fields', rows.map(([k, v]) => [h('dt', k), h('dd', v)])),
    h('div.two', h('section', h('h2', 'Params'), json(j.params)),
      h('section', h('h2', 'Result'), j.result == null ? h('p.muted', 'None yet.') : json(j.result))));
}

function runTable(runs) {
  return table(`${runs.length} runs`, ['Attempt', 'Node', 'Outcome', 'Exit code', 'Duration', 'GPU peak memory', 'GPU mean use', 'Started', 'Error'],
    runs.map((r) => h('tr', { 'data-attempt': r.attempt },
      h('td.num', String(r.attempt)), h('td', r.node ? `node ${r.node}` : 'external'),
      h('td', r.outcome ? h(`span.state.${r.outcome}`, r.outcome) : 'running'),
      h('td.num.exit-code', dash(r.exit_code)), h('td', duration(r.duration_ms)),
      h('td', r.gpu_peak_memory_mb == null ? '—' : `${r.gpu_peak_memory_mb} MB`),
      h('td', r.gpu_mean_utilization_pct == null ? '—' : `${r.gpu_mean_utilization_pct} %`),
      h('td', time(r.started_ms)), h('td.clip', r.error || ''))), { id: 'runs' });
}
