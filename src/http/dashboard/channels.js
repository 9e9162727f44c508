// Channels: this node's channels (GET /api/channels); one channel's members,
// presence and statuses (GET /api/channels/{channel}); a live tail of its
// events through the client; and a form that sends it a test event
// (POST /api/publish).
//
// The route names a channel by its key: `#/channels/team:t1`, or
// `#/channels/acme/team:t1` in tenant `acme`.

import { h, fill, num, time, panel, table, badge, repeat } from './dom.js';

export const title = 'Channels';

const REFRESH_EVERY_MS = 3000;
/** Events the tail keeps; older ones scroll away. */
const TAIL_KEPT = 200;
/** The dashboard's own subscription: never left by a tail. */
const SETTINGS_CHANNEL = 'system:settings';

function split(key) {
  const slash = key.indexOf('/');
  return slash < 0 ? { tenant: null, name: key } : { tenant: key.slice(0, slash), name: key.slice(slash + 1) };
}

const keyOf = (name, tenant) => (tenant ? `${tenant}/${name}` : name);
/** Channel names read as they are in the address bar: `:` and `@` are safe in a fragment. */
const part = (s) => encodeURIComponent(s).replace(/%3A/gi, ':').replace(/%40/g, '@');
const hrefOf = (name, tenant) => `#/channels/${keyOf(name, tenant).split('/').map(part).join('/')}`;

export function mount(root, ctx, key) {
  const selected = key ? split(key) : null;
  const list = h('div', { id: 'channel-list' });
  const open = h('input', { id: 'open-channel', placeholder: 'namespace:id', spellcheck: 'false', 'aria-label': 'Channel name' });
  const openForm = h(
    'form',
    {
      class: 'inline-form',
      onsubmit: (e) => {
        e.preventDefault();
        const name = open.value.trim();
        if (name) ctx.navigate(hrefOf(name, null));
      },
    },
    open,
    h('button', { type: 'submit' }, 'Open'),
  );
  const side = panel('Channels on this node', openForm, list);
  const stops = [];
  if (!selected) {
    fill(root, h('div', { class: 'split' }, side, panel(null, h('p', { class: 'muted' }, 'Pick a channel, or open one by name to tail it or send it a test event.'))));
  } else {
    const details = h('div', { id: 'channel-details' });
    // Joins and leaves seen in the tail are read again at once.
    const tail = tailPanel(ctx, selected, stops, () => {
      loadDetails(ctx, selected, details);
      loadList(ctx, list, selected);
    });
    fill(
      root,
      h(
        'div',
        { class: 'split' },
        side,
        h(
          'div',
          { class: 'stack' },
          panel(`${selected.name}${selected.tenant ? ` (tenant ${selected.tenant})` : ''}`, details),
          tail,
          publishPanel(ctx, selected),
        ),
      ),
    );
    stops.push(repeat(() => loadDetails(ctx, selected, details), REFRESH_EVERY_MS));
  }
  stops.push(repeat(() => loadList(ctx, list, selected), REFRESH_EVERY_MS));
  return () => stops.forEach((stop) => stop());
}

async function loadList(ctx, list, selected) {
  let answer;
  try {
    answer = await ctx.api('GET', '/api/channels?limit=1000');
  } catch (error) {
    fill(list, h('p', { class: 'error' }, `Channels unavailable: ${error.message}`));
    return;
  }
  const rows = answer.channels.map((c) => {
    const current = selected && selected.name === c.channel && selected.tenant === c.tenant;
    return h(
      'tr',
      { class: current ? 'current' : null, dataset: { channel: keyOf(c.channel, c.tenant) } },
      h('td', {}, h('a', { href: hrefOf(c.channel, c.tenant) }, c.channel)),
      h('td', {}, c.tenant ?? '–'),
      h('td', { class: 'num' }, num(c.members)),
    );
  });
  fill(
    list,
    table(['channel', 'tenant', 'members'], rows, 'No channel has subscribers on this node.'),
    answer.total > answer.channels.length ? h('p', { class: 'muted small' }, `${num(answer.total)} channels, the first ${num(answer.channels.length)} shown.`) : null,
  );
}

async function loadDetails(ctx, { name, tenant }, details) {
  const query = tenant ? `?tenant=${encodeURIComponent(tenant)}` : '';
  let c;
  try {
    c = await ctx.api('GET', `/api/channels/${encodeURIComponent(name)}${query}`);
  } catch (error) {
    const message = error.code === 'channel_not_found' ? 'No connection of this node is subscribed to it.' : `Unavailable: ${error.message}`;
    fill(details, h('p', { class: error.code === 'channel_not_found' ? 'muted' : 'error' }, message));
    return;
  }
  const own = ctx.connectionId();
  const members = c.members.map((m) =>
    h(
      'tr',
      {},
      h('td', { class: 'mono' }, m.connection_id),
      h('td', {}, h('a', { href: `#/connections/${encodeURIComponent(m.user_id)}` }, m.user_id), m.connection_id === own ? h('span', { class: 'muted' }, ' (this dashboard)') : null),
    ),
  );
  const statuses = new Map((c.statuses || []).map((s) => [s.user_id, s]));
  const presence = c.presence.map((user) => {
    const status = statuses.get(user);
    return h('li', { dataset: { user } }, user, status ? [' ', badge(status.status), status.text ? h('span', { class: 'muted' }, ` ${status.text}`) : null] : null);
  });
  fill(
    details,
    h(
      'dl',
      { class: 'figures' },
      h('dt', {}, 'members here'),
      h('dd', {}, num(c.member_count)),
      h('dt', {}, 'present (all nodes)'),
      h('dd', {}, num(c.presence_count)),
      c.offset !== undefined ? [h('dt', {}, 'last offset'), h('dd', {}, num(c.offset)), h('dt', {}, 'epoch'), h('dd', { class: 'mono' }, c.epoch)] : null,
    ),
    h('h3', {}, 'Presence'),
    c.presence.length ? h('ul', { class: 'presence' }, presence) : h('p', { class: 'muted empty' }, name.startsWith('system:') ? 'System channels carry no presence.' : 'Nobody.'),
    h('h3', {}, 'Members on this node'),
    table(['connection', 'user'], members, 'None.'),
  );
}

