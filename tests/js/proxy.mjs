// A TCP proxy between a client and the server, for the network's failures:
// `cut()` drops every connection and refuses new ones (a cable pulled, the
// server unreachable) while the server keeps running, so what is published
// meanwhile is missed; `stall()` stops carrying the client's bytes (a
// request that never arrives); `restore()` undoes both.

import net from 'node:net';

export class Proxy {
  /** A proxy to `127.0.0.1:targetPort`. */
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.port = 0;
    this.pairs = new Set();
    this.stalled = false;
    this.listener = null;
  }

  /** Listens (on the same port as before after a `cut()`). */
  async start() {
    this.listener = net.createServer((client) => this.accept(client));
    await new Promise((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen(this.port, '127.0.0.1', resolve);
    });
    this.port = this.listener.address().port;
    this.wsUrl = `ws://127.0.0.1:${this.port}/ws`;
    return this;
  }

  accept(client) {
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, upstream };
    this.pairs.add(pair);
    client.on('data', (chunk) => {
      if (!this.stalled) upstream.write(chunk);
    });
    upstream.pipe(client);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  }

  /** Drops every connection at once and refuses new ones until `restore()`. */
  async cut() {
    const closed = new Promise((resolve) => this.listener.close(resolve));
    for (const { client, upstream } of this.pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    this.pairs.clear();
    await closed;
    this.listener = null;
  }

  /** Stops carrying the client's bytes to the server (they are dropped). */
  stall() {
    this.stalled = true;
  }

  /** Carries bytes again, and accepts connections again after a cut. */
  async restore() {
    this.stalled = false;
    if (!this.listener) await this.start();
  }

  /** Closes everything. */
  async stop() {
    if (this.listener) await this.cut();
  }
}
