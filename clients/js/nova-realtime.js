// nova-realtime: the client of nova-realtime's WebSocket protocol
// (docs/protocol.md), for browsers and Node >= 20. One ES module, no build
// step, no dependencies. clients/js/README.md explains it; the types are
// nova-realtime.d.ts.
//
// What it does for an application: authenticates (`connection.init`), keeps
// the connection up with jittered exponential backoff, takes its channels
// back after a reconnect with their positions (`connection.reconnect`) so
// nothing is missed or seen twice, refreshes the token on
// `connection.expiring`, merges `assistant.snapshot` with `assistant.token`
// into one growing answer per stream, and turns requests into promises
// settled by their replies.

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/** What the client understands, sent in `connection.init`. */
const CAPABILITIES = ['token_refresh', 'expiry_warning', 'connection_error', 'presence', 'receipts'];

/** Request types the server answers only when they fail: they settle once sent. */
const NO_REPLY = new Set(['chat.typing', 'team.presence.update']);

/** Ceiling and base of the reconnect backoff, ms: min(1000 * 2^n, 30000). */
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30000;

/**
 * After close code 4004 (too many failed authentications from the address)
 * the server refuses the address for a minute, whatever the credentials:
 * the next attempt waits at least this long.
 */
const THROTTLED_WAIT_MS = 60000;

/** Refreshes closer together than this are spaced out, so a token warned at once cannot loop. */
const MIN_REFRESH_GAP_MS = 5000;

/** Finished answers kept for merging late frames; the oldest are forgotten first. */
const ANSWERS_KEPT = 100;

/**
 * A request that failed: `code` is the server's error code (4003, 4005, ...)
 * or, for failures on this side, `'timeout'`, `'disconnected'` (the
 * connection dropped before the reply; the request may or may not have been
 * run) or `'closed'` (the client was closed). `frame` is the server's
 * `error` frame when there is one.
 */
export class NovaError extends Error {
  constructor(code, message, frame = null) {
    super(message);
    this.name = 'NovaError';
    this.code = code;
    this.frame = frame;
    this.data = frame ? frame.data : null;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first), ms:
 * uniformly random in the upper half of min(1000 * 2^attempt, 30000), so
 * clients dropped together (a server restart, 1012) come back spread out.
 */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16), BACKOFF_MAX_MS);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * What to do after the server closed with `code` (docs/protocol.md, Close
 * codes): `'retry'` with backoff (after 4004: not before a minute has
 * passed), `'refresh'` (new credentials from `getToken`, then retry; only
 * when `refreshable`), or `'stop'`.
 */
export function closeAction(code, { refreshable = false } = {}) {
  switch (code) {
    case 1002: // protocol violation: a client bug, retrying repeats it
    case 1003:
    case 1007: // not UTF-8: the same
    case 4010: // protocol version: upgrade the client
    case 4011: // disconnected by an administrator: coming back would undo it
      return 'stop';
    case 4001: // invalid credentials
    case 4002: // expired token
      return refreshable ? 'refresh' : 'stop';
    case 4004: // the address is throttled, maybe for other people's failures behind one NAT:
      return 'retry'; // wait the minute out (the caller waits at least THROTTLED_WAIT_MS)
    default:
      return 'retry';
  }
}

/** A value with subscribers: the Svelte store contract (`subscribe` calls back at once, returns the unsubscriber). */
class Store {
  constructor(value) {
    this.value = value;
    this.subscribers = new Set();
    // Bound, so they can be handed over as they are:
    // useSyncExternalStore(client.state.subscribe, client.state.get).
    this.get = this.get.bind(this);
    this.subscribe = this.subscribe.bind(this);
  }

  /** The current value. */
  get() {
    return this.value;
  }

  /** Calls `fn` with the value now and on every change; returns a function that stops it. */
  subscribe(fn) {
    const entry = { fn };
    this.subscribers.add(entry);
    call(fn, this.value);
    return () => this.subscribers.delete(entry);
  }

  set(value) {
    this.value = value;
    for (const entry of [...this.subscribers]) call(entry.fn, value);
  }
}

/** Runs an application callback; what it throws is reported, never breaks the client. */
function call(fn, value) {
  try {
    fn(value);
  } catch (error) {
    if (typeof globalThis.reportError === 'function') globalThis.reportError(error);
    else console.error('nova-realtime: a callback threw', error);
  }
}

/**
 * Rejects a promise the application may not be waiting on (a `subscribe()`
 * fired and forgotten, as React StrictMode's doubled effects do) for
 * something the application did itself (`unsubscribe()`, `close()`): a
 * caller that awaits it still sees the rejection, but nobody gets an
 * unhandled rejection.
 */
function dismiss(waiter, error) {
  waiter.promise.catch(() => {});
  waiter.reject(error);
}