/** The live tail: subscribes the dashboard's connection on demand and lists what arrives. */
function tailPanel(ctx, { name, tenant }, stops, membersChanged) {
  const log = h('ol', { class: 'tail', id: 'tail', reversed: true });
  const state = h('span', { class: 'muted', id: 'tail-state' });
  const button = h('button', { type: 'button', id: 'tail-toggle' }, 'Tail events');
  const box = panel('Live events', h('div', { class: 'inline-form' }, button, state), log);
  if (tenant) {
    button.disabled = true;
    fill(state, 'The dashboard connects in the default tenant: it cannot follow another tenant’s channel.');
    return box;
  }
  let off = null;
  let tailing = false;

  const stop = () => {
    off?.();
    off = null;
    if (tailing && name !== SETTINGS_CHANNEL) ctx.live.then((client) => client?.unsubscribe(name).catch(() => {}));
    tailing = false;
    button.textContent = 'Tail events';
    fill(state, 'Stopped.');
  };

  const start = async () => {
    const client = await ctx.live;
    if (!client) {
      fill(state, 'Live updates are unavailable (see the status at the top).');
      return;
    }
    button.disabled = true;
    fill(state, 'Subscribing…');
    off = client.on('*', (frame) => {
      if (frame.channel !== name) return;
      log.prepend(entry(frame));
      while (log.children.length > TAIL_KEPT) log.lastChild.remove();
      if (frame.type === 'channel.presence' || frame.type === 'channel.subscribed') membersChanged();
    });
    try {
      await client.subscribe(name);
      tailing = true;
      button.textContent = 'Stop';
      fill(state, name === SETTINGS_CHANNEL ? 'Following.' : 'Following (as user nova:admin: members see it in the presence).');
      box.dataset.tailing = 'true';
    } catch (error) {
      off?.();
      off = null;
      fill(state, `Cannot subscribe: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  };

  button.addEventListener('click', () => (tailing ? stop() : start()));
  stops.push(() => {
    if (tailing || off) stop();
  });
  return box;
}

function entry(frame) {
  const data = JSON.stringify(frame.data ?? null);
  return h(
    'li',
    { dataset: { type: frame.type, id: frame.id || '' } },
    h('span', { class: 'tail-time' }, time(frame.timestamp)),
    h('span', { class: 'tail-type' }, frame.type),
    frame.offset !== undefined ? h('span', { class: 'muted' }, `#${frame.offset}`) : null,
    h('code', { class: 'tail-data' }, data.length > 2000 ? `${data.slice(0, 2000)}…` : data),
  );
}

/** Sends a test event to the channel through the REST API. */
function publishPanel(ctx, { name, tenant }) {
  const type = h('input', { id: 'publish-type', value: 'dashboard.test', spellcheck: 'false', required: true });
  const data = h('textarea', { id: 'publish-data', rows: 4, spellcheck: 'false' });
  data.value = '{"text": "hello from the dashboard"}';
  const result = h('p', { id: 'publish-result', role: 'status' });
  const form = h(
    'form',
    { class: 'stacked-form', id: 'publish-form' },
    h('label', { for: 'publish-type' }, 'Type'),
    type,
    h('label', { for: 'publish-data' }, 'Data (a JSON object)'),
    data,
    h('div', {}, h('button', { type: 'submit' }, 'Publish')),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let payload;
    try {
      payload = JSON.parse(data.value || '{}');
    } catch (error) {
      fill(result, h('span', { class: 'error' }, `Data is not JSON: ${error.message}`));
      return;
    }
    const body = { channel: name, type: type.value.trim(), data: payload };
    if (tenant) body.tenant = tenant;
    try {
      const answer = await ctx.api('POST', '/api/publish', body);
      fill(result, h('span', { class: 'ok' }, `Published ${answer.id}.`));
    } catch (error) {
      const fields = error.body?.error?.fields;
      fill(
        result,
        h('span', { class: 'error' }, `Refused (${error.code}): ${error.message}`),
        fields ? h('ul', { class: 'errors' }, fields.map((f) => h('li', {}, `${f.field}: ${f.rule ?? f.message ?? ''}`))) : null,
      );
    }
  });
  return panel(`Send a test event to ${name}`, form);
}
