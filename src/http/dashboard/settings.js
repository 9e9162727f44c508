// Settings (seed 002's settings page): the MCP servers with live health and
// toggles, the agents with availability and toggles, the system prompt in
// an editor, a checker for the YAML files that shows each error at its
// line, and the backups with restore.
//
// Every change, made here, in another tab or in the file on disk, reaches
// the page the same way: the server publishes it on `system:settings`
// (docs/settings.md) and the page reloads what the event is about. A toggle
// therefore shows its new state when the file has changed, not before.

import { h, fill, num, bytes, time, ago, badge, panel, table, confirmButton, toast, repeat } from './dom.js';

export const title = 'Settings';

const MCP_FILE = 'mcp_servers.yaml';
const AGENTS_FILE = 'agents.yaml';

/** `line 3 · gmail.url: must be an http(s) URL`. */
function describe(error) {
  const place = [error.server, error.field].filter(Boolean).join('.');
  const where = error.line ? `line ${error.line}` : null;
  return [where, place ? `${place}: ${error.message}` : error.message].filter(Boolean).join(' · ');
}

function errorList(errors, onPick) {
  return h(
    'ul',
    { class: 'errors' },
    errors.map((e) =>
      h(
        'li',
        { dataset: { line: e.line ?? '' } },
        onPick && e.line ? h('button', { type: 'button', class: 'link', onclick: () => onPick(e.line) }, describe(e)) : describe(e),
      ),
    ),
  );
}

/**
 * A reload now and then besides the events: health ages ("checked 5 s
 * ago"), and without the live connection the page still catches up.
 */
const REFRESH_EVERY_MS = 15000;

/** A switch that asks the server and shows what the file says, not what was clicked. */
function toggle(label, enabled, change) {
  const input = h('input', { type: 'checkbox', role: 'switch', checked: enabled, 'aria-label': label });
  input.addEventListener('change', async () => {
    const wanted = input.checked;
    input.disabled = true;
    try {
      await change(wanted);
    } catch (error) {
      input.checked = !wanted;
      toast(`${label}: ${error.message}`, 'error');
    } finally {
      input.disabled = false;
    }
  });
  return h('label', { class: 'switch' }, input, h('span', { class: 'switch-track' }));
}

