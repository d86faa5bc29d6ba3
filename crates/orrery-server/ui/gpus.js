// GPUs: each node's inventory as it last reported it (memory,
// utilisation, temperature) and the running jobs that hold each GPU.

import { get } from './api.js';
import { h, table, time } from './dom.js';

export function render(main) {
  const body = h('div');
  main.append(h('h1', 'GPUs'), body);
  let stopped = false;
  let timer = null;
  async function refresh() {
    try {
      const [g, running] = await Promise.all([get('/v1/gpus'), get('/v1/jobs?state=running&limit=200')]);
      // Which running job holds which GPU: its latest run's gpu_uuids.
      const holders = new Map();
      await Promise.all(running.jobs.map(async (j) => {
        const r = await get(`/v1/jobs/${j.id}/runs`).catch(() => ({ runs: [] }));
        const last = r.runs[r.runs.length - 1];
        for (const u of (last && !last.outcome ? last.gpu_uuids || [] : [])) {
          if (!holders.has(u)) holders.set(u, []);
          holders.get(u).push(j.id);
        }
      }));
      if (stopped) return;
      const parts = [];
      if (!g.gpus.length) {
        parts.push(h('p#no-gpus', 'No node reports a GPU (nodes without NVML report none).'));
      }
      for (const n of g.nodes) {
        const gpus = g.gpus.filter((x) => x.node === n.node);
        parts.push(h('section', { 'aria-label': `node ${n.node}` }, h('h2', `Node ${n.node}`),
          h('p.muted', 'Reported ', time(n.reported_ms)),
          table(`${gpus.length} GPUs on node ${n.node}`, ['#', 'Name', 'UUID', 'Memory used', 'Utilisation', 'Temperature', 'Jobs'],
            gpus.map((x) => h('tr', { 'data-gpu': x.uuid },
              h('td.num', String(x.index)), h('td', x.name), h('td', h('code', x.uuid)),
              h('td', h('meter', { min: 0, max: x.memory_total_mb, value: x.memory_used_mb, 'aria-label': 'memory used' }),
                ` ${x.memory_used_mb} / ${x.memory_total_mb} MB`),
              h('td.num', `${x.utilization_pct} %`), h('td.num', `${x.temperature_c} °C`),
              h('td', (holders.get(x.uuid) || []).map((id) => h('a', { href: `#/job/${id}` }, h('code', id)))))))));
      }
      body.replaceChildren(...parts);
    } catch (e) {
      if (!stopped) body.replaceChildren(h('p.error', { role: 'alert' }, `Could not read GPUs: ${e.message}`));
    }
    if (!stopped) timer = setTimeout(refresh, 5000);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
