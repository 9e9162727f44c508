// The harness itself: a server starts, answers, restarts on the same port,
// and the system's Chromium opens one of its pages.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer, chromiumPath } from './harness.mjs';

const server = await startServer();
after(() => server.stop());

test('the server answers, and again on the same port after a restart', async () => {
  const port = server.port;
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  await server.restart();
  assert.equal(server.port, port);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('headless Chromium reads a page of the server', async () => {
  const browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const res = await page.goto(`${server.url}/health`);
    assert.equal(res.status(), 200);
    assert.match(await page.textContent('body'), /"status"/);
  } finally {
    await browser.close();
  }
});
