// Drives code-server (real VS Code 1.100 workbench + extension host) in headless Chromium.
// Started by scripts/e2e.sh, which prepares the workspace, the model and code-server.
// Env: URL (code-server with ?folder=), WS (workspace path), OUT (artifacts), SERVER_LOG, CHROMIUM,
// PHI_LSP_HOME (the server's, with the usage journal in usage/usage.jsonl).
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const { URL, WS, OUT, SERVER_LOG, PHI_LSP_HOME } = process.env;
const JOURNAL = path.join(PHI_LSP_HOME, 'usage', 'usage.jsonl');
/** The usage journal's complete events (phi_lsp.usage.journal: one JSON object a line). */
const journal = () => {
  const raw = fs.existsSync(JOURNAL) ? fs.readFileSync(JOURNAL, 'utf8') : '';
  return raw.split('\n').slice(0, -1).flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } });
};
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STUB = 'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n';
const BODY = 'return a + b'; // what the trained tiny model memorised for this stub
const t0 = Date.now();
const log = (...a) => console.log(`${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s`, ...a);
const result = { steps: [], notifications: [] };

function check(cond, what, detail) {
  result.steps.push({ what, ok: !!cond, detail });
  log(cond ? 'ok  ' : 'FAIL', what, detail === undefined ? '' : JSON.stringify(detail));
  if (!cond) throw new Error(`check failed: ${what} ${detail === undefined ? '' : JSON.stringify(detail)}`);
}

async function poll(fn, timeoutMs, what, intervalMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
}

