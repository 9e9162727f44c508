// The admin dashboard in a real headless Chromium against the real server:
// sign in with the admin token, see a connection this test opened from
// Node, filter and disconnect it, tail a channel and publish to it, toggle
// an MCP server (the file on disk changes) and see a change made on disk,
// and see invalid YAML reported at its line. Every page is photographed into
// SCREENSHOTS (target/screenshots/dashboard-*.png). Nothing here sleeps: it
// awaits what the page shows, or what the server or the file says.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, chromiumPath, jwt, ADMIN_TOKEN, SCREENSHOTS } from './harness.mjs';

// Configured mode (an admin token and a JWT secret, no development key, no
// localhost exception): the dashboard's WebSocket is allowed as a page of
// the server itself.
const server = await startServer();
const mcpFile = join(server.configDir, 'mcp_servers.yaml');
const promptFile = join(server.promptsDir, 'NOVA_SYSTEM_PROMPT.md');
const TIMEOUT = 20000;

let browser;
let page;
const pageErrors = [];
const sockets = [];

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (error) => pageErrors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // A blocked script, style or connection is reported on the console
    // only. (Refused REST calls log "Failed to load resource": expected.)
    if (/Content Security Policy|Refused to/.test(message.text())) pageErrors.push(`console: ${message.text()}`);
  });
});

after(async () => {
  for (const socket of sockets) socket.ws.close();
  await browser?.close();
  await server.stop();
});

/**
 * A WebSocket from Node, authenticated with a JWT for `user` and subscribed
 * to `channels`: `next(match)` resolves with the first frame `match` accepts
 * (received already or later), `closed` with the close event's code.
 */
async function nodeSocket(user, channels = []) {
  if (typeof WebSocket !== 'function') throw new Error('run Node 22+, or Node 20 with --experimental-websocket');
  const ws = new WebSocket(server.wsUrl);
  const frames = [];
  const waiters = new Set();
  ws.addEventListener('message', (message) => {
    const frame = JSON.parse(message.data);
    frames.push(frame);
    for (const waiter of waiters) {
      if (waiter.match(frame)) {
        waiters.delete(waiter);
        waiter.resolve(frame);
      }
    }
  });
  const closed = new Promise((resolve) => ws.addEventListener('close', (event) => resolve(event.code)));
  const next = (match) => {
    const seen = frames.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => waiters.add({ match, resolve }));
  };
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve, { once: true });
    ws.addEventListener('error', () => reject(new Error('the WebSocket did not open')), { once: true });
  });
  const token = jwt({ sub: user, channels: ['conversation:*'] });
  ws.send(JSON.stringify({ id: 'init', type: 'connection.init', data: { token } }));
  const ack = await next((f) => f.reply_to === 'init');
  assert.equal(ack.type, 'connection.ack', JSON.stringify(ack));
  if (channels.length) {
    ws.send(JSON.stringify({ id: 'sub', type: 'channel.subscribe', data: { channels } }));
    for (const channel of channels) await next((f) => f.type === 'channel.subscribed' && f.channel === channel);
  }
  const socket = { ws, next, closed, id: ack.data.connection_id };
  sockets.push(socket);
  return socket;
}

/** Waits until some element matching `selector` contains `text`. */
const waitForText = (selector, text) =>
  page.waitForFunction(
    ([s, t]) => [...document.querySelectorAll(s)].some((e) => e.textContent.includes(t)),
    [selector, text],
  );

/** A full-page screenshot, from the top (the header is sticky). */
async function shot(name) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SCREENSHOTS, `dashboard-${name}.png`), fullPage: true });
}

