/**
 * The status bar's state machine: what the server is doing, from the events the extension sees.
 *
 * Events come from the client's lifecycle (starting, running, stopped), the server's work-done
 * progress (`$/progress` begin "phi-lsp: loading X", end "X ready (llamacpp, 0.3 s)" or an error;
 * begin "phi-lsp: writing f()" while a body is generated), completion timings measured around
 * inline-completion requests, the session's usage figures the server reports (`phiLsp/usageStats`),
 * and the `phiLsp.enable` setting.
 *
 * No `vscode` import here: unit tests run this under plain node.
 */

import { modelLabel } from './settings';
import { UsageFigures, usageLine } from './usageFigures';

export type Phase =
  | 'starting' // the server process is starting / initializing
  | 'loading' // the model is loading
  | 'ready' // the model is loaded
  | 'loadFailed' // the server runs, but the model did not load
  | 'stopped' // the server is not running (crashed too often, or stopped)
  | 'notInstalled'; // no server command could be found

export interface StatusState {
  phase: Phase;
  enabled: boolean;
  /** The model being loaded or loaded (the setting's value: a name or a path). */
  model?: string;
  backend?: string;
  loadSeconds?: number;
  /** Progress of the current load, 0-100, when the server reports it. */
  percentage?: number;
  progressMessage?: string;
  /** The token of the newest load: the end of an older (superseded) load is ignored. */
  loadToken?: string;
  /** Generations in flight (token -> title, e.g. "writing add()"). */
  tasks: Record<string, string>;
  /** Why the server or the model is not available. */
  error?: string;
  /** Latency of the last inline completion that produced a suggestion, in ms. */
  lastLatencyMs?: number;
  /** The last inline-completion request (also the empty ones). */
  lastRequest?: { ms: number; items: number };
  completions: number;
  /** This server session's figures, when the server reported them. */
  usage?: UsageFigures;
}

export type StatusEvent =
  | { type: 'starting' }
  | { type: 'running' }
  | { type: 'stopped'; reason?: string }
  | { type: 'notInstalled'; reason: string }
  | { type: 'enabled'; value: boolean }
  | { type: 'progressBegin'; token: string; title: string; message?: string; percentage?: number }
  | { type: 'progressReport'; token: string; message?: string; percentage?: number }
  | { type: 'progressEnd'; token: string; message?: string }
  | { type: 'completion'; ms: number; items: number }
  | { type: 'usage'; figures: UsageFigures };

export function initialState(enabled = true): StatusState {
  return { phase: 'starting', enabled, tasks: {}, completions: 0 };
}

const LOADING = /^phi-lsp: loading (.+)$/;
const WRITING = /^phi-lsp: (writing .+)$/;
/** `phi_lsp.lsp.server.load_model`: f"{model} ready ({engine.name}, {seconds:.1f} s)". */
const READY = /^(.*) ready \((.+), ([\d.]+) s\)$/;
const SUPERSEDED = 'replaced by a newer load';

export function reduce(state: StatusState, event: StatusEvent): StatusState {
  switch (event.type) {
    case 'starting':
      return { ...initialState(state.enabled), lastLatencyMs: state.lastLatencyMs, completions: state.completions };
    case 'running':
      // The server is up; the model load announces itself through progress.
      return state.phase === 'starting' || state.phase === 'stopped' || state.phase === 'notInstalled'
        ? { ...state, phase: 'starting', error: undefined }
        : state;
    case 'stopped':
      return { ...state, phase: 'stopped', error: event.reason, tasks: {}, loadToken: undefined };
    case 'notInstalled':
      return { ...state, phase: 'notInstalled', error: event.reason, tasks: {}, loadToken: undefined };
    case 'enabled':
      return { ...state, enabled: event.value };
    case 'progressBegin': {
      const loading = LOADING.exec(event.title);
      if (loading) {
        return {
          ...state,
          phase: 'loading',
          model: loading[1],
          backend: undefined,
          loadSeconds: undefined,
          error: undefined,
          loadToken: event.token,
          percentage: event.percentage,
          progressMessage: event.message,
        };
      }
      const writing = WRITING.exec(event.title);
      return { ...state, tasks: { ...state.tasks, [event.token]: writing ? writing[1] : event.title } };
    }
    case 'progressReport':
      if (event.token === state.loadToken) {
        return {
          ...state,
          percentage: event.percentage ?? state.percentage,
          progressMessage: event.message ?? state.progressMessage,
        };
      }
      return state;
    case 'progressEnd': {
      if (event.token in state.tasks) {
        const tasks = { ...state.tasks };
        delete tasks[event.token];
        return { ...state, tasks };
      }
      if (event.token !== state.loadToken) {
        return state; // an older load that a newer one replaced
      }
      const message = event.message ?? '';
      const ready = READY.exec(message);
      const base = { ...state, loadToken: undefined, percentage: undefined, progressMessage: undefined };
      if (ready) {
        return { ...base, phase: 'ready', model: ready[1], backend: ready[2], loadSeconds: Number(ready[3]) };
      }
      if (message === SUPERSEDED) {
        return state;
      }
      return { ...base, phase: 'loadFailed', error: message || 'the model did not load' };
    }
    case 'completion':
      return {
        ...state,
        lastRequest: { ms: event.ms, items: event.items },
        lastLatencyMs: event.items > 0 ? event.ms : state.lastLatencyMs,
        completions: state.completions + (event.items > 0 ? 1 : 0),
      };
    case 'usage':
      return { ...state, usage: event.figures };
  }
}

