#!/usr/bin/env bash
# End-to-end test in real VS Code: code-server 4.100.3 + headless Chromium driven by Playwright.
#
# Usage: scripts/e2e.sh VSIX
# Env:   CODE_SERVER_DIR  code-server install (scripts/install-code-server.sh), default .cache/code-server
#        PYTHON           a Python with phi-lsp installed, default ../.venv/bin/python
#        ARTIFACTS        screenshots + logs, default .artifacts (inside vscode-extension/)
#        MODEL_DIR        where the trained tiny model is built/reused, default .cache/test-model
#        CHROMIUM         default /usr/bin/chromium
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
VSIX=$(realpath "${1:?usage: $0 VSIX}")
CODE_SERVER_DIR=$(realpath "${CODE_SERVER_DIR:-$HERE/.cache/code-server}")
PYTHON=${PYTHON:-$(cd "$HERE/.." && pwd)/.venv/bin/python}
ARTIFACTS=$(mkdir -p "${ARTIFACTS:-$HERE/.artifacts}" && cd "${ARTIFACTS:-$HERE/.artifacts}" && pwd)
MODEL_DIR=${MODEL_DIR:-$HERE/.cache/test-model}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CODE_SERVER=$CODE_SERVER_DIR/node_modules/.bin/code-server

for need in "$CODE_SERVER" "$CHROMIUM" "$PYTHON"; do
  [ -f "$need" ] && [ -x "$need" ] || { echo "e2e: missing $need" >&2; exit 3; }
done
t0=$(date +%s.%N)
rm -f "$ARTIFACTS"/*.png "$ARTIFACTS"/*.log "$ARTIFACTS"/*.json "$ARTIFACTS"/*.jsonl

MODEL=$("$PYTHON" "$HERE/scripts/make-test-model.py" "$MODEL_DIR" 2>"$ARTIFACTS/make-model.log" | tail -1)
echo "e2e: model $MODEL ($(du -h "$MODEL" | cut -f1))"

T=$(mktemp -d /tmp/phi-lsp-vscode-e2e.XXXXXX)
WS=$T/ws
mkdir -p "$WS/.vscode" "$T/user/User" "$T/ext" "$T/home"
SERVER_LOG=$ARTIFACTS/server.log
# The workspace: the stub for ghost text, and the same stub in a second file for the code action.
STUB='def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    """
'
printf '%s' "$STUB" > "$WS/calc.py"
printf '%s' "$STUB" > "$WS/cmd.py"
printf 'import math\n\n\n%s\n\ndef area(r):\n    return math.pi * r * r\n' "$STUB" > "$WS/gen.py"
"$PYTHON" - "$WS/.vscode/settings.json" "$PYTHON" "$MODEL" "$SERVER_LOG" <<'PY'
import json, sys
path, python, model, log = sys.argv[1:]
json.dump({
    "phiLsp.serverCommand": [python, "-m", "phi_lsp", "serve", "--log-file", log],
    "phiLsp.model": model,
    "phiLsp.backend": "llamacpp",
    "phiLsp.generateCandidates": 1,
    "phiLsp.trace.server": "messages",
}, open(path, "w"), indent=2)
PY
cat > "$T/user/User/settings.json" <<'JSON'
{
  "telemetry.telemetryLevel": "off",
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "workbench.welcomePage.walkthroughs.openOnInstall": false,
  "security.workspace.trust.enabled": false,
  "extensions.ignoreRecommendations": true,
  "extensions.autoCheckUpdates": false,
  "update.mode": "none",
  "chat.commandCenter.enabled": false,
  "editor.inlineSuggest.enabled": true,
  "editor.minimap.enabled": false,
  "window.commandCenter": false,
  "workbench.colorTheme": "Default Dark Modern"
}
JSON
cat > "$T/user/User/keybindings.json" <<'JSON'
[{ "key": "alt+\\", "command": "editor.action.inlineSuggest.trigger", "when": "editorTextFocus" }]
JSON

PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'bind-addr: 127.0.0.1:%s\nauth: none\ncert: false\n' "$PORT" > "$T/config.yaml"
CS=(--config "$T/config.yaml" --user-data-dir "$T/user" --extensions-dir "$T/ext")
"$CODE_SERVER" "${CS[@]}" --install-extension "$VSIX" > "$ARTIFACTS/install-extension.log" 2>&1
t1=$(date +%s.%N)
# Its own process group (setsid), so the cleanup ends code-server, its extension host and the
# phi-lsp server it started, and nothing else.
PHI_LSP_HOME=$T/home setsid "$CODE_SERVER" "${CS[@]}" --disable-telemetry --disable-update-check \
  --disable-workspace-trust --disable-getting-started-override "$WS" > "$ARTIFACTS/code-server.log" 2>&1 &
CS_PID=$!
cleanup() { kill -- -"$CS_PID" 2>/dev/null || true; wait "$CS_PID" 2>/dev/null || true; }
trap cleanup EXIT

set +e
URL="http://127.0.0.1:$PORT/?folder=$WS" WS="$WS" OUT="$ARTIFACTS" SERVER_LOG="$SERVER_LOG" \
  PHI_LSP_HOME="$T/home" node "$HERE/e2e/e2e.js"
rc=$?
set -e
cp "$T/home/usage/usage.jsonl" "$ARTIFACTS/usage.jsonl" 2>/dev/null || true
# The extension's log (server stderr + protocol trace) is under the user data dir.
find "$T/user/logs" -type f -name 'phi-lsp.log' -exec cp {} "$ARTIFACTS/extension-output.log" \; 2>/dev/null || true
find "$T/user/logs" -type f -name 'remoteexthost.log' -exec cp {} "$ARTIFACTS/extension-host.log" \; 2>/dev/null || true
t2=$(date +%s.%N)
awk -v r="$([ $rc -eq 0 ] && echo PASSED || echo FAILED)" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$ARTIFACTS" \
  'BEGIN { printf "e2e: %s in %.1f s (model + install %.1f s, code-server + browser %.1f s); artifacts in %s\n", r, c - a, b - a, c - b, d }'
if [ $rc -eq 0 ]; then rm -rf "$T"; else echo "e2e: workspace and code-server data kept in $T"; fi
exit $rc
