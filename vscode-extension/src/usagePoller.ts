/**
 * Keeps the status bar's usage figures current: asks the running server `phiLsp/usageStats`
 * soon after a completion, an accept or a save (coalesced), and every 30 s. Never waits on the
 * server: one request at a time, cancelled after 3 s; a server without the request (an older
 * phi-lsp) is asked no more.
 */

import * as vscode from 'vscode';
import { ErrorCodes, LanguageClient, ResponseError } from 'vscode-languageclient/node';
import type { StatusBar } from './statusBar';
import { parseUsage } from './usageFigures';

/** phi_lsp/lsp/features/usage.py */
export const USAGE_STATS = 'phiLsp/usageStats';

export class UsagePoller implements vscode.Disposable {
  private readonly interval: NodeJS.Timeout;
  private soonTimer: NodeJS.Timeout | undefined;
  private inFlight = false;
  private unsupported = false;

  constructor(
    private readonly client: LanguageClient,
    private readonly status: StatusBar,
    periodMs = 30_000,
  ) {
    this.interval = setInterval(() => void this.refresh(), periodMs);
  }

  /** Refresh shortly (several calls within `delayMs` make one request). */
  soon(delayMs = 300): void {
    if (this.soonTimer === undefined) {
      this.soonTimer = setTimeout(() => {
        this.soonTimer = undefined;
        void this.refresh();
      }, delayMs);
    }
  }

  async refresh(): Promise<void> {
    if (this.inFlight || this.unsupported || !this.client.isRunning()) {
      return;
    }
    this.inFlight = true;
    const cancel = new vscode.CancellationTokenSource();
    const timeout = setTimeout(() => cancel.cancel(), 3000);
    try {
      const figures = parseUsage(await this.client.sendRequest(USAGE_STATS, {}, cancel.token));
      if (figures) {
        this.status.dispatch({ type: 'usage', figures });
      }
    } catch (error) {
      // Busy, cancelled or stopping: the next refresh tries again. Unknown method: stop asking.
      this.unsupported = error instanceof ResponseError && error.code === ErrorCodes.MethodNotFound;
    } finally {
      clearTimeout(timeout);
      cancel.dispose();
      this.inFlight = false;
    }
  }

  dispose(): void {
    clearInterval(this.interval);
    clearTimeout(this.soonTimer);
  }
}
