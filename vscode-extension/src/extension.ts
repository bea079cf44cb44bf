/**
 * phi-lsp for VS Code: a thin client around `phi-lsp serve`.
 *
 * The server does the work (inline completions, the docstring → body code action); this
 * extension starts it, forwards the `phiLsp.*` settings, shows the server's state in the status
 * bar, offers a few commands, and explains in one notification what to do when it cannot start.
 */

import * as fs from 'fs';
import * as os from 'os';
import { performance } from 'perf_hooks';
import * as vscode from 'vscode';
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  MessageType,
  RevealOutputChannelOn,
  ServerOptions,
  ShowMessageNotification,
  ShowMessageParams,
  State,
} from 'vscode-languageclient/node';
import { isLoadFailure, modelToPull, RestartPolicy } from './restartPolicy';
import { cliFromServerCommand, ResolvedCommand, resolveServerCommand, ResolveFailure } from './serverCommand';
import { levelOf, StderrTail } from './serverLog';
import { changedKeys, SECTION, serverKeysOf, toServerSettings } from './settings';
import { initialState, reduce, StatusEvent, StatusState, view } from './status';

/** The server's command (phi_lsp/features/generate.py). */
const GENERATE_COMMAND = 'phiLsp.generateFunction';
const RELOAD_COMMAND = 'phiLsp.reloadModel';
const KNOWN_MODELS: ReadonlyArray<{ name: string; detail: string }> = [
  { name: 'phi-1', detail: '1.3B, Python; the default' },
  { name: 'phi-1.5', detail: '1.3B' },
  { name: 'phi-2', detail: '2.7B' },
  { name: 'phi-3-mini-4k-instruct', detail: '3.8B' },
];

/** For every phi-lsp process: unbuffered logs, and never the working directory on sys.path. */
const PYTHON_ENV = { PYTHONUNBUFFERED: '1', PYTHONSAFEPATH: '1' };

let controller: Controller | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  controller = new Controller(context);
  controller.registerCommands();
  void controller.restart(); // not awaited: activation must not wait for a server that may hang
}

export async function deactivate(): Promise<void> {
  await controller?.stop();
  controller = undefined;
}

/** The library's own popups ("couldn't create connection", "Go to output") are replaced by this
 * extension's single notification with a fix; everything still goes to the log. */
class PhiLanguageClient extends LanguageClient {
  override error(message: string, data?: unknown, _showNotification?: boolean | 'force'): void {
    super.error(message, data, false);
  }
}

class Controller {
  private readonly output: vscode.LogOutputChannel;
  private readonly item: vscode.StatusBarItem;
  private state: StatusState;
  private client: PhiLanguageClient | undefined;
  private resolved: ResolvedCommand | undefined;
  private readonly restarts = new RestartPolicy(3, 3 * 60 * 1000);
  private readonly stderr = new StderrTail();
  /** Resolves when the current server's stderr has ended (it has said all it will say). */
  private stderrEnded: Promise<void> = Promise.resolve();
  private stopping = false;
  private restartChain: Promise<void> = Promise.resolve();
  private lastNotice = { text: '', at: 0 };
  /** The server's setting names, from this extension's package.json. */
  private readonly serverKeys: string[];

