// The dashboard's entry: sign-in, the REST calls (every one with the admin
// token), the live connection (the JavaScript client, authenticated with the
// admin token as its API key), the metrics sampled once a second, and the
// hash routes that mount one page at a time.
//
// The token is kept in sessionStorage: it survives a reload of this tab and
// dies with it, and it never appears in a URL.

import { h, fill, toast } from './dom.js';
import * as overview from './overview.js';
import * as connections from './connections.js';
import * as channels from './channels.js';
import * as settings from './settings.js';

const PAGES = { overview, connections, channels, settings };
const TOKEN_KEY = 'nova-dashboard.admin-token';
/** Metric samples kept for the chart: three minutes at one a second. */
const SAMPLES_KEPT = 180;
const SAMPLE_EVERY_MS = 1000;

const $ = (id) => document.getElementById(id);

/** A refused REST call: the API's `{"error": {"code", "message"}}` and the status. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.body = body;
  }
}

async function request(token, method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  let payload;
  if (typeof body === 'string') {
    headers['content-type'] = 'text/plain; charset=utf-8';
    payload = body;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, cache: 'no-store' });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { error: { code: 'not_json', message: text.slice(0, 200) } };
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** Samples `GET /ws/metrics` once a second while signed in; the overview draws them. */
class Sampler {
  constructor(api) {
    this.api = api;
    this.samples = [];
    this.latest = null;
    this.error = null;
    this.listeners = new Set();
    this.timer = null;
    this.running = false;
  }

  start() {
    this.running = true;
    this.tick();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
  }