(async () => {
  // code-server takes a moment to listen.
  await poll(async () => {
    try {
      return (await fetch(URL)).ok;
    } catch {
      return false;
    }
  }, 60000, 'code-server answers', 200);
  log('code-server up');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const shot = async (name) => {
    await page.screenshot({ path: path.join(OUT, name) });
    log('screenshot', name);
  };
  page.on('console', (m) => {
    if (m.type() === 'error' && !/favicon|ERR_|404|Canceled/.test(m.text())) log('[console]', m.text().slice(0, 160));
  });
  // Notification toasts auto-hide: collect them all the time.
  const collectToasts = async () => {
    const texts = await page
      .$$eval('.notification-toast .notification-list-item-message', (es) => es.map((e) => e.textContent.trim()))
      .catch(() => []);
    for (const t of texts) if (!result.notifications.includes(t)) { result.notifications.push(t); log('[notification]', t); }
  };
  const toastTimer = setInterval(() => void collectToasts(), 500);

  // The extension's status bar item (its DOM id ends with the item's id, phiLsp.status).
  const statusText = () =>
    page.$$eval('.statusbar-item', (es) => {
      const item = es.find((e) => (e.id || '').endsWith('phiLsp.status'));
      return item ? item.textContent.trim() : '';
    });
  const editorText = () =>
    page.$eval('.editor-instance .monaco-editor .view-lines', (e) => e.innerText.replace(/\u00a0/g, ' '));
  const openFile = async (name) => {
    await page.keyboard.press('Control+P');
    await page.waitForSelector('.quick-input-widget input', { timeout: 10000 });
    await page.keyboard.type(name);
    await poll(async () => {
      const rows = await page.$$eval('.quick-input-widget .monaco-list-row', (es) => es.map((e) => e.textContent));
      return rows.some((r) => r.includes(name));
    }, 15000, `quick open lists ${name}`);
    await page.waitForTimeout(200);
    await page.keyboard.press('Enter');
    await poll(async () => (await page.$(`.tab.active[aria-label^="${name}"]`)) !== null, 15000, `tab ${name}`);
    await page.waitForSelector('.editor-instance .monaco-editor .view-lines', { timeout: 15000 });
    await page.click('.editor-instance .monaco-editor .view-lines');
  };
  const runCommand = async (title) => {
    await page.keyboard.press('F1');
    await page.waitForSelector('.quick-input-widget input', { timeout: 10000 });
    await page.keyboard.type(title);
    await poll(async () => {
      const rows = await page.$$eval('.quick-input-widget .monaco-list-row', (es) => es.map((e) => e.textContent));
      return rows.some((r) => r.includes(title.replace(/^.*?: /, '')));
    }, 15000, `command palette lists ${title}`);
    await page.waitForTimeout(200);
    await page.keyboard.press('Enter');
  };

  try {
    await page.goto(URL, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('.monaco-workbench', { timeout: 60000 });
    log('workbench loaded');

    // 1. Open the stub; the extension activates on Python, starts phi-lsp, the model loads.
    await openFile('calc.py');
    log('calc.py open');
    const loading = await poll(statusText, 20000, 'phi-lsp status bar item');
    log('status bar:', loading);
    const ready = await poll(async () => {
      const t = await statusText();
      return t.includes('trained-f32.gguf') && t.includes('llamacpp') ? t : null;
    }, 90000, 'status bar shows the loaded model');
    check(true, 'status bar shows the model and backend', ready);

    // 2. Ghost text: a new line under the docstring.
    await page.keyboard.press('Control+Home');
    for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowDown');
    await page.keyboard.press('End');
    await page.keyboard.press('Enter'); // auto-indents to 4 spaces; the edit triggers inline completion
    let ghost = await poll(async () => {
      const g = await page.$$eval('.ghost-text-decoration', (es) => es.map((e) => e.textContent).join(''));
      return g || null;
    }, 20000, 'ghost text').catch(() => null);
    if (!ghost) {
      // Explicit trigger (alt+\ is bound in keybindings.json; VS Code 1.100 has no default key).
      await page.keyboard.type(' ');
      await page.keyboard.press('Backspace');
      await page.keyboard.press('Alt+Backslash');
      ghost = await poll(async () => {
        const g = await page.$$eval('.ghost-text-decoration', (es) => es.map((e) => e.textContent).join(''));
        return g || null;
      }, 20000, 'ghost text after an explicit trigger');
    }
    ghost = ghost.replace(/\u00a0/g, ' ');
    await page.waitForTimeout(300);
    await shot('1-ghost-text.png');
    check(ghost === BODY, 'ghost text is the trained model\'s body', ghost);

    // 2b. Re-triggered by typing a space and deleting it: the cursor passes through a place the
    // model cannot continue well (5 spaces) and comes back; the ghost text must be the body again.
    await page.keyboard.type(' ');
    await page.waitForTimeout(500);
    await page.keyboard.press('Backspace');
    let seen = '';
    const again = await poll(async () => {
      const g = await page.$$eval('.ghost-text-decoration', (es) => es.map((e) => e.textContent).join(''));
      seen = g.replace(/\u00a0/g, ' ');
      return seen === BODY ? seen : null; // a stale one may flash by while VS Code catches up
    }, 20000, 'ghost text after a space and a Backspace').catch(() => seen);
    check(again === BODY, 'after typing a space and deleting it, the ghost text is the body again', again);
    const serverLog = fs.readFileSync(SERVER_LOG, 'utf8');
    const req = serverLog.split('\n').filter((l) => /req \d+ file:\/\/\S*calc\.py .*chars=/.test(l));
    check(req.some((l) => l.includes(`chars=${BODY.length} `)), 'the server log has the request that produced it', req.slice(-1)[0]);

    // 3. Tab accepts it.
    await page.keyboard.press('Tab');
    await poll(async () => (await editorText()).includes(BODY), 10000, 'the accepted text in the editor');
    check((await page.$$('.ghost-text-decoration')).length === 0, 'no ghost text left after Tab');
    // 3b. VS Code runs the item's command (phiLsp.accepted, its id): the journal has it accepted.
    const shownIds = journal().filter((e) => e.event === 'shown' && e.file === 'calc.py' && e.text === BODY).map((e) => e.id);
    check(shownIds.length > 0, 'the journal has the ghost text shown', shownIds);
    const accepted = await poll(() => journal().find((e) => e.event === 'accepted' && shownIds.includes(e.id)), 10000,
      'an accepted event in the journal').catch(() => null);
    check(accepted && accepted.chars === BODY.length && !accepted.partial,
      'the journal has the suggestion accepted (VS Code ran its command)', accepted);
    // 3c. Delete half of it (" a + b" of "return a + b") and save: the journal keeps about half.
    for (let i = 0; i < 6; i++) await page.keyboard.press('Backspace');
    await poll(async () => (await editorText()).includes('    return\n') || (await editorText()).endsWith('    return'),
      10000, 'half of the accepted text deleted').catch(() => null);
    await page.keyboard.press('Control+S');
    await poll(() => fs.readFileSync(path.join(WS, 'calc.py'), 'utf8').endsWith('    return\n'), 10000, 'calc.py saved with half');
    const retained = await poll(() => journal().find((e) => e.event === 'retained' && e.id === accepted.id), 10000,
      'a retained event in the journal').catch(() => null);
    check(retained && retained.reason === 'saved' && retained.share >= 0.3 && retained.share <= 0.7,
      'after deleting half and saving, the journal says about half was kept', retained);
    // 3d. The status bar tooltip has this session's figures (phiLsp/usageStats).
    const usageTip = /This session: \d+ shown, 1 accepted \(\d+%\), 50% kept; p50 \d+ ms, p95 \d+ ms/;
    let tip = '';
    const tooltip = await poll(async () => {
      await page.mouse.move(700, 300);
      await page.waitForTimeout(300);
      await page.locator('.statusbar-item[id$="phiLsp.status"]').hover();
      tip = await poll(async () => (await page.$$eval('.workbench-hover', (es) =>
        es.map((e) => e.textContent.trim()).join(' '))).trim() || null, 4000, 'a hover').catch(() => '');
      return usageTip.test(tip) ? tip : null;
    }, 15000, 'the tooltip with the usage figures').catch(() => tip);
    await shot('2-usage-tooltip.png');
    await page.mouse.move(700, 300);
    check(usageTip.test(tooltip), "the status bar tooltip shows this session's usage figures", tooltip);
    await page.click('.editor-instance .monaco-editor .view-lines');
    await page.keyboard.press('Control+End');
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('End');
    // Type it back (the rest of the test works on the full body); Escape drops any ghost text.
    await page.keyboard.type(' a + b');
    await page.keyboard.press('Escape');
    await page.keyboard.press('Control+S');
    const calc = await poll(() => {
      const t = fs.readFileSync(path.join(WS, 'calc.py'), 'utf8');
      return t.includes(BODY) ? t : null;
    }, 10000, 'calc.py saved');
    check(calc === STUB + `    ${BODY}\n`, 'Tab inserted the ghost text (file on disk)', calc);
    const latency = await poll(async () => {
      const t = await statusText();
      return / \d+ ms/.test(t) ? t : null;
    }, 10000, 'status bar shows the completion latency');
    check(true, 'status bar shows model, backend and last completion latency', latency);
    await shot('2-accepted.png');

    // 4. The code action: Ctrl+. on the stub in gen.py, choose "Generate body from docstring".
    await openFile('gen.py');
    await page.keyboard.press('Control+Home');
    for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowDown'); // the `def add` line
    await page.waitForTimeout(500);
    await page.keyboard.press('Control+.');
    const rows = await poll(async () => {
      const r = await page.$$eval('.action-widget .monaco-list-row', (es) => es.map((e) => e.textContent.trim()));
      return r.some((t) => t.includes('Generate body from docstring (phi-lsp)')) ? r : null;
    }, 15000, 'code action menu with the generate action');
    await shot('3-code-action.png');
    check(true, 'Ctrl+. lists the generate action', rows);
    // Choose it with the keyboard, as a user would (a pointer block covers the menu for clicks).
    for (let i = 0; i < rows.length; i++) {
      const focused = await page.$eval('.action-widget .monaco-list-row.focused', (e) => e.getAttribute('aria-label')).catch(() => '');
      if (focused && focused.includes('Generate body from docstring (phi-lsp)')) break;
      await page.keyboard.press('ArrowDown');
    }
    await page.keyboard.press('Enter');
    await poll(async () => (await editorText()).includes(BODY), 60000, 'generated body in the editor');
    await page.waitForTimeout(300);
    await shot('4-generated.png');
    await page.keyboard.press('Control+S');
    const gen = await poll(() => {
      const t = fs.readFileSync(path.join(WS, 'gen.py'), 'utf8');
      return t.includes(BODY) ? t : null;
    }, 10000, 'gen.py saved');
    const genExpected = `import math\n\n\n${STUB}    ${BODY}\n\n\ndef area(r):\n    return math.pi * r * r\n`;
    check(gen === genExpected, 'the code action replaced exactly the body (file on disk)', gen);

    // 4b. The same through the extension's command (palette), cursor inside the docstring.
    await openFile('cmd.py');
    await page.keyboard.press('Control+Home');
    await page.keyboard.press('ArrowDown');
    await runCommand('phi-lsp: Generate Function Body from Docstring');
    await poll(async () => (await editorText()).includes(BODY), 60000, 'generated body in cmd.py');
    await page.keyboard.press('Control+S');
    const cmd = await poll(() => {
      const t = fs.readFileSync(path.join(WS, 'cmd.py'), 'utf8');
      return t.includes(BODY) ? t : null;
    }, 10000, 'cmd.py saved');
    check(cmd === STUB + `    ${BODY}\n`, 'the Generate Function Body command wrote the body', cmd);

    // 5. Clicking the status bar item shows the actions; "Disable completions" turns it off.
    await page.locator('.statusbar-item[id$="phiLsp.status"]').click();
    const actions = await poll(async () => {
      const r = await page.$$eval('.quick-input-widget .monaco-list-row', (es) => es.map((e) => e.textContent.trim()));
      return r.some((a) => a.includes('Restart server')) ? r : null;
    }, 10000, 'quick pick of actions');
    await shot('5-actions.png');
    check(actions.some((a) => a.includes('Restart server')) && actions.some((a) => a.includes('Pull a model')),
      'the status bar item opens the actions', actions);
    check(actions[0].startsWith('Disable completions'), 'the first action disables completions', actions[0]);
    await page.keyboard.press('Enter');
    const off = await poll(async () => ((await statusText()).includes('phi-lsp: off') ? await statusText() : null), 10000, 'status off');
    check(true, 'disabling shows in the status bar', off);
    await runCommand('phi-lsp: Enable Completions');
    const on = await poll(async () => {
      const t = await statusText();
      return t.includes('trained-f32.gguf') ? t : null;
    }, 10000, 'status on again');
    check(true, 'the Enable Completions command brings it back', on);

    await collectToasts();
    const bad = result.notifications.filter((n) => /ignored|could not|failed|error/i.test(n));
    check(bad.length === 0, 'no error notifications so far (e.g. unknown settings sent to the server)', bad);

    // 6. What a new user sees first: phiLsp.model is "phi-1" (the default), not pulled yet.
    //    Changing the model reaches the running server (didChangeConfiguration), no restart.
    const settingsPath = path.join(WS, '.vscode', 'settings.json');
    const settings = JSON.parse(fs.readFileSync(settingsPath, 'utf8'));
    settings['phiLsp.model'] = 'phi-1';
    let before = result.notifications.length;
    fs.writeFileSync(settingsPath, JSON.stringify(settings, null, 2));
    const notPulled = await poll(async () => {
      await collectToasts();
      return result.notifications.slice(before).find((n) => n.includes("could not load model 'phi-1'")) || null;
    }, 30000, 'the model load failure notification');
    check(/phi-lsp models pull phi-1/.test(notPulled), 'a missing model gets one notification naming the fix', notPulled);
    const loadButtons = await page.$$eval('.notification-toast .monaco-button', (es) => es.map((e) => e.textContent.trim()));
    check(loadButtons.includes('Pull phi-1') && loadButtons.includes('Choose Model'), 'with a button that pulls it', loadButtons);
    const notLoaded = await poll(async () => ((await statusText()).includes('phi-1 not loaded') ? await statusText() : null), 10000, 'status not loaded');
    check(true, 'the status bar says the model is not loaded', notLoaded);
    const starts = fs.readFileSync(SERVER_LOG, 'utf8').split('\n').filter((l) => / starting \(pid \d+\)/.test(l));
    check(starts.length === 1, 'the new model setting reached the running server (no restart)', starts.length);
    await page.mouse.move(700, 300);
    await page.waitForTimeout(500);
    await shot('6-model-not-pulled.png');
    // Close the toasts (DOM clicks: a status bar hover may cover them for the pointer).
    await page.$$eval('.notification-toast .codicon-notifications-clear', (es) => es.forEach((e) => e.click()));

    // 7. A server that cannot start: a Python without phi-lsp (-I -S: no site-packages).
    const python = settings['phiLsp.serverCommand'][0];
    settings['phiLsp.serverCommand'] = [python, '-I', '-S', '-m', 'phi_lsp', 'serve'];
    before = result.notifications.length;
    fs.writeFileSync(settingsPath, JSON.stringify(settings, null, 2));
    const failure = await poll(async () => {
      await collectToasts();
      return result.notifications.slice(before).find((n) => n.includes('could not start')) || null;
    }, 30000, 'the start failure notification');
    check(/No module named phi_lsp/.test(failure) && /not installed for this Python/.test(failure),
      'one notification says why the server did not start', failure);
    const buttons = await page.$$eval('.notification-toast .monaco-button', (es) => es.map((e) => e.textContent.trim()));
    check(buttons.includes('How to Install') && buttons.includes('Open Settings'), 'it offers a fix', buttons);
    const stopped = await poll(async () => ((await statusText()).includes('phi-lsp: stopped') ? await statusText() : null), 10000, 'status stopped');
    check(true, 'the status bar says the server stopped', stopped);
    await page.mouse.move(700, 300);
    await page.waitForTimeout(500);
    await shot('7-start-failure.png');
    await page.waitForTimeout(4000); // no restart loop: nothing new appears
    await collectToasts();
    const after = result.notifications.slice(before);
    check(after.length === 1, 'exactly one notification, no restart loop', after);
    await page.$$eval('.notification-toast .monaco-button', (es) =>
      es.find((e) => e.textContent.trim() === 'Open Settings').click());
    await page.waitForSelector('.settings-editor', { timeout: 10000 });
    const settingShown = await poll(async () => {
      const t = await page.$$eval('.settings-editor .setting-item-label', (es) => es.map((e) => e.textContent.trim()));
      return t.some((l) => /Server Command/.test(l)) ? t : null;
    }, 10000, 'the settings editor shows phiLsp.serverCommand');
    check(settingShown.some((t) => /Server Command/.test(t)), '"Open Settings" goes to phiLsp.serverCommand', settingShown);
    await shot('8-settings.png');
    result.ok = true;
  } catch (error) {
    result.ok = false;
    result.error = String(error && error.stack || error);
    console.error('FAILED', error);
    await shot('failure.png').catch(() => {});
  } finally {
    clearInterval(toastTimer);
    result.seconds = (Date.now() - t0) / 1000;
    fs.writeFileSync(path.join(OUT, 'e2e-result.json'), JSON.stringify(result, null, 2));
    await browser.close();
  }
  process.exit(result.ok ? 0 : 1);
})();
