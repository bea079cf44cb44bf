import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cliFromServerCommand, expandVariables, ResolveInput, resolveServerCommand } from '../src/serverCommand';

function input(executables: string[], over: Partial<ResolveInput> = {}): ResolveInput {
  const set = new Set(executables);
  return {
    serverCommand: [],
    pythonPath: '',
    workspaceFolders: ['/ws'],
    envPath: '/usr/local/bin:/usr/bin',
    home: '/home/u',
    platform: 'linux',
    isExecutable: (f) => set.has(f),
    ...over,
  };
}

test('serverCommand wins and ${workspaceFolder} is expanded', () => {
  const r = resolveServerCommand(
    input(['/ws/.venv/bin/python', '/usr/bin/phi-lsp'], {
      serverCommand: ['${workspaceFolder}/.venv/bin/python', '-m', 'phi_lsp', 'serve', '--log-file', '~/l.log'],
    }),
  );
  assert.deepEqual(r, {
    ok: true,
    command: '/ws/.venv/bin/python',
    args: ['-m', 'phi_lsp', 'serve', '--log-file', '/home/u/l.log'],
    source: 'serverCommand',
    description: 'phiLsp.serverCommand',
  });
});

test('a bare serverCommand is looked up on PATH', () => {
  const r = resolveServerCommand(input(['/usr/bin/phi-lsp'], { serverCommand: ['phi-lsp', 'serve'] }));
  assert.ok(r.ok && r.command === '/usr/bin/phi-lsp' && r.args[0] === 'serve');
});

test('a serverCommand that does not exist is a bad setting, not a silent fallback', () => {
  const r = resolveServerCommand(input(['/usr/bin/phi-lsp'], { serverCommand: ['/nope/python', '-m', 'phi_lsp', 'serve'] }));
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.reason === 'badSetting' && r.setting === 'serverCommand');
  assert.match(!r.ok ? r.message : '', /does not exist/);
});

test('pythonPath runs python -m phi_lsp serve', () => {
  const r = resolveServerCommand(input(['/opt/py/bin/python3'], { pythonPath: '/opt/py/bin/python3' }));
  assert.ok(r.ok);
  assert.deepEqual(r.ok && [r.command, ...r.args], ['/opt/py/bin/python3', '-m', 'phi_lsp', 'serve']);
  const bad = resolveServerCommand(input([], { pythonPath: 'python9' }));
  assert.ok(!bad.ok && bad.setting === 'pythonPath' && /not on PATH/.test(bad.message));
});

test("the workspace's .venv comes before PATH", () => {
  const r = resolveServerCommand(input(['/ws/.venv/bin/phi-lsp', '/usr/bin/phi-lsp']));
  assert.ok(r.ok && r.command === '/ws/.venv/bin/phi-lsp' && r.source === 'workspaceVenv');
  const second = resolveServerCommand(input(['/b/venv/bin/phi-lsp'], { workspaceFolders: ['/a', '/b'] }));
  assert.ok(second.ok && second.command === '/b/venv/bin/phi-lsp');
});

test('then PATH, then ~/.local/bin', () => {
  const onPath = resolveServerCommand(input(['/usr/bin/phi-lsp', '/home/u/.local/bin/phi-lsp']));
  assert.ok(onPath.ok && onPath.source === 'path' && onPath.command === '/usr/bin/phi-lsp');
  const user = resolveServerCommand(input(['/home/u/.local/bin/phi-lsp']));
  assert.ok(user.ok && user.source === 'userBin');
});

test('nothing found: notInstalled with every place tried', () => {
  const r = resolveServerCommand(input([]));
  assert.ok(!r.ok && r.reason === 'notInstalled');
  assert.ok(!r.ok && r.tried.includes('/ws/.venv/bin/phi-lsp') && r.tried.includes('/usr/bin/phi-lsp'));
});

test('Windows: Scripts\\phi-lsp.exe and ; in PATH', () => {
  const r = resolveServerCommand(
    input(['C:\\ws\\.venv\\Scripts\\phi-lsp.exe'], { platform: 'win32', workspaceFolders: ['C:\\ws'], envPath: 'C:\\bin;C:\\py' }),
  );
  assert.ok(r.ok && r.command === 'C:\\ws\\.venv\\Scripts\\phi-lsp.exe');
  const py = resolveServerCommand(input(['C:\\py\\python.exe'], { platform: 'win32', envPath: 'C:\\bin;C:\\py', pythonPath: 'python' }));
  assert.ok(py.ok && py.command === 'C:\\py\\python.exe');
});

test('the CLI is the server command up to serve', () => {
  assert.deepEqual(cliFromServerCommand('/p/python', ['-m', 'phi_lsp', 'serve', '--log-file', 'x']), ['/p/python', '-m', 'phi_lsp']);
  assert.deepEqual(cliFromServerCommand('/v/bin/phi-lsp', ['serve']), ['/v/bin/phi-lsp']);
  assert.equal(cliFromServerCommand('/wrapper.sh', []), undefined);
});

test('expandVariables', () => {
  process.env.PHI_TEST_VAR = 'v';
  const i = { workspaceFolders: ['/ws'], home: '/h' };
  assert.equal(expandVariables('${workspaceFolder}/a', i), '/ws/a');
  assert.equal(expandVariables('${userHome}/a ${env:PHI_TEST_VAR}', i), '/h/a v');
  assert.equal(expandVariables('~/x', i), '/h/x');
  assert.equal(expandVariables('a~b', i), 'a~b');
});
