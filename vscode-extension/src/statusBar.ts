/**
 * The status bar item: shows the state that the plain reducer in status.ts keeps (server phase,
 * model load, generations, completion latency), with its tooltip and error/warning colours.
 * Clicking it opens the phi-lsp actions (the `phiLsp.showActions` command).
 */

import * as vscode from 'vscode';
import { initialState, reduce, StatusEvent, StatusState, view } from './status';

/** A `$/progress` value as the server sends it (begin, report, end). */
export interface Progress {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
}

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private state: StatusState;

  constructor(enabled: boolean) {
    this.item = vscode.window.createStatusBarItem('phiLsp.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'phi-lsp';
    this.item.command = 'phiLsp.showActions';
    this.state = initialState(enabled);
    this.render();
    this.item.show();
  }

  /** Where the server stands now (`ready`, `loadFailed`, ...). */
  get phase(): StatusState['phase'] {
    return this.state.phase;
  }

  /** The status text without its icon, e.g. for a quick pick's title. */
  get summary(): string {
    return view(this.state).text.replace(/^\$\([^)]*\)\s*/, '');
  }

  dispatch(event: StatusEvent): void {
    this.state = reduce(this.state, event);
    this.render();
  }

  /** A work-done progress from the server: a model load or a generation. */
  progress(token: string, params: Progress): void {
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
    }
  }

  dispose(): void {
    this.item.dispose();
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
}
