/**
 * The language client for `phi-lsp serve`: starting, stopping and restarting the server (restarts
 * one at a time, crash restarts limited by restartPolicy.ts), the options it runs with (settings
 * sent as the server understands them, stdio to the log), and feeding its state to the status bar
 * (with the session's usage figures, usagePoller.ts).
 */

import { performance } from 'perf_hooks';
import * as vscode from 'vscode';
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  ServerOptions,
  ShowMessageNotification,
  State,
} from 'vscode-languageclient/node';
import { serverSection } from './configuration';
import { errorText, ServerStreams } from './logs';
import type { Notifications } from './notifications';
import { RestartPolicy } from './restartPolicy';
import { Resolution, ResolvedCommand } from './serverCommand';
import { neutralDir, PYTHON_ENV, resolveCommand } from './serverProcess';
import { SECTION, toServerSettings } from './settings';
import type { StatusBar } from './statusBar';
import { UsagePoller } from './usagePoller';

/** The server's command that loads the model again (phi_lsp's reloadModel). */
const RELOAD_COMMAND = 'phiLsp.reloadModel';
/** The command each inline completion item carries; VS Code runs it after inserting the item. */
const ACCEPTED_COMMAND = 'phiLsp.accepted';

/** The library's own popups ("couldn't create connection", "Go to output") are replaced by this
 * extension's single notification with a fix; everything still goes to the log. */
class PhiLanguageClient extends LanguageClient {
  override error(message: string, data?: unknown, _showNotification?: boolean | 'force'): void {
    super.error(message, data, false);
  }
}

export class ServerClient {
  private client: PhiLanguageClient | undefined;
  private usage: UsagePoller | undefined;
  private resolved: ResolvedCommand | undefined;
  private readonly restarts = new RestartPolicy(3, 3 * 60 * 1000);
  private readonly streams = new ServerStreams();
  private stopping = false;
  private restartChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly output: vscode.LogOutputChannel,
    private readonly status: StatusBar,
    private readonly notices: Notifications,
    /** The server's setting names, from this extension's package.json. */
    private readonly serverKeys: readonly string[],
  ) {}

  /** The current language client, running or not; undefined when stopped. */
  get current(): LanguageClient | undefined {
    return this.client;
  }

  get hasClient(): boolean {
    return this.client !== undefined;
  }

  /** The phi-lsp command, as last found (found again while it cannot be). */
  resolution(): Resolution {
    const resolution = this.resolved ?? resolveCommand();
    if (resolution.ok) {
      this.resolved = resolution;
    }
    return resolution;
  }

  async start(): Promise<void> {
    this.status.dispatch({ type: 'starting' });
    const resolution = resolveCommand();
    if (!resolution.ok) {
      this.output.error(`${resolution.message} Looked for: ${resolution.tried.join(', ') || '-'}`);
      this.status.dispatch({ type: 'notInstalled', reason: resolution.message });
      void this.notices.notifyNotFound(resolution);
      return;
    }
    this.resolved = resolution;
    this.output.info(`starting ${[resolution.command, ...resolution.args].join(' ')} (from ${resolution.description})`);
    const client = this.createClient(resolution);
    this.client = client;
    this.streams.tail.clear();
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
      await this.streams.settle(2000);
      const reason = this.streams.tail.reason() ?? errorText(error);
      this.output.error(`the server did not start: ${reason}`);
      this.status.dispatch({ type: 'stopped', reason });
      void this.notices.notifyStartFailure(resolution, reason);
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.usage?.dispose();
    this.usage = undefined;
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

  /** Load the model again: the server's `phiLsp.reloadModel`, or a new server if it has none. */
  async reloadModel(): Promise<void> {
    const client = this.client;
    const commands = client?.initializeResult?.capabilities.executeCommandProvider?.commands ?? [];
    if (client?.isRunning() && commands.includes(RELOAD_COMMAND)) {
      await client.sendRequest(ExecuteCommandRequest.type, { command: RELOAD_COMMAND, arguments: [] });
    } else {
      await this.restart();
    }
  }

  private createClient(resolution: ResolvedCommand): PhiLanguageClient {
    const serverOptions: ServerOptions = {
      command: resolution.command,
      args: resolution.args,
      // transport left out: stdio without the `--stdio` flag vscode-languageclient would add.
      options: { cwd: neutralDir(this.context), env: { ...process.env, ...PYTHON_ENV } },
    };
    let everRunning = false;
    const clientOptions: LanguageClientOptions = {
      documentSelector: [
        { scheme: 'file', language: 'python' },
        { scheme: 'untitled', language: 'python' },
      ],
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: () => toServerSettings(serverSection(this.serverKeys), this.serverKeys),
      synchronize: { configurationSection: SECTION },
      initializationFailedHandler: () => false,
      stdioOptions: this.streams.stdioOptions,
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
            this.output.warn(`the server exited (${this.streams.tail.reason() ?? 'no message'}); restarting it`);
            this.status.dispatch({ type: 'starting' });
            return { action: CloseAction.Restart, handled: true };
          }
          const last = this.streams.tail.reason() ?? 'no message';
          const reason = `it exited ${this.restarts.recentCrashes} times in 3 minutes (last: ${last})`;
          this.output.error(`the server ${reason}; not restarting it`);
          this.status.dispatch({ type: 'stopped', reason });
          void this.notices.notifyCrashLoop(reason);
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
              settings: { [SECTION]: toServerSettings(serverSection(this.serverKeys), this.serverKeys) },
            });
          },
        },
        handleWorkDoneProgress: (token, params, next) => {
          this.status.progress(String(token), params);
          if (params.kind === 'end' && params.message) {
            this.output.info(`progress: ${params.message}`);
          }
          next(token, params);
        },
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          const t0 = performance.now();
          const result = await next(document, position, context, token);
          if (!token.isCancellationRequested) {
            const items = Array.isArray(result) ? result.length : (result?.items.length ?? 0);
            this.status.dispatch({ type: 'completion', ms: performance.now() - t0, items });
            if (items > 0) {
              usage.soon();
            }
          }
          return result;
        },
        executeCommand: async (command, args, next) => {
          const result = await next(command, args);
          if (command === ACCEPTED_COMMAND) {
            usage.soon();
          }
          return result;
        },
        didSave: async (document, next) => {
          await next(document);
          usage.soon(); // the server measured what was kept of accepted suggestions
        },
      },
    };
    const client = new PhiLanguageClient('phiLsp', 'phi-lsp', serverOptions, clientOptions);
    const usage = new UsagePoller(client, this.status);
    this.usage?.dispose();
    this.usage = usage;
    client.registerProposedFeatures(); // inline completion in vscode-languageclient 9; built in since 10
    client.onNotification(ShowMessageNotification.type, (params) => this.notices.onServerMessage(params));
    client.onDidChangeState((e) => {
      if (this.client !== client) {
        return;
      }
      if (e.newState === State.Running) {
        everRunning = true;
        this.status.dispatch({ type: 'running' });
        usage.soon();
      } else if (e.newState === State.Starting) {
        this.status.dispatch({ type: 'starting' });
      }
    });
    return client;
  }
}
