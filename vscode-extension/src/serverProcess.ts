/**
 * How phi-lsp processes start, the server and the CLI tasks alike: the command (found from the
 * settings by the plain serverCommand.ts), the environment, and a working directory that is not
 * the workspace.
 */

import * as fs from 'fs';
import * as os from 'os';
import * as vscode from 'vscode';
import { config } from './configuration';
import { Resolution, resolveServerCommand } from './serverCommand';

/** For every phi-lsp process: unbuffered logs, and never the working directory on sys.path. */
export const PYTHON_ENV = { PYTHONUNBUFFERED: '1', PYTHONSAFEPATH: '1' };

/** The phi-lsp command from the settings, the workspace's virtual environments and PATH. */
export function resolveCommand(): Resolution {
  const settings = config();
  return resolveServerCommand({
    serverCommand: settings.get<string[]>('serverCommand', []),
    pythonPath: settings.get<string>('pythonPath', ''),
    workspaceFolders: (vscode.workspace.workspaceFolders ?? [])
      .filter((f) => f.uri.scheme === 'file')
      .map((f) => f.uri.fsPath),
    envPath: process.env.PATH ?? '',
    home: os.homedir(),
    platform: process.platform,
    isExecutable,
  });
}

/**
 * The working directory for phi-lsp processes. Not the workspace: `python -m phi_lsp` puts its
 * working directory first on sys.path, so a user's `cmd.py` or `random.py` would shadow the
 * standard library and the server would not start (PYTHONSAFEPATH covers Python >= 3.11 only).
 */
export function neutralDir(context: vscode.ExtensionContext): string {
  const dir = context.globalStorageUri.fsPath;
  try {
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  } catch {
    return os.tmpdir();
  }
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
