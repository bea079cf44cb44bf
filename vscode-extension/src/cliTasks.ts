/**
 * The phi-lsp command line run from VS Code as tasks in a terminal, with progress in the status
 * bar: `phi-lsp models pull NAME` (then use or load the model) and `phi-lsp finetune FOLDER`.
 */

import * as vscode from 'vscode';
import type { ServerClient } from './client';
import { config } from './configuration';
import type { Notifications } from './notifications';
import { cliFromServerCommand } from './serverCommand';
import { neutralDir, PYTHON_ENV } from './serverProcess';

const KNOWN_MODELS: ReadonlyArray<{ name: string; detail: string }> = [
  { name: 'phi-1', detail: '1.3B, Python; the default' },
  { name: 'phi-1.5', detail: '1.3B' },
  { name: 'phi-2', detail: '2.7B' },
  { name: 'phi-3-mini-4k-instruct', detail: '3.8B' },
];

export class CliTasks {
  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly output: vscode.LogOutputChannel,
    private readonly server: ServerClient,
    private readonly notices: Notifications,
  ) {}

  /** Download, convert and quantize a model (`name`, or one the user picks), then offer to use it. */
  async pullModel(name?: string): Promise<void> {
    if (name === undefined) {
      const current = config().get<string>('model', 'phi-1');
      const items: vscode.QuickPickItem[] = [
        ...KNOWN_MODELS.map((m) => ({ label: m.name, description: m.detail + (m.name === current ? ' · current setting' : '') })),
        { label: 'Other…', description: 'a name from `phi-lsp models list`' },
      ];
      const pick = await vscode.window.showQuickPick(items, { title: 'phi-lsp: pull a model (download, convert, quantize)' });
      if (!pick) {
        return;
      }
      name = pick.label === 'Other…' ? await vscode.window.showInputBox({ prompt: 'Model name' }) : pick.label;
      if (!name) {
        return;
      }
    }
    const code = await this.runCli(`Pull ${name}`, ['models', 'pull', name], `pulling ${name}`);
    if (code !== 0) {
      if (code !== undefined) {
        void this.notices.ask(vscode.window.showErrorMessage(`phi-lsp: pulling ${name} failed (exit code ${code}); see the terminal.`));
      }
      return;
    }
    if (config().get<string>('model') === name) {
      void vscode.window.showInformationMessage(`phi-lsp: ${name} is ready; loading it.`);
      await this.server.reloadModel(); // the setting did not change, so ask for the load
      return;
    }
    const use = `Use ${name}`;
    if ((await vscode.window.showInformationMessage(`phi-lsp: ${name} is ready.`, use)) === use) {
      await config().update('model', name, vscode.ConfigurationTarget.Global);
    }
  }

  /** Fine-tune on the workspace folder's Python files (`phi-lsp finetune FOLDER`). */
  async finetune(): Promise<void> {
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file');
    if (folders.length === 0) {
      void vscode.window.showInformationMessage('phi-lsp: open a folder to fine-tune on its Python files.');
      return;
    }
    const folder = folders.length === 1 ? folders[0] : await vscode.window.showWorkspaceFolderPick();
    if (!folder) {
      return;
    }
    const code = await this.runCli(`Fine-tune on ${folder.name}`, ['finetune', folder.uri.fsPath], `fine-tuning on ${folder.name}`);
    if (code === 2) {
      void vscode.window.showErrorMessage('phi-lsp: this phi-lsp has no working `finetune` command (exit code 2); update phi-lsp. See the terminal.');
    } else if (code !== undefined && code !== 0) {
      void vscode.window.showErrorMessage(`phi-lsp: fine-tuning failed (exit code ${code}); see the terminal.`);
    } else if (code === 0) {
      void vscode.window.showInformationMessage('phi-lsp: fine-tuning finished; the terminal says which model it wrote.');
    }
  }

  /** Run `phi-lsp ARGS` as a task in a terminal, with progress in the status bar; its exit code. */
  private async runCli(title: string, args: string[], doing: string): Promise<number | undefined> {
    const resolution = this.server.resolution();
    if (!resolution.ok) {
      void this.notices.notifyNotFound(resolution);
      return undefined;
    }
    const cli = cliFromServerCommand(resolution.command, resolution.args) ?? ['phi-lsp'];
    const folder = vscode.workspace.workspaceFolders?.[0];
    this.output.info(`running ${[...cli, ...args].join(' ')}`);
    if (!folder) {
      // Tasks need a workspace; without one, a plain terminal (no exit code to report).
      const terminal = vscode.window.createTerminal({
        name: `phi-lsp: ${title}`,
        shellPath: cli[0],
        shellArgs: [...cli.slice(1), ...args],
        cwd: neutralDir(this.context),
        env: PYTHON_ENV,
      });
      terminal.show();
      return undefined;
    }
    const task = new vscode.Task(
      { type: 'phi-lsp', action: args.join(' ') },
      folder,
      title,
      'phi-lsp',
      new vscode.ProcessExecution(cli[0], [...cli.slice(1), ...args], { cwd: neutralDir(this.context), env: PYTHON_ENV }),
    );
    task.presentationOptions = { reveal: vscode.TaskRevealKind.Always, panel: vscode.TaskPanelKind.Dedicated, clear: true };
    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: `phi-lsp: ${doing}` },
      async () => {
        const execution = await vscode.tasks.executeTask(task);
        return new Promise<number | undefined>((resolve) => {
          const done = vscode.tasks.onDidEndTaskProcess((e) => {
            if (e.execution === execution) {
              done.dispose();
              this.output.info(`${title}: exit code ${e.exitCode}`);
              resolve(e.exitCode);
            }
          });
        });
      },
    );
  }
}
