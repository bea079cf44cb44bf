/**
 * The server process's output in the phi-lsp output channel: stdout and stderr line by line,
 * each stderr line at the level phi-lsp logged it (serverLog.ts), and the tail of stderr that
 * explains why a server exited.
 */

import type { Readable } from 'stream';
import type { LogOutputChannel } from 'vscode';
import { levelOf, StderrTail } from './serverLog';

export class ServerStreams {
  /** The current server's last stderr lines. */
  readonly tail = new StderrTail();
  /** Resolves when the current server's stderr has ended (it has said all it will say). */
  private ended: Promise<void> = Promise.resolve();

  /** For LanguageClientOptions.stdioOptions. */
  readonly stdioOptions = {
    stdout: (input: Readable, channel: LogOutputChannel) => lines(input, (line) => channel.info(line)),
    stderr: (input: Readable, channel: LogOutputChannel) => {
      this.ended = new Promise((resolve) => {
        input.once('end', resolve);
        input.once('close', resolve);
      });
      lines(input, (line) => {
        this.tail.push(line);
        channel[levelOf(line)](line);
      });
    },
  };

  /** Waits until stderr has ended, at most `ms`: a dying process's last words may be on their way. */
  async settle(ms: number): Promise<void> {
    await Promise.race([this.ended, new Promise((resolve) => setTimeout(resolve, ms))]);
  }
}

/** An error's message, for the log and notifications. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
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