  constructor(private readonly context: vscode.ExtensionContext) {
    this.serverKeys = serverKeysOf(context.extension.packageJSON.contributes.configuration.properties);
    this.output = vscode.window.createOutputChannel('phi-lsp', { log: true });
    this.item = vscode.window.createStatusBarItem('phiLsp.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'phi-lsp';
    this.item.command = 'phiLsp.showActions';
    this.state = initialState(this.config().get<boolean>('enable', true));
    this.render();
    this.item.show();
    context.subscriptions.push(this.output, this.item);
    context.subscriptions.push(vscode.workspace.onDidChangeConfiguration((e) => this.onConfigurationChanged(e)));
  }

  // -- lifecycle ---------------------------------------------------------------------------
  async start(): Promise<void> {
    this.dispatch({ type: 'starting' });
    const resolution = this.resolve();
    if (!resolution.ok) {
      this.output.error(`${resolution.message} Looked for: ${resolution.tried.join(', ') || '-'}`);
      this.dispatch({ type: 'notInstalled', reason: resolution.message });
      void this.notifyNotFound(resolution);
      return;
    }
    this.resolved = resolution;
    this.output.info(`starting ${[resolution.command, ...resolution.args].join(' ')} (from ${resolution.description})`);
    const client = this.createClient(resolution);
    this.client = client;
    this.stderr.clear();
    try {
      await client.start();
      // start() can resolve although the server exited during initialize (the library drops its
      // start promise when the connection closes first), so check the state too.
      if (!client.isRunning()) {
        throw new Error('the server exited while starting');
      }
    } catch (error) {
      if (this.client !== client) {
        return; // replaced by a restart meanwhile
      }
      // The process's last words ("No module named phi_lsp") may still be on their way.
      await Promise.race([this.stderrEnded, new Promise((resolve) => setTimeout(resolve, 2000))]);
      const reason = this.stderr.reason() ?? errorText(error);
      this.output.error(`the server did not start: ${reason}`);
      this.dispatch({ type: 'stopped', reason });
      void this.notifyStartFailure(resolution, reason);
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client === undefined) {
      return;
    }
    this.stopping = true;
    try {
      await client.dispose(3000);
    } catch (error) {
      this.output.warn(`stopping the server: ${errorText(error)}`);
    } finally {
      this.stopping = false;
    }
  }

  /** Restarts run one after the other (settings.json saved twice must not start two servers). */
  restart(): Promise<void> {
    this.restartChain = this.restartChain
      .then(async () => {
        this.restarts.reset();
        await this.stop();
        await this.start();
      })
      .catch((error) => this.output.error(`restarting the server: ${errorText(error)}`));
    return this.restartChain;
  }

  private resolve() {
    const config = this.config();
    return resolveServerCommand({
      serverCommand: config.get<string[]>('serverCommand', []),
      pythonPath: config.get<string>('pythonPath', ''),
      workspaceFolders: (vscode.workspace.workspaceFolders ?? [])
        .filter((f) => f.uri.scheme === 'file')
        .map((f) => f.uri.fsPath),
      envPath: process.env.PATH ?? '',
      home: os.homedir(),
      platform: process.platform,
      isExecutable,
    });
  }

  private createClient(resolution: ResolvedCommand): PhiLanguageClient {
    const serverOptions: ServerOptions = {
      command: resolution.command,
      args: resolution.args,
      // transport left out: stdio without the `--stdio` flag vscode-languageclient would add.
      options: { cwd: this.neutralDir(), env: { ...process.env, ...PYTHON_ENV } },
    };
    let everRunning = false;
    const clientOptions: LanguageClientOptions = {
      documentSelector: [
        { scheme: 'file', language: 'python' },
        { scheme: 'untitled', language: 'python' },
      ],
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: () => toServerSettings(this.section(), this.serverKeys),
      synchronize: { configurationSection: SECTION },
      initializationFailedHandler: () => false,
      stdioOptions: {
        stdout: (input, channel) => lines(input, (line) => channel.info(line)),
        stderr: (input, channel) => {
          this.stderrEnded = new Promise((resolve) => {
            input.once('end', resolve);
            input.once('close', resolve);
          });
          lines(input, (line) => {
            this.stderr.push(line);
            channel[levelOf(line)](line);
          });
        },
      },
      errorHandler: {
        error: (_error, _message, count) => ({
          action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
          handled: true,
        }),
        closed: () => {
          if (this.stopping || !everRunning) {
            // A server that cannot even initialize is not fixed by restarting it; start() reports it.
            return { action: CloseAction.DoNotRestart, handled: true };
          }
          if (this.restarts.shouldRestart(Date.now())) {
            this.output.warn(`the server exited (${this.stderr.reason() ?? 'no message'}); restarting it`);
            this.dispatch({ type: 'starting' });
            return { action: CloseAction.Restart, handled: true };
          }
          const reason = `it exited ${this.restarts.recentCrashes} times in 3 minutes (last: ${this.stderr.reason() ?? 'no message'})`;
          this.output.error(`the server ${reason}; not restarting it`);
          this.dispatch({ type: 'stopped', reason });
          void this.notifyCrashLoop(reason);
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      middleware: {
        workspace: {
          // The server asks for the `phiLsp` section: answer with its keys only.
          configuration: async (params, token, next) => {
            const result = await next(params, token);
            if (!Array.isArray(result)) {
              return result;
            }
            return result.map((value, i) =>
              params.items[i]?.section === SECTION ? toServerSettings(value, this.serverKeys) : value,
            );
          },
          didChangeConfiguration: async (sections, next) => {
            if (!sections?.includes(SECTION)) {
              return next(sections);
            }
            await client.sendNotification(DidChangeConfigurationNotification.type, {
              settings: { [SECTION]: toServerSettings(this.section(), this.serverKeys) },
            });
          },
        },
        handleWorkDoneProgress: (token, params, next) => {
          this.onProgress(String(token), params);
          next(token, params);
        },
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          const t0 = performance.now();
          const result = await next(document, position, context, token);
          if (!token.isCancellationRequested) {
            const items = Array.isArray(result) ? result.length : (result?.items.length ?? 0);
            this.dispatch({ type: 'completion', ms: performance.now() - t0, items });
          }
          return result;
        },
      },
    };
    const client = new PhiLanguageClient('phiLsp', 'phi-lsp', serverOptions, clientOptions);
    client.registerProposedFeatures(); // inline completion in vscode-languageclient 9; built in since 10
    client.onNotification(ShowMessageNotification.type, (params) => this.onServerMessage(params));
    client.onDidChangeState((e) => {
      if (this.client !== client) {
        return;
      }
      if (e.newState === State.Running) {
        everRunning = true;
        this.dispatch({ type: 'running' });
      } else if (e.newState === State.Starting) {
        this.dispatch({ type: 'starting' });
      }
    });
    return client;
  }

  // -- events -------------------------------------------------------------------------------
  private dispatch(event: StatusEvent): void {
    this.state = reduce(this.state, event);
    this.render();
  }

  private render(): void {
    const v = view(this.state);
    this.item.text = v.text;
    this.item.tooltip = v.tooltip;
    this.item.backgroundColor =
      v.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : v.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  private onProgress(
    token: string,
    params: { kind: 'begin' | 'report' | 'end'; title?: string; message?: string; percentage?: number },
  ): void {
    if (params.kind === 'begin') {
      this.dispatch({
        type: 'progressBegin',
        token,
        title: params.title ?? '',
        message: params.message,
        percentage: params.percentage,
      });
    } else if (params.kind === 'report') {
      this.dispatch({ type: 'progressReport', token, message: params.message, percentage: params.percentage });
    } else {
      this.dispatch({ type: 'progressEnd', token, message: params.message });
      if (params.message) {
        this.output.info(`progress: ${params.message}`);
      }
    }
  }

  /** window/showMessage from the server: a model that did not load gets buttons that fix it. */
  private onServerMessage(params: ShowMessageParams): void {
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

  private onConfigurationChanged(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration(SECTION)) {
      return;
    }
    if (e.affectsConfiguration(`${SECTION}.enable`)) {
      this.dispatch({ type: 'enabled', value: this.config().get<boolean>('enable', true) });
    }
    const changed = changedKeys((name) => e.affectsConfiguration(name), this.serverKeys);
    const notRunning = this.client === undefined || this.state.phase === 'stopped' || this.state.phase === 'notInstalled';
    if (changed.restart || changed.initializeOnly || (notRunning && changed.server.length > 0)) {
      // The other server settings reach the running server via workspace/didChangeConfiguration.
      this.output.info('settings changed that need a new server: restarting it');
      void this.restart();
    }
  }

  // -- commands -----------------------------------------------------------------------------
  registerCommands(): void {
    const commands: Record<string, (...args: unknown[]) => unknown> = {
      'phiLsp.generateBody': () => this.generateBody(),
      'phiLsp.enableCompletions': () => this.setEnabled(true),
      'phiLsp.disableCompletions': () => this.setEnabled(false),
      'phiLsp.toggleCompletions': () => this.setEnabled(!this.config().get<boolean>('enable', true)),
      'phiLsp.restartServer': () => this.restart(),
      'phiLsp.showLog': () => this.output.show(true),
      'phiLsp.pullModel': (name?: unknown) => this.pullModel(typeof name === 'string' ? name : undefined),
      'phiLsp.finetuneWorkspace': () => this.finetune(),
      'phiLsp.showActions': () => this.showActions(),
    };
    for (const [id, run] of Object.entries(commands)) {
      this.context.subscriptions.push(vscode.commands.registerCommand(id, run));
    }
  }

  private async generateBody(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.languageId !== 'python') {
      void vscode.window.showInformationMessage('phi-lsp: put the cursor in a Python function whose body is only a docstring.');
      return;
    }
    const client = this.client;
    if (!client || !client.isRunning()) {
      void this.ask(vscode.window.showWarningMessage('phi-lsp: the server is not running.', 'Restart Server', 'Show Log'));
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
      void this.ask(vscode.window.showErrorMessage(`phi-lsp: generating the body failed: ${errorText(error)}`, 'Show Log'));
    }
  }

  /** Load the model again: the server's `phiLsp.reloadModel`, or a new server if it has none. */
  private async reloadModel(): Promise<void> {
    const client = this.client;
    const commands = client?.initializeResult?.capabilities.executeCommandProvider?.commands ?? [];
    if (client?.isRunning() && commands.includes(RELOAD_COMMAND)) {
      await client.sendRequest(ExecuteCommandRequest.type, { command: RELOAD_COMMAND, arguments: [] });
    } else {
      await this.restart();
    }
  }

  private async setEnabled(value: boolean): Promise<void> {
    const config = this.config();
    const info = config.inspect<boolean>('enable');
    const target =
      info?.workspaceFolderValue !== undefined || info?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
    await config.update('enable', value, target);
    this.dispatch({ type: 'enabled', value: this.config().get<boolean>('enable', value) });
  }

  private async showActions(): Promise<void> {
    const enabled = this.config().get<boolean>('enable', true);
    const editor = vscode.window.activeTextEditor;
    type Action = vscode.QuickPickItem & { run: () => unknown };
    const actions: Action[] = [
      enabled
        ? { label: '$(circle-slash) Disable completions', run: () => this.setEnabled(false) }
        : { label: '$(check) Enable completions', run: () => this.setEnabled(true) },
      ...(editor?.document.languageId === 'python'
        ? [{ label: '$(wand) Generate function body from docstring', run: () => this.generateBody() }]
        : []),
      ...(this.state.phase === 'loadFailed'
        ? [{ label: '$(refresh) Load the model again', run: () => this.reloadModel() }]
        : []),
      { label: '$(debug-restart) Restart server', run: () => this.restart() },
      { label: '$(output) Show log', run: () => this.output.show(true) },
      { label: '$(cloud-download) Pull a model…', run: () => this.pullModel() },
      { label: '$(beaker) Fine-tune on this workspace…', run: () => this.finetune() },
      { label: '$(gear) Settings', run: () => this.openSettings() },
    ];
    const summary = view(this.state).text.replace(/^\$\([^)]*\)\s*/, '');
    const title = summary.startsWith('phi-lsp') ? summary : `phi-lsp · ${summary}`;
    const pick = await vscode.window.showQuickPick(actions, { title, placeHolder: 'Choose a phi-lsp action' });
    await pick?.run();
  }

  private async pullModel(name?: string): Promise<void> {
    if (name === undefined) {
      const current = this.config().get<string>('model', 'phi-1');
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
        void this.ask(vscode.window.showErrorMessage(`phi-lsp: pulling ${name} failed (exit code ${code}); see the terminal.`));
      }
      return;
    }
    if (this.config().get<string>('model') === name) {
      void vscode.window.showInformationMessage(`phi-lsp: ${name} is ready; loading it.`);
      await this.reloadModel(); // the setting did not change, so ask for the load
      return;
    }
    const use = `Use ${name}`;
    if ((await vscode.window.showInformationMessage(`phi-lsp: ${name} is ready.`, use)) === use) {
      await this.config().update('model', name, vscode.ConfigurationTarget.Global);
    }
  }

