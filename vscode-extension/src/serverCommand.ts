/**
 * Finding the command that starts `phi-lsp serve`, and the `phi-lsp` CLI next to it.
 *
 * Order: `phiLsp.serverCommand`, then `phiLsp.pythonPath` (`python -m phi_lsp serve`), then a
 * `phi-lsp` in a workspace folder's `.venv`/`venv`, on PATH, or in `~/.local/bin` (pipx). VS Code
 * started from a launcher (and code-server) resolves PATH from a login shell, so a `phi-lsp`
 * that lives only in a virtual environment is not on PATH: the `.venv` search matters.
 *
 * No `vscode` import here: unit tests run this under plain node with a fake file system.
 */

import * as path from 'path';

export interface ResolveInput {
  serverCommand: readonly string[];
  pythonPath: string;
  workspaceFolders: readonly string[];
  envPath: string;
  home: string;
  platform: NodeJS.Platform;
  /** True when `file` exists and can be executed. */
  isExecutable: (file: string) => boolean;
}

export type CommandSource = 'serverCommand' | 'pythonPath' | 'workspaceVenv' | 'path' | 'userBin';

export interface ResolvedCommand {
  ok: true;
  command: string;
  args: string[];
  source: CommandSource;
  /** Where it came from, for the log and the status tooltip. */
  description: string;
}

export interface ResolveFailure {
  ok: false;
  /** `badSetting`: a configured command does not exist. `notInstalled`: nothing found. */
  reason: 'badSetting' | 'notInstalled';
  setting?: 'serverCommand' | 'pythonPath';
  message: string;
  tried: string[];
}

export type Resolution = ResolvedCommand | ResolveFailure;

const SERVE = ['serve'];

export function resolveServerCommand(input: ResolveInput): Resolution {
  const win = input.platform === 'win32';
  const p = win ? path.win32 : path.posix;
  const expand = (s: string) => expandVariables(s, input);

  const configured = input.serverCommand.map(expand).filter((s) => s.length > 0);
  if (configured.length > 0) {
    const [command, ...args] = configured;
    const found = findExecutable(command, input);
    if (found === undefined) {
      return {
        ok: false,
        reason: 'badSetting',
        setting: 'serverCommand',
        message: `phiLsp.serverCommand starts "${command}", which ${looksLikePath(command) ? 'does not exist or is not executable' : 'is not on PATH'}.`,
        tried: [command],
      };
    }
    return { ok: true, command: found, args, source: 'serverCommand', description: 'phiLsp.serverCommand' };
  }

  const python = expand(input.pythonPath.trim());
  if (python.length > 0) {
    const found = findExecutable(python, input);
    if (found === undefined) {
      return {
        ok: false,
        reason: 'badSetting',
        setting: 'pythonPath',
        message: `phiLsp.pythonPath is "${python}", which ${looksLikePath(python) ? 'does not exist or is not executable' : 'is not on PATH'}.`,
        tried: [python],
      };
    }
    return {
      ok: true,
      command: found,
      args: ['-m', 'phi_lsp', ...SERVE],
      source: 'pythonPath',
      description: 'phiLsp.pythonPath',
    };
  }

  const exe = win ? 'phi-lsp.exe' : 'phi-lsp';
  const bin = win ? 'Scripts' : 'bin';
  const tried: string[] = [];
  for (const folder of input.workspaceFolders) {
    for (const venv of ['.venv', 'venv', 'env']) {
      const candidate = p.join(folder, venv, bin, exe);
      tried.push(candidate);
      if (input.isExecutable(candidate)) {
        return {
          ok: true,
          command: candidate,
          args: [...SERVE],
          source: 'workspaceVenv',
          description: `the workspace's ${venv}`,
        };
      }
    }
  }
  for (const dir of splitPath(input.envPath, win)) {
    const candidate = p.join(dir, exe);
    tried.push(candidate);
    if (input.isExecutable(candidate)) {
      return { ok: true, command: candidate, args: [...SERVE], source: 'path', description: 'PATH' };
    }
  }
  if (input.home) {
    const candidate = win
      ? p.join(input.home, 'AppData', 'Roaming', 'Python', 'Scripts', exe)
      : p.join(input.home, '.local', 'bin', exe);
    tried.push(candidate);
    if (input.isExecutable(candidate)) {
      return { ok: true, command: candidate, args: [...SERVE], source: 'userBin', description: p.dirname(candidate) };
    }
  }
  return {
    ok: false,
    reason: 'notInstalled',
    message:
      "phi-lsp is not installed where VS Code can find it (no phi-lsp in the workspace's .venv, on PATH or in ~/.local/bin).",
    tried,
  };
}

/**
 * The `phi-lsp` command line that goes with a server command: everything before `serve`.
 * `[python, -m, phi_lsp, serve, --log-file, x]` gives `[python, -m, phi_lsp]`.
 * Undefined when the server command has no `serve` (a wrapper script, for instance).
 */
export function cliFromServerCommand(command: string, args: readonly string[]): string[] | undefined {
  const i = args.indexOf('serve');
  if (i < 0) {
    return undefined;
  }
  return [command, ...args.slice(0, i)];
}

/** `${workspaceFolder}`, `${userHome}`, `${env:NAME}` and a leading `~`. */
export function expandVariables(value: string, input: Pick<ResolveInput, 'workspaceFolders' | 'home'>): string {
  let s = value.replace(/\$\{workspaceFolder\}/g, input.workspaceFolders[0] ?? '');
  s = s.replace(/\$\{userHome\}/g, input.home);
  s = s.replace(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => process.env[name] ?? '');
  if (input.home && (s === '~' || s.startsWith('~/') || s.startsWith('~\\'))) {
    s = input.home + s.slice(1);
  }
  return s;
}

function looksLikePath(command: string): boolean {
  return command.includes('/') || command.includes('\\');
}

function splitPath(envPath: string, win: boolean): string[] {
  return envPath.split(win ? ';' : ':').filter((d) => d.length > 0);
}

/** An absolute or relative path is checked as is; a bare name is looked up on PATH. */
function findExecutable(command: string, input: ResolveInput): string | undefined {
  if (looksLikePath(command)) {
    return input.isExecutable(command) ? command : undefined;
  }
  const win = input.platform === 'win32';
  const p = win ? path.win32 : path.posix;
  const names = win && !/\.(exe|cmd|bat)$/i.test(command) ? [command + '.exe', command + '.cmd', command] : [command];
  for (const dir of splitPath(input.envPath, win)) {
    for (const name of names) {
      const candidate = p.join(dir, name);
      if (input.isExecutable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}
