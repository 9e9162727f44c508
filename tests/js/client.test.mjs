// The JavaScript client (clients/js/nova-realtime.js) in Node against the
// real server: authentication three ways, requests and their errors,
// reconnects after a restart (1012) and a crash, recovery with no gap,
// `recovered: false`, token refresh, streamed answers, and the backoff.
// The client gets the harness's WebSocket: Node's own where there is one,
// else the `ws` package's, so plain `node --test` runs this on Node 20 too.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { NovaClient, NovaError, backoffDelay, closeAction } from '../../clients/js/nova-realtime.js';
import { startServer, jwt, WebSocket } from './harness.mjs';
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
  const c = new NovaClient({ url: server.wsUrl, token: token(), WebSocket, ...options });
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

/** `promise`, or a rejection after `ms` (for what old bugs left unsettled forever). */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
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
  class Counting extends WebSocket {
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

test('a streamed answer goes on after a restart changes the epoch: new tokens are not taken for old ones', async (t) => {
  const channel = 'conversation:epoch';
  const c = client(t).connect();
  const first = await c.subscribe(channel);
  const answers = collect(c, 'answer');
  const chunk = (text, extra = {}) => server.publish(channel, 'assistant.token', { stream_id: 'e1', chunk: text, ...extra });
  await chunk('Before ');
  await chunk('the ');
  await eventually(() => answers.length === 2, 'two chunks');
  const recovery = next(c, 'recovery');
  await server.restart();
  const back = await recovery;
  assert.notEqual(back.epoch, first.epoch, 'the restarted server (no Redis) numbers the channel anew');
  // The new epoch's first token has offset 1, below the answer's old 2.
  const finished = next(c, 'answer', (a) => a.done, 5000);
  await chunk('restart.', { is_final: true });
  const answer = await finished;
  assert.equal(answer.text, 'Before the restart.');
  assert.equal(answer.offset, 1);
});

test('unsubscribe() while the reconnect naming the channel is being answered leaves it on the server too', async (t) => {
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.stop());
  const c = client(t, { url: proxy.wsUrl }).connect();
  await c.subscribe('conversation:leave');
  await c.subscribe('conversation:stay');
  const seen = collect(c, 'task_updated');
  const answered = ['conversation:leave', 'conversation:stay'].map((name) =>
    next(c, 'channel.subscribed', (e) => e.channel === name),
  );
  proxy.hold();
  const sent = proxy.clientSent();
  c.reconnect();
  await sent; // connection.reconnect, naming both channels, is on its way; its answer is held
  const left = c.unsubscribe('conversation:leave');
  proxy.release();
  await Promise.all(answered);
  const reply = await left;
  assert.equal(reply.reason ?? null, null, 'the server confirmed it, on the application’s request');
  await server.publish('conversation:leave', 'task_updated', { task_id: 'left', status: 'x' });
  await server.publish('conversation:stay', 'task_updated', { task_id: 'stayed', status: 'x' });
  await eventually(() => seen.some((e) => e.data.task_id === 'stayed'), 'the event of the channel kept');
  assert.deepEqual(
    seen.map((e) => e.channel),
    ['conversation:stay'],
    'nothing from the channel left',
  );
});

test('close() then connect() takes the channels back and says what happened to each', async (t) => {
  const channel = 'conversation:again';
  const c = client(t).connect();
  await c.subscribe(channel);
  const seen = collect(c, 'demo.tick');
  await server.publish(channel, 'demo.tick', { n: 1 });
  await eventually(() => seen.length === 1, 'the first event');
  c.close();
  await server.publish(channel, 'demo.tick', { n: 2 });
  await server.publish(channel, 'demo.tick', { n: 3 });
  let recovery = next(c, 'recovery', () => true, 5000);
  c.connect();
  const back = await recovery;
  assert.deepEqual(
    { channel: back.channel, recovered: back.recovered, missed: back.missed, reason: back.reason },
    { channel, recovered: true, missed: 2, reason: null },
  );
  await eventually(() => seen.length === 3, 'what was missed while closed');
  assert.deepEqual(
    seen.map((e) => e.data.n),
    [1, 2, 3],
  );
  // The server loses its history (a restart without Redis) while closed.
  c.close();
  await server.restart();
  recovery = next(c, 'recovery', () => true, 5000);
  c.connect();
  const lost = await recovery;
  assert.deepEqual({ recovered: lost.recovered, reason: lost.reason }, { recovered: false, reason: 'gone' });
});

