#!/usr/bin/env bash
# Builds the quantlora Node addon in release mode and puts it where the loader looks:
# crates/node/quantlora.<platform>-<arch>[-gnu|-musl].node (napi-rs' naming). Prints the path.
# Uses rustup's cargo (~/.cargo/bin) ahead of a system one (Debian's 1.63 is too old for napi-rs 3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cargo="${CARGO:-}"
if [ -z "$cargo" ]; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then cargo="$HOME/.cargo/bin/cargo"; else cargo="cargo"; fi
fi
(cd "$here" && "$cargo" build --release >&2)
os="$(uname -s)"; arch="$(uname -m)"
case "$arch" in
  x86_64|amd64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
esac
case "$os" in
  Linux)
    if ldd --version 2>&1 | grep -qi musl; then libc=-musl; else libc=-gnu; fi
    platform=linux; src=libquantlora_node.so ;;
  Darwin) platform=darwin; libc=; src=libquantlora_node.dylib ;;
  MINGW*|MSYS*|CYGWIN*) platform=win32; libc=-msvc; src=quantlora_node.dll ;;
  *) echo "build.sh: unsupported OS $os" >&2; exit 1 ;;
esac
target_dir="${CARGO_TARGET_DIR:-$here/target}"
dest="$here/quantlora.$platform-$arch$libc.node"
cp "$target_dir/release/$src" "$dest.tmp"
mv -f "$dest.tmp" "$dest"
echo "$dest"
