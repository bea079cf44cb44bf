#!/usr/bin/env bash
# CI for the VS Code extension: installs its own apt and npm parts, builds, runs the unit tests,
# packages the .vsix and runs the end-to-end test in real VS Code (code-server + headless Chromium).
#
#   bash vscode-extension/ci.sh            everything (prepare, then e2e)
#   bash vscode-extension/ci.sh prepare    apt + npm ci + compile + unit tests + .vsix + code-server
#   bash vscode-extension/ci.sh e2e        only the end-to-end test (after prepare)
#
# Needs node >= 20 and npm; Debian/Ubuntu apt for chromium, ripgrep, libkrb5-dev and a compiler
# (code-server's native modules build from source). The e2e test needs the repo's .venv (phi-lsp
# installed) or PYTHON=... ; artifacts (screenshots, logs) go to vscode-extension/.artifacts.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
MODE=${1:-all}
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== vscode-extension: %s\n' "$*"; }

apt_parts() {
  local pkgs=(chromium ripgrep libkrb5-dev build-essential python3)
  local missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && { echo "apt parts present"; return; }
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "installed: ${missing[*]}"
}

prepare() {
  local t
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
    { echo "node >= 20 is needed (found $(node --version))" >&2; exit 1; }
  t=$(date +%s.%N); step "apt parts"; apt_parts; echo "($(elapsed "$t") s)"
  t=$(date +%s.%N); step "npm ci"; npm ci --no-audit --no-fund --loglevel=error; echo "($(elapsed "$t") s)"
  t=$(date +%s.%N); step "compile + unit tests"
  npx tsc -p .
  node --test --test-reporter=spec out/test/
  echo "($(elapsed "$t") s)"
  t=$(date +%s.%N); step "package the .vsix"
  npm run --silent package
  echo "phi-lsp-vscode.vsix: $(stat -c %s phi-lsp-vscode.vsix) bytes ($(elapsed "$t") s)"
  t=$(date +%s.%N); step "code-server 4.100.3"
  scripts/install-code-server.sh "$HERE/.cache/code-server"
  echo "($(elapsed "$t") s)"
}

e2e() {
  local t
  t=$(date +%s.%N); step "end-to-end test in code-server"
  [ -f phi-lsp-vscode.vsix ] || { echo "no phi-lsp-vscode.vsix: run '$0 prepare' first" >&2; exit 1; }
  scripts/e2e.sh phi-lsp-vscode.vsix
  echo "($(elapsed "$t") s)"
}

case "$MODE" in
  all) prepare; e2e ;;
  prepare) prepare ;;
  e2e) e2e ;;
  *) echo "usage: $0 [all|prepare|e2e]" >&2; exit 2 ;;
esac
