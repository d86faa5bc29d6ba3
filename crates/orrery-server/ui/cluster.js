// Cluster: members, shard groups with their leaders and replication
// (term, commit/applied, replica lag), this node's readiness and why,
// refreshed every two seconds; membership actions for admins.

import { api, get } from './api.js';
import { confirmAction, dash, h, notice, table } from './dom.js';

const REFRESH_MS = 2000;

export function render(main, ctx) {
  const status = h('p', { hidden: true });
  const ready = h('div.cards');
  const members = h('div');
  const groups = h('div');
  const updated = h('p.muted', { 'aria-live': 'off' });
  main.append(...[h('h1', 'Cluster'), status, h('section', { 'aria-labelledby': 'ready-h' },
    h('h2#ready-h', 'Readiness'), ready),
  h('section', { 'aria-labelledby': 'members-h' }, h('h2#members-h', 'Members'), members),
  ctx.can('admin') ? addForm(status, refresh) : null,
  h('section', { 'aria-labelledby': 'groups-h' }, h('h2#groups-h', 'Shard groups'), groups),
  updated].filter(Boolean));

  let timer = null;
  let stopped = false;

  async function refresh() {
    clearTimeout(timer);
    try {
      const [c, st, rd] = await Promise.all([
        get('/v1/cluster'), get('/v1/cluster/status'), readiness(),
      ]);
      if (stopped) return;
      drawReady(ready, c, st, rd);
      members.replaceChildren(memberTable(c, st, ctx, status, refresh));
      groups.replaceChildren(groupTable(c, st));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()} from node ${c.node_id}; refreshes every ${REFRESH_MS / 1000} s.`;
      if (status.className === 'error' && status.dataset.source === 'refresh') notice(status, '');
    } catch (e) {
      if (stopped) return;
      notice(status, `Could not read the cluster: ${e.message}`, true);
      status.dataset.source = 'refresh';
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

/** /readyz answers 503 with the reason when the node is not ready. */
async function readiness() {
  try {
    const r = await get('/readyz');
    return { ready: true, text: `ready; placement leader is node ${r.placement_leader}` };
  } catch (e) {
    return { ready: false, text: e.message };
  }
}

function drawReady(el, c, st, rd) {
  const reasons = [];
  if (!rd.ready) reasons.push(`this node: ${rd.text}`);
  for (const id of st.unreachable) reasons.push(`node ${id} did not answer the status poll`);
  for (const sh of c.shards) if (sh.leader == null) reasons.push(`shard ${sh.id} has no leader known to node ${c.node_id}`);
  for (const g of st.groups) {
    const lagging = g.replicas.filter((r) => r.lag > 0);
    if (lagging.length) reasons.push(`${g.name}: ${lagging.map((r) => `node ${r.node_id} ${r.lag} behind`).join(', ')}`);
  }
  const ok = rd.ready && st.unreachable.length === 0;
  el.replaceChildren(
    h('div.card', h('span.label', 'This node'), h('strong', { 'data-ready': String(rd.ready) }, `node ${c.node_id}: ${rd.text}`)),
    h('div.card', h('span.label', 'Cluster'), h('strong', c.cluster_id)),
    h('div.card', h('span.label', 'Placement leader'), h('strong', dash(c.placement_leader))),
    h('div.card', h('span.label', 'Version'), h('strong', `${c.cluster_version.active}${c.cluster_version.held ? ' (held)' : ''}`)),
    h('div.card.wide', h('span.label', ok ? 'Healthy' : 'Attention'),
      reasons.length ? h('ul.reasons', reasons.map((r) => h('li', r))) : h('span', 'Every member answers; no replica lags.')),
  );
}

function memberTable(c, st, ctx, status, refresh) {
  const admin = ctx.can('admin');
  const rows = c.members.map((m) => {
    const reachable = !st.unreachable.includes(m.id);
    const actions = [];
    if (admin && m.state === 'learner') {
      actions.push(h('button.small', {
        type: 'button',
        onclick: () => act(`Promote node ${m.id} to a voter?`, 'POST', `/v1/cluster/members/${m.id}/promote`, status, refresh),
      }, 'Promote'));
    }
    if (admin) {
      actions.push(h('button.small.danger', {
        type: 'button',
        onclick: () => act(`Remove node ${m.id} (${m.addr}) from the cluster? Its replicas move to other nodes first.`,
          'DELETE', `/v1/cluster/members/${m.id}`, status, refresh),
      }, 'Remove'));
    }
    return h('tr', { 'data-member': m.id },
      h('td', String(m.id)), h('td', m.state), h('td', reachable ? 'yes' : h('strong.bad', 'no')),
      h('td', m.addr), h('td', m.peer_addr), h('td', m.shards.join(', ') || '—'),
      h('td', dash(m.version)), admin ? h('td.actions', actions) : null);
  });
  const headers = ['Node', 'State', 'Answers', 'API address', 'Peer address', 'Shards', 'Version'];
  if (admin) headers.push('Actions');
  return table(`${c.members.length} members`, headers, rows, { id: 'members' });
}

function groupTable(c, st) {
  const byGroup = new Map(st.groups.map((g) => [g.group, g]));
  const rows = c.shards.map((sh) => {
    const g = byGroup.get(sh.group);
    const lag = g ? Math.max(0, ...g.replicas.map((r) => r.lag)) : null;
    const leader = g && g.leader != null ? g.leader : sh.leader;
    return h('tr', { 'data-shard': sh.id },
      h('td', sh.name), h('td.leader', leader == null ? h('strong.bad', 'none') : `node ${leader}`),
      h('td', g ? String(g.term) : '—'), h('td', g ? String(g.commit_index) : '—'),
      h('td', g ? String(g.applied_index) : '—'),
      h('td', g ? g.replicas.map((r) => `${r.node_id}${r.voter ? '' : ' (learner)'}: ${r.lag}`).join(', ') : sh.replicas.join(', ')),
      h('td', lag ? h('strong.bad', String(lag)) : dash(lag)));
  });
  const placement = st.groups.find((g) => g.group === 0);
  if (placement) {
    rows.unshift(h('tr', { 'data-group': 'placement' }, h('td', placement.name),
      h('td.leader', placement.leader == null ? 'none' : `node ${placement.leader}`),
      h('td', String(placement.term)), h('td', String(placement.commit_index)),
      h('td', String(placement.applied_index)),
      h('td', placement.replicas.map((r) => `${r.node_id}: ${r.lag}`).join(', ')),
      h('td', dash(Math.max(0, ...placement.replicas.map((r) => r.lag))))));
  }
  return table('Raft groups: the placement group and one per shard', ['Group', 'Leader', 'Term', 'Commit', 'Applied',
    'Replica lag (node: entries behind)', 'Max lag'], rows, { id: 'shards' });
}

async function act(question, method, path, status, refresh) {
  if (!(await confirmAction(question))) return;
  notice(status, `${method} ${path}: working (replica moves can take a while)…`);
  status.dataset.source = 'action';
  try {
    const r = await api(method, path);
    notice(status, `Done. ${(r.progress || []).join(' · ')}`);
  } catch (e) {
    notice(status, `Failed: ${e.message}`, true);
  }
  refresh();
}

function addForm(status, refresh) {
  const id = h('input#add-id', { type: 'number', min: 1, required: true });
  const addr = h('input#add-addr', { required: true, placeholder: '127.0.0.1:17004' });
  const peer = h('input#add-peer', { required: true, placeholder: '127.0.0.1:18004' });
  const learner = h('input#add-learner', { type: 'checkbox' });
  const form = h('form.inline', {
    onsubmit: async (e) => {
      e.preventDefault();
      const body = { id: Number(id.value), addr: addr.value.trim(), peer_addr: peer.value.trim(), learner_only: learner.checked };
      if (!(await confirmAction(`Add node ${body.id} at ${body.addr} to the cluster?`))) return;
      notice(status, `Adding node ${body.id}…`);
      status.dataset.source = 'action';
      try {
        const r = await api('POST', '/v1/cluster/members', body);
        notice(status, `Added. ${r.progress.join(' · ')}`);
        form.reset();
      } catch (err) {
        notice(status, `Adding failed: ${err.message}`, true);
      }
      refresh();
    },
  },
  h('label', { for: 'add-id' }, 'Node id'), id,
  h('label', { for: 'add-addr' }, 'API address'), addr,
  h('label', { for: 'add-peer' }, 'Peer address'), peer,
  h('label.check', learner, ' Learner only'),
  h('button', { type: 'submit' }, 'Add member'));
  return h('details.admin', h('summary', 'Add a member (admin)'), form);
}