export function mount(root, ctx) {
  const lastChange = h('p', { class: 'muted', id: 'last-change' }, 'Live: changes made anywhere appear here as they happen.');
  const mcp = h('div', { id: 'mcp' });
  const agents = h('div', { id: 'agents' });
  const backups = h('div', { id: 'backups' });
  const prompt = promptEditor(ctx);
  const checker = yamlChecker(ctx);
  fill(
    root,
    lastChange,
    panel('MCP servers', mcp),
    panel('Agents', agents),
    panel('System prompt', prompt.element),
    panel('Check a settings file', checker.element),
    panel('Backups', backups),
  );

  let servers = [];

  async function loadMcp() {
    let answer;
    try {
      answer = await ctx.api('GET', '/api/mcp');
    } catch (error) {
      fill(mcp, h('p', { class: 'error' }, `MCP servers unavailable: ${error.message}`));
      return;
    }
    servers = answer.servers;
    checker.setServers(servers);
    const rows = servers.map((s) => {
      const health = s.health || {};
      return h(
        'tr',
        { dataset: { server: s.name, enabled: String(s.enabled), health: health.status } },
        h('td', {}, h('strong', {}, s.name), s.description ? h('div', { class: 'muted small' }, s.description) : null),
        h('td', { class: 'mono small' }, s.url),
        h(
          'td',
          { title: health.last_error || '' },
          badge(health.status || 'unknown'),
          health.latency_ms != null ? h('span', { class: 'muted small' }, ` ${num(health.latency_ms)} ms`) : null,
          health.last_error ? h('div', { class: 'muted small' }, health.last_error) : null,
        ),
        h('td', { class: 'small' }, health.checked_at ? ago(health.checked_at) : '–'),
        h(
          'td',
          {},
          toggle(`Enable ${s.name}`, s.enabled, (enabled) =>
            ctx.api('PUT', `/api/mcp/${encodeURIComponent(s.name)}/toggle`, { enabled }),
          ),
        ),
      );
    });
    fill(
      mcp,
      answer.valid
        ? null
        : h(
            'div',
            { class: 'banner banner-error', id: 'mcp-invalid', role: 'alert' },
            h('strong', {}, `${MCP_FILE} on disk is invalid.`),
            ' The server keeps using the last good servers below until it is fixed.',
            errorList(answer.errors),
          ),
      table(['server', 'url', 'health', 'checked', 'enabled'], rows, `No servers in ${MCP_FILE}.`),
    );
  }

  async function loadAgents() {
    let answer;
    try {
      answer = await ctx.api('GET', '/api/agents');
    } catch (error) {
      fill(agents, h('p', { class: 'error' }, `Agents unavailable: ${error.message}`));
      return;
    }
    const rows = answer.agents.map((a) =>
      h(
        'tr',
        { dataset: { agent: a.name, enabled: String(a.enabled) } },
        h('td', {}, h('strong', {}, a.name), a.description ? h('div', { class: 'muted small' }, a.description) : null),
        h('td', { class: 'small' }, a.receives.join(', ')),
        h('td', { class: 'small' }, a.delivery, a.url ? h('div', { class: 'mono muted' }, a.url) : null),
        h(
          'td',
          {},
          badge(a.available ? 'available' : 'unavailable'),
          a.reason ? h('div', { class: 'muted small' }, a.reason) : null,
        ),
        h('td', { class: 'num' }, a.delivery === 'webhook' ? num(a.queued) : '–'),
        h(
          'td',
          {},
          toggle(`Enable ${a.name}`, a.enabled, (enabled) =>
            ctx.api('PUT', `/api/agents/${encodeURIComponent(a.name)}/toggle`, { enabled }),
          ),
        ),
      ),
    );
    fill(
      agents,
      answer.valid
        ? null
        : h(
            'div',
            { class: 'banner banner-error', id: 'agents-invalid', role: 'alert' },
            h('strong', {}, `${AGENTS_FILE} on disk is invalid.`),
            ' The gateway keeps the last good agents until it is fixed.',
            errorList(answer.errors),
          ),
      table(['agent', 'receives', 'delivery', 'availability', 'queued', 'enabled'], rows, `No agents in ${AGENTS_FILE} (docs/gateway.md).`),
    );
  }

  async function loadBackups() {
    let answer;
    try {
      answer = await ctx.api('GET', '/api/config/backups');
    } catch (error) {
      fill(backups, h('p', { class: 'error' }, `Backups unavailable: ${error.message}`));
      return;
    }
    const rows = answer.backups.map((b) =>
      h(
        'tr',
        { dataset: { backup: b.id } },
        h('td', { class: 'mono small' }, b.id),
        h('td', {}, b.file),
        h('td', {}, time(b.created)),
        h('td', { class: 'num' }, bytes(b.bytes)),
        h(
          'td',
          {},
          confirmButton('Restore', 'Confirm restore', async () => {
            try {
              const done = await ctx.api('POST', `/api/config/restore/${encodeURIComponent(b.id)}`);
              toast(`Restored ${done.file} from ${done.restored}.`);
            } catch (error) {
              toast(`Restore failed: ${error.message}`, 'error');
            }
            loadBackups();
          }, { class: 'small' }),
        ),
      ),
    );
    fill(
      backups,
      h('p', { class: 'muted small' }, 'Every write (toggle, prompt, restore) backs the old file up first. Restoring puts a backup back, which is itself a change every client hears of.'),
      table(['backup', 'file', 'taken', 'size', ''], rows, 'No backups yet: one is taken before each change.'),
    );
  }

  const stops = [];
  const on = (type, fn) => stops.push(ctx.on(type, (frame) => {
    fill(lastChange, `Last change: ${frame.type} at ${time(frame.timestamp)}.`);
    fn(frame);
  }));
  on('config_validated', (frame) => {
    if (frame.data?.file === AGENTS_FILE) loadAgents();
    else loadMcp();
    loadBackups();
  });
  on('mcp_toggled', () => loadMcp());
  on('system_health', () => loadMcp());
  on('agent_toggled', () => loadAgents());
  on('agent_availability', () => loadAgents());
  on('prompt_updated', (frame) => {
    prompt.changed(frame.data || {});
    loadBackups();
  });

  stops.push(repeat(() => Promise.all([loadMcp(), loadAgents(), loadBackups()]), REFRESH_EVERY_MS));
  stops.push(
    ctx.onReconnected(() => {
      fill(lastChange, 'Live again after a lost connection: reloaded.');
      loadMcp();
      loadAgents();
      loadBackups();
      prompt.changed({});
    }),
  );
  prompt.load();
  return () => stops.forEach((stop) => stop());
}

