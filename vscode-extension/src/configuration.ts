/**
 * The `phiLsp` settings as VS Code holds them: reading them, and acting when they change (the
 * `enable` switch shows in the status bar; a change the running server cannot take restarts it).
 * Which keys are the server's, and what a change needs, is decided in the plain settings.ts.
 */

import * as vscode from 'vscode';
import type { ServerClient } from './client';
import { changedKeys, SECTION } from './settings';
import type { StatusBar } from './statusBar';

/** The `phiLsp` section of the settings. */
export function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration(SECTION);
}

/** The server's keys of the `phiLsp` section, as plain JSON. */
export function serverSection(serverKeys: readonly string[]): Record<string, unknown> {
  const section = config();
  return Object.fromEntries(serverKeys.map((k) => [k, section.get(k)]));
}

/**
 * Follows changes of the `phiLsp` settings. The server's settings reach a running server through
 * workspace/didChangeConfiguration (client.ts); this restarts the server when that is not enough.
 */
export function watchConfiguration(
  serverKeys: readonly string[],
  server: ServerClient,
  status: StatusBar,
  output: vscode.LogOutputChannel,
): vscode.Disposable {
  return vscode.workspace.onDidChangeConfiguration((e) => {
    if (!e.affectsConfiguration(SECTION)) {
      return;
    }
    if (e.affectsConfiguration(`${SECTION}.enable`)) {
      status.dispatch({ type: 'enabled', value: config().get<boolean>('enable', true) });
    }
    const changed = changedKeys((name) => e.affectsConfiguration(name), serverKeys);
    const notRunning = !server.hasClient || status.phase === 'stopped' || status.phase === 'notInstalled';
    if (changed.restart || changed.initializeOnly || (notRunning && changed.server.length > 0)) {
      // The other server settings reach the running server via workspace/didChangeConfiguration.
      output.info('settings changed that need a new server: restarting it');
      void server.restart();
    }
  });
}
