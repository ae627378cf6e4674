#!/usr/bin/env bash
# Runs on the GPU machine's host CPU (16 cores, AVX-512; no Node, no network there): the methods'
# results table and the native benchmarks. The inputs travel in ignored folders over three calls
# (each call may carry at most 64 MiB), rebuilt under /root/xfer:
#   step a: .xfer5/gguf.a                       (first 58,000,000 bytes of the default model)
#   step b: .xfer6/{gguf.b, wiki.test.raw, sotu.txt.xz}
#   step c: .xfer7/{node.xz, dist/, bench.mjs, generated/, native/}, then runs the benches and the table
#   step d: (same warm machine) continues the table
# Usage there: bash scripts/device-experiment.sh a|b|c|d [experiment flags...], or `bench` alone (.xfer7 only)
set -euo pipefail
X=/root/xfer; mkdir -p $X
case "$1" in
  a) cp .xfer5/gguf.a $X/; ls -la $X ;;
  b) cat $X/gguf.a .xfer6/gguf.b > $X/model.gguf; sha256sum $X/model.gguf
     cp .xfer6/wiki.test.raw $X/; xz -dc .xfer6/sotu.txt.xz > $X/sotu.txt; ls -la $X ;;
  c) shift
     xz -dc .xfer7/node.xz > $X/node && chmod +x $X/node && export PATH=$X:$PATH
     export QUANTLORA_NATIVE_ADDON=$PWD/.xfer7/native/quantlora.linux-x64-gnu.node
     node --version; nproc
     if [ -d .xfer7/results ]; then mkdir -p $X/results && cp .xfer7/results/* $X/results/; fi  # resume an earlier table
     [ -n "${SKIP_BENCH:-}" ] || (cd .xfer7 && timeout 120 node bench.mjs --suite 'f32 1024' --time 2000 --backends native --out $OUT/bench-matmul.json 2>&1 | tail -8) || true
     [ -n "${SKIP_BENCH:-}" ] || (cd .xfer7 && timeout 120 node bench.mjs --suite '8192' --time 2000 --backends native --out $OUT/bench-gemv.json 2>&1 | tail -8) || true
     # results live in $X/results while the machine stays warm: a second call resumes the table
     timeout ${BUDGET:-420} node .xfer7/dist/cli.js experiment --model $X/model.gguf --data $X/wiki.test.raw --calib $X/sotu.txt \
       --out $X/results --name issue6-device "$@" 2>&1 | grep -v '^apiq layer' | tail -60 || true
     cp -r $X/results $OUT/ ;;
  bench) xz -dc .xfer7/node.xz > $X/node && chmod +x $X/node && export PATH=$X:$PATH
     export QUANTLORA_NATIVE_ADDON=$PWD/.xfer7/native/quantlora.linux-x64-gnu.node
     cd .xfer7 && for s in 'f32 1024' '8192' 'dequantizeMatmul nf4-dq, 64' 'matmul f32'; do
       timeout 100 node bench.mjs --suite "$s" --time 1500 --backends native,wasm --out "$OUT/bench-${s// /_}.json" 2>&1 | grep -E 'native|wasm|numpy|bandwidth|sgemm' || true; done ;;
  d) shift  # a later call on the same warm machine: only the experiment
     export PATH=$X:$PATH QUANTLORA_NATIVE_ADDON=$PWD/.xfer7/native/quantlora.linux-x64-gnu.node
     timeout ${BUDGET:-540} node .xfer7/dist/cli.js experiment --model $X/model.gguf --data $X/wiki.test.raw --calib $X/sotu.txt \
       --out $X/results --name issue6-device "$@" 2>&1 | grep -v '^apiq layer' | tail -60 || true
     cp -r $X/results $OUT/ ;;
esac
