#!/usr/bin/env bash
# Installs what a fresh machine lacks to build quantlora, then installs npm packages and builds.
#  - Debian's Rust 1.63 toolchain with the wasm32 standard library (rustup's stable toolchain has
#    none, and none can be fetched here), Debian's vendored wasm-bindgen crate, binaryen (wasm-opt).
#  - wasm-bindgen-cli 0.2.83 (must match the crate): Debian's cargo 1.63 cannot read crates.io's
#    sparse index, and rustc >= 1.80 refuses wasm-bindgen 0.2.83, so rustup's cargo vendors the
#    sources and Debian's cargo compiles them, once, into a cache outside the repo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${QUANTLORA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/quantlora}
mkdir -p "$cache"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# mesa-vulkan-drivers + libvulkan1: Mesa's software Vulkan (lavapipe), so the GPU kernels are tested
# on machines without a GPU (a real GPU's driver is used when present)
pkgs=(rustc cargo libstd-rust-dev-wasm32 librust-wasm-bindgen-dev binaryen mesa-vulkan-drivers libvulkan1)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# rustup's cargo (for crates.io and the native crates); fall back to Debian's for the kernels' tests
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

wb="$cache/wasm-bindgen-0.2.83/bin/wasm-bindgen"
if [ ! -x "$wb" ]; then
  echo "setup: building wasm-bindgen-cli 0.2.83 (once, into $cache)"
  src=$(mktemp -d)
  node -e 'fetch(process.argv[1]).then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.arrayBuffer(); }).then((b) => process.stdout.write(Buffer.from(b)))' \
    https://static.crates.io/crates/wasm-bindgen-cli/wasm-bindgen-cli-0.2.83.crate | tar xz -C "$src"
  cd "$src/wasm-bindgen-cli-0.2.83"
  cargo vendor --locked --quiet vendor >/dev/null
  mkdir -p .cargo
  printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n' > .cargo/config.toml
  RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --offline --locked --quiet --bin wasm-bindgen
  mkdir -p "$(dirname "$wb")"
  cp target/release/wasm-bindgen "$wb"
  cd "$root"
  rm -rf "$src"
fi
"$wb" --version

cd "$root"
npm ci --no-audit --no-fund
npm run build
