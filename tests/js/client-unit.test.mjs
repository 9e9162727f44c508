// The client against a WebSocket of the test's own, for the one moment the
// real server cannot be made to hit: an application that closes the client
// from its state subscriber, in the very change that says 'connected'.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NovaClient } from '../../clients/js/nova-realtime.js';

/**
 * A WebSocket whose server fails the first connection (so the client has
 * an attempt to count) and acknowledges the first frame of every later one
 * with a short heartbeat interval.
 */
class ScriptedSocket {
  static made = 0;

  constructor(url) {
    this.url = url;
    this.number = ++ScriptedSocket.made;
    this.sent = [];
    setTimeout(() => (this.number === 1 ? this.onerror?.({}) : this.onopen?.({})), 0);
  }

  send(text) {
    const frame = JSON.parse(text);
    this.sent.push(frame);
    if (frame.type !== 'connection.init') return;
    const ack = {
      id: 'ack',
      type: 'connection.ack',
      reply_to: frame.id,
      data: { connection_id: `c-${this.number}`, user_id: 'u', heartbeat_interval_ms: 20 },
      timestamp: new Date().toISOString(),
    };
    setTimeout(() => this.onmessage?.({ data: JSON.stringify(ack) }), 0);
  }

  close() {}
}

test('close() from a state subscriber on connected leaves nothing running after it', async () => {
  const c = new NovaClient({ url: 'ws://scripted/ws', token: 't', WebSocket: ScriptedSocket, stableAfterMs: 20 });
  const seen = [];
  const closed = new Promise((resolve) =>
    c.state.subscribe((s) => {
      seen.push(s);
      if (s.status === 'connected') c.close();
      if (s.status === 'closed') resolve();
    }),
  );
  c.connect();
  await closed;
  const closedAt = seen.length;
  assert.equal(c.state.get().status, 'closed');
  assert.equal(c.state.get().reconnectAttempts, 1, 'one failed attempt before the connection');
  // Longer than stableAfterMs and the heartbeat interval: a timer started
  // anyway would change the state (the attempt count reset) after close().
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(seen.length, closedAt, `no change after close(): ${JSON.stringify(seen.slice(closedAt))}`);
  assert.equal(c.timers.size, 0, 'no timer left to keep the process alive');
});
