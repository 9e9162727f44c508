// The real server for the JavaScript tests: the built binary in a process of
// its own, with its settings files copied into a temporary directory (tests
// edit them), on a port that stays the same across restarts so a client can
// reconnect to it.
//
// NOVA_BIN names the binary (scripts/test builds it and sets it); without it
// target/debug/nova-realtime is used.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const root = resolve(here, '..', '..');

/**
 * The WebSocket constructor the Node tests hand to the client: Node's own
 * (Node 22+, or Node 20 with --experimental-websocket, as scripts/test-js
 * runs it: the WHATWG one browsers have), else the `ws` package's, so that
 * a plain `node --test` runs them on Node 20 as well.
 */
export const WebSocket = globalThis.WebSocket ?? (await import('ws')).WebSocket;

/** The admin token every test server takes. */
export const ADMIN_TOKEN = 'test-admin-token-0123456789';
/** The JWT secret every test server takes. */
export const JWT_SECRET = 'test-jwt-secret-0123456789-0123456789';

/** Where the browser tests keep their screenshots (test output, not committed). */
export const SCREENSHOTS = join(root, 'target', 'screenshots');

/** An HS256 JWT signed with JWT_SECRET: `sub`, `exp` in `ttlSecs`, and any other claims. */
export function jwt(claims, ttlSecs = 3600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = { exp: Math.floor(Date.now() / 1000) + ttlSecs, ...claims };
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(body)}`;
  const signature = createHmac('sha256', JWT_SECRET).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** Resolves when `stream` has printed a line containing `needle`; rejects after `ms`. */
function waitForLine(server, needle, ms = 20000) {
  return new Promise((resolveLine, reject) => {
    const found = server.lines.find((l) => l.includes(needle));
    if (found) return resolveLine(found);
    const timer = setTimeout(() => {
      server.waiters.delete(check);
      reject(new Error(`no line with '${needle}' within ${ms} ms; stderr:\n${server.lines.join('\n')}`));
    }, ms);
    const check = (line) => {
      if (!line.includes(needle)) return false;
      clearTimeout(timer);
      resolveLine(line);
      return true;
    };
    server.waiters.add(check);
  });
}

/**
 * A running server. `url` is `http://127.0.0.1:<port>`, `wsUrl` its `/ws`.
 * `restart()` stops it gracefully (SIGTERM: clients get 1012) and starts it
 * again on the same port with the same files; `kill()` SIGKILLs it; `stop()`
 * ends it and removes its files.
 */
export class Server {
  constructor({ args = [], env = {} } = {}) {
    this.args = args;
    this.env = env;
    this.dir = mkdtempSync(join(tmpdir(), 'nova-js-'));
    this.configDir = join(this.dir, 'configs');
    this.promptsDir = join(this.dir, 'prompts');
    cpSync(join(root, 'configs'), this.configDir, { recursive: true });
    cpSync(join(root, 'prompts'), this.promptsDir, { recursive: true });
    mkdirSync(join(this.dir, 'backups'), { recursive: true });
    this.port = 0;
    this.lines = [];
    this.waiters = new Set();
    this.child = null;
  }

  /** Starts the process and waits for its `listening on` line. */
  async start() {
    const bin = process.env.NOVA_BIN || join(root, 'target', 'debug', 'nova-realtime');
    const bind = `127.0.0.1:${this.port}`;
    this.lines = [];
    const child = spawn(bin, ['--bind', bind, ...this.args], {
      env: {
        PATH: process.env.PATH,
        RUST_LOG: process.env.NOVA_JS_LOG || 'warn,nova_realtime=info',
        NOVA_ADMIN_TOKEN: ADMIN_TOKEN,
        NOVA_JWT_SECRET: JWT_SECRET,
        NOVA_CONFIG_DIR: this.configDir,
        NOVA_PROMPTS_DIR: this.promptsDir,
        NOVA_DRAIN_TIMEOUT_SECS: '1',
        NOVA_SETTINGS_DEBOUNCE_MS: '50',
        ...this.env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    let partial = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      for (const line of parts) {
        this.lines.push(line);
        if (process.env.NOVA_JS_LOG) process.stderr.write(`[server] ${line}\n`);
        for (const check of [...this.waiters]) if (check(line)) this.waiters.delete(check);
      }
    });
    const line = await Promise.race([
      waitForLine(this, 'listening on http://'),
      this.exited.then(({ code }) => {
        throw new Error(`the server exited (${code}) before listening:\n${this.lines.join('\n')}`);
      }),
    ]);
    const addr = line.split('listening on http://')[1].trim().split(/\s/)[0];
    this.port = Number(addr.split(':').pop());
    this.url = `http://127.0.0.1:${this.port}`;
    this.wsUrl = `ws://127.0.0.1:${this.port}/ws`;
    return this;
  }

  /** Waits for a stderr line containing `needle`. */
  waitForLine(needle, ms) {
    return waitForLine(this, needle, ms);
  }

  /** SIGTERM and wait for the exit (the server closes its clients with 1012). */
  async terminate() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    await this.exited;
  }

  /** SIGKILL and wait for the exit. */
  async kill() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** A graceful stop, then a start on the same port. */
  async restart() {
    await this.terminate();
    return this.start();
  }

  /** Ends the process and removes its files. */
  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A REST call with the admin token; resolves to `{ status, body }` (JSON when it parses). */
  async admin(method, path, body) {
    const res = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed };
  }

  /** Publishes one event through `POST /api/publish`; throws unless 2xx. */
  async publish(channel, type, data) {
    const res = await this.admin('POST', '/api/publish', { channel, type, data });
    if (res.status >= 300) throw new Error(`publish ${type} to ${channel}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  }
}

/** Starts a server; `options` as for `Server`. */
export async function startServer(options) {
  return new Server(options).start();
}

/** The system's Chromium: CHROMIUM, else /usr/bin/chromium. */
export function chromiumPath() {
  return process.env.CHROMIUM || '/usr/bin/chromium';
}