export type Severity = 'normal' | 'warning' | 'error';

export interface StatusView {
  text: string;
  tooltip: string;
  severity: Severity;
}

/** What the status bar item shows. Codicons: `$(name)`. */
export function view(state: StatusState): StatusView {
  const model = state.model ? modelLabel(state.model) : undefined;
  const hint = 'Click for phi-lsp actions.';
  const tasks = Object.values(state.tasks);
  if (!state.enabled && (state.phase === 'starting' || state.phase === 'loading' || state.phase === 'ready')) {
    const loaded =
      state.phase === 'ready'
        ? `Model ${state.model} (${state.backend}) stays loaded.`
        : `The server is ${state.phase === 'loading' ? `loading ${state.model}` : 'starting'}.`;
    return {
      text: '$(circle-slash) phi-lsp: off',
      tooltip: `Completions are disabled (phiLsp.enable is false). ${loaded}\n${hint}`,
      severity: 'normal',
    };
  }
  switch (state.phase) {
    case 'notInstalled':
      return {
        text: '$(error) phi-lsp: not installed',
        tooltip: `${state.error ?? 'phi-lsp was not found.'}\n${hint}`,
        severity: 'error',
      };
    case 'stopped':
      return {
        text: '$(error) phi-lsp: stopped',
        tooltip: `The phi-lsp server is not running${state.error ? `: ${state.error}` : '.'}\n${hint}`,
        severity: 'error',
      };
    case 'starting':
      return { text: '$(loading~spin) phi-lsp: starting', tooltip: `Starting the phi-lsp server.\n${hint}`, severity: 'normal' };
    case 'loading': {
      const pct = state.percentage !== undefined ? ` ${Math.round(state.percentage)}%` : '';
      return {
        text: `$(loading~spin) phi-lsp: loading ${model ?? 'model'}${pct}`,
        tooltip: `Loading ${state.model ?? 'the model'}${state.progressMessage ? `: ${state.progressMessage}` : ''}.\n${hint}`,
        severity: 'normal',
      };
    }
    case 'loadFailed':
      return {
        text: `$(warning) phi-lsp: ${model ?? 'model'} not loaded`,
        tooltip: `${state.error ?? 'The model did not load.'}\n${hint}`,
        severity: 'warning',
      };
    case 'ready': {
      const latency = state.lastLatencyMs !== undefined ? ` · ${Math.round(state.lastLatencyMs)} ms` : '';
      const lines = [
        `phi-lsp ready: model ${state.model}, backend ${state.backend}, loaded in ${state.loadSeconds} s.`,
        state.lastLatencyMs !== undefined
          ? `Last completion: ${Math.round(state.lastLatencyMs)} ms (${state.completions} so far).`
          : 'No completion yet.',
        ...(state.usage ? [usageLine(state.usage)] : []),
      ];
      if (tasks.length > 0) {
        return {
          text: `$(loading~spin) phi-lsp: ${tasks[tasks.length - 1]}`,
          tooltip: [...lines, hint].join('\n'),
          severity: 'normal',
        };
      }
      return {
        text: `$(sparkle) ${model} · ${state.backend}${latency}`,
        tooltip: [...lines, hint].join('\n'),
        severity: 'normal',
      };
    }
  }
}