test('a channel refused when a reconnect takes it back is announced as a recovery that failed', async (t) => {
  const tokens = [
    jwt({ sub: 'perm', channels: ['conversation:*'] }),
    jwt({ sub: 'perm', channels: ['conversation:other'] }), // the user lost the channel meanwhile
  ];
  let calls = 0;
  const c = client(t, { token: undefined, getToken: () => tokens[Math.min(calls++, 1)] }).connect();
  await c.subscribe('conversation:revoked');
  const recovery = next(c, 'recovery', () => true, 5000);
  c.reconnect();
  const notice = await recovery;
  assert.deepEqual(
    { channel: notice.channel, recovered: notice.recovered, reason: notice.reason, code: notice.code },
    { channel: 'conversation:revoked', recovered: false, reason: 'refused', code: 4003 },
  );
  assert.equal(c.state.get().status, 'connected', 'the connection stays');
});

test('a close announced by connection.error counts when its close frame is lost: a fixed expired token stops', async (t) => {
  const proxy = await new Proxy(server.port).start();
  t.after(() => proxy.stop());
  proxy.loseCloseFrames(); // the TCP connection drops right after connection.error
  const c = client(t, { url: proxy.wsUrl, token: token('brief', 2) }).connect();
  const notice = next(c, 'connection.error');
  const ended = await until(
    c,
    (s) => s.status === 'closed' || s.history.some((h) => h.status === 'reconnecting'),
    'the connection ends',
  );
  assert.deepEqual((await notice).data.code, 4002);
  assert.equal(ended.status, 'closed', `stopped, not retrying a dead token: ${JSON.stringify(ended.history)}`);
  assert.equal(ended.lastErrorCode, 4002);
});

test('4004 (the address throttled) is waited out for a minute, not given up, and not hurried', async (t) => {
  const strict = await startServer({ env: { NOVA_AUTH_FAILURE_LIMIT: '2' } });
  t.after(() => strict.stop());
  const forged = token('eve').replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A'));
  for (let i = 0; i < 3; i++) {
    const bad = client(t, { url: strict.wsUrl, token: forged }).connect();
    await until(bad, (s) => s.lastErrorCode != null, 'refused');
    bad.close();
  }
  // Valid credentials from the same address (think: behind one NAT).
  const c = client(t, { url: strict.wsUrl }).connect();
  const throttled = await until(c, (s) => s.lastErrorCode === 4004, 'throttled');
  assert.equal(throttled.status, 'reconnecting', `retried: ${JSON.stringify(throttled.history)}`);
  assert.ok(throttled.retryDelayMs >= 60000, `after at least a minute: ${throttled.retryDelayMs}`);
  c.reconnect(); // would only prolong the refusal
  assert.equal(c.state.get().history.length, throttled.history.length, 'no attempt before the minute');
  assert.equal(c.state.get().retryDelayMs, throttled.retryDelayMs);
});

test('a getToken that never settles is given up after the request timeout, on connect', async (t) => {
  let calls = 0;
  const c = client(t, {
    token: undefined,
    requestTimeoutMs: 500,
    getToken: () => (++calls === 1 ? new Promise(() => {}) : token('hung')),
  }).connect();
  const state = await until(c, (s) => s.connected, 'connected after the hung getToken', 5000);
  assert.equal(calls, 2);
  const failed = state.history.find((h) => h.status === 'reconnecting');
  assert.match(failed.reason, /getToken did not settle within 500 ms/);
});