  /** Calls `fn()` after every sample; returns the unsubscriber. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async tick() {
    const started = Date.now();
    try {
      const metrics = await this.api('GET', '/ws/metrics');
      this.latest = metrics;
      this.error = null;
      this.samples.push({ t: Date.now(), values: [metrics.messages_in_per_sec, metrics.messages_out_per_sec] });
      if (this.samples.length > SAMPLES_KEPT) this.samples.splice(0, this.samples.length - SAMPLES_KEPT);
    } catch (error) {
      this.error = error;
    }
    if (!this.running) return;
    for (const fn of [...this.listeners]) fn();
    // The next sample a second after this one started, never two at once.
    this.timer = setTimeout(() => this.tick(), Math.max(0, SAMPLE_EVERY_MS - (Date.now() - started)));
  }
}

/** The dashboard: one per page load. */
class Dashboard {
  constructor() {
    this.token = sessionStorage.getItem(TOKEN_KEY);
    this.client = null;
    this.clientError = null;
    this.sampler = null;
    this.unmount = null;
    this.api = (method, path, body) =>
      request(this.token, method, path, body).catch((error) => {
        if (error instanceof ApiError && error.status === 401 && this.token) {
          this.signOut('The admin token was refused: sign in again.');
        }
        throw error;
      });
    window.addEventListener('hashchange', () => this.route());
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.signIn($('token').value.trim());
    });
    $('logout').addEventListener('click', () => this.signOut());
  }

  run() {
    if (this.token) this.start();
    else this.showLogin();
  }

  showLogin(message) {
    $('login').hidden = false;
    for (const id of ['nav', 'logout', 'live']) $(id).hidden = true;
    fill($('node'));
    const error = $('login-error');
    error.hidden = !message;
    error.textContent = message || '';
    $('token').value = '';
    $('token').focus();
  }

  async signIn(token) {
    if (!token) return;
    const button = $('login-form').querySelector('button');
    button.disabled = true;
    try {
      await request(token, 'GET', '/ws/metrics');
      this.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      this.start();
    } catch (error) {
      const message =
        error instanceof ApiError && error.status === 401 ? 'That token was refused.' : `Cannot sign in: ${error.message}`;
      this.showLogin(message);
    } finally {
      button.disabled = false;
    }
  }

  signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    this.token = null;
    this.sampler?.stop();
    this.sampler = null;
    this.client?.close();
    this.client = null;
    this.unmount?.();
    this.unmount = null;
    fill($('page'));
    this.showLogin(message);
  }

  start() {
    $('login').hidden = true;
    for (const id of ['nav', 'logout', 'live']) $(id).hidden = false;
    fetch('/health', { cache: 'no-store' })
      .then((r) => r.json())
      .then((health) => fill($('node'), `node ${health.node_id} · v${health.version}`))
      .catch(() => {});
    this.sampler = new Sampler(this.api);
    this.sampler.start();
    this.live = this.startLive(this.token);
    // replaceState fires no hashchange: the page is mounted once, here.
    if (!location.hash) history.replaceState(null, '', '#/overview');
    this.route();
  }

  /**
   * The live connection: the client module served by this server, with the
   * admin token as its API key (user `nova:admin`, every channel). Resolves to
   * the client, or `null` when the module could not be loaded (the pages
   * then work from REST alone).
   */
  async startLive(token) {
    let NovaClient;
    try {
      ({ NovaClient } = await import('/client/nova-realtime.js'));
    } catch (error) {
      this.clientError = `the client module did not load: ${error.message}`;
      this.showLive({ status: 'unavailable', lastError: this.clientError });
      return null;
    }
    if (token !== this.token) return null; // signed out meanwhile
    const client = new NovaClient({ apiKey: token, requestTimeoutMs: 10000 });
    this.client = client;
    client.state.subscribe((state) => this.showLive(state));
    client.connect();
    client.subscribe('system:settings').catch((error) => toast(`Live settings unavailable: ${error.message}`, 'error'));
    return client;
  }

  showLive(state) {
    const live = $('live');
    live.dataset.status = state.status;
    const words = {
      connected: 'live',
      connecting: 'connecting…',
      reconnecting: state.retryDelayMs ? `reconnecting (${Math.ceil(state.retryDelayMs / 1000)} s)…` : 'reconnecting…',
      closed: 'offline',
      idle: 'offline',
      unavailable: 'no live updates',
    };
    $('live-text').textContent = words[state.status] || state.status;
    live.title = state.lastError ? `Last error: ${state.lastError}` : 'Live updates through the WebSocket';
  }

  /** What pages get: REST, live events, the metrics, navigation. */
  context() {
    const dashboard = this;
    return {
      api: this.api,
      sampler: this.sampler,
      live: this.live,
      /** The live client's connection id (to mark the dashboard's own connection), or null. */
      connectionId: () => dashboard.client?.state.get().connectionId ?? null,
      /** Calls `fn(frame)` for every event of `type` (`'*'`: every one); returns the unsubscriber. */
      on(type, fn) {
        let off = null;
        let cancelled = false;
        dashboard.live.then((client) => {
          if (client && !cancelled) off = client.on(type, fn);
        });
        return () => {
          cancelled = true;
          off?.();
        };
      },
      /**
       * Calls `fn()` whenever the live connection is back after a loss
       * (a server restart): events sent meanwhile were missed, so what
       * they would have changed must be read again.
       */
      onReconnected(fn) {
        let off = null;
        let cancelled = false;
        dashboard.live.then((client) => {
          if (!client || cancelled) return;
          let lost = false;
          off = client.state.subscribe((state) => {
            if (!state.connected && state.status !== 'connecting') lost = true;
            else if (state.connected && lost) {
              lost = false;
              fn();
            }
          });
        });
        return () => {
          cancelled = true;
          off?.();
        };
      },
      navigate(hash) {
        if (location.hash === hash) dashboard.route();
        else location.hash = hash;
      },
    };
  }

  route() {
    if (!this.token) return;
    const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
    const page = PAGES[name] ? name : 'overview';
    for (const link of document.querySelectorAll('#nav a')) {
      link.classList.toggle('active', link.dataset.page === page);
      if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    this.unmount?.();
    const root = h('div', { class: `page page-${page}`, dataset: { page } });
    fill($('page'), root);
    document.title = `${PAGES[page].title} · nova-realtime`;
    // A hand-edited hash may not decode (`%E0`): the page opens without it.
    let param = null;
    try {
      param = rest.length ? decodeURIComponent(rest.join('/')) : null;
    } catch {}
    this.unmount = PAGES[page].mount(root, this.context(), param) || null;
  }
}

new Dashboard().run();
