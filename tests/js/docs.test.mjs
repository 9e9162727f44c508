// GET /docs in headless Chromium: the page renders the API's operations
// from /openapi.json with nothing but the server itself. Every request to
// another host is blocked and recorded; the test fails if there is one.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, chromiumPath, SCREENSHOTS } from './harness.mjs';

const server = await startServer();
after(() => server.stop());

test('the docs page renders every operation offline', async () => {
  const browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
    const origin = new URL(server.url).origin;
    const elsewhere = [];
    const failed = [];
    await page.route('**/*', (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin || url.startsWith('data:')) return route.continue();
      elsewhere.push(url);
      return route.abort('blockedbyclient');
    });
    page.on('requestfailed', (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));
    const errors = [];
    page.on('pageerror', (error) => errors.push(String(error)));

    const res = await page.goto(`${server.url}/docs`);
    assert.equal(res.status(), 200);
    // Swagger UI fetched the document and drew one block per operation.
    await page.locator('.opblock').first().waitFor({ timeout: 20000 });
    assert.match(await page.locator('.info .title').innerText(), /nova-realtime REST API/);
    const paths = await page.locator('.opblock-summary-path').allInnerTexts();
    const doc = await (await fetch(`${server.url}/openapi.json`)).json();
    const documented = Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).map(() => path));
    assert.equal(paths.length, documented.length, `rendered ${paths.length} operations of ${documented.length}`);
    for (const path of ['/api/publish', '/ws/metrics', '/api/prompt', '/metrics']) {
      assert.ok(
        paths.some((p) => p.replace(/\u200b/g, '') === path),
        `${path} is not on the page`,
      );
    }
    // The admin token can be entered: the page knows the bearer schemes.
    await page.locator('button.authorize').first().click();
    await page.locator('.modal-ux').waitFor();
    assert.match(await page.locator('.modal-ux').innerText(), /admin_token/);
    await page.locator('.modal-ux button.close-modal').click();

    await page.locator('.opblock-tag-section').first().waitFor();
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: join(SCREENSHOTS, 'docs.png'), fullPage: false });

    assert.deepEqual(elsewhere, [], 'the page asked another host');
    assert.deepEqual(errors, [], 'the page threw');
    assert.deepEqual(failed.filter((f) => !f.includes('favicon')), [], 'requests failed');
  } finally {
    await browser.close();
  }
});
