// A policy graph drawn as SVG with a layered layout: each node's layer is
// its longest distance from the input node, nodes within a layer are
// ordered by the mean position of their parents (one sweep keeps most
// edges from crossing), layers run left to right. Edges carry branch
// conditions (`when`, or `default`) and allocation arms with weights.

import { s } from './dom.js';

const W = 132;
const H = 46;
const GAP_X = 96;
const GAP_Y = 34;

export function layout(graph) {
  const nodes = graph.nodes || [];
  const edges = graph.edges || [];
  const ids = nodes.map((n) => n.id);
  const layer = new Map(ids.map((id) => [id, 0]));
  // Longest path by relaxation (graphs are DAGs; the bound stops a cycle).
  for (let i = 0; i < ids.length; i += 1) {
    let changed = false;
    for (const e of edges) {
      const l = (layer.get(e.from) ?? 0) + 1;
      if (layer.has(e.to) && l > layer.get(e.to)) { layer.set(e.to, l); changed = true; }
    }
    if (!changed) break;
  }
  const layers = [];
  for (const id of ids) (layers[layer.get(id)] ||= []).push(id);
  const pos = new Map();
  layers.forEach((col, x) => {
    if (x > 0) {
      const mean = (id) => {
        const ps = edges.filter((e) => e.to === id && pos.has(e.from)).map((e) => pos.get(e.from).row);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0;
      };
      col.sort((a, b) => mean(a) - mean(b));
    }
    col.forEach((id, row) => pos.set(id, { x, row }));
  });
  const tallest = Math.max(1, ...layers.map((c) => (c ? c.length : 0)));
  const height = tallest * (H + GAP_Y) + GAP_Y;
  for (const [id, p] of pos) {
    const col = layers[p.x];
    const offset = (height - col.length * (H + GAP_Y) + GAP_Y) / 2;
    pos.set(id, { ...p, cx: 30 + p.x * (W + GAP_X) + W / 2, cy: offset + p.row * (H + GAP_Y) + H / 2 });
  }
  return { pos, width: layers.length * (W + GAP_X) - GAP_X + 60, height };
}

function clip(t, n) {
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/** Edge labels: branch conditions, allocation arms with their weights. */
export function edgeLabel(graph, e) {
  const from = (graph.nodes || []).find((n) => n.id === e.from);
  if (e.arm !== undefined) {
    const w = from && from.config && from.config.weights ? from.config.weights[e.arm] : undefined;
    return `${e.arm}${w !== undefined ? ` (weight ${w})` : ''}`;
  }
  if (e.when !== undefined) return `when ${e.when}`;
  if (from && from.type === 'branch') return 'default';
  return '';
}

/** The SVG; `path` (node ids the trace visited, in order) is highlighted. */
export function draw(graph, path) {
  const { pos, width, height } = layout(graph);
  const visited = new Set(path || []);
  const taken = new Set();
  (path || []).forEach((id, i) => { if (i > 0) taken.add(`${path[i - 1]}\u0000${id}`); });
  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: 'graph',
    'aria-label': `Policy graph: ${(graph.nodes || []).length} nodes, ${(graph.edges || []).length} edges`,
  });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
    s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
  for (const e of graph.edges || []) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.cx + W / 2;
    const x2 = b.cx - W / 2;
    const mx = (x1 + x2) / 2;
    const on = taken.has(`${e.from}\u0000${e.to}`);
    const label = edgeLabel(graph, e);
    const g = s('g', { class: `edge${on ? ' taken' : ''}`, 'data-from': e.from, 'data-to': e.to },
      s('path', { d: `M ${x1} ${a.cy} C ${mx} ${a.cy}, ${mx} ${b.cy}, ${x2} ${b.cy}`, 'marker-end': 'url(#arrow)', fill: 'none' }));
    if (label) {
      g.append(s('text', { x: mx, y: (a.cy + b.cy) / 2 - 6, 'text-anchor': 'middle', class: 'edge-label' },
        s('title', {}, label), clip(label, 30)));
    }
    svg.append(g);
  }
  for (const n of graph.nodes || []) {
    const p = pos.get(n.id);
    const cls = `node type-${n.type}${visited.has(n.id) ? ' visited' : ''}`;
    svg.append(s('g', { class: cls, 'data-node': n.id, transform: `translate(${p.cx - W / 2} ${p.cy - H / 2})` },
      s('title', {}, `${n.id} (${n.type})\n${JSON.stringify(n.config || {}, null, 1)}`),
      s('rect', { width: W, height: H, rx: 8 }),
      s('text', { x: W / 2, y: 19, 'text-anchor': 'middle', class: 'node-id' }, clip(n.id, 17)),
      s('text', { x: W / 2, y: 36, 'text-anchor': 'middle', class: 'node-type' }, n.type)));
  }
  return svg;
}
