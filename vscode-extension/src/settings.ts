/**
 * The `phiLsp` settings: which keys belong to the server and which to this extension.
 *
 * VS Code hands out the whole `phiLsp` section (including `serverCommand`, `pythonPath` and the
 * nested `trace.server`), but the server validates with `extra="forbid"` and answers every
 * unknown key with an error message. So everything sent to the server goes through
 * `toServerSettings`, which keeps exactly the keys of phi_lsp/settings.py.
 *
 * No `vscode` import here: unit tests run this under plain node.
 */

export const SECTION = 'phiLsp';

/**
 * The extension's own settings; every other `phiLsp.*` setting in package.json belongs to the
 * server (scripts/sync-settings.py writes them from phi_lsp/settings.py, and the Python test
 * suite checks they match). Changing serverCommand or pythonPath restarts the server.
 */
export const CLIENT_KEYS: readonly string[] = ['serverCommand', 'pythonPath', 'trace.server'];
export const RESTART_KEYS: readonly string[] = ['serverCommand', 'pythonPath'];

/** Settings the server reads only at `initialize`: changing them needs a restart to apply. */
export const INITIALIZE_ONLY_KEYS: readonly string[] = ['completionFallback'];

/** The server's setting names (`model`, `maxNewTokens`, ...) from package.json's configuration. */
export function serverKeysOf(properties: Record<string, unknown>): string[] {
  const prefix = `${SECTION}.`;
  return Object.keys(properties)
    .filter((k) => k.startsWith(prefix))
    .map((k) => k.slice(prefix.length))
    .filter((k) => !CLIENT_KEYS.includes(k));
}

export type ServerSettings = Record<string, unknown>;

/**
 * The part of a `phiLsp` section the server understands.
 *
 * `section` is what `workspace.getConfiguration('phiLsp')` (or a workspace/configuration answer)
 * holds: the server's keys, the extension's keys, and possibly a nested `phiLsp` object from a
 * client that wraps the section. Keys whose value is `undefined` are left out, so the server keeps
 * its own default; `null` is kept (it means "unset", e.g. nThreads).
 */
export function toServerSettings(section: unknown, keys: readonly string[]): ServerSettings {
  if (section === null || typeof section !== 'object' || Array.isArray(section)) {
    return {};
  }
  const raw = section as Record<string, unknown>;
  const inner = raw[SECTION];
  const source =
    inner !== null && typeof inner === 'object' && !Array.isArray(inner)
      ? (inner as Record<string, unknown>)
      : raw;
  const result: ServerSettings = {};
  for (const key of keys) {
    const value = source[key];
    if (value !== undefined) {
      result[key] = value;
    }
  }
  return result;
}

/** The wire payload of workspace/didChangeConfiguration for these settings. */
export function didChangeConfigurationPayload(
  section: unknown,
  keys: readonly string[],
): { settings: Record<string, ServerSettings> } {
  return { settings: { [SECTION]: toServerSettings(section, keys) } };
}

/** What a configuration change touched; `affects` takes full names like `phiLsp.model`. */
export function changedKeys(
  affects: (name: string) => boolean,
  keys: readonly string[],
): { restart: boolean; server: string[]; initializeOnly: boolean } {
  const server = keys.filter((k) => affects(`${SECTION}.${k}`));
  return {
    restart: RESTART_KEYS.some((k) => affects(`${SECTION}.${k}`)),
    server,
    initializeOnly: server.some((k) => INITIALIZE_ONLY_KEYS.includes(k)),
  };
}

/** A short name for the status bar: a model name as is, a path by its last part. */
export function modelLabel(model: string): string {
  const trimmed = model.replace(/[\\/]+$/, '');
  const parts = trimmed.split(/[\\/]/);
  return parts[parts.length - 1] || model;
}
