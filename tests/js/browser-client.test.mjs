// The JavaScript client in a real headless Chromium: clients/js/example.html
// (the README's page, served as it is from another origin, as a frontend's
// dev server would) imports the module from the server, authenticates,
// subscribes, shows a published event and a streamed answer, and survives a
// server restart. A second client in the page authenticates with a JWT.
// Screenshots go to SCREENSHOTS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, chromiumPath, jwt, root, SCREENSHOTS } from './harness.mjs';

const example = readFileSync(join(root, 'clients', 'js', 'example.html'));

// The page's own origin: a static server on another port.
const pages = createServer((req, res) => {
  if (req.url.split('?')[0] !== '/example.html') return res.writeHead(404).end();
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(example);
});
await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve));
const pageOrigin = `http://127.0.0.1:${pages.address().port}`;

// Development mode, as the README's walk-through runs it: the development
// API key is accepted, and pages on 127.0.0.1 may open WebSockets.
const server = await startServer({ args: ['--development'] });
let browser;
let page;
const pageErrors = [];

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  page.on('pageerror', (error) => pageErrors.push(error.message));
});

after(async () => {
  await browser?.close();
  await server.stop();
  await new Promise((resolve) => pages.close(resolve));
});

const status = () => page.textContent('[data-testid=status]');
const waitForText = (selector, text) =>
  page.waitForFunction(
    ([s, t]) => [...document.querySelectorAll(s)].some((e) => e.textContent.includes(t)),
    [selector, text],
    { timeout: 20000 },
  );

test('the example page imports the client from the server, connects and subscribes', async () => {
  const response = await page.goto(`${pageOrigin}/example.html?server=${encodeURIComponent(server.url)}`);
  assert.equal(response.status(), 200);
  await page.waitForSelector('body[data-subscribed=true]', { timeout: 20000 });
  assert.equal(await status(), 'connected');
  const state = await page.evaluate(() => window.nova.state.get());
  assert.equal(state.userId, 'alice');
  // The module came from the server, cross-origin.
  const moduleUrl = await page.evaluate(() =>
    performance.getEntriesByType('resource').map((e) => e.name).find((n) => n.endsWith('/client/nova-realtime.js')),
  );
  assert.equal(moduleUrl, `${server.url}/client/nova-realtime.js`);
});

test('a published event and a streamed answer appear in the page', async () => {
  await server.publish('conversation:demo', 'task_updated', { task_id: 'T-1', status: 'in_progress' });
  await waitForText('[data-testid=events] li', '"task_id":"T-1"');
  for (const [chunk, last] of [
    ['The answer ', false],
    ['is ', false],
    ['42.', true],
  ]) {
    await server.publish('conversation:demo', 'assistant.token', { stream_id: 'a1', chunk, is_final: last });
  }
  await page.waitForSelector('.answer.done[data-stream-id=a1]', { timeout: 20000 });
  assert.equal(await page.textContent('[data-stream-id=a1]'), 'The answer is 42.');
  assert.equal(await page.locator('.answer').count(), 1, 'one growing answer, not one per chunk');
  await page.screenshot({ path: join(SCREENSHOTS, 'client-example-answer.png'), fullPage: true });
});

test('the page survives a server restart: reconnects, says what it missed, and shows new events', async () => {
  const before = await page.evaluate(() => window.nova.state.get().connectionId);
  await server.restart();
  await page.waitForFunction(
    (old) => window.nova.state.get().connected && window.nova.state.get().connectionId !== old,
    before,
    { timeout: 30000 },
  );
  assert.equal(await status(), 'connected');
  const history = await page.evaluate(() => window.nova.state.get().history);
  assert.ok(
    history.some((h) => h.status === 'reconnecting' && h.code === 1012),
    `a reconnect after 1012: ${JSON.stringify(history)}`,
  );
  // The restarted server's history is new: the page is told to reload.
  await waitForText('[data-testid=notice]', 'may have been missed');
  await server.publish('conversation:demo', 'task_updated', { task_id: 'T-2', status: 'done' });
  await waitForText('[data-testid=events] li', '"task_id":"T-2"');
  await server.publish('conversation:demo', 'assistant.token', { stream_id: 'a2', chunk: 'Back again.', is_final: true });
  await page.waitForSelector('.answer.done[data-stream-id=a2]', { timeout: 20000 });
  await page.screenshot({ path: join(SCREENSHOTS, 'client-example-after-restart.png'), fullPage: true });
});

test('in the page, a client with getToken (a JWT) subscribes and gets an answer in progress whole', async () => {
  await server.publish('conversation:jwt', 'assistant.token', { stream_id: 'b1', chunk: 'Half ' });
  const token = jwt({ sub: 'bob', channels: ['conversation:*'] });
  const running = page.evaluate(
    async ({ url, token }) => {
      const { NovaClient } = await import(`${url}/client/nova-realtime.js`);
      const client = new NovaClient({ url: `${url.replace(/^http/, 'ws')}/ws`, getToken: async () => token });
      const texts = [];
      const finished = new Promise((resolve) =>
        client.on('answer', (a) => {
          texts.push(a.text);
          if (a.done) resolve();
        }),
      );
      client.connect();
      const subscribed = await client.subscribe('conversation:jwt');
      window.bobReady = true;
      await finished;
      const state = client.state.get();
      client.close();
      return { texts, user: state.userId, presence: subscribed.presence, expiresAt: state.expiresAt };
    },
    { url: server.url, token },
  ).catch((e) => ({ error: String(e) }));
  // The page waits for the answer's end: publish it once bob is in.
  await page.waitForFunction(() => window.bobReady === true, null, { timeout: 20000 });
  await server.publish('conversation:jwt', 'assistant.token', { stream_id: 'b1', chunk: 'done.', is_final: true });
  const result = await running;
  assert.ok(!result?.error, result?.error);
  assert.equal(result.user, 'bob');
  assert.ok(result.expiresAt);
  assert.deepEqual(result.texts, ['Half ', 'Half done.']);
});

test('no uncaught error in the page', () => {
  assert.deepEqual(pageErrors, []);
});