  private async finetune(): Promise<void> {
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
    const resolution = this.resolved ?? this.resolve();
    if (!resolution.ok) {
      void this.notifyNotFound(resolution);
      return undefined;
    }
    this.resolved = resolution;
    const cli = cliFromServerCommand(resolution.command, resolution.args) ?? ['phi-lsp'];
    const folder = vscode.workspace.workspaceFolders?.[0];
    this.output.info(`running ${[...cli, ...args].join(' ')}`);
    if (!folder) {
      // Tasks need a workspace; without one, a plain terminal (no exit code to report).
      const terminal = vscode.window.createTerminal({
        name: `phi-lsp: ${title}`,
        shellPath: cli[0],
        shellArgs: [...cli.slice(1), ...args],
        cwd: this.neutralDir(),
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
      new vscode.ProcessExecution(cli[0], [...cli.slice(1), ...args], { cwd: this.neutralDir(), env: PYTHON_ENV }),
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

  // -- notifications ------------------------------------------------------------------------
  private async notifyNotFound(failure: ResolveFailure): Promise<void> {
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

  private async notifyStartFailure(resolution: ResolvedCommand, reason: string): Promise<void> {
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

  private async notifyCrashLoop(reason: string): Promise<void> {
    const pick = await vscode.window.showErrorMessage(
      `phi-lsp stopped: the server ${reason}. It is not restarted automatically.`,
      'Restart Server',
      'Show Log',
    );
    if (pick === 'Restart Server') {
      await this.restart();
    } else if (pick === 'Show Log') {
      this.output.show(true);
    }
  }

  private async notifyLoadFailure(message: string): Promise<void> {
    const name = modelToPull(message);
    const pull = name ? `Pull ${name}` : undefined;
    const buttons = [...(pull ? [pull] : []), 'Choose Model', 'Show Log'];
    const pick = await vscode.window.showErrorMessage(message, ...buttons);
    if (pick === pull && name) {
      await this.pullModel(name);
    } else if (pick === 'Choose Model') {
      await this.openSettings(`${SECTION}.model`);
    } else if (pick === 'Show Log') {
      this.output.show(true);
    }
  }

  private async ask(answer: Thenable<string | undefined>): Promise<void> {
    const pick = await answer;
    if (pick === 'Show Log') {
      this.output.show(true);
    } else if (pick === 'Restart Server') {
      await this.restart();
    }
  }

  private async showInstallHelp(): Promise<void> {
    const readme = vscode.Uri.joinPath(this.context.extensionUri, 'README.md');
    try {
      await vscode.commands.executeCommand('markdown.showPreview', readme);
    } catch {
      await vscode.window.showTextDocument(readme);
    }
  }

  /** The settings editor at `setting` (e.g. `phiLsp.model`), on the tab where its value is set. */
  private async openSettings(setting?: string): Promise<void> {
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

  // -- helpers ------------------------------------------------------------------------------
  /**
   * The working directory for phi-lsp processes. Not the workspace: `python -m phi_lsp` puts its
   * working directory first on sys.path, so a user's `cmd.py` or `random.py` would shadow the
   * standard library and the server would not start (PYTHONSAFEPATH covers Python >= 3.11 only).
   */
  private neutralDir(): string {
    const dir = this.context.globalStorageUri.fsPath;
    try {
      fs.mkdirSync(dir, { recursive: true });
      return dir;
    } catch {
      return os.tmpdir();
    }
  }

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
  }

  /** The server's keys of the `phiLsp` section, as plain JSON. */
  private section(): Record<string, unknown> {
    const config = this.config();
    return Object.fromEntries(this.serverKeys.map((k) => [k, config.get(k)]));
  }
}

function lines(input: NodeJS.ReadableStream, each: (line: string) => void): void {
  let buffer = '';
  input.setEncoding('utf8');
  input.on('data', (chunk: string) => {
    buffer += chunk;
    let i: number;
    while ((i = buffer.indexOf('\n')) >= 0) {
      each(buffer.slice(0, i).replace(/\r$/, ''));
      buffer = buffer.slice(i + 1);
    }
  });
  input.on('end', () => {
    if (buffer) {
      each(buffer);
    }
  });
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
