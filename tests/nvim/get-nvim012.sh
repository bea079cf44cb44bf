#!/bin/sh
# Fetch Neovim 0.12 from Debian sid into DIR without installing anything system-wide, and write
# DIR/nvim, a wrapper that runs it through sid's own glibc loader (sid's nvim needs glibc >= 2.42).
# Usage: get-nvim012.sh DIR     Exit status 0 and DIR/nvim printing "NVIM v0.12..." on success.
# Needs apt-get, dpkg-deb and a reachable Debian mirror; the caller treats any failure as "skip".
# Works as an ordinary user (private apt state under DIR, no locks, no _apt sandbox). ~11 MB.
set -eu
D=${1:?usage: get-nvim012.sh DIR}
if [ -x "$D/nvim" ] && "$D/nvim" --version 2>/dev/null | head -1 | grep -q 'v0\.1[2-9]'; then
  "$D/nvim" --version | head -1
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || { echo "no apt-get/dpkg-deb" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || { echo "only x86_64 is handled" >&2; exit 2; }
mkdir -p "$D/lists/partial" "$D/cache/archives/partial" "$D/debs" "$D/root"
# Reuse the mirror this machine already uses, switched to the suite 'sid'.
URI=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$URI" ] && [ -f /etc/apt/sources.list ]; then
  URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
fi
URI=${URI:-http://deb.debian.org/debian}
echo "deb $URI sid main" > "$D/sources.list"
O="-o Dir::Etc::SourceList=$D/sources.list -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$D/lists -o Dir::Cache=$D/cache -o Debug::NoLocking=1 -o APT::Sandbox::User=$(id -un) -o Acquire::Retries=0 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20"
# shellcheck disable=SC2086
apt-get $O update -qq
# Library package names move in sid (libtree-sitter0.25 -> 0.26, libuv1 -> libuv1t64): pick
# whichever name the index has now.
pick() {
  for name in "$@"; do
    # shellcheck disable=SC2086
    if apt-cache $O show "$name" >/dev/null 2>&1; then echo "$name"; return 0; fi
  done
  echo "none of: $*" >&2
  return 1
}
TS=$(pick libtree-sitter0.26 libtree-sitter0.25 libtree-sitter0.27 libtree-sitter0.24)
UV=$(pick libuv1t64 libuv1)
UTF=$(pick libutf8proc3 libutf8proc2)
cd "$D/debs"
# shellcheck disable=SC2086
apt-get $O download neovim neovim-runtime libc6 libgcc-s1 libluajit-5.1-2 "$TS" \
  libunibilium4 "$UTF" "$UV" lua-lpeg lua-luv libmsgpack-c2 libvterm0 2>/dev/null \
  || apt-get $O download neovim neovim-runtime libc6 libgcc-s1 libluajit-5.1-2 "$TS" \
  libunibilium4 "$UTF" "$UV" lua-lpeg lua-luv
for f in *.deb; do dpkg-deb -x "$f" "$D/root"; done
L="$D/root/usr/lib/x86_64-linux-gnu"
printf '#!/bin/sh\nexport VIM=%s/root/usr/share/nvim\nexec %s/ld-linux-x86-64.so.2 --library-path %s:%s/root/lib/x86_64-linux-gnu %s/root/usr/bin/nvim "$@"\n' \
  "$D" "$L" "$L" "$D" "$D" > "$D/nvim"
chmod +x "$D/nvim"
"$D/nvim" --version | head -1
