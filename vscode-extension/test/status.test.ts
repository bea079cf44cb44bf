import assert from 'node:assert/strict';
import { test } from 'node:test';
import { initialState, reduce, StatusEvent, StatusState, view } from '../src/status';
import { parseUsage } from '../src/usageFigures';

function run(events: StatusEvent[], state: StatusState = initialState()): StatusState {
  return events.reduce(reduce, state);
}

const loadOk: StatusEvent[] = [
  { type: 'starting' },
  { type: 'running' },
  { type: 'progressBegin', token: 't1', title: 'phi-lsp: loading /tmp/m/trained-f32.gguf' },
  { type: 'progressEnd', token: 't1', message: '/tmp/m/trained-f32.gguf ready (llamacpp, 0.3 s)' },
];

test('starting, then loading with the model name and percentage', () => {
  assert.equal(view(run([{ type: 'starting' }])).text, '$(loading~spin) phi-lsp: starting');
  const s = run([
    { type: 'starting' },
    { type: 'running' },
    { type: 'progressBegin', token: 't1', title: 'phi-lsp: loading phi-1' },
    { type: 'progressReport', token: 't1', percentage: 42.4, message: 'weights' },
  ]);
  assert.equal(s.phase, 'loading');
  assert.equal(view(s).text, '$(loading~spin) phi-lsp: loading phi-1 42%');
  assert.match(view(s).tooltip, /weights/);
});

test('ready: the end message gives model, backend and load time', () => {
  const s = run(loadOk);
  assert.equal(s.phase, 'ready');
  assert.equal(s.backend, 'llamacpp');
  assert.equal(s.loadSeconds, 0.3);
  assert.equal(view(s).text, '$(sparkle) trained-f32.gguf · llamacpp');
  assert.match(view(s).tooltip, /model \/tmp\/m\/trained-f32.gguf, backend llamacpp, loaded in 0.3 s/);
  assert.equal(view(s).severity, 'normal');
});

test('completion latency: only answers with a suggestion count', () => {
  let s = run([...loadOk, { type: 'completion', ms: 84.6, items: 1 }]);
  assert.equal(view(s).text, '$(sparkle) trained-f32.gguf · llamacpp · 85 ms');
  s = reduce(s, { type: 'completion', ms: 2, items: 0 });
  assert.equal(s.lastLatencyMs, 84.6);
  assert.deepEqual(s.lastRequest, { ms: 2, items: 0 });
  assert.equal(s.completions, 1);
});

test('a load replaced by a newer one does not end the newer one', () => {
  const s = run([
    ...loadOk,
    { type: 'progressBegin', token: 'a', title: 'phi-lsp: loading phi-1' },
    { type: 'progressBegin', token: 'b', title: 'phi-lsp: loading phi-2' },
    { type: 'progressEnd', token: 'a', message: 'replaced by a newer load' },
  ]);
  assert.equal(s.phase, 'loading');
  assert.equal(s.model, 'phi-2');
  const done = reduce(s, { type: 'progressEnd', token: 'b', message: 'phi-2 ready (transformers, 12.0 s)' });
  assert.equal(view(done).text, '$(sparkle) phi-2 · transformers');
});

test('a failed load is a warning with the server message', () => {
  const msg = "phi-lsp could not load model 'phi-1': Model 'phi-1' is not downloaded yet.";
  const s = run([
    { type: 'starting' },
    { type: 'progressBegin', token: 't', title: 'phi-lsp: loading phi-1' },
    { type: 'progressEnd', token: 't', message: msg },
  ]);
  assert.equal(s.phase, 'loadFailed');
  assert.equal(view(s).text, '$(warning) phi-lsp: phi-1 not loaded');
  assert.equal(view(s).severity, 'warning');
  assert.match(view(s).tooltip, /not downloaded yet/);
});

test('generating a body shows while it runs, then ready again', () => {
  let s = run([...loadOk, { type: 'progressBegin', token: 'g', title: 'phi-lsp: writing add()' }]);
  assert.equal(view(s).text, '$(loading~spin) phi-lsp: writing add()');
  assert.equal(s.phase, 'ready');
  s = reduce(s, { type: 'progressEnd', token: 'g', message: 'add(): doctests pass' });
  assert.equal(view(s).text, '$(sparkle) trained-f32.gguf · llamacpp');
});