test('a getToken that never settles is given up on refresh too, and the refresh is tried again', async (t) => {
  let calls = 0;
  const c = client(t, {
    token: undefined,
    requestTimeoutMs: 500,
    getToken: () => {
      calls += 1;
      if (calls === 1) return token('rehung', 30); // inside the warning: refreshed at once
      if (calls === 2) return new Promise(() => {});
      return token('rehung', 3600);
    },
  });
  const refreshed = next(c, 'connection.refreshed', () => true, 15000);
  c.connect();
  const first = await connected(c);
  const failed = await until(c, (s) => /token refresh failed/.test(s.lastError ?? ''), 'the hung refresh', 5000);
  assert.match(failed.lastError, /getToken did not settle/);
  await refreshed;
  assert.equal(calls, 3);
  assert.equal(c.state.get().connectionId, first.connectionId, 'on the same connection');
});

test('a subscribe the server drops (over its frame rate limit) is asked again until it is answered', async (t) => {
  const limited = await startServer({ env: { NOVA_RATE_LIMIT: '1', NOVA_RATE_BURST: '2' } });
  t.after(() => limited.stop());
  const c = client(t, { url: limited.wsUrl, requestTimeoutMs: 1000 }).connect();
  await connected(c);
  // Three frames use the burst up: the third is refused (the first refusal
  // in a second is answered), the subscribe after it is dropped unanswered.
  const beats = [1, 2, 3].map(() => c.send('connection.heartbeat').catch((e) => e));
  const subscribed = c.subscribe('conversation:limited');
  const refused = (await Promise.all(beats)).filter((r) => r instanceof NovaError);
  assert.deepEqual(
    refused.map((e) => e.code),
    [4004],
  );
  const data = await within(subscribed, 10000, 'the subscribe');
  assert.equal(typeof data.epoch, 'string');
  assert.equal(c.state.get().status, 'connected');
});

test('two requests sent with one id both settle with its reply', async (t) => {
  const c = client(t, { requestTimeoutMs: 2000 }).connect();
  await c.subscribe('conversation:dup');
  const options = { channel: 'conversation:dup', id: 'dup-request-1' };
  const [first, again] = await Promise.all([
    c.send('chat.message', { content: 'once' }, options),
    c.send('chat.message', { content: 'once' }, options),
  ]);
  assert.equal(first.channel, 'conversation:dup');
  assert.deepEqual(again, first);
});

test('a subscribe() nobody awaits ends without an unhandled rejection on unsubscribe() or close(); ready() after close() rejects', async (t) => {
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  t.after(() => process.off('unhandledRejection', onUnhandled));
  const c = client(t).connect();
  // React StrictMode runs an effect, its cleanup, and the effect again.
  c.subscribe('conversation:strict');
  c.unsubscribe('conversation:strict');
  c.subscribe('conversation:strict');
  const awaited = c.subscribe('conversation:strict-awaited');
  c.close();
  await assert.rejects(awaited, { code: 'closed' }, 'a caller that awaits still hears it');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(unhandled, []);
  await assert.rejects(within(c.ready(), 2000, 'ready() after close()'), { code: 'closed' });
});

test('an answer started again under a stream_id used before starts from nothing', async (t) => {
  const channel = 'conversation:reuse';
  const c = client(t).connect();
  await c.subscribe(channel);
  const answers = collect(c, 'answer');
  await server.publish(channel, 'assistant.token', { stream_id: 'r1', chunk: 'First.', is_final: true });
  await server.publish(channel, 'assistant.start', { stream_id: 'r1' });
  await server.publish(channel, 'assistant.token', { stream_id: 'r1', chunk: 'Second.', is_final: true });
  await eventually(() => answers.length === 3, 'three answer events');
  assert.deepEqual(
    answers.map((a) => [a.text, a.done]),
    [
      ['First.', true],
      ['', false],
      ['Second.', true],
    ],
  );
});
