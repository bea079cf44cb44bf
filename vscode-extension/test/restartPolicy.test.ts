import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isLoadFailure, modelToPull, RestartPolicy } from '../src/restartPolicy';
import { levelOf, StderrTail } from '../src/serverLog';

test('three restarts in the window, then no more', () => {
  const p = new RestartPolicy(3, 180_000);
  assert.deepEqual([0, 1000, 2000, 3000].map((t) => p.shouldRestart(t)), [true, true, true, false]);
  assert.equal(p.shouldRestart(4000), false);
  assert.equal(p.recentCrashes, 5);
});

test('crashes older than the window are forgotten', () => {
  const p = new RestartPolicy(3, 180_000);
  [0, 1000, 2000].forEach((t) => p.shouldRestart(t));
  assert.equal(p.shouldRestart(200_000), true);
  assert.equal(p.recentCrashes, 1);
});

test('reset starts the count again', () => {
  const p = new RestartPolicy(1, 180_000);
  p.shouldRestart(0);
  assert.equal(p.shouldRestart(1), false);
  p.reset();
  assert.equal(p.shouldRestart(2), true);
});

test('load failure messages and the model to pull', () => {
  const msg =
    "phi-lsp could not load model 'phi-1': Model 'phi-1' is not downloaded yet. Run `phi-lsp models pull phi-1` once " +
    "(or `phi-lsp models import PATH --name phi-1` for files you already have). Fix phiLsp.model and it loads again.";
  assert.ok(isLoadFailure(msg));
  assert.equal(modelToPull(msg), 'phi-1');
  assert.equal(modelToPull("phi-lsp could not load model '/x.gguf': The model path '/x.gguf' does not exist."), undefined);
  assert.ok(!isLoadFailure('phiLsp.maxNewTokens = 0 was ignored'));
});

test('stderr levels and the reason a server did not start', () => {
  assert.equal(levelOf('2026-11-22 01:02:03,456 INFO phi_lsp: phi-lsp 0.1.0 starting (pid 1)'), 'info');
  assert.equal(levelOf('2026-11-22 01:02:03,456 WARNING phi_lsp.lsp.server: x'), 'warn');
  assert.equal(levelOf('2026-11-22 01:02:03,456 ERROR phi_lsp.lsp.server: x'), 'error');
  assert.equal(levelOf('/usr/bin/python3: No module named phi_lsp'), 'error');
  const tail = new StderrTail(3);
  tail.push('/usr/bin/python3: No module named phi_lsp');
  assert.equal(tail.reason(), '/usr/bin/python3: No module named phi_lsp');
  ['Traceback (most recent call last):', '  File "x.py", line 1, in <module>', 'ImportError: no llama', ''].forEach((l) =>
    tail.push(l),
  );
  assert.equal(tail.reason(), 'ImportError: no llama');
  tail.clear();
  tail.push('2026-11-22 01:02:03,456 ERROR phi_lsp.lsp.server: model exploded');
  assert.equal(tail.reason(), 'model exploded');
  tail.clear();
  assert.equal(tail.reason(), undefined);
});
