// The client as a package: `npm pack` makes a tarball with the module, its
// types, the example and the README; installed from that tarball it imports
// by name in Node; TypeScript accepts an application's typed use of it
// (tests/js/types/usage.ts) and rejects its mistakes; and the hand-written
// API of nova-realtime.d.ts names what nova-realtime.js exports.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './harness.mjs';
import * as client from '../../clients/js/nova-realtime.js';

const pkgDir = join(root, 'clients', 'js');
const here = join(root, 'tests', 'js');

test('npm pack makes a tarball with the module, its types, the example and the README, and nothing else', (t) => {
  const out = mkdtempSync(join(tmpdir(), 'nova-pack-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  const [packed] = JSON.parse(
    execFileSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: pkgDir, encoding: 'utf8' }),
  );
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  assert.equal(packed.name, 'nova-realtime');
  assert.equal(packed.version, pkg.version);
  assert.deepEqual(packed.files.map((f) => f.path).sort(), [
    'README.md',
    'example.html',
    'nova-realtime.d.ts',
    'nova-realtime.js',
    'package.json',
  ]);
  assert.equal(pkg.dependencies, undefined, 'no runtime dependencies');

  // Installed from the tarball (offline: it has no dependencies), it imports by name.
  const app = join(out, 'app');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', join(out, packed.filename)], {
    cwd: app,
    stdio: 'pipe',
  });
  const printed = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "import { NovaClient, PROTOCOL_VERSION } from 'nova-realtime'; console.log(typeof NovaClient, PROTOCOL_VERSION)"],
    { cwd: app, encoding: 'utf8' },
  );
  assert.equal(printed.trim(), 'function 1');
});

test('TypeScript accepts the typed usage and rejects each marked mistake', () => {
  const tsc = join(here, 'node_modules', 'typescript', 'bin', 'tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', join(here, 'types')], { encoding: 'utf8', stdio: 'pipe' });
  } catch (error) {
    assert.fail(`tsc found errors in tests/js/types/usage.ts:\n${error.stdout}${error.stderr}`);
  }
});

test("the declarations' hand-written API names what the module exports", () => {
  const dts = readFileSync(join(pkgDir, 'nova-realtime.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(client).sort());
  const body = dts.slice(dts.indexOf('export declare class NovaClient'));
  const methods = new Set([...body.slice(0, body.indexOf('\n}\n')).matchAll(/^ {2}(\w+)(?:<[^>]*>)?\(/gm)].map((m) => m[1]));
  assert.ok(methods.size >= 9, [...methods].join(', '));
  for (const method of methods) {
    assert.equal(typeof client.NovaClient.prototype[method], 'function', `NovaClient.${method} is declared but missing`);
  }
});
