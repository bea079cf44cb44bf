/**
 * phi-lsp for VS Code: a thin client around `phi-lsp serve`.
 *
 * The server does the work (inline completions, the docstring → body code action); this
 * extension starts it, forwards the `phiLsp.*` settings, shows the server's state in the status
 * bar, offers a few commands, and explains in one notification what to do when it cannot start.
 *
 * This module only wires the parts together:
 *   client.ts         the language client: start, stop, restart the server
 *   statusBar.ts      the status bar item (state kept by status.ts)
 *   commands.ts       the phiLsp.* commands and the actions quick pick
 *   notifications.ts  errors with the buttons that fix them; the server's messages
 *   configuration.ts  reading the settings; restarting when a change needs it
 *   cliTasks.ts       `phi-lsp models pull` and `phi-lsp finetune` as tasks
 *   serverProcess.ts  the phi-lsp command, environment and working directory
 *   logs.ts           the server's stdout/stderr in the output channel
 *   usagePoller.ts    asking the server for the session's usage figures (phiLsp/usageStats)
 * and the plain modules with unit tests: settings.ts, serverCommand.ts, status.ts,
 * usageFigures.ts, restartPolicy.ts, serverLog.ts.
 */

import * as vscode from 'vscode';
import { CliTasks } from './cliTasks';
import { ServerClient } from './client';
import { Commands } from './commands';
import { config, watchConfiguration } from './configuration';
import { Notifications } from './notifications';
import { serverKeysOf } from './settings';
import { StatusBar } from './statusBar';

let server: ServerClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const serverKeys = serverKeysOf(context.extension.packageJSON.contributes.configuration.properties);
  const output = vscode.window.createOutputChannel('phi-lsp', { log: true });
  const status = new StatusBar(config().get<boolean>('enable', true));
  context.subscriptions.push(output, status);
  // The notifications' buttons restart the server and pull models, with the parts made below.
  const notices: Notifications = new Notifications(context, output, {
    restart: (): Promise<void> => client.restart(),
    pullModel: (name: string): Promise<void> => cli.pullModel(name),
  });
  const client = new ServerClient(context, output, status, notices, serverKeys);
  const cli = new CliTasks(context, output, client, notices);
  context.subscriptions.push(watchConfiguration(serverKeys, client, status, output));
  new Commands(output, status, client, notices, cli).register(context);
  server = client;
  void client.restart(); // not awaited: activation must not wait for a server that may hang
}

export async function deactivate(): Promise<void> {
  await server?.stop();
  server = undefined;
}
