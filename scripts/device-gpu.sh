#!/usr/bin/env bash
# GPU benchmarks on the device machine (NVIDIA GPU through Vulkan; no Node, no network there).
# Here: `bash scripts/device-gpu.sh pack` bundles bench/gpu.ts and copies Node, the addon and the
# Vulkan loader into ignored folders (.xfer9, .gl) to carry. There (carry .xfer9 and .gl):
# `bash scripts/device-gpu.sh run [bench/gpu.ts flags]` unpacks the loader and runs the bench (the
# JSON goes to $OUT); `parity` runs the parity table with the real GPU, `suites` the general
# benchmark suites (bench/run.ts) on gpu and native.
set -euo pipefail
case "$1" in
  pack)
    mkdir -p .xfer9/native .gl
    npx esbuild bench/gpu.ts --bundle --platform=node --format=esm --outfile=.xfer9/gpubench.mjs \
      --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" --log-level=warning
    npx esbuild bench/run.ts --bundle --platform=node --format=esm --outfile=.xfer9/suites.mjs \
      --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" --log-level=warning
    npx esbuild test/parity.test.ts --bundle --platform=node --format=esm --outfile=.xfer9/parity.mjs \
      --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" --log-level=warning
    cp crates/node/quantlora.linux-x64-gnu.node .xfer9/native/
    cp bench/torch_ref.py .xfer9/
    [ -f .xfer9/node.xz ] || xz -T2 -9 -c "$(command -v node)" > .xfer9/node.xz
    if ! ls .gl/libglx0_*.deb >/dev/null 2>&1; then
      mkdir -p /tmp/amd64/partial
      o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
      apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    du -sh .xfer9 .gl ;;
  run|parity|suites)
    for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
    if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; fi
    X=/root/xfer; mkdir -p $X
    [ -x $X/node ] || { xz -dc .xfer9/node.xz > $X/node; chmod +x $X/node; }
    export PATH=$X:$PATH QUANTLORA_NATIVE_ADDON=$PWD/.xfer9/native/quantlora.linux-x64-gnu.node
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    if [ "$1" = suites ]; then
      # the general suites (bench/run.ts) on gpu and native, one call each timed to completion
      shift
      node .xfer9/suites.mjs --backends gpu,native --out "$OUT/suites.json" "$@" 2>&1 | grep -v XDG_RUNTIME
    elif [ "$1" = parity ]; then
      # the parity table with the real GPU as the gpu backend (no wasm modules travel: js, native, gpu)
      QUANTLORA_EXPECT_BACKENDS=native,gpu node --test --test-reporter=spec .xfer9/parity.mjs 2>&1 | grep -v XDG_RUNTIME | tail -40
    else
      shift
      node .xfer9/gpubench.mjs --out "$OUT/gpu-bench.json" "$@" 2>&1 | grep -v XDG_RUNTIME
    fi ;;
esac
