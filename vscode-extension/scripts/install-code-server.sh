#!/usr/bin/env bash
# Offline-safe install of code-server 4.100.3 (VS Code 1.100.3, node 20) from npm + Debian only.
# Usage: scripts/install-code-server.sh DIR   -> DIR/node_modules/.bin/code-server
# Idempotent: a finished install (DIR/.done) is reused. See ../shared/docs/editor-e2e.md.
set -euo pipefail
DIR=$(mkdir -p "${1:?usage: $0 DIR}" && cd "$1" && pwd)
VERSION=4.100.3
if [ -f "$DIR/.done" ] && [ "$(cat "$DIR/.done")" = "$VERSION" ]; then
  echo "code-server $VERSION already installed in $DIR"; exit 0
fi
cd "$DIR"
echo '{"name":"phi-lsp-e2e-code-server","private":true}' > package.json
# The postinstall would fetch ripgrep from GitHub: install without scripts, then finish by hand.
npm install --no-audit --no-fund --loglevel=error --ignore-scripts "code-server@$VERSION"
npm rebuild --loglevel=error argon2        # no prebuilt download: builds from source
cd node_modules/code-server/lib/vscode
npm install --no-audit --no-fund --loglevel=error --omit=dev --ignore-scripts
mkdir -p node_modules/@vscode/ripgrep/bin && cp "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
# node-pty's own post-install step ('npx node-gyp configure -f compile_commands_json') can fail
# where npx may not install; pty.node is built before it, which the test below checks.
npm rebuild --loglevel=error kerberos @parcel/watcher node-pty @vscode/spdlog @vscode/deviceid \
  native-watchdog > "$DIR/rebuild-native.log" 2>&1 || true
test -f node_modules/node-pty/build/Release/pty.node ||
  { tail -40 "$DIR/rebuild-native.log" >&2; echo "node-pty did not build" >&2; exit 1; }
ln -sfn node_modules node_modules.asar
(cd bin/remote-cli && ln -sfn code-linux.sh code-server)
(cd bin/helpers && ln -sfn browser-linux.sh browser.sh)
(cd extensions && npm install --no-audit --no-fund --loglevel=error --omit=dev > "$DIR/extensions-install.log" 2>&1) ||
  { tail -40 "$DIR/extensions-install.log" >&2; exit 1; }
echo "$VERSION" > "$DIR/.done"
echo "code-server $VERSION ready: $DIR/node_modules/.bin/code-server"
