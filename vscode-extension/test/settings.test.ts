import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  CLIENT_KEYS,
  changedKeys,
  didChangeConfigurationPayload,
  modelLabel,
  serverKeysOf,
  toServerSettings,
} from '../src/settings';

// The extension reads the same file at runtime (context.extension.packageJSON).
const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { default: unknown; markdownDescription?: string; enum?: unknown[] }> =
  pkg.contributes.configuration.properties;
const KEYS = serverKeysOf(properties);

test('the server keys are the phiLsp settings minus the extension\'s own', () => {
  for (const key of ['model', 'backend', 'enable', 'maxNewTokens', 'nThreads', 'generateCandidates', 'completionFallback']) {
    assert.ok(KEYS.includes(key), key);
  }
  for (const key of CLIENT_KEYS) {
    assert.ok(!KEYS.includes(key), key);
    assert.ok(properties[`phiLsp.${key}`], `phiLsp.${key} is contributed`);
  }
  assert.deepEqual(serverKeysOf({ 'phiLsp.a': {}, 'phiLsp.pythonPath': {}, 'editor.x': {} }), ['a']);
});

test('every contributed setting has a description and a default in its enum', () => {
  for (const [name, prop] of Object.entries(properties)) {
    assert.ok(prop.markdownDescription, `${name} has no description`);
    assert.ok('default' in prop, `${name} has no default`);
    if (prop.enum) {
      assert.ok(prop.enum.includes(prop.default), `${name}: default not in enum`);
    }
  }
});

test('toServerSettings keeps exactly the server keys', () => {
  const section = {
    model: '/tmp/m.gguf',
    maxNewTokens: 32,
    nThreads: null,
    serverCommand: ['python', '-m', 'phi_lsp', 'serve'],
    pythonPath: '/usr/bin/python3',
    trace: { server: 'verbose' },
    somethingElse: 1,
  };
  assert.deepEqual(toServerSettings(section, KEYS), { model: '/tmp/m.gguf', maxNewTokens: 32, nThreads: null });
});

test('toServerSettings unwraps a wrapped section and ignores non-objects', () => {
  assert.deepEqual(toServerSettings({ phiLsp: { enable: false, pythonPath: 'x' } }, KEYS), { enable: false });
  assert.deepEqual(toServerSettings(null, KEYS), {});
  assert.deepEqual(toServerSettings('phi-1', KEYS), {});
  assert.deepEqual(toServerSettings([1, 2], KEYS), {});
  assert.deepEqual(toServerSettings({ model: undefined }, KEYS), {});
});

test('didChangeConfiguration payload wraps the filtered section', () => {
  assert.deepEqual(didChangeConfigurationPayload({ enable: true, pythonPath: 'p' }, KEYS), {
    settings: { phiLsp: { enable: true } },
  });
});

test('changedKeys tells restarts from live changes', () => {
  const affects = (names: string[]) => (n: string) => names.includes(n);
  assert.deepEqual(changedKeys(affects(['phiLsp.model', 'phiLsp']), KEYS), {
    restart: false,
    server: ['model'],
    initializeOnly: false,
  });
  assert.equal(changedKeys(affects(['phiLsp.serverCommand']), KEYS).restart, true);
  assert.equal(changedKeys(affects(['phiLsp.pythonPath']), KEYS).restart, true);
  assert.equal(changedKeys(affects(['phiLsp.completionFallback']), KEYS).initializeOnly, true);
  assert.deepEqual(changedKeys(affects(['editor.fontSize']), KEYS).server, []);
});

test('modelLabel shortens paths only', () => {
  assert.equal(modelLabel('phi-1'), 'phi-1');
  assert.equal(modelLabel('/tmp/x/trained-f32.gguf'), 'trained-f32.gguf');
  assert.equal(modelLabel('C:\\models\\phi\\'), 'phi');
});
