// A TCP proxy between a client and the server, for the network's failures:
// `cut()` drops every connection and refuses new ones (a cable pulled, the
// server unreachable) while the server keeps running, so what is published
// meanwhile is missed; `stall()` stops carrying the client's bytes (a
// request that never arrives); `hold()` keeps the server's bytes of the
// next connections after their WebSocket handshake (a slow link: the
// client has sent its first frame, the answer is on its way) until
// `release()`; `loseCloseFrames()` hangs up on the client where the
// server's close frame would have gone (a connection that drops right after
// the server's last words); `restore()` undoes them.

import net from 'node:net';

const HEADER_END = Buffer.from('\r\n\r\n');

export class Proxy {
  /** A proxy to `127.0.0.1:targetPort`. */
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.port = 0;
    this.pairs = new Set();
    this.stalled = false;
    this.holding = false;
    this.held = [];
    this.losingCloseFrames = false;
    this.clientWaiters = [];
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
    // What the proxy does to a connection is decided when it is made.
    const pair = {
      client,
      upstream,
      held: this.holding,
      dropsClose: this.losingCloseFrames,
      upgraded: false,
      head: Buffer.alloc(0),
      frames: Buffer.alloc(0),
    };
    this.pairs.add(pair);
    client.on('data', (chunk) => {
      if (this.stalled) return;
      upstream.write(chunk);
      if (pair.held && pair.upgraded) for (const resolve of this.clientWaiters.splice(0)) resolve();
    });
    upstream.on('data', (chunk) => this.fromServer(pair, chunk));
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  }

  /** The server's bytes to the client, through what the connection's modes do to them. */
  fromServer(pair, chunk) {
    if (!pair.upgraded) {
      // The HTTP upgrade's response passes as it is; the server says nothing
      // more before the client's first frame.
      pair.head = Buffer.concat([pair.head, chunk]);
      if (pair.head.indexOf(HEADER_END) >= 0) pair.upgraded = true;
      return pair.client.write(chunk);
    }
    if (pair.dropsClose) return this.untilCloseFrame(pair, chunk);
    if (pair.held && this.holding) return this.held.push([pair, chunk]);
    pair.client.write(chunk);
  }

  /** Passes the server's frames whole, and hangs up on the client instead of passing a close frame. */
  untilCloseFrame(pair, chunk) {
    let buffer = Buffer.concat([pair.frames, chunk]);
    for (;;) {
      if (buffer.length < 2) break;
      const opcode = buffer[0] & 0x0f;
      let length = buffer[1] & 0x7f;
      let header = 2;
      if (length === 126) {
        if (buffer.length < 4) break;
        length = buffer.readUInt16BE(2);
        header = 4;
      } else if (length === 127) {
        if (buffer.length < 10) break;
        length = Number(buffer.readBigUInt64BE(2));
        header = 10;
      }
      if (buffer.length < header + length) break;
      if (opcode === 0x8) {
        pair.client.resetAndDestroy();
        pair.upstream.destroy();
        return;
      }
      pair.client.write(buffer.subarray(0, header + length));
      buffer = buffer.subarray(header + length);
    }
    pair.frames = buffer;
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

  /** Keeps the server's bytes to connections made from now on, after their handshake, until `release()`. */
  hold() {
    this.holding = true;
  }

  /** Resolves when a held connection's client has sent a frame (its first, `connection.init` or `connection.reconnect`). */
  clientSent() {
    return new Promise((resolve) => this.clientWaiters.push(resolve));
  }

  /** Delivers what `hold()` kept, and carries the server's bytes again. */
  release() {
    this.holding = false;
    for (const [pair, chunk] of this.held.splice(0)) pair.client.write(chunk);
  }

  /** Connections made from now on: hung up on where the server's close frame would have been passed. */
  loseCloseFrames() {
    this.losingCloseFrames = true;
  }

  /** Carries bytes again, and accepts connections again after a cut. */
  async restore() {
    this.stalled = false;
    this.losingCloseFrames = false;
    this.release();
    if (!this.listener) await this.start();
  }

  /** Closes everything. */
  async stop() {
    if (this.listener) await this.cut();
  }
}
