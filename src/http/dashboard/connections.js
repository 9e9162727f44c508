// Connections: this node's authenticated connections (GET /ws/connections),
// filtered by user (`#/connections/<user>`), each of which can be
// disconnected (DELETE /api/connections/{id}: the client is told why and
// closed with 4011, and does not reconnect on its own).

import { h, fill, num, bytes, time, panel, table, confirmButton, toast, repeat } from './dom.js';

export const title = 'Connections';

const REFRESH_EVERY_MS = 3000;
const LISTED = 1000;

export function mount(root, ctx, user) {
  const filter = h('input', {
    id: 'user-filter',
    type: 'search',
    placeholder: 'user id',
    value: user || '',
    'aria-label': 'Filter by user id',
    spellcheck: 'false',
  });
  const form = h(
    'form',
    { class: 'inline-form', onsubmit: (e) => (e.preventDefault(), go(filter.value.trim())) },
    h('label', { for: 'user-filter' }, 'User'),
    filter,
    h('button', { type: 'submit' }, 'Filter'),
    user ? h('button', { type: 'button', class: 'link', onclick: () => go('') }, 'Show all') : null,
  );
  const summary = h('p', { class: 'muted', id: 'connections-summary' });
  const list = h('div', { id: 'connections-list' });
  fill(
    root,
    panel(
      user ? `Connections of ${user}` : 'Connections',
      form,
      summary,
      list,
      h('p', { class: 'muted small' }, 'This node’s connections. A disconnected client is told so (close 4011) and does not reconnect by itself; its credentials stay valid.'),
    ),
  );

  function go(name) {
    ctx.navigate(name ? `#/connections/${encodeURIComponent(name)}` : '#/connections');
  }

  async function disconnect(c) {
    try {
      const answer = await ctx.api('DELETE', `/api/connections/${encodeURIComponent(c.connection_id)}`);
      toast(`Disconnected ${answer.user_id} (${answer.connection_id}, close ${answer.close_code}).`);
    } catch (error) {
      toast(`Could not disconnect ${c.connection_id}: ${error.message}`, 'error');
    }
    await load();
  }

  async function load() {
    // A disconnect waiting for its confirmation keeps its row.
    if (root.querySelector('button.armed')) return;
    const query = new URLSearchParams({ limit: String(LISTED) });
    if (user) query.set('user_id', user);
    let answer;
    try {
      answer = await ctx.api('GET', `/ws/connections?${query}`);
    } catch (error) {
      fill(list, h('p', { class: 'error' }, `Connections unavailable: ${error.message}`));
      return;
    }
    const own = ctx.connectionId();
    fill(summary, `${num(answer.total)} connection${answer.total === 1 ? '' : 's'}${answer.total > answer.connections.length ? `, the oldest ${num(answer.connections.length)} shown` : ''}.`);
    const rows = answer.connections.map((c) =>
      h(
        'tr',
        { dataset: { connection: c.connection_id, user: c.user_id } },
        h('td', { class: 'mono' }, c.connection_id),
        h('td', { class: 'user' }, h('a', { href: `#/connections/${encodeURIComponent(c.user_id)}` }, c.user_id)),
        h('td', {}, c.tenant ?? '–'),
        h('td', {}, c.client_id ?? '–'),
        h('td', { class: 'channels' }, c.channels.length ? c.channels.join(', ') : '–'),
        h('td', { class: 'nowrap' }, time(c.connected_at)),
        h('td', {}, bytes(c.pending_bytes)),
        h(
          'td',
          {},
          c.connection_id === own
            ? h('span', { class: 'muted' }, 'this dashboard')
            : confirmButton('Disconnect', 'Confirm disconnect', () => disconnect(c), { class: 'danger small' }),
        ),
      ),
    );
    fill(
      list,
      table(['connection', 'user', 'tenant', 'client id', 'channels', 'since', 'queued', ''], rows, user ? `No connection of ${user}.` : 'No connections.'),
    );
  }

  return repeat(load, REFRESH_EVERY_MS);
}
