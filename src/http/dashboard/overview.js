// Overview: the node's counts and rates (sampled once a second from
// GET /ws/metrics), messages per second on a live chart, publish→write
// latency, Redis and the cluster's nodes (GET /api/nodes), and the newest
// connections (GET /ws/connections).

import { h, fill, num, micros, duration, badge, panel, table, time, repeat } from './dom.js';
import { LineChart } from './chart.js';

export const title = 'Overview';

const SERIES = [
  { label: 'in', color: '#2f6fde' },
  { label: 'out', color: '#e0802b' },
];
const NEWEST_SHOWN = 8;
const CONNECTIONS_EVERY_MS = 2000;
const NODES_EVERY_MS = 5000;

function stat(label, key) {
  return h('div', { class: 'stat', dataset: { stat: key } }, h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value' }, '–'));
}

export function mount(root, ctx) {
  const stats = h(
    'div',
    { class: 'stats' },
    stat('Connections', 'connections'),
    stat('Users', 'users'),
    stat('Channels', 'channels'),
    stat('Messages in / s', 'in'),
    stat('Messages out / s', 'out'),
    stat('Published', 'published'),
    stat('Uptime', 'uptime'),
  );
  const legend = h('div', { class: 'legend' });
  const canvas = h('canvas', { class: 'chart', 'aria-label': 'Messages in and out per second, last two minutes' });
  const latency = h('dl', { class: 'figures' });
  const drops = h('dl', { class: 'figures' });
  const redis = h('div');
  const nodes = h('div');
  const newest = h('div');
  const problem = h('p', { class: 'error', role: 'alert', hidden: true });

  fill(
    root,
    problem,
    stats,
    h(
      'div',
      { class: 'grid grid-wide' },
      panel('Messages per second', legend, canvas),
      panel('Publish → write latency', latency, h('p', { class: 'muted small' }, 'From an event’s publish to its write on a client’s socket, over the node’s life.')),
    ),
    h(
      'div',
      { class: 'grid' },
      panel('Newest connections', newest, h('p', {}, h('a', { href: '#/connections' }, 'All connections →'))),
      panel('Redis and cluster', redis, nodes),
      panel('Refusals and drops', drops),
    ),
  );

  const chart = new LineChart(canvas, { series: SERIES, samples: ctx.sampler.samples });

  const set = (key, value) => {
    const cell = stats.querySelector(`[data-stat="${key}"] .stat-value`);
    if (cell) cell.textContent = value;
  };

  const figures = (dl, pairs) =>
    fill(dl, pairs.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]));

  function render() {
    const m = ctx.sampler.latest;
    problem.hidden = !ctx.sampler.error;
    problem.textContent = ctx.sampler.error ? `Metrics unavailable: ${ctx.sampler.error.message}` : '';
    chart.draw();
    if (!m) return;
    set('connections', num(m.connections));
    set('users', num(m.users));
    set('channels', num(m.channels));
    set('in', num(m.messages_in_per_sec, 1));
    set('out', num(m.messages_out_per_sec, 1));
    set('published', num(m.published));
    set('uptime', duration(m.uptime_secs));
    fill(
      legend,
      SERIES.map((s, i) => {
        const swatch = h('span', { class: `swatch swatch-${i}` });
        const value = i === 0 ? m.messages_in_per_sec : m.messages_out_per_sec;
        return h('span', { class: 'legend-item' }, swatch, `${s.label} ${num(value, 1)}/s`);
      }),
    );
    const l = m.latency || {};
    figures(latency, [
      ['p50', micros(l.p50_us)],
      ['p90', micros(l.p90_us)],
      ['p99', micros(l.p99_us)],
      ['max', micros(l.max_us)],
      ['events measured', num(l.count)],
    ]);
    figures(drops, [
      ['slow consumers closed', num(m.dropped_slow_consumers)],
      ['deliveries dropped', num(m.dropped_deliveries)],
      ['flood closes', num(m.flood_closes)],
      ['throttled authentications', num(m.auth_throttled)],
      ['user rate limited', num(m.user_rate_limited)],
      ['event rate limited', num(m.event_rate_limited)],
      ['connections shed', num(m.shed_connections)],
      ['recoveries failed', `${num(m.recoveries_failed)} of ${num(m.recoveries)}`],
    ]);
    if (m.redis) {
      const r = m.redis;
      fill(
        redis,
        h('p', {}, 'Redis ', badge(r.status)),
        h(
          'dl',
          { class: 'figures' },
          [
            ['published', r.published],
            ['received', r.received],
            ['dropped', r.dropped],
            ['connects', r.connects],
            ['history lost', r.history_lost],
          ].map(([k, v]) => [h('dt', {}, k), h('dd', {}, num(v))]),
        ),
      );
    } else {
      fill(redis, h('p', {}, 'Redis ', badge('disabled'), h('span', { class: 'muted' }, ' this node runs on its own')));
    }
  }

  async function loadNodes() {
    try {
      const answer = await ctx.api('GET', '/api/nodes');
      const rows = answer.nodes.map((n) =>
        h(
          'tr',
          {},
          h('td', {}, n.node_id, n.self ? h('span', { class: 'muted' }, ' (this node)') : null),
          h('td', {}, n.expires_in_ms === null ? '–' : `${num(n.expires_in_ms)} ms`),
        ),
      );
      fill(nodes, h('h3', {}, `Nodes (${answer.nodes.length})`), table(['node', 'heartbeat expires in'], rows));
    } catch (error) {
      fill(nodes, h('p', { class: 'error' }, `Nodes unavailable: ${error.message}`));
    }
  }

  async function loadNewest() {
    try {
      const list = await ctx.api('GET', `/ws/connections?order=newest&limit=${NEWEST_SHOWN}`);
      const own = ctx.connectionId();
      const rows = list.connections.map((c) =>
          h(
            'tr',
            { dataset: { connection: c.connection_id } },
            h('td', { class: 'user' }, c.user_id, c.connection_id === own ? h('span', { class: 'muted' }, ' (this dashboard)') : null),
            h('td', { class: 'mono' }, c.connection_id),
            h('td', {}, num(c.channels.length)),
            h('td', { class: 'nowrap' }, time(c.connected_at)),
          ),
        );
      fill(newest, table(['user', 'connection', 'channels', 'since'], rows, 'No connections.'));
    } catch (error) {
      fill(newest, h('p', { class: 'error' }, `Connections unavailable: ${error.message}`));
    }
  }

  render();
  const stops = [ctx.sampler.subscribe(render), repeat(loadNodes, NODES_EVERY_MS), repeat(loadNewest, CONNECTIONS_EVERY_MS)];
  return () => {
    stops.forEach((stop) => stop());
    chart.destroy();
  };
}