/** `ws(s)://<this page's host>/ws[/clientId]` in a browser. */
function defaultUrl(clientId) {
  const location = globalThis.location;
  if (!location || !/^https?:$/.test(location.protocol)) {
    throw new TypeError('NovaClient: pass `url` (ws://host:port/ws) outside a web page');
  }
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws${clientId ? `/${encodeURIComponent(clientId)}` : ''}`;
}

const now = () => Date.now();
const iso = (ms = now()) => new Date(ms).toISOString();

/**
 * A connection to nova-realtime that stays up until `close()`. See
 * clients/js/README.md for the options, the states and the events.
 */
export class NovaClient {
  constructor(options = {}) {
    const { token, getToken, apiKey, userId, clientId } = options;
    if (!token && !getToken && !apiKey) throw new TypeError('NovaClient: pass `token`, `getToken` or `apiKey`');
    if (getToken !== undefined && typeof getToken !== 'function') {
      throw new TypeError('NovaClient: `getToken` must be a function returning a JWT (or a promise of one)');
    }
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError(
        'NovaClient: no WebSocket here: pass `WebSocket` (a constructor), or run Node 22+ ' +
          '(Node 20: node --experimental-websocket)',
      );
    }
    this.url = options.url ?? defaultUrl(clientId);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.stableAfterMs = options.stableAfterMs ?? 10000;
    this.historyLimit = options.historyLimit ?? 50;
    this.credentials = { token, getToken, apiKey, userId };

    /** The connection's state, an observable store. */
    this.state = new Store({
      status: 'idle',
      connected: false,
      connecting: false,
      reconnectAttempts: 0,
      lastReconnect: null,
      lastError: null,
      lastErrorCode: null,
      retryDelayMs: null,
      history: [],
      connectionId: null,
      userId: null,
      expiresAt: null,
    });

    this.ws = null;
    this.generation = 0; // bumped by every attempt and by close(): stale callbacks compare it
    this.stopped = true;
    this.everConnected = false;
    this.helloId = null;
    this.ack = null;
    this.serverClose = null; // the connection.error announcing the close
    this.previousConnectionId = null;
    this.lastFrameAt = 0;
    this.lastRefreshAt = 0;
    this.refreshing = null; // the refresh under way: a token of its own, so a stale one cannot clear a newer one
    this.throttledUntil = 0; // after 4004: no attempt before then, whatever asks for one
    this.timers = new Set();
    this.connectTimer = null;
    this.retryTimer = null;
    this.stableTimer = null;
    this.heartbeatTimer = null;

    this.idPrefix = Math.random().toString(36).slice(2, 10);
    this.seq = 0;
    /** Requests sent and waiting for their reply, by id. */
    this.pending = new Map();
    /** Requests waiting for a connection. */
    this.queue = [];
    /**
     * The channels the application wants, kept across reconnects: name ->
     * { status: 'pending'|'sent'|'subscribed', requestId, epoch, offset,
     *   data, waiters, resumed, tries }.
     */
    this.channels = new Map();
    this.listeners = new Map();
    this.answers = new Map();
    this.answerEpochs = new WeakMap(); // answer -> the epoch its offset belongs to
    this.readyWaiters = new Set();
    this.onOnline = () => {
      if (this.retryTimer && !this.stopped) this.retryNow();
    };
  }

  // ---- the application's API ----

  /** Starts connecting; the client reconnects by itself until `close()`. */
  connect() {
    if (!this.stopped) return this;
    this.stopped = false;
    this.everConnected = false;
    this.patch({ reconnectAttempts: 0, lastError: null, lastErrorCode: null }, 'connecting');
    globalThis.addEventListener?.('online', this.onOnline);
    this.open();
    return this;
  }

  /** Stops for good: closes the socket, no reconnect; pending requests reject with code 'closed'. */
  close() {
    if (this.state.get().status === 'closed') return;
    this.stopped = true;
    this.generation += 1;
    globalThis.removeEventListener?.('online', this.onOnline);
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, 'client closed');
      } catch {}
    }
    const closed = new NovaError('closed', 'the client was closed');
    this.failPending(closed);
    for (const request of this.queue.splice(0)) request.fail(closed);
    this.refreshing = null;
    for (const [, channel] of this.channels) {
      for (const waiter of channel.waiters.splice(0)) dismiss(waiter, closed);
      // Kept for connect(): it takes the channel back, and `recovery` says
      // whether what was published meanwhile follows.
      if (channel.status === 'subscribed') channel.resumed = true;
      channel.status = 'pending';
      channel.requestId = null;
    }
    for (const waiter of [...this.readyWaiters]) dismiss(waiter, closed);
    this.patch({ connected: false, connecting: false, retryDelayMs: null }, 'closed');
  }

  /** Drops the current connection and reconnects now (after a network change, say); subscriptions are recovered. */
  reconnect() {
    if (this.stopped) return;
    if (this.retryTimer) return this.retryNow();
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    detach(ws);
    try {
      ws.close(4000, 'client reconnecting');
    } catch {}
    this.lost(null, 'reconnect asked by the application', { immediately: true });
  }

  /**
   * Resolves with `connection.ack`'s data once connected (at once when it
   * is); rejects when the client stops, and at once when it is closed.
   */
  ready(timeoutMs) {
    if (this.state.get().connected && this.ack) return Promise.resolve(this.ack);
    if (this.state.get().status === 'closed') return Promise.reject(new NovaError('closed', 'the client is closed'));
    const waiter = { resolve: null, reject: null, timer: null, promise: null };
    waiter.promise = new Promise((resolve, reject) => {
      const done = (fn) => (value) => {
        clearTimeout(waiter.timer);
        this.readyWaiters.delete(waiter);
        fn(value);
      };
      waiter.resolve = done(resolve);
      waiter.reject = done(reject);
      if (timeoutMs !== undefined) {
        waiter.timer = setTimeout(
          () => waiter.reject(new NovaError('timeout', `not connected within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }
      this.readyWaiters.add(waiter);
    });
    return waiter.promise;
  }

  /**
   * Subscribes to `channel` and keeps it across reconnects (recovering what
   * was missed). Resolves with the `channel.subscribed` data; rejects with
   * the server's error (4003 not allowed, 4006 bad name), or with
   * 'unsubscribed' / 'closed' when `unsubscribe()` / `close()` ends the wait
   * (those two never count as unhandled when nobody awaits the promise).
   */
  subscribe(channel) {
    if (this.state.get().status === 'closed') return Promise.reject(new NovaError('closed', 'the client is closed'));
    let entry = this.channels.get(channel);
    if (entry && entry.status === 'subscribed') return Promise.resolve(entry.data);
    if (!entry) {
      entry = {
        status: 'pending',
        requestId: null,
        epoch: null,
        offset: null,
        data: null,
        waiters: [],
        resumed: false,
        tries: 0,
      };
      this.channels.set(channel, entry);
    }
    const waiter = { resolve: null, reject: null, promise: null };
    waiter.promise = new Promise((resolve, reject) => Object.assign(waiter, { resolve, reject }));
    entry.waiters.push(waiter);
    if (entry.status === 'pending' && this.isConnected()) this.flushSubscriptions();
    return waiter.promise;
  }

  /**
   * Leaves `channel` (and stops taking it back after reconnects). Resolves
   * with `channel.unsubscribed`'s data once the server confirms, or with
   * `{}` at once when the server has not been asked for the channel on the
   * current connection (there is none yet, say).
   */
  async unsubscribe(channel) {
    const entry = this.channels.get(channel);
    this.channels.delete(channel);
    if (entry) {
      const gone = new NovaError('unsubscribed', `unsubscribed from '${channel}' before it was subscribed`);
      for (const waiter of entry.waiters.splice(0)) dismiss(waiter, gone);
    }
    // Named in a frame on this socket ('sent': a subscribe, or the
    // connection.reconnect not yet acknowledged) or subscribed on it: the
    // server must be told, once the connection is authenticated.
    const onServer = entry !== undefined && entry.status !== 'pending' && this.ws !== null;
    if (!onServer && !this.isConnected()) return {};
    return this.request('channel.unsubscribe', { channels: [channel] }, {});
  }

  /**
   * Sends a request. Resolves with its reply's data (`message.received`'s
   * for `chat.message` and requests for an agent); rejects with a
   * NovaError: the server's code, or 'timeout' / 'disconnected' / 'closed'.
   * Waits for a connection if there is none yet (the timeout counts).
   * `chat.typing` and `team.presence.update` have no reply: they resolve
   * with `null` once sent, and a refusal arrives as an `error` event.
   */
  send(type, data = {}, options = {}) {
    return this.request(type, data, options);
  }

  /**
   * Calls `handler` with every server frame of `type` (the whole frame:
   * `{id, type, channel, data, timestamp, offset, reply_to}`); `'*'` for
   * every frame. Two events are the client's own: `'answer'` (one growing
   * answer per stream) and `'recovery'` (what a reconnect or an epoch change
   * did to a channel). Returns a function that removes the handler.
   */
  on(type, handler) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    const entry = { handler };
    set.add(entry);
    return () => set.delete(entry);
  }

  // ---- connecting ----

  isConnected() {
    return this.ws !== null && this.ack !== null && this.state.get().connected;
  }

  async open() {
    const generation = ++this.generation;
    const reconnecting = this.everConnected || this.state.get().reconnectAttempts > 0;
    const patch = { connecting: true, connected: false, retryDelayMs: null };
    if (reconnecting) patch.lastReconnect = iso();
    this.patch(patch, reconnecting ? 'reconnecting' : 'connecting');
    let credentials;
    try {
      credentials = await this.credentialData();
    } catch (error) {
      if (generation !== this.generation) return;
      return this.lost(null, `getToken failed: ${error && error.message ? error.message : error}`);
    }
    if (generation !== this.generation) return;
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (error) {
      return this.lost(null, `cannot open ${this.url}: ${error.message}`);
    }
    this.ws = ws;
    this.ack = null;
    this.serverClose = null;
    // The TCP connect, the handshake and the authentication, all bounded:
    // a host that never answers must not hang the client.
    this.connectTimer = this.later(this.requestTimeoutMs, () => {
      if (this.ws !== ws) return;
      this.ws = null;
      detach(ws);
      try {
        ws.close(4000, 'connect timeout');
      } catch {}
      this.lost(null, `not connected within ${this.requestTimeoutMs} ms`);
    });
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const hello = this.hello(credentials);
      this.helloId = hello.id;
      this.write(hello);
    };
    ws.onmessage = (message) => {
      if (this.ws === ws) this.receive(message.data);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      detach(ws);
      this.lost(event.code, event.reason);
    };
    // A connection that fails is closed with 1006. Browsers then fire
    // `close` too; Node 20's WebSocket fires only `error` when the TCP
    // connect fails, so the error itself ends the attempt.
    ws.onerror = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      detach(ws);
      this.lost(1006, 'the connection failed');
    };
  }

  /** The first frame's credentials, `protocol` and `capabilities` (a token from `getToken`, within the request timeout). */
  async credentialData() {
    const { token, getToken, apiKey, userId } = this.credentials;
    const data = { protocol: [PROTOCOL_VERSION], capabilities: CAPABILITIES };
    if (getToken) data.token = await this.freshToken();
    else if (token) data.token = token;
    else {
      data.api_key = apiKey;
      if (userId) data.user_id = userId;
    }
    if (typeof data.token !== 'undefined' && typeof data.token !== 'string') {
      throw new TypeError('the token is not a string');
    }
    return data;
  }

  /** `getToken()`, bounded by `requestTimeoutMs`: one that never settles must not hang a connect or a refresh. */
  freshToken() {
    return new Promise((resolve, reject) => {
      const ms = this.requestTimeoutMs;
      const timer = this.later(ms, () => reject(new NovaError('timeout', `getToken did not settle within ${ms} ms`)));
      const settle = (fn) => (value) => {
        this.forget(timer);
        fn(value);
      };
      Promise.resolve()
        .then(() => this.credentials.getToken())
        .then(settle(resolve), settle(reject));
    });
  }

  /**
   * The first frame, made when the socket opens so it names the channels
   * wanted then: `connection.reconnect` with their positions, or
   * `connection.init`.
   */
  hello(credentials) {
    const id = this.nextId();
    const data = { ...credentials };
    const channels = {};
    let named = 0;
    for (const [name, entry] of this.channels) {
      if (entry.status !== 'pending') continue;
      channels[name] = entry.epoch != null && entry.offset != null ? { offset: entry.offset, epoch: entry.epoch } : {};
      entry.status = 'sent';
      entry.requestId = id;
      named += 1;
    }
    if (named === 0) return { id, type: 'connection.init', data };
    data.channels = channels;
    if (this.previousConnectionId) data.previous_connection_id = this.previousConnectionId;
    return { id, type: 'connection.reconnect', data };
  }

  /** The connection was lost (or never made): settle what depended on it, then retry or stop. */
  lost(code, reason, { immediately = false } = {}) {
    this.clearConnectionTimers();
    this.ack = null;
    const announced = this.serverClose;
    this.serverClose = null;
    this.refreshing = null;
    this.failPending(new NovaError('disconnected', 'the connection dropped before the reply'));
    for (const [, entry] of this.channels) {
      if (entry.status === 'subscribed') entry.resumed = true;
      entry.status = 'pending';
      entry.requestId = null;
    }
    if (this.stopped) return;
    const message = (announced && announced.message) || reason || (code ? `closed with ${code}` : 'connection lost');
    // connection.error announced the close code: it counts even when the
    // close frame itself was lost (1006: the TCP connection dropped first).
    const announcedCode = announced && typeof announced.code === 'number' ? announced.code : null;
    const errorCode = (code == null || code === 1006) && announcedCode != null ? announcedCode : code;
    const refreshable = Boolean(this.credentials.getToken);
    let action = errorCode == null ? 'retry' : closeAction(errorCode, { refreshable });
    // A close the server marks final (reconnecting as before cannot work).
    // 4004 is the exception: the address is refused for a minute, so the
    // next attempt waits for the minute to pass instead.
    if (action === 'retry' && announced && announced.reconnect === false && errorCode !== 4004) action = 'stop';
    if (action === 'stop') {
      this.stopped = true;
      this.clearTimers();
      globalThis.removeEventListener?.('online', this.onOnline);
      const failed = new NovaError(errorCode ?? 'closed', message);
      for (const request of this.queue.splice(0)) request.fail(failed);
      for (const [, entry] of this.channels) for (const waiter of entry.waiters.splice(0)) waiter.reject(failed);
      for (const waiter of [...this.readyWaiters]) waiter.reject(failed);
      this.patch(
        { connected: false, connecting: false, lastError: message, lastErrorCode: errorCode, retryDelayMs: null },
        'closed',
        { code: errorCode, reason: message },
      );
      return;
    }
    const attempts = this.state.get().reconnectAttempts;
    let delay = immediately ? 0 : backoffDelay(attempts);
    if (errorCode === 4004) {
      delay = Math.max(delay, THROTTLED_WAIT_MS);
      this.throttledUntil = now() + delay;
    }
    this.retryTimer = this.later(delay, () => {
      this.retryTimer = null;
      this.open();
    });
    this.patch(
      {
        connected: false,
        connecting: false,
        reconnectAttempts: attempts + 1,
        lastError: message,
        lastErrorCode: errorCode,
        retryDelayMs: delay,
      },
      'reconnecting',
      { code: errorCode, reason: message, delayMs: delay },
    );
  }

  /** Cuts the wait before the next attempt short (`online`, `reconnect()`), except while the address is throttled. */
  retryNow() {
    if (now() < this.throttledUntil) return;
    this.forget(this.retryTimer);
    this.retryTimer = null;
    this.open();
  }

  // ---- frames from the server ----

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the server sends JSON text frames only
    }
    if (!frame || typeof frame.type !== 'string') return;
    this.lastFrameAt = now();
    // Every event of a channel with history is numbered: one the application
    // already has (offset not past its position) is not shown twice.
    const entry = frame.channel ? this.channels.get(frame.channel) : undefined;
    if (entry && typeof frame.offset === 'number' && entry.epoch != null) {
      if (entry.offset != null && frame.offset <= entry.offset) return;
      entry.offset = frame.offset;
    }
    const after = [];
    switch (frame.type) {
      case 'connection.ack':
        if (frame.reply_to === this.helloId) this.connected(frame.data || {});
        break;
      case 'connection.error':
        this.serverClose = frame.data || {};
        break;
      case 'connection.expiring':
        this.expiring(frame.data || {});
        break;
      case 'channel.subscribed':
        this.subscribed(frame, after);
        break;
      case 'channel.unsubscribed':
        if (frame.data && frame.data.reason && entry) this.channels.delete(frame.channel);
        break;
      case 'error':
        this.refused(frame, after);
        break;
      case 'assistant.start':
      case 'assistant.token':
      case 'assistant.snapshot':
      case 'assistant.complete':
      case 'assistant.error':
        this.answer(frame, after);
        break;
      default:
    }
    this.settle(frame);
    this.emit(frame.type, frame);
    this.emit('*', frame);
    for (const [type, value] of after) this.emit(type, value);
  }

  connected(data) {
    clearTimeout(this.connectTimer);
    this.forget(this.connectTimer);
    this.connectTimer = null;
    this.ack = data;
    this.everConnected = true;
    this.previousConnectionId = data.connection_id ?? null;
    this.patch(
      {
        connected: true,
        connecting: false,
        lastError: null,
        lastErrorCode: null,
        retryDelayMs: null,
        connectionId: data.connection_id ?? null,
        userId: data.user_id ?? null,
        expiresAt: data.expires_at ?? null,
      },
      'connected',
    );
    // A state subscriber may have closed the client, or dropped the
    // connection, in that very patch: nothing is left to start then.
    if (this.stopped || !this.ws || this.ack !== data) return;
    // The channels the first frame named are answered next; watched like
    // any subscribe, in case the server never answers one.
    this.watchSubscribe(this.helloId);
    // Attempts count again from zero only once the connection has held:
    // a server that accepts and drops at once still gets backoff.
    this.stableTimer = this.later(this.stableAfterMs, () => {
      this.stableTimer = null;
      if (this.state.get().reconnectAttempts !== 0) this.patch({ reconnectAttempts: 0 });
    });
    this.startHeartbeat(Number(data.heartbeat_interval_ms) || 30000);
    this.flushSubscriptions();
    for (const request of this.queue.splice(0)) request.transmit();
    for (const waiter of [...this.readyWaiters]) waiter.resolve(data);
  }

  /** Sends `channel.subscribe` for the channels asked for since the connection's first frame. */
  flushSubscriptions() {
    const names = [];
    for (const [name, entry] of this.channels) if (entry.status === 'pending') names.push(name);
    if (names.length === 0 || !this.isConnected()) return;
    const max = (this.ack && this.ack.limits && this.ack.limits.max_channels) || 100;
    for (let i = 0; i < names.length; i += max) {
      const batch = names.slice(i, i + max);
      const id = this.nextId();
      const recover = {};
      for (const name of batch) {
        const entry = this.channels.get(name);
        entry.status = 'sent';
        entry.requestId = id;
        if (entry.epoch != null && entry.offset != null) recover[name] = { offset: entry.offset, epoch: entry.epoch };
      }
      const data = { channels: batch };
      if (Object.keys(recover).length) data.recover = recover;
      this.write({ id, type: 'channel.subscribe', data });
      this.watchSubscribe(id);
    }
  }

  /**
   * Gives the channels asked for by request `id` the request timeout: the
   * server drops frames over its rate limit and answers only the first
   * refusal in a second, so a subscribe may never be answered. Those still
   * unanswered are asked for again, with backoff, until they are.
   */
  watchSubscribe(id) {
    const generation = this.generation;
    this.later(this.requestTimeoutMs, () => {
      if (generation !== this.generation || !this.isConnected()) return;
      let tries = 0;
      for (const [, entry] of this.channels) {
        if (entry.status !== 'sent' || entry.requestId !== id) continue;
        entry.status = 'pending';
        entry.requestId = null;
        entry.tries += 1;
        tries = Math.max(tries, entry.tries);
      }
      if (tries === 0) return;
      this.later(backoffDelay(tries - 1), () => {
        if (generation === this.generation) this.flushSubscriptions();
      });
    });
  }

  subscribed(frame, after) {
    const entry = this.channels.get(frame.channel);
    if (!entry) return; // unsubscribed meanwhile: its channel.unsubscribed follows
    const data = frame.data || {};
    const unsolicited = !frame.reply_to;
    if (data.epoch != null) {
      // Recovered: the missed events follow and move the position up to
      // data.offset themselves. Asked for, they follow the client's own
      // position (answers that began since come as snapshots, so `missed`
      // may count fewer); announced by the server while subscribed, they
      // are the last `missed` ones before data.offset. Otherwise the
      // channel starts at data.offset.
      if (data.recovered === true && unsolicited) entry.offset = Math.max(0, (data.offset ?? 0) - (data.missed ?? 0));
      else if (!(data.recovered === true && entry.offset != null)) entry.offset = data.offset ?? null;
      entry.epoch = data.epoch;
    } else {
      entry.epoch = null;
      entry.offset = null;
    }
    entry.status = 'subscribed';
    entry.requestId = null;
    entry.tries = 0;
    entry.data = data;
    if (entry.resumed || unsolicited) {
      after.push([
        'recovery',
        {
          channel: frame.channel,
          recovered: data.recovered === true,
          missed: data.missed ?? 0,
          epoch: data.epoch ?? null,
          offset: data.offset ?? null,
          reason: recoveryReason(data, unsolicited),
        },
      ]);
    }
    entry.resumed = false;
    for (const waiter of entry.waiters.splice(0)) waiter.resolve(data);
  }

  /**
   * An error about a channel being taken: its subscription failed (one
   * taken back after a reconnect is announced as a `recovery` that did
   * not recover); a rate-limited one is tried again.
   */
  refused(frame, after) {
    const data = frame.data || {};
    if (!frame.reply_to) return;
    // A refused connection.init or connection.reconnect: the connection
    // closes next, and the channels are asked for again on the next one.
    if (!this.ack) return;
    for (const [name, entry] of this.channels) {
      if (entry.status !== 'sent' || entry.requestId !== frame.reply_to) continue;
      if (frame.channel && frame.channel !== name) continue;
      if (data.code === 4004) {
        entry.status = 'pending';
        entry.requestId = null;
        this.later(Number(data.retry_after_ms) || 1000, () => this.flushSubscriptions());
        continue;
      }
      this.channels.delete(name);
      const error = new NovaError(data.code, data.message || `subscribing to '${name}' failed`, frame);
      for (const waiter of entry.waiters.splice(0)) waiter.reject(error);
      if (entry.resumed) {
        // Subscribed before the reconnect, refused now (the new token
        // grants less, say): the application must hear that it is gone.
        after.push([
          'recovery',
          { channel: name, recovered: false, missed: 0, epoch: null, offset: null, reason: 'refused', code: data.code },
        ]);
      }
    }
  }

  /** Resolves or rejects the request a reply answers. */
  settle(frame) {
    if (!frame.reply_to) return;
    const request = this.pending.get(frame.reply_to);
    if (!request) return;
    if (frame.type === 'error') {
      const data = frame.data || {};
      request.fail(new NovaError(data.code, data.message || 'request failed', frame));
    } else {
      request.succeed(frame.data ?? {});
    }
  }

  expiring(data) {
    if (!this.credentials.getToken) {
      this.patch({ lastError: `the token expires in ${data.expires_in_ms} ms and there is no getToken to renew it` });
      return;
    }
    const wait = this.lastRefreshAt + MIN_REFRESH_GAP_MS - now();
    if (wait > 0) {
      const generation = this.generation;
      this.later(Math.min(wait, Math.max(0, (data.expires_in_ms ?? 0) - 1000)), () => {
        if (generation === this.generation) this.refresh();
      });
      return;
    }
    this.refresh();
  }

  /**
   * A fresh token from getToken, sent as `connection.refresh`: the
   * connection stays. A failed refresh is tried once more, 5 s later, while
   * the token has time left.
   */
  async refresh(again = true) {
    if (this.refreshing || !this.isConnected()) return;
    const mine = {};
    const generation = this.generation;
    this.refreshing = mine;
    this.lastRefreshAt = now();
    try {
      const token = await this.freshToken();
      if (generation !== this.generation) return; // a new connection authenticated with its own token
      const data = await this.request('connection.refresh', { token }, {});
      this.patch({ expiresAt: data.expires_at ?? null });
    } catch (error) {
      if (generation !== this.generation) return;
      this.patch({
        lastError: `token refresh failed: ${error && error.message ? error.message : error}`,
        lastErrorCode: error instanceof NovaError ? error.code : null,
      });
      const expiresAt = Date.parse(this.state.get().expiresAt ?? '');
      if (again && expiresAt - now() > MIN_REFRESH_GAP_MS + this.requestTimeoutMs) {
        this.later(MIN_REFRESH_GAP_MS, () => {
          if (generation === this.generation) this.refresh(false);
        });
      }
    } finally {
      if (this.refreshing === mine) this.refreshing = null;
    }
  }

  /** Merges `assistant.*` frames into one answer per stream. */
  answer(frame, after) {
    const data = frame.data || {};
    if (typeof data.stream_id !== 'string') return;
    const key = `${frame.channel ?? ''}\u0000${data.stream_id}`;
    let answer = this.answers.get(key);
    if (!answer) {
      answer = { stream_id: data.stream_id, channel: frame.channel ?? null, text: '', done: false, offset: null };
      this.answers.set(key, answer);
      this.trimAnswers();
    }
    // Offsets compare within one epoch only: after an epoch change (a
    // restart without Redis, an eviction) the channel counts from 1 again,
    // and the answer's old offset would drop every new token.
    const channel = frame.channel ? this.channels.get(frame.channel) : undefined;
    const epoch = channel ? channel.epoch : null;
    if (this.answerEpochs.get(answer) !== epoch) {
      this.answerEpochs.set(answer, epoch);
      answer.offset = null;
    }
    switch (frame.type) {
      case 'assistant.start':
        // A new answer, perhaps under a stream_id used before.
        answer.text = '';
        answer.done = false;
        answer.offset = null;
        delete answer.error;
        break;
      case 'assistant.token':
        // A token already inside a snapshot (offset not past it) is skipped.
        if (typeof frame.offset === 'number' && answer.offset != null && frame.offset <= answer.offset) return;
        answer.text += typeof data.chunk === 'string' ? data.chunk : '';
        if (typeof frame.offset === 'number') answer.offset = frame.offset;
        if (data.is_final === true) answer.done = true;
        break;
      case 'assistant.snapshot':
        if (answer.offset != null && typeof data.offset === 'number' && data.offset < answer.offset) return;
        answer.text = typeof data.text === 'string' ? data.text : answer.text;
        if (typeof data.offset === 'number') answer.offset = data.offset;
        if (data.is_final === true) answer.done = true;
        break;
      case 'assistant.complete':
        if (typeof data.content === 'string') answer.text = data.content;
        answer.done = true;
        break;
      case 'assistant.error':
        answer.error = data.message ?? 'failed';
        answer.done = true;
        break;
      default:
    }
    after.push(['answer', { ...answer }]);
  }

  trimAnswers() {
    if (this.answers.size <= ANSWERS_KEPT) return;
    for (const [key, answer] of this.answers) {
      if (this.answers.size <= ANSWERS_KEPT) break;
      if (answer.done) this.answers.delete(key);
    }
    // Still too many streaming at once: the oldest go.
    for (const [key] of this.answers) {
      if (this.answers.size <= ANSWERS_KEPT) break;
      this.answers.delete(key);
    }
  }

  emit(type, value) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const entry of [...set]) call(entry.handler, value);
  }

  // ---- requests ----

  request(type, data, options) {
    return new Promise((resolve, reject) => {
      const id = options.id ?? this.nextId();
      const frame = { id, type, data: data ?? {} };
      if (options.channel) frame.channel = options.channel;
      const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
      // Requests sent with the id of one still waiting (a resend, see
      // SendOptions.id) wait with it: its reply settles them all.
      const request = {
        done: false,
        sharers: [],
        finish: () => {
          request.done = true;
          this.forget(request.timer);
          if (this.pending.get(id) === request) {
            // The first still waiting takes the id over, with the others.
            const [heir, ...rest] = request.sharers.filter((r) => !r.done);
            if (heir) {
              heir.sharers.push(...rest);
              this.pending.set(id, heir);
            } else this.pending.delete(id);
          }
          request.sharers = [];
          const at = this.queue.indexOf(request);
          if (at >= 0) this.queue.splice(at, 1);
        },
        // Settled by the reply, or by the connection's end: for every sharer too.
        succeed: (value) => {
          if (request.done) return;
          const sharers = request.sharers.splice(0);
          request.finish();
          resolve(value);
          for (const sharer of sharers) sharer.succeed(value);
        },
        fail: (error) => {
          if (request.done) return;
          const sharers = request.sharers.splice(0);
          request.finish();
          reject(error);
          for (const sharer of sharers) sharer.fail(error);
        },
        // Its own timeout: the sharers keep waiting for the reply.
        expire: (error) => {
          if (request.done) return;
          request.finish();
          reject(error);
        },
        transmit: () => {
          if (request.done) return;
          if (NO_REPLY.has(type) && !options.expectReply) {
            this.write(frame);
            return request.succeed(null);
          }
          const holder = this.pending.get(id);
          if (holder && holder !== request) holder.sharers.push(request);
          else this.pending.set(id, request);
          this.write(frame);
        },
      };
      request.timer = this.later(timeoutMs, () =>
        request.expire(new NovaError('timeout', `no reply to '${type}' within ${timeoutMs} ms`)),
      );
      if (this.stopped && this.state.get().status === 'closed') {
        return request.fail(new NovaError('closed', 'the client is closed'));
      }
      if (this.isConnected()) request.transmit();
      else this.queue.push(request);
    });
  }

  /** Rejects the requests sent on a connection that is gone. */
  failPending(error) {
    const requests = [...this.pending.values()];
    this.pending.clear();
    for (const request of requests) request.fail(error);
  }

  write(frame) {
    const ws = this.ws;
    if (!ws) return;
    try {
      ws.send(JSON.stringify(frame));
    } catch {
      // The socket is closing: its close event settles what was pending.
    }
  }

  nextId() {
    this.seq += 1;
    return `${this.idPrefix}-${this.seq}`;
  }

  // ---- heartbeat ----

  /**
   * Every interval without a frame from the server, a `connection.heartbeat`
   * must be answered; when it is not, the connection is dead (a sleeping
   * laptop, a dropped NAT entry) and is replaced.
   */
  startHeartbeat(intervalMs) {
    const tick = () => {
      this.heartbeatTimer = this.later(intervalMs, () => {
        if (!this.isConnected()) return;
        if (now() - this.lastFrameAt < intervalMs) return tick();
        const ws = this.ws;
        this.request('connection.heartbeat', {}, { timeoutMs: Math.min(this.requestTimeoutMs, intervalMs) }).then(
          tick,
          (error) => {
            if (error.code !== 'timeout' || this.ws !== ws || !ws) return;
            this.ws = null;
            detach(ws);
            try {
              ws.close(4000, 'heartbeat unanswered');
            } catch {}
            this.lost(null, 'the server did not answer a heartbeat');
          },
        );
      });
    };
    tick();
  }

  // ---- state and timers ----

  patch(changes, status, detail) {
    const current = this.state.get();
    const next = { ...current, ...changes };
    if (status && (status !== current.status || detail)) {
      next.status = status;
      const entry = { status, at: iso() };
      if (detail) Object.assign(entry, detail);
      next.history = [...current.history, entry].slice(-this.historyLimit);
    }
    this.state.set(next);
  }

  later(ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  forget(timer) {
    if (timer == null) return;
    clearTimeout(timer);
    this.timers.delete(timer);
  }

  clearConnectionTimers() {
    for (const name of ['connectTimer', 'stableTimer', 'heartbeatTimer']) {
      this.forget(this[name]);
      this[name] = null;
    }
  }

  clearTimers() {
    // Request timers belong to their requests, which close() settles.
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.connectTimer = this.retryTimer = this.stableTimer = this.heartbeatTimer = null;
  }
}

/** Why a channel was not recovered, for the `recovery` event. */
function recoveryReason(data, unsolicited) {
  if (data.recovered === true) return null;
  if (data.epoch == null) return 'no_history';
  if (unsolicited) return 'history_lost';
  return data.recovered === false ? 'gone' : 'no_position';
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
}
