#!/usr/bin/env bash
# GPU work on the device machine (NVIDIA GPU through Vulkan; no Node, no network there).
# Here: `bash scripts/device-gpu.sh pack` bundles bench/gpu.ts, bench/run.ts, the parity test and the
# CLI (ts/cli/main.ts -> .xfer9/cli.mjs) and copies Node, the addon and the Vulkan loader into
# ignored folders (.xfer9, .gl) to carry; no wasm modules travel (the bundles would look for them in
# .xfer9/generated/), so the backends there are js, native and gpu. There (carry .xfer9 and .gl):
# `bash scripts/device-gpu.sh run [bench/gpu.ts flags]` unpacks the loader and runs the bench (the
# JSON goes to $OUT); `measure` runs the GEMV sweep and parity in one call (PARTS="ab parity": the RILQ step A/B instead of the sweep; "goal parity": the GEMV goal rows, ~2-4 min); `parity` runs the parity table and test/gpu.test.ts with the real GPU, `suites` the general
# benchmark suites (bench/run.ts) on gpu and native.
#
# The results table on the GPU (`quantlora experiment --preset paper`, results/issue7-paper.*) needs
# the model, which travels in two pieces (64 MiB per call), so it takes three calls back to back
# (the machine keeps /root/xfer only while it stays warm, ~30 s after a call):
#   1. `bash scripts/device-gpu.sh model-a`         carry .xfer5        (gguf.a -> /root/xfer)
#   2. `bash scripts/device-gpu.sh model-b`         carry .xfer6 .gl    (model.gguf, wiki.test.raw, sotu.txt; sha256)
#   3. `bash scripts/device-gpu.sh table [flags]`   carry .xfer9 .gl    (the table on the gpu backend)
# `table` resumes from results/issue7-paper.json (tracked here) or from an earlier `table` call's
# results on the same warm machine, whichever has more rows; it stops after BUDGET seconds (default
# 500, inside one 10-minute call; the row in progress is lost, every finished row is saved) and
# returns results/issue7-paper.{json,md,svg} and table.log (the worker processes' logs, PAR=6, one after another) in $OUT: copy them into results/ here,
# commit, and repeat `table` (again after model-a and model-b if the machine went cold). Long rows
# (ApiQ, RILQ, finetuning) checkpoint into /root/xfer/checkpoints (ApiQ after each block, the
# trainers every 25 steps), so the next `table` call on the same warm machine resumes inside the row;
# a cold machine starts that row over. Skip past a row with --only KEYS.
# Flags after `table` go to the experiment (e.g. --only KEYS, --eval-windows N); the backend is
# forced to gpu (QUANTLORA_BACKEND, override it to compare), so a GPU that does not open is an error
# instead of a silent CPU run.
# Testing here: XFER=/tmp/xfer OUT=/tmp/out LOCAL=1 (keeps this machine's Vulkan loader instead of
# unpacking .gl into /; QUANTLORA_GPU_SOFTWARE=1 lets the gpu backend open lavapipe), and
# MODEL/DATA/CALIB/PRESET/NAME replace the paper run's inputs.
set -euo pipefail
X=${XFER:-/root/xfer}

