// An operator points a real Prometheus (Debian's `prometheus`, which
// scripts/test-js installs) at GET /metrics with the metrics token: it
// scrapes the node without error and a query returns what the node counts.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, WebSocket, ADMIN_TOKEN } from './harness.mjs';

const METRICS_TOKEN = 'prometheus-scrape-token-0123456789';
const server = await startServer({ env: { NOVA_METRICS_TOKEN: METRICS_TOKEN } });

/** A port nothing listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'nova-prometheus-'));
const port = await freePort();
writeFileSync(
  join(dir, 'prometheus.yml'),
  `global:
  scrape_interval: 1s
scrape_configs:
  - job_name: nova
    authorization:
      credentials: ${METRICS_TOKEN}
    static_configs:
      - targets: ["127.0.0.1:${server.port}"]
`,
);
const prometheus = spawn(
  process.env.PROMETHEUS || 'prometheus',
  [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
  ],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
let log = '';
prometheus.stderr.setEncoding('utf8');
prometheus.stderr.on('data', (chunk) => {
  log = (log + chunk).slice(-20000);
});
const exited = new Promise((resolve) => prometheus.once('exit', resolve));

after(async () => {
  prometheus.kill('SIGKILL');
  await exited;
  rmSync(dir, { recursive: true, force: true });
  await server.stop();
});

/** Polls `probe` until it returns a value, for up to `ms`. */
async function eventually(what, probe, ms = 30000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last !== undefined) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: not within ${ms} ms (last: ${last}); prometheus said:\n${log}`);
}

/** One instant query's single value, or undefined while it has none. */
async function query(expr) {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = await res.json();
  const result = body?.data?.result ?? [];
  return result.length === 1 ? Number(result[0].value[1]) : undefined;
}

test('Prometheus scrapes /metrics with the metrics token and reads the counters', async () => {
  // A client the node will count.
  const ws = new WebSocket(server.wsUrl);
  const acked = new Promise((resolve, reject) => {
    ws.onmessage = (m) => {
      const frame = JSON.parse(typeof m.data === 'string' ? m.data : m.data.toString());
      if (frame.type === 'connection.ack') resolve(frame);
      if (frame.type === 'error') reject(new Error(JSON.stringify(frame)));
    };
    ws.onerror = () => reject(new Error('the WebSocket failed'));
  });
  await new Promise((resolve) => (ws.onopen = resolve));
  ws.send(JSON.stringify({ id: 'init-1', type: 'connection.init', data: { api_key: ADMIN_TOKEN } }));
  await acked;

  // The target is up, and its last scrape had no error.
  const target = await eventually('a healthy target', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/targets`);
    const active = (await res.json()).data.activeTargets;
    const nova = active.find((t) => t.labels.job === 'nova');
    return nova?.health === 'up' ? nova : undefined;
  });
  assert.equal(target.lastError, '');
  // What the node counts, as Prometheus stored it: the connection open
  // now, and its connection.init among the frames received.
  assert.equal(await eventually('nova_connections = 1', async () => ((await query('nova_connections')) === 1 ? 1 : undefined)), 1);
  const inits = await eventually('frames in', () => query('nova_messages_in_total{family="connection"}'));
  assert.ok(inits >= 1, `nova_messages_in_total{family="connection"} = ${inits}`);
  const buckets = await eventually('the histogram', () => query('count(nova_publish_write_seconds_bucket)'));
  assert.ok(buckets >= 10, `${buckets} buckets`);
  ws.close();

  // The token is what let it in: without it, 401.
  const res = await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer wrong' } });
  assert.equal(res.status, 401);
});