test('the page is served with a strict policy and holds no data', async () => {
  const res = await fetch(`${server.url}/dashboard`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const policy = res.headers.get('content-security-policy');
  assert.match(policy, /default-src 'none'/);
  assert.match(policy, /script-src 'self';/);
  assert.match(policy, new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${server.port} wss://127\\.0\\.0\\.1:${server.port};`));
  assert.doesNotMatch(policy, /unsafe/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.doesNotMatch(await res.text(), /<script>|style=/, 'no inline script or style');
  const module = await fetch(`${server.url}/dashboard/dashboard.js`);
  assert.match(module.headers.get('content-type'), /^text\/javascript/);
  const missing = await fetch(`${server.url}/dashboard/secrets.txt`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, 'not_found');
  const revalidated = await fetch(`${server.url}/dashboard`, { headers: { 'if-none-match': res.headers.get('etag') } });
  assert.equal(revalidated.status, 304);
});

test('sign in: a wrong token is refused, the right one is kept for this tab only', async () => {
  await page.goto(`${server.url}/dashboard`);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button');
  await waitForText('#login-error', 'refused');
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('#login-form button');
  await page.waitForSelector('#nav:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('nova-dashboard.admin-token')), ADMIN_TOKEN);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.ok(!page.url().includes(ADMIN_TOKEN), page.url());
  // The live connection: the client module, the admin token as its API key.
  await page.waitForSelector('#live[data-status=connected]');
  // A reload keeps the session.
  await page.reload();
  await page.waitForSelector('#nav:not([hidden])');
  await page.waitForSelector('#live[data-status=connected]');
});

test('the overview shows a connection opened from Node, live', async () => {
  const socket = await nodeSocket('node-watcher', ['conversation:overview']);
  await page.goto(`${server.url}/dashboard#/overview`);
  // The dashboard's own connection and the test's.
  await page.waitForFunction(() => document.querySelector('[data-stat=connections] .stat-value')?.textContent === '2');
  await page.waitForSelector(`tr[data-connection="${socket.id}"] td.user >> text=node-watcher`);
  await waitForText('.legend', 'in ');
  await waitForText('.figures dt', 'p99');
  await waitForText('.panel', 'this node');
  // Traffic for the chart: a burst of events per sample, for five samples.
  const samples = () => page.$eval('canvas.chart', (c) => Number(c.dataset.samples || 0));
  for (let round = 1; round <= 5; round++) {
    const seen = await samples();
    await Promise.all(
      Array.from({ length: 10 * round }, (_, n) => server.publish('conversation:overview', 'demo.tick', { n })),
    );
    await page.waitForFunction((n) => Number(document.querySelector('canvas.chart').dataset.samples) > n, seen);
  }
  await page.waitForFunction(() => Number(document.querySelector('[data-stat=published] .stat-value').textContent.replace(/,/g, '')) >= 150);
  await shot('overview');
});

test('connections: filter by user, then disconnect one, which closes the test’s socket', async () => {
  const victim = await nodeSocket('kick-me');
  const bystander = await nodeSocket('stays');
  await page.goto(`${server.url}/dashboard#/connections`);
  await page.waitForSelector(`tr[data-connection="${victim.id}"]`);
  await page.waitForSelector(`tr[data-connection="${bystander.id}"]`);
  await shot('connections');
  await page.fill('#user-filter', 'kick-me');
  await page.press('#user-filter', 'Enter');
  await page.waitForFunction(() => location.hash === '#/connections/kick-me');
  await page.waitForFunction(
    (id) => {
      const rows = [...document.querySelectorAll('tr[data-connection]')];
      return rows.length === 1 && rows[0].dataset.connection === id;
    },
    victim.id,
  );
  const row = `tr[data-connection="${victim.id}"]`;
  await page.click(`${row} button`);
  await page.click(`${row} button.armed`);
  const notice = await victim.next((f) => f.type === 'connection.error');
  assert.equal(notice.data.code, 4011);
  assert.equal(notice.data.reconnect, false);
  assert.equal(await victim.closed, 4011);
  await waitForText('#connections-list', 'No connection of kick-me');
  // The other one is untouched.
  bystander.ws.send(JSON.stringify({ id: 'hb', type: 'connection.heartbeat', data: {} }));
  await bystander.next((f) => f.reply_to === 'hb');
});

test('channels: members and presence, a live tail, and a test event', async () => {
  const member = await nodeSocket('tail-member', ['conversation:dash']);
  await page.goto(`${server.url}/dashboard#/channels`);
  await page.waitForSelector('#channel-list tr[data-channel="conversation:dash"]');
  await page.click('#channel-list tr[data-channel="conversation:dash"] a');
  await page.waitForFunction(() => location.hash === '#/channels/conversation:dash');
  await waitForText('#channel-details .presence', 'tail-member');
  await waitForText('#channel-details', member.id);

  await page.click('#tail-toggle');
  await waitForText('#tail-state', 'Following');
  // Published by a backend through REST: it appears in the tail.
  await server.publish('conversation:dash', 'demo.note', { text: 'from the test' });
  await page.waitForSelector('#tail li[data-type="demo.note"] >> text=from the test');
  // Published from the page's form: the tail and the member both get it.
  await page.fill('#publish-type', 'dashboard.test');
  await page.fill('#publish-data', '{"text": "from the form"}');
  await page.click('#publish-form button[type=submit]');
  await waitForText('#publish-result', 'Published');
  await page.waitForSelector('#tail li[data-type="dashboard.test"] >> text=from the form');
  const got = await member.next((f) => f.type === 'dashboard.test');
  assert.equal(got.data.text, 'from the form');
  // A refused event shows why.
  await page.fill('#publish-data', '[1, 2]');
  await page.click('#publish-form button[type=submit]');
  await waitForText('#publish-result', 'Refused');
  await shot('channels');
  await page.click('#tail-toggle');
  await waitForText('#tail-state', 'Stopped');
});

test('settings: a toggle edits mcp_servers.yaml, and an edit on disk appears live', async () => {
  await page.goto(`${server.url}/dashboard#/settings`);
  const gmail = 'tr[data-server=gmail]';
  await page.waitForSelector(`${gmail}[data-enabled=true]`);
  await page.click(`${gmail} .switch input`);
  // The row follows the file: it flips once the server has reloaded it.
  await page.waitForSelector(`${gmail}[data-enabled=false]`);
  assert.match(readFileSync(mcpFile, 'utf8'), /^ {2}enabled: false$/m);
  await waitForText('#last-change', 'mcp_toggled');

  // Edited on disk, as an operator with an editor would.
  const edited = readFileSync(mcpFile, 'utf8')
    .replace(/^ {2}enabled: false$/m, '  enabled: true')
    .replace(/description: .*/, 'description: Edited on disk by the test');
  writeFileSync(mcpFile, edited);
  await page.waitForSelector(`${gmail}[data-enabled=true] >> text=Edited on disk by the test`);
  assert.equal(await page.isChecked(`${gmail} .switch input`), true);

  // Toggled elsewhere (another tab, a script): the page follows too.
  const toggled = await server.admin('PUT', '/api/mcp/gmail/toggle', { enabled: false });
  assert.equal(toggled.status, 200, JSON.stringify(toggled.body));
  await page.waitForSelector(`${gmail}[data-enabled=false]`);
  assert.equal(await page.isChecked(`${gmail} .switch input`), false);
  await server.admin('PUT', '/api/mcp/gmail/toggle', { enabled: true });
  await page.waitForSelector(`${gmail}[data-enabled=true]`);
  await page.waitForSelector('#backups tr[data-backup]');
});

test('settings: invalid YAML is shown with its line, on disk and in the checker; the prompt saves and follows the disk', async () => {
  await page.goto(`${server.url}/dashboard#/settings`);
  await page.waitForSelector('tr[data-server=gmail]');
  const good = readFileSync(mcpFile, 'utf8');
  const lines = good.split('\n');
  const urlLine = lines.findIndex((l) => l.trim().startsWith('url:')) + 1;
  lines[urlLine - 1] = '  url: not-a-url';
  writeFileSync(mcpFile, lines.join('\n'));
  await waitForText('#mcp-invalid', `line ${urlLine}`);
  await waitForText('#mcp-invalid', 'gmail.url');
  await shot('settings-invalid');
  // The last good servers are still listed.
  await page.waitForSelector('tr[data-server=gmail]');

  await page.fill('#validate-text', 'gmail:\n  url: http://localhost:8002/mcp\n  health_url: nope\n  colour: blue\n');
  await page.click('#validate-result >> xpath=.. >> button[type=submit]');
  await waitForText('#validate-result li', 'line 3');
  await waitForText('#validate-result li', 'line 4');
  await page.click('#validate-result li[data-line="3"] button');
  const selected = await page.evaluate(() => {
    const t = document.getElementById('validate-text');
    return t.value.slice(t.selectionStart, t.selectionEnd);
  });
  assert.equal(selected, '  health_url: nope');

  writeFileSync(mcpFile, good);
  await page.waitForFunction(() => !document.getElementById('mcp-invalid'));

  // The prompt: saved from the page, then changed on disk.
  await page.fill('#prompt', 'You are Nova, saved from the dashboard.');
  await page.click('#prompt-save');
  await waitForText('#prompt-status', 'Saved');
  assert.equal(readFileSync(promptFile, 'utf8'), 'You are Nova, saved from the dashboard.');
  writeFileSync(promptFile, 'You are Nova, edited on disk.');
  await page.waitForFunction(() => document.getElementById('prompt').value === 'You are Nova, edited on disk.');
  await shot('settings');
});

test('the pages raised no error and the policy blocked nothing', () => {
  assert.deepEqual(pageErrors, []);
});
