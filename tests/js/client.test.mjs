// The JavaScript client (clients/js/nova-realtime.js) in Node against the
// real server: authentication three ways, requests and their errors,
// reconnects after a restart (1012) and a crash, recovery with no gap,
// `recovered: false`, token refresh, streamed answers, and the backoff.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { NovaClient, NovaError, backoffDelay, closeAction } from '../../clients/js/nova-realtime.js';
import { startServer, jwt } from './harness.mjs';
import { Proxy } from './proxy.mjs';

const API_KEY = 'k-client-test-0123456789abcdef';
const server = await startServer({
  env: { NOVA_API_KEYS: `keyuser:${API_KEY}`, NOVA_API_KEY_CHANNELS: 'conversation:*' },
});
after(() => server.stop());

const DEADLINE_MS = 20000;

/** A JWT for `sub` granting every conversation. */
const token = (sub = 'alice', ttlSecs = 3600) => jwt({ sub, channels: ['conversation:*'] }, ttlSecs);

/** A client of the test server (through `url` when given), closed after the test. */
function client(t, options = {}) {
  const c = new NovaClient({ url: server.wsUrl, token: token(), ...options });
  t.after(() => c.close());
  return c;
}

/** Resolves with the state once `pred(state)` holds; rejects after `ms` with the history. */
function until(c, pred, what, ms = DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    let off = () => {};
    const timer = setTimeout(() => {
      off();
      reject(new Error(`${what}: not within ${ms} ms; state ${JSON.stringify(c.state.get())}`));
    }, ms);
    let done = false;
    off = c.state.subscribe((s) => {
      if (done || !pred(s)) return;
      done = true;
      clearTimeout(timer);
      queueMicrotask(() => off());
      resolve(s);
    });
  });
}

const connected = (c, what = 'connected') => until(c, (s) => s.connected, what);

