/**
 * The server's stderr: phi-lsp's log lines ("<time> INFO phi_lsp...: message") and, when it
 * cannot start, Python's own complaint ("No module named phi_lsp", a traceback).
 *
 * No `vscode` import here: unit tests run this under plain node.
 */

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

/** The level of one stderr line, from phi-lsp's logging format (Python tracebacks are errors). */
export function levelOf(line: string): LogLevel {
  const m = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) /.exec(line);
  if (m) {
    return m[1] === 'DEBUG' ? 'debug' : m[1] === 'INFO' ? 'info' : m[1] === 'WARNING' ? 'warn' : 'error';
  }
  return 'error';
}

/** The last lines of stderr, kept to explain a server that exits while starting. */
export class StderrTail {
  private lines: string[] = [];

  constructor(private readonly keep = 40) {}

  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.keep) {
      this.lines.shift();
    }
  }

  clear(): void {
    this.lines = [];
  }

  /** The most telling line: the last one that is not blank, not a traceback frame or caret. */
  reason(): string | undefined {
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const line = this.lines[i].trim();
      if (line === '' || line.startsWith('File "') || /^[\^~ ]+$/.test(line) || line.startsWith('Traceback')) {
        continue;
      }
      return line.replace(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ [\w.]+: /, '');
    }
    return undefined;
  }
}
