#!/usr/bin/env bash
# Runs on the GPU machine (see the closing note of issue 4): rebuilds the model file from the two
# carried halves, exports it with quantlora, evaluates quantlora's perplexity (16 worker
# threads), and runs scripts/hf_crosscheck.py against PyTorch + transformers.
set -euo pipefail
X=/root/xfer; mkdir -p $X
[ -f .xfer1/gguf.a ] && cp .xfer1/gguf.a $X/
cat $X/gguf.a .xfer2/gguf.b > $X/model.gguf
xz -dc .xfer2/node.xz > $X/node && chmod +x $X/node && export PATH=$X:$PATH
node --version; nproc
node dist/cli.js export --model $X/model.gguf --out $X/hf 2>&1 | tail -3
node scripts/crosscheck-dump.mjs $X/model.gguf .xfer2/wiki.test.raw $X/ids.i32 $X/w0.f32 512
node dist/cli.js eval --model $X/model.gguf --data .xfer2/wiki.test.raw --seqlen 512 --jobs ${JOBS:-16} --json > $X/eval-all.json
python3 scripts/hf_crosscheck.py --hf $X/hf --text .xfer2/wiki.test.raw --ids $X/ids.i32 --logits $X/w0.f32 \
  --ours "$X/eval-*.json" --seqlen 512 --out $OUT/crosscheck.json
cp $X/eval-all.json $OUT/