/** The prompt in a textarea: save, and news of changes made elsewhere without losing unsaved edits. */
function promptEditor(ctx) {
  const text = h('textarea', { id: 'prompt', rows: 14, spellcheck: 'false', 'aria-label': 'System prompt' });
  const meta = h('p', { class: 'muted small', id: 'prompt-meta' });
  const notice = h('div', { class: 'banner', id: 'prompt-notice', hidden: true });
  const save = h('button', { type: 'button', id: 'prompt-save' }, 'Save');
  const status = h('span', { class: 'muted', id: 'prompt-status', role: 'status' });
  let hash = null;
  let dirty = false;

  const showMeta = (p) =>
    fill(meta, `${p.file ?? 'NOVA_SYSTEM_PROMPT.md'} · ${bytes(p.bytes)} · version ${p.version ?? '–'} · ${String(p.hash || '').slice(0, 19)}${p.updated_at ? ` · updated ${time(p.updated_at)}` : ''}`);

  async function load() {
    try {
      const p = await ctx.api('GET', '/api/prompt');
      text.value = p.content;
      hash = p.hash;
      dirty = false;
      notice.hidden = true;
      fill(status);
      showMeta(p);
    } catch (error) {
      fill(status, h('span', { class: 'error' }, `Prompt unavailable: ${error.message}`));
    }
  }

  text.addEventListener('input', () => {
    dirty = true;
    fill(status, 'Unsaved changes.');
  });

  save.addEventListener('click', async () => {
    save.disabled = true;
    try {
      const answer = await ctx.api('PUT', '/api/prompt', { content: text.value });
      hash = answer.hash;
      dirty = false;
      notice.hidden = true;
      fill(status, h('span', { class: 'ok' }, `Saved (${bytes(answer.bytes)}).`));
    } catch (error) {
      fill(status, h('span', { class: 'error' }, `Not saved: ${error.message}`));
    } finally {
      save.disabled = false;
    }
  });

  /** A `prompt_updated` event: taken at once unless there are unsaved edits, which are never overwritten. */
  function changed(data) {
    if (data.hash && data.hash === hash) {
      showMeta({ ...data, updated_at: null });
      return;
    }
    if (!dirty) {
      load();
      return;
    }
    fill(
      notice,
      'The prompt was changed elsewhere while you were editing. ',
      h('button', { type: 'button', class: 'link', onclick: load }, 'Load it (discards your edits)'),
    );
    notice.hidden = false;
  }

  const element = h('div', {}, notice, text, h('div', { class: 'inline-form' }, save, status), meta);
  return { element, load, changed };
}

/** A YAML editor checked by `POST /api/config/validate`: every error with its line, a click selects it. */
function yamlChecker(ctx) {
  const file = h(
    'select',
    { id: 'validate-file', 'aria-label': 'File' },
    h('option', { value: MCP_FILE }, MCP_FILE),
    h('option', { value: AGENTS_FILE }, AGENTS_FILE),
  );
  const text = h('textarea', { id: 'validate-text', rows: 10, spellcheck: 'false', 'aria-label': 'YAML to check' });
  const result = h('div', { id: 'validate-result', role: 'status' });
  let servers = [];

  const pick = (line) => {
    const lines = text.value.split('\n');
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    const end = start + (lines[line - 1] || '').length;
    text.focus();
    text.setSelectionRange(start, end);
    const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 18;
    text.scrollTop = Math.max(0, (line - 3) * lineHeight);
  };

  const fromServers = h('button', { type: 'button', class: 'link' }, 'Start from the servers in use');
  fromServers.addEventListener('click', () => {
    file.value = MCP_FILE;
    const q = JSON.stringify;
    text.value = servers
      .map((s) =>
        [`${q(s.name)}:`, `  url: ${q(s.url)}`, `  health_url: ${q(s.health_url)}`, `  description: ${q(s.description || '')}`, `  enabled: ${s.enabled}`].join('\n'),
      )
      .join('\n');
    fill(result);
  });

  const check = h('button', { type: 'submit' }, 'Check');
  const form = h(
    'form',
    { class: 'stacked-form' },
    h('div', { class: 'inline-form' }, h('label', { for: 'validate-file' }, 'As'), file, fromServers),
    text,
    h('div', {}, check, h('span', { class: 'muted small' }, ' Nothing is saved: edit the file, or use the toggles and backups.')),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    check.disabled = true;
    try {
      const answer = await ctx.api('POST', `/api/config/validate?file=${encodeURIComponent(file.value)}`, text.value);
      if (answer.valid) {
        const count = (answer.servers || answer.agents || []).length;
        fill(result, h('p', { class: 'ok' }, `Valid: ${count} ${file.value === MCP_FILE ? 'server' : 'agent'}${count === 1 ? '' : 's'}.`));
      } else {
        fill(result, h('p', { class: 'error' }, `${answer.errors.length} problem${answer.errors.length === 1 ? '' : 's'}:`), errorList(answer.errors, pick));
      }
    } catch (error) {
      fill(result, h('p', { class: 'error' }, `Cannot check: ${error.message}`));
    } finally {
      check.disabled = false;
    }
  });
  return { element: form, setServers: (list) => (servers = list) };
}