test('disabled wins over starting, loading and ready, not over errors', () => {
  const off = run([...loadOk, { type: 'enabled', value: false }]);
  assert.equal(view(off).text, '$(circle-slash) phi-lsp: off');
  assert.match(view(off).tooltip, /stays loaded/);
  assert.equal(view(run([{ type: 'starting' }], initialState(false))).text, '$(circle-slash) phi-lsp: off');
  const stopped = reduce(off, { type: 'stopped', reason: 'it exited 4 times in 3 minutes' });
  assert.equal(view(stopped).text, '$(error) phi-lsp: stopped');
  assert.equal(view(stopped).severity, 'error');
  assert.equal(view(reduce(off, { type: 'enabled', value: true })).text, '$(sparkle) trained-f32.gguf · llamacpp');
});

test('not installed, then a restart starts over but keeps the latency', () => {
  let s = run([...loadOk, { type: 'completion', ms: 50, items: 1 }, { type: 'notInstalled', reason: 'no phi-lsp' }]);
  assert.equal(view(s).text, '$(error) phi-lsp: not installed');
  assert.match(view(s).tooltip, /no phi-lsp/);
  s = reduce(s, { type: 'starting' });
  assert.equal(s.phase, 'starting');
  assert.equal(s.lastLatencyMs, 50);
  assert.equal(s.error, undefined);
});

test('a backend name with punctuation still reads as ready', () => {
  const s = run([
    { type: 'progressBegin', token: 't', title: 'phi-lsp: loading phi-1' },
    { type: 'progressEnd', token: 't', message: 'phi-1 ready (engine (127.0.0.1:8123), 0.0 s)' },
  ]);
  assert.equal(s.phase, 'ready');
  assert.equal(s.backend, 'engine (127.0.0.1:8123)');
});

const figures = { enabled: true, shown: 4, accepted: 1, acceptanceRate: 0.25, retainedShare: 0.5, p50Ms: 120.4, p95Ms: 309.6 };

test("the tooltip shows this session's usage figures from phiLsp/usageStats", () => {
  assert.doesNotMatch(view(run(loadOk)).tooltip, /This session/);
  const s = run([...loadOk, { type: 'completion', ms: 84.6, items: 1 }, { type: 'usage', figures: parseUsage(figures)! }]);
  assert.match(view(s).tooltip, /^This session: 4 shown, 1 accepted \(25%\), 50% kept; p50 120 ms, p95 310 ms\.$/m);
  assert.equal(view(s).text, '$(sparkle) trained-f32.gguf · llamacpp · 85 ms');
  // Nothing measured yet: dashes, not NaN or "null".
  const early = reduce(s, { type: 'usage', figures: { ...figures, shown: 1, accepted: 0, acceptanceRate: 0, retainedShare: null, p95Ms: null } });
  assert.match(view(early).tooltip, /1 shown, 0 accepted \(0%\), - kept; p50 120 ms, p95 -\./);
  const none = reduce(s, { type: 'usage', figures: { ...figures, shown: 0, accepted: 0, acceptanceRate: null } });
  assert.match(view(none).tooltip, /This session: no suggestion shown yet\./);
  // A new server session starts at zero: the old figures go.
  assert.doesNotMatch(view(run([{ type: 'starting' }, ...loadOk], s)).tooltip, /This session/);
});

test('usage recording off says so', () => {
  const s = run([...loadOk, { type: 'usage', figures: parseUsage({ ...figures, enabled: false })! }]);
  assert.match(view(s).tooltip, /usage recording off/);
  assert.doesNotMatch(view(s).tooltip, /4 shown/);
});

test('parseUsage takes the server answer, and nothing else', () => {
  assert.deepEqual(parseUsage({ ...figures, acceptanceRate: null, extra: 1 }), { ...figures, acceptanceRate: null });
  for (const bad of [null, undefined, 'x', 3, {}, { ...figures, enabled: 'yes' }, { ...figures, shown: '4' }, { ...figures, accepted: NaN }]) {
    assert.equal(parseUsage(bad), undefined, JSON.stringify(bad));
  }
  assert.equal(parseUsage({ ...figures, p50Ms: 'slow' })?.p50Ms, null);
});