/** The next event of `type` matching `pred`. */
function next(c, type, pred = () => true, ms = DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${type}' within ${ms} ms`));
    }, ms);
    const off = c.on(type, (event) => {
      if (!pred(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** Every event of `type` from now on. */
function collect(c, type) {
  const seen = [];
  c.on(type, (event) => seen.push(event));
  return seen;
}

/** Waits until `check()` is true, polling; for conditions no event announces. */
async function eventually(check, what, ms = DEADLINE_MS) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a JWT connects; subscribe resolves with the position; a published event arrives', async (t) => {
  const c = client(t).connect();
  const state = await connected(c);
  assert.equal(state.status, 'connected');
  assert.equal(state.userId, 'alice');
  assert.match(state.connectionId, /-/);
  assert.ok(state.expiresAt, 'a JWT connection expires');
  // The store's methods work detached (React's useSyncExternalStore takes them so).
  const { get, subscribe } = c.state;
  assert.equal(get().status, 'connected');
  let seen = null;
  subscribe((s) => (seen = s.status))();
  assert.equal(seen, 'connected');
  const subscribed = await c.subscribe('conversation:jwt');
  assert.deepEqual(subscribed.presence, ['alice']);
  assert.equal(typeof subscribed.epoch, 'string', 'conversation: keeps history');
  const arrived = next(c, 'task_updated');
  await server.publish('conversation:jwt', 'task_updated', { task_id: 't1', status: 'done' });
  const event = await arrived;
  assert.equal(event.channel, 'conversation:jwt');
  assert.deepEqual(event.data, { task_id: 't1', status: 'done' });
  assert.equal(event.offset, subscribed.offset + 1);
});

test('getToken is asked for a token on every connect', async (t) => {
  let calls = 0;
  const c = client(t, {
    token: undefined,
    getToken: async () => {
      calls += 1;
      return token('gina');
    },
  }).connect();
  const first = await connected(c);
  assert.equal(first.userId, 'gina');
  assert.equal(calls, 1);
  c.reconnect();
  await until(c, (s) => s.connected && s.connectionId !== first.connectionId, 'reconnected');
  assert.equal(calls, 2);
});

test('an API key connects as its user; the development key is refused outside development', async (t) => {
  const c = client(t, { token: undefined, apiKey: API_KEY }).connect();
  const state = await connected(c);
  assert.equal(state.userId, 'keyuser');
  assert.equal(state.expiresAt, null, 'an API key does not expire');
  assert.ok(await c.subscribe('conversation:key'));

  const dev = client(t, { token: undefined, apiKey: 'development', userId: 'mallory' }).connect();
  const closed = await until(dev, (s) => s.status === 'closed', 'refused');
  assert.equal(closed.lastErrorCode, 4001);
  assert.equal(closed.reconnectAttempts, 0, 'bad static credentials are not retried');
});

test('requests: a receipt resolves; errors reject with their code; no reply times out', async (t) => {
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.stop());
  const c = client(t, { url: proxy.wsUrl, requestTimeoutMs: 1500 }).connect();
  await connected(c);
  await c.subscribe('conversation:req');
  const relayed = next(c, 'chat.message');
  const receipt = await c.send('chat.message', { content: 'hi' }, { channel: 'conversation:req' });
  assert.equal(receipt.channel, 'conversation:req');
  const message = await relayed;
  assert.equal(message.id, receipt.message_id, 'the receipt names the message as delivered');
  assert.equal(message.data.sender_id, 'alice');

  const invalid = await c.send('chat.message', { content: 7 }, { channel: 'conversation:req' }).catch((e) => e);
  assert.ok(invalid instanceof NovaError);
  assert.equal(invalid.code, 4005);
  assert.deepEqual(invalid.data.fields, [{ field: 'data.content', rule: 'must be a string' }]);
  await assert.rejects(c.subscribe('nowhere:x'), { code: 4006 });
  await assert.rejects(c.subscribe('team:t1'), { code: 4003 }, 'the token grants conversations only');
  await assert.rejects(c.send('assistant.token', { stream_id: 's', chunk: 'x' }, { channel: 'conversation:req' }), {
    code: 4003,
  });

  // A request the server never gets (its bytes are lost on the way).
  proxy.stall();
  const started = Date.now();
  const lost = await c.send('chat.message', { content: 'lost' }, { channel: 'conversation:req' }).catch((e) => e);
  assert.equal(lost.code, 'timeout');
  assert.ok(Date.now() - started >= 1400, 'not before the timeout');
  proxy.restore();
});

test('after a server restart (1012) every client comes back with a jittered delay and its channels', async (t) => {
  const clients = [];
  for (let i = 0; i < 4; i++) {
    const c = client(t, { token: token(`restart${i}`) }).connect();
    clients.push(c);
  }
  for (const c of clients) await connected(c);
  await Promise.all(clients.map((c) => c.subscribe('conversation:restart')));
  const recoveries = clients.map((c) => next(c, 'recovery'));
  const before = clients.map((c) => c.state.get().connectionId);
  await server.restart();
  const states = await Promise.all(clients.map((c, i) => until(c, (s) => s.connected && s.connectionId !== before[i], 'back')));
  const delays = states.map((s) => {
    const entry = s.history.find((h) => h.status === 'reconnecting' && h.code === 1012);
    assert.ok(entry, `a reconnect after 1012 in ${JSON.stringify(s.history)}`);
    return entry.delayMs;
  });
  for (const delay of delays) assert.ok(delay >= 500 && delay <= 1000, `first delay ${delay} in [500, 1000] ms`);
  assert.ok(new Set(delays).size > 1, `the delays are jittered, not all equal: ${delays}`);
  // The restarted server kept no history (it is in memory): the channel is
  // back, but what was missed is not, and the application is told.
  for (const recovery of await Promise.all(recoveries)) {
    assert.equal(recovery.channel, 'conversation:restart');
    assert.equal(recovery.recovered, false);
    assert.equal(recovery.reason, 'gone');
  }
  const arrivals = clients.map((c) => next(c, 'task_updated'));
  await server.publish('conversation:restart', 'task_updated', { task_id: 'after', status: 'done' });
  for (const event of await Promise.all(arrivals)) assert.equal(event.data.task_id, 'after');
});

test('after the server is killed the client reconnects when it is back', async (t) => {
  const c = client(t).connect();
  await connected(c);
  await c.subscribe('conversation:killed');
  await server.kill();
  const down = await until(c, (s) => s.status === 'reconnecting', 'noticed');
  assert.equal(down.connected, false);
  assert.equal(down.lastErrorCode, 1006, 'no close frame from a killed server');
  await server.start();
  await until(c, (s) => s.connected, 'reconnected');
  const arrived = next(c, 'task_updated');
  await server.publish('conversation:killed', 'task_updated', { task_id: 'k', status: 'back' });
  assert.equal((await arrived).data.status, 'back');
});

test('recovery: events published while the network is down arrive once, in order, with nothing lost', async (t) => {
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.stop());
  const c = client(t, { url: proxy.wsUrl }).connect();
  await connected(c);
  const seen = collect(c, 'demo.tick');
  const acks = collect(c, 'connection.ack');
  const subscribes = collect(c, 'channel.subscribed');
  await c.subscribe('conversation:gap');
  const publish = async (from, to) => {
    for (let n = from; n <= to; n++) await server.publish('conversation:gap', 'demo.tick', { n });
  };
  await publish(1, 3);
  await eventually(() => seen.length === 3, 'the first three');
  await proxy.cut();
  await until(c, (s) => s.status === 'reconnecting', 'cut off');
  await publish(4, 6); // missed by the client
  const recovery = next(c, 'recovery');
  await proxy.restore();
  const back = await recovery;
  assert.deepEqual(
    { recovered: back.recovered, missed: back.missed, reason: back.reason },
    { recovered: true, missed: 3, reason: null },
  );
  // One round trip: the channel was taken back by the reconnect request itself.
  const lastAck = acks.at(-1);
  assert.equal(subscribes.at(-1).reply_to, lastAck.reply_to, 'channel.subscribed answers connection.reconnect');
  await publish(7, 9);
  await eventually(() => seen.length >= 9, 'all nine');
  assert.deepEqual(
    seen.map((e) => e.data.n),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  assert.deepEqual(
    seen.map((e) => e.offset),
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
});

test("when the server drops a channel's history while subscribed, the client is told and goes on", async (t) => {
  // A history memory cap of 1 MiB: filling other channels evicts this one's.
  const small = await startServer({ args: ['--history-memory-mb', '1'] });
  t.after(() => small.stop());
  const c = client(t, { url: small.wsUrl }).connect();
  const first = await c.subscribe('conversation:old');
  const seen = collect(c, 'demo.tick');
  const notices = collect(c, 'recovery');
  await small.publish('conversation:old', 'demo.tick', { n: 1 });
  await eventually(() => seen.length === 1, 'the first event');
  const filler = 'x'.repeat(1000);
  for (let k = 0; k < 12; k++) {
    const events = Array.from({ length: 300 }, (_, i) => ({
      channel: `conversation:fill${k}`,
      type: 'demo.fill',
      data: { n: i, text: filler },
    }));
    const res = await small.admin('POST', '/api/publish/batch', { events });
    assert.equal(res.status, 202, JSON.stringify(res.body));
  }
  await small.publish('conversation:old', 'demo.tick', { n: 2 });
  await eventually(() => seen.length === 2, 'the event after the eviction is not taken for a duplicate');
  assert.equal(notices.length, 1, JSON.stringify(notices));
  assert.equal(notices[0].channel, 'conversation:old');
  assert.notEqual(notices[0].epoch, first.epoch, 'a new epoch');
  // Nothing was missed here (the client had every event), so nothing is
  // to reload; the new epoch numbers events from 1 again, and the client
  // does not take the next one for one it already has.
  assert.deepEqual(
    { recovered: notices[0].recovered, missed: notices[0].missed, offset: notices[0].offset },
    { recovered: true, missed: 0, offset: 0 },
  );
  assert.equal(seen[1].offset, 1);
  assert.deepEqual(
    seen.map((e) => e.data.n),
    [1, 2],
  );
});

test('a token warned about is refreshed with getToken, on the same connection', async (t) => {
  const tokens = [token('rita', 30), token('rita', 3600)]; // the first is inside the 60 s warning
  let calls = 0;
  const c = client(t, { token: undefined, getToken: () => tokens[Math.min(calls++, 1)] });
  const warnings = collect(c, 'connection.expiring');
  const refreshed = next(c, 'connection.refreshed');
  c.connect();
  const first = await connected(c);
  const renewed = await refreshed;
  assert.equal(warnings.length, 1, 'warned at once: the token was inside the warning period');
  assert.equal(calls, 2, 'once to connect, once to refresh');
  assert.ok(Date.parse(renewed.data.expires_at) > Date.parse(first.expiresAt) + 3000 * 1000);
  await until(c, (s) => s.expiresAt === renewed.data.expires_at, 'expiresAt follows');
  assert.equal(c.state.get().connectionId, first.connectionId, 'no reconnect');
  assert.equal(c.state.get().reconnectAttempts, 0);
});

test('close codes: a bad static token stops; getToken with a bad token retries until a good one', async (t) => {
  const forged = token('eve').replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A'));
  const stopped = client(t, { token: forged }).connect();
  const closed = await until(stopped, (s) => s.status === 'closed', 'stopped');
  assert.equal(closed.lastErrorCode, 4001);
  assert.equal(closed.history.filter((h) => h.status === 'reconnecting').length, 0);
  await assert.rejects(stopped.send('chat.message', { content: 'x' }, { channel: 'conversation:c' }), { code: 'closed' });

  let calls = 0;
  const retried = client(t, { token: undefined, getToken: () => (++calls === 1 ? forged : token('eve')) }).connect();
  const state = await connected(retried);
  assert.equal(calls, 2);
  const refused = state.history.find((h) => h.status === 'reconnecting');
  assert.equal(refused.code, 4001, 'a refused token is retried with a fresh one');

  assert.equal(closeAction(1012), 'retry');
  assert.equal(closeAction(4002), 'stop');
  assert.equal(closeAction(4002, { refreshable: true }), 'refresh');
  assert.equal(closeAction(4010, { refreshable: true }), 'stop');
  assert.equal(closeAction(4011, { refreshable: true }), 'stop');
});

test('a streamed answer grows in place, and a late joiner gets it whole from the snapshot', async (t) => {
  const channel = 'conversation:answer';
  const early = client(t).connect();
  await early.subscribe(channel);
  const earlyAnswers = collect(early, 'answer');
  const chunk = (text, extra = {}) => server.publish(channel, 'assistant.token', { stream_id: 's1', chunk: text, ...extra });
  await chunk('Hel');
  await chunk('lo');
  await eventually(() => earlyAnswers.length === 2, 'two chunks');

  const late = client(t, { token: token('bob') }).connect();
  const lateAnswers = collect(late, 'answer');
  const snapshots = collect(late, 'assistant.snapshot');
  await late.subscribe(channel);
  await eventually(() => lateAnswers.length === 1, 'the snapshot');
  assert.equal(snapshots.length, 1);
  await chunk(' world', { is_final: true });
  await eventually(() => earlyAnswers.length === 3 && lateAnswers.length === 2, 'the last chunk');
  assert.deepEqual(
    earlyAnswers.map((a) => [a.text, a.done]),
    [
      ['Hel', false],
      ['Hello', false],
      ['Hello world', true],
    ],
  );
  assert.deepEqual(
    lateAnswers.map((a) => [a.text, a.done]),
    [
      ['Hello', false],
      ['Hello world', true],
    ],
  );
  assert.equal(lateAnswers[1].stream_id, 's1');
  assert.equal(lateAnswers[1].channel, channel);
});

test('while the server is down the backoff grows, jittered, and resets once a connection holds', async (t) => {
  const c = client(t, { stableAfterMs: 300 }).connect();
  await connected(c);
  await server.terminate();
  const s = await until(c, (st) => st.history.filter((h) => h.status === 'reconnecting').length >= 3, 'three', 30000);
  const delays = s.history.filter((h) => h.status === 'reconnecting').map((h) => h.delayMs);
  delays.slice(0, 3).forEach((delay, n) => {
    const ceiling = Math.min(1000 * 2 ** n, 30000);
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, `delay ${n} = ${delay} in [${ceiling / 2}, ${ceiling}]`);
  });
  assert.ok(s.reconnectAttempts >= 3);
  assert.ok(s.lastReconnect, 'when the last attempt started');
  await server.start();
  await connected(c, 'back');
  await until(c, (st) => st.connected && st.reconnectAttempts === 0, 'the count reset after a stable connection');
  // The pure function, over many draws: in range, and spread.
  const draws = Array.from({ length: 200 }, () => backoffDelay(10));
  assert.ok(draws.every((d) => d >= 15000 && d <= 30000), 'capped at 30 s');
  assert.ok(new Set(draws).size > 100, 'jittered');
});

test('a WebSocket constructor can be passed; close() stops for good', async (t) => {
  let opened = 0;
  class Counting extends globalThis.WebSocket {
    constructor(url) {
      super(url);
      opened += 1;
    }
  }
  const c = client(t, { WebSocket: Counting }).connect();
  await connected(c);
  assert.equal(opened, 1);
  const pending = c.send('chat.message', { content: 'never' }, { channel: 'conversation:x', timeoutMs: 60000 });
  c.close();
  const state = c.state.get();
  assert.equal(state.status, 'closed');
  assert.equal(state.connected, false);
  await pending.then(
    () => {},
    (e) => assert.ok(['closed', 'disconnected'].includes(e.code), e.code),
  );
  await assert.rejects(c.subscribe('conversation:x'), { code: 'closed' });
});
