/**
 * The `phiLsp.*` commands of package.json: generate a body from its docstring, turn completions
 * on and off, restart the server, show the log, pull a model, fine-tune, and the quick pick of
 * all of them that the status bar item opens.
 */

import * as vscode from 'vscode';
import { ExecuteCommandRequest } from 'vscode-languageclient/node';
import type { CliTasks } from './cliTasks';
import type { ServerClient } from './client';
import { config } from './configuration';
import { errorText } from './logs';
import type { Notifications } from './notifications';
import type { StatusBar } from './statusBar';

/** The server's command (phi_lsp/lsp/features/generate.py). */
const GENERATE_COMMAND = 'phiLsp.generateFunction';

export class Commands {
  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly status: StatusBar,
    private readonly server: ServerClient,
    private readonly notices: Notifications,
    private readonly cli: CliTasks,
  ) {}

  register(context: vscode.ExtensionContext): void {
    const commands: Record<string, (...args: unknown[]) => unknown> = {
      'phiLsp.generateBody': () => this.generateBody(),
      'phiLsp.enableCompletions': () => this.setEnabled(true),
      'phiLsp.disableCompletions': () => this.setEnabled(false),
      'phiLsp.toggleCompletions': () => this.setEnabled(!config().get<boolean>('enable', true)),
      'phiLsp.restartServer': () => this.server.restart(),
      'phiLsp.showLog': () => this.output.show(true),
      'phiLsp.pullModel': (name?: unknown) => this.cli.pullModel(typeof name === 'string' ? name : undefined),
      'phiLsp.finetuneWorkspace': () => this.cli.finetune(),
      'phiLsp.showActions': () => this.showActions(),
    };
    for (const [id, run] of Object.entries(commands)) {
      context.subscriptions.push(vscode.commands.registerCommand(id, run));
    }
  }

  private async generateBody(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.languageId !== 'python') {
      void vscode.window.showInformationMessage('phi-lsp: put the cursor in a Python function whose body is only a docstring.');
      return;
    }
    const client = this.server.current;
    if (!client || !client.isRunning()) {
      void this.notices.ask(vscode.window.showWarningMessage('phi-lsp: the server is not running.', 'Restart Server', 'Show Log'));
      return;
    }
    const position = editor.selection.active;
    try {
      // The server answers with workspace/applyEdit (and shows its own progress, cancellable).
      await client.sendRequest(ExecuteCommandRequest.type, {
        command: GENERATE_COMMAND,
        arguments: [
          client.code2ProtocolConverter.asUri(editor.document.uri),
          { line: position.line, character: position.character },
        ],
      });
    } catch (error) {
      this.output.error(`${GENERATE_COMMAND} failed: ${errorText(error)}`);
      void this.notices.ask(vscode.window.showErrorMessage(`phi-lsp: generating the body failed: ${errorText(error)}`, 'Show Log'));
    }
  }

  private async setEnabled(value: boolean): Promise<void> {
    const settings = config();
    const info = settings.inspect<boolean>('enable');
    const target =
      info?.workspaceFolderValue !== undefined || info?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
    await settings.update('enable', value, target);
    this.status.dispatch({ type: 'enabled', value: config().get<boolean>('enable', value) });
  }

  private async showActions(): Promise<void> {
    const enabled = config().get<boolean>('enable', true);
    const editor = vscode.window.activeTextEditor;
    type Action = vscode.QuickPickItem & { run: () => unknown };
    const actions: Action[] = [
      enabled
        ? { label: '$(circle-slash) Disable completions', run: () => this.setEnabled(false) }
        : { label: '$(check) Enable completions', run: () => this.setEnabled(true) },
      ...(editor?.document.languageId === 'python'
        ? [{ label: '$(wand) Generate function body from docstring', run: () => this.generateBody() }]
        : []),
      ...(this.status.phase === 'loadFailed'
        ? [{ label: '$(refresh) Load the model again', run: () => this.server.reloadModel() }]
        : []),
      { label: '$(debug-restart) Restart server', run: () => this.server.restart() },
      { label: '$(output) Show log', run: () => this.output.show(true) },
      { label: '$(cloud-download) Pull a model…', run: () => this.cli.pullModel() },
      { label: '$(beaker) Fine-tune on this workspace…', run: () => this.cli.finetune() },
      { label: '$(gear) Settings', run: () => this.notices.openSettings() },
    ];
    const summary = this.status.summary;
    const title = summary.startsWith('phi-lsp') ? summary : `phi-lsp · ${summary}`;
    const pick = await vscode.window.showQuickPick(actions, { title, placeHolder: 'Choose a phi-lsp action' });
    await pick?.run();
  }
}
