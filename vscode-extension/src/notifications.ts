/**
 * The notifications: each says what went wrong and offers the buttons that fix it (install help,
 * the right settings tab, the log, a restart, pulling the missing model). Also the server's own
 * window/showMessage, shown once per ten seconds per text.
 */

import * as vscode from 'vscode';
import { MessageType, ShowMessageParams } from 'vscode-languageclient/node';
import { isLoadFailure, modelToPull } from './restartPolicy';
import { ResolvedCommand, ResolveFailure } from './serverCommand';
import { SECTION } from './settings';

/** What the buttons do that belongs to other parts of the extension. */
export interface NoticeActions {
  restart(): Promise<void>;
  pullModel(name: string): Promise<void>;
}

export class Notifications {
  private lastNotice = { text: '', at: 0 };

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly output: vscode.LogOutputChannel,
    private readonly actions: NoticeActions,
  ) {}

  /** window/showMessage from the server: a model that did not load gets buttons that fix it. */
  onServerMessage(params: ShowMessageParams): void {
    const now = Date.now();
    if (params.message === this.lastNotice.text && now - this.lastNotice.at < 10_000) {
      return;
    }
    this.lastNotice = { text: params.message, at: now };
    if (params.type === MessageType.Error && isLoadFailure(params.message)) {
      void this.notifyLoadFailure(params.message);
    } else if (params.type === MessageType.Error) {
      void this.ask(vscode.window.showErrorMessage(params.message, 'Show Log'));
    } else if (params.type === MessageType.Warning) {
      void vscode.window.showWarningMessage(params.message);
    } else {
      void vscode.window.showInformationMessage(params.message);
    }
  }

  async notifyNotFound(failure: ResolveFailure): Promise<void> {
    const install = 'How to Install';
    const settings = 'Open Settings';
    const text =
      failure.reason === 'badSetting'
        ? `${failure.message} Fix the setting, or clear it to use phi-lsp from the workspace's .venv or PATH.`
        : `${failure.message} Install phi-lsp in the workspace's .venv, or set phiLsp.pythonPath / phiLsp.serverCommand.`;
    const pick = await vscode.window.showErrorMessage(text, install, settings);
    if (pick === install) {
      await this.showInstallHelp();
    } else if (pick === settings) {
      await this.openSettings(failure.setting ? `${SECTION}.${failure.setting}` : `${SECTION}.serverCommand`);
    }
  }

  async notifyStartFailure(resolution: ResolvedCommand, reason: string): Promise<void> {
    const command = [resolution.command, ...resolution.args].join(' ');
    const hint = /No module named/.test(reason)
      ? ' phi-lsp is not installed for this Python.'
      : '';
    const pick = await vscode.window.showErrorMessage(
      `phi-lsp could not start: \`${command}\` exited: ${reason}.${hint}`,
      'How to Install',
      'Open Settings',
      'Show Log',
    );
    if (pick === 'How to Install') {
      await this.showInstallHelp();
    } else if (pick === 'Open Settings') {
      await this.openSettings(`${SECTION}.${resolution.source === 'pythonPath' ? 'pythonPath' : 'serverCommand'}`);
    } else if (pick === 'Show Log') {
      this.output.show(true);
    }
  }

  async notifyCrashLoop(reason: string): Promise<void> {
    const pick = await vscode.window.showErrorMessage(
      `phi-lsp stopped: the server ${reason}. It is not restarted automatically.`,
      'Restart Server',
      'Show Log',
    );
    if (pick === 'Restart Server') {
      await this.actions.restart();
    } else if (pick === 'Show Log') {
      this.output.show(true);
    }
  }

  async notifyLoadFailure(message: string): Promise<void> {
    const name = modelToPull(message);
    const pull = name ? `Pull ${name}` : undefined;
    const buttons = [...(pull ? [pull] : []), 'Choose Model', 'Show Log'];
    const pick = await vscode.window.showErrorMessage(message, ...buttons);
    if (pick === pull && name) {
      await this.actions.pullModel(name);
    } else if (pick === 'Choose Model') {
      await this.openSettings(`${SECTION}.model`);
    } else if (pick === 'Show Log') {
      this.output.show(true);
    }
  }

  /** Waits for the user's pick of a notification and acts on its 'Show Log' or 'Restart Server'. */
  async ask(answer: Thenable<string | undefined>): Promise<void> {
    const pick = await answer;
    if (pick === 'Show Log') {
      this.output.show(true);
    } else if (pick === 'Restart Server') {
      await this.actions.restart();
    }
  }

  async showInstallHelp(): Promise<void> {
    const readme = vscode.Uri.joinPath(this.context.extensionUri, 'README.md');
    try {
      await vscode.commands.executeCommand('markdown.showPreview', readme);
    } catch {
      await vscode.window.showTextDocument(readme);
    }
  }

  /** The settings editor at `setting` (e.g. `phiLsp.model`), on the tab where its value is set. */
  async openSettings(setting?: string): Promise<void> {
    if (setting === undefined) {
      await vscode.commands.executeCommand('workbench.action.openSettings', `@ext:${this.context.extension.id}`);
      return;
    }
    const info = vscode.workspace.getConfiguration().inspect(setting);
    if (info?.workspaceValue !== undefined || info?.workspaceFolderValue !== undefined) {
      await vscode.commands.executeCommand('workbench.action.openWorkspaceSettings', setting);
    } else if (vscode.env.remoteName && /serverCommand|pythonPath/.test(setting)) {
      // machine-scoped settings live on the Remote tab when VS Code runs remotely (or in code-server)
      await vscode.commands.executeCommand('workbench.action.openRemoteSettings', { query: setting });
    } else {
      await vscode.commands.executeCommand('workbench.action.openSettings', setting);
    }
  }
}