# Node (from .xfer9/node.xz), the Vulkan loader (.gl) and NVIDIA's ICD, the addon from .xfer9
setup() {
  if [ -z "${LOCAL:-}" ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; fi
  mkdir -p $X
  [ -x $X/node ] || { xz -dc .xfer9/node.xz > $X/node; chmod +x $X/node; }
  export PATH=$X:$PATH QUANTLORA_NATIVE_ADDON=$PWD/.xfer9/native/quantlora.linux-x64-gnu.node
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
}

rows() { node -e 'try { console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).rows.length) } catch { console.log(0) }' "$1"; }

case "$1" in
  pack)
    mkdir -p .xfer9/native .gl
    for e in bench/gpu.ts:gpubench bench/run.ts:suites test/parity.test.ts:parity test/gpu.test.ts:gputest ts/cli/main.ts:cli; do
      npx esbuild "${e%%:*}" --bundle --platform=node --format=esm --outfile=".xfer9/${e##*:}.mjs" \
        --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" --log-level=warning
    done
    cp crates/node/quantlora.linux-x64-gnu.node .xfer9/native/
    cp bench/torch_ref.py .xfer9/
    [ -f .xfer9/node.xz ] || xz -T2 -9 -c "$(command -v node)" > .xfer9/node.xz
    if ! ls .gl/libglx0_*.deb >/dev/null 2>&1; then
      mkdir -p /tmp/amd64/partial
      o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
      apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    du -sh .xfer9 .gl ;;
  model-a)  # carry .xfer5: the model's first piece
    mkdir -p $X && cp .xfer5/gguf.a $X/ && ls -la $X ;;
  model-b)  # carry .xfer6 (and .gl): the model's second piece, the evaluation and calibration texts
    [ -f $X/gguf.a ] || { echo "model-b: $X/gguf.a is missing: run model-a first, on the same warm machine" >&2; exit 1; }
    cat $X/gguf.a .xfer6/gguf.b > $X/model.gguf && rm $X/gguf.a
    # SmolLM2-135M-Instruct Q4_1, the default model (ts/io/fetch-model.ts)
    sha=$(sha256sum $X/model.gguf | cut -d' ' -f1); want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    [ "$sha" = $want ] && echo "model.gguf sha256 $sha (ok)" || { echo "model.gguf sha256 $sha, expected $want" >&2; exit 1; }
    cp .xfer6/wiki.test.raw $X/; xz -dc .xfer6/sotu.txt.xz > $X/sotu.txt
    if [ -z "${LOCAL:-}" ] && [ -d .gl ]; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
    ls -la $X ;;
  table)  # carry .xfer9 and .gl: the results table on the gpu backend, resumed, within BUDGET seconds
    shift
    MODEL=${MODEL:-$X/model.gguf} DATA=${DATA:-$X/wiki.test.raw} CALIB=${CALIB:-$X/sotu.txt}
    PRESET=${PRESET:-paper} NAME=${NAME:-issue7-paper}
    for f in "$MODEL" "$DATA" "$CALIB"; do
      [ -e "$f" ] || { echo "table: $f is missing: run model-a, then model-b, then table back to back (one warm machine)" >&2; exit 1; }
    done
    setup
    export QUANTLORA_BACKEND=${QUANTLORA_BACKEND:-gpu}
    node --version
    mkdir -p $X/results "$OUT"
    # resume from whichever copy has more rows: the tracked one or an earlier call's on this machine
    if [ -f results/$NAME.json ] && [ "$(rows results/$NAME.json)" -gt "$(rows $X/results/$NAME.json)" ]; then
      cp results/$NAME.json $X/results/
    fi
    echo "table: $NAME resumes with $(rows $X/results/$NAME.json) rows; backend $QUANTLORA_BACKEND; budget ${BUDGET:-500} s"
    node .xfer9/cli.mjs doctor 2>&1 | grep -v XDG_RUNTIME || true
    # PAR processes (default 6) share the rows: each claims the next row nobody has (--claims), runs
    # it in its own results folder seeded with the table so far, and the folders are merged after.
    # A row mostly waits on the host (recording kernels), so the GPU serves several at once.
    PAR=${PAR:-6}
    rm -rf $X/claims; mkdir -p $X/claims
    pids=()
    for i in $(seq 1 $PAR); do
      mkdir -p $X/results/w$i; rm -f $X/results/w$i/$NAME.*
      if [ -f $X/results/$NAME.json ]; then cp $X/results/$NAME.json $X/results/w$i/; fi
      timeout ${BUDGET:-500} node .xfer9/cli.mjs experiment --preset "$PRESET" --name "$NAME" --model "$MODEL" --data "$DATA" \
        --calib "$CALIB" --out $X/results/w$i --claims $X/claims --checkpoints $X/checkpoints "$@" > "$OUT/table.w$i.log" 2>&1 &
      pids+=($!)
    done
    rc=0
    for p in "${pids[@]}"; do
      set +e; wait $p; r=$?; set -e
      if [ "$r" = 124 ]; then echo "table: a worker stopped after ${BUDGET:-500} s (its row in progress is lost; run table again)"
      elif [ "$r" != 0 ]; then rc=$r; fi
    done
    # one log file (what comes back from $OUT is at most 8 files)
    for i in $(seq 1 $PAR); do echo "== worker $i"; grep -v XDG_RUNTIME "$OUT/table.w$i.log"; done > "$OUT/table.log"; rm -f "$OUT"/table.w*.log
    grep -v -e '^apiq layer' -e 'done earlier' -e 'claimed by' "$OUT/table.log" | grep -e '^experiment:' -e 'Error' || true
    node .xfer9/cli.mjs experiment --preset "$PRESET" --name "$NAME" --out $X/results --merge "$(ls $X/results/w*/$NAME.json 2>/dev/null | paste -sd, -)"
    [ -f $X/results/$NAME.json ] && node -e 'const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(`table: ${d.rows.length} rows, written on backend ${d.backend}`)' $X/results/$NAME.json
    for e in json md svg; do [ -f $X/results/$NAME.$e ] && cp $X/results/$NAME.$e "$OUT/"; done
    ls -la "$OUT"
    exit $rc ;;
  measure)  # carry .xfer9 and .gl: PARTS (default "sweep parity", up to 9.5 min; also "ab", ~3 min) in one call
    mkdir -p "$OUT"
    set +e
    for part in ${PARTS:-sweep parity}; do
      case "$part" in
        sweep) timeout 440 bash "$0" run --only gemv --sweep --no-torch --time 600 --warmup 20 > "$OUT/sweep.log" 2>&1; echo "sweep rc=$?"
               mv "$OUT/gpu-bench.json" "$OUT/sweep.json" ;;
        ab) timeout 200 bash "$0" run --only rilq --ab > "$OUT/ab.log" 2>&1; echo "ab rc=$?"
            mv "$OUT/gpu-bench.json" "$OUT/ab.json" ;;
        goal) timeout 270 bash "$0" run --only gemv --no-torch --default-checks --time 500 --warmup 30 > "$OUT/goal.log" 2>&1; echo "goal rc=$?"
              mv "$OUT/gpu-bench.json" "$OUT/goal.json" ;;
        parity) timeout 150 bash "$0" parity > "$OUT/parity.log" 2>&1; echo "parity rc=$?" ;;
        *) echo "measure: unknown part $part (sweep, ab, goal, parity)" >&2 ;;
      esac
    done
    set -e
    grep -h -e '^gemv sweep \(read only\|best\|wide\)' -e '^gemv sweep [a-z0-9]* top' -e '^gemv sweep [0-9] x rows top' -e '^dequantizeMatmul' -e '^rilq step' "$OUT"/sweep.log "$OUT"/ab.log "$OUT"/goal.log 2>/dev/null | sort -u || true
    if [ -f "$OUT/parity.log" ]; then tail -12 "$OUT/parity.log"; fi ;;
  run|parity|suites)
    setup
    if [ "$1" = suites ]; then
      # the general suites (bench/run.ts) on gpu and native, one call each timed to completion
      shift
      node .xfer9/suites.mjs --backends gpu,native --out "$OUT/suites.json" "$@" 2>&1 | grep -v XDG_RUNTIME
    elif [ "$1" = parity ]; then
      # the parity table with the real GPU as the gpu backend (no wasm modules travel: js, native, gpu),
      # also with the kernels compiled with shader runtime checks (off by default)
      # and test/gpu.test.ts (subgroup kernels against the tree fallback, the GEMV shapes, batching)
      QUANTLORA_PARITY_BOTH_CHECKS=1 QUANTLORA_EXPECT_BACKENDS=native,gpu node --test --test-reporter=spec .xfer9/parity.mjs .xfer9/gputest.mjs 2>&1 | grep -v XDG_RUNTIME | grep -v '^ *\(duration_ms\|---\|\.\.\.\)' | tail -60
    else
      shift
      node .xfer9/gpubench.mjs --out "$OUT/gpu-bench.json" "$@" 2>&1 | grep -v XDG_RUNTIME
    fi ;;
  *) echo "usage: bash scripts/device-gpu.sh pack|run|measure|parity|suites|model-a|model-b|table [flags]" >&2; exit 2 ;;
esac
