/**
 * When the server process dies, restart it, but not forever: at most `maxRestarts` restarts in
 * `windowMs`. After that the extension stops trying and shows one notification; the user restarts
 * by hand (the "Restart server" command resets the count).
 *
 * No `vscode` import here: unit tests run this under plain node.
 */

export class RestartPolicy {
  private crashes: number[] = [];

  constructor(
    readonly maxRestarts = 3,
    readonly windowMs = 3 * 60 * 1000,
  ) {}

  /** The server closed unexpectedly at `now`: true to restart it, false to give up. */
  shouldRestart(now: number): boolean {
    this.crashes = this.crashes.filter((t) => now - t < this.windowMs);
    this.crashes.push(now);
    return this.crashes.length <= this.maxRestarts;
  }

  get recentCrashes(): number {
    return this.crashes.length;
  }

  reset(): void {
    this.crashes = [];
  }
}

/** The load-failure message names the command that fixes it: `phi-lsp models pull NAME`. */
export function modelToPull(message: string): string | undefined {
  const m = /phi-lsp models pull ([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(message);
  return m ? m[1] : undefined;
}

/** phi_lsp.lsp.server._load_failure_message starts with this. */
export function isLoadFailure(message: string): boolean {
  return message.startsWith('phi-lsp could not load model');
}
