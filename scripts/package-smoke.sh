#!/usr/bin/env bash
# Packs the built package, installs it into a scratch project and uses it the way a user would:
# both export paths, their type declarations, and the `quantlora` bin.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && npm pack --silent --pack-destination "$work" >/dev/null)
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent ./quantlora-*.tgz
cat > use.mjs <<'JS'
import { formats, quantize, randn, dequantizeMatmul, liveBuffers } from 'quantlora';
import { referenceQuantizer, assertQuantizer, generateWeights } from 'quantlora/testing';
const w = randn([8, 64], { seed: 1 });
const q = quantize(w, formats.nf(4));
const y = dequantizeMatmul(randn([2, 64], { seed: 2 }), q);
if (y.shape.join() !== '2,8') throw new Error('bad shape ' + y.shape);
await assertQuantizer(referenceQuantizer(formats.int(3)), generateWeights('gaussian', 4, 33, 7), 4, 33);
console.log('package OK', q.format.name, q.bytes, 'bytes; live buffers', liveBuffers());
JS
node use.mjs
# quantlora/node: a tiny model directory loads, runs and exports through the installed package
cat > model.mjs <<JS
import { loadModel, exportHf, tidy, tensor } from 'quantlora/node';
const { model } = loadModel('$root/test/fixtures/tiny-llama/llama-tied');
const logits = tidy(() => model.logits(tensor(Int32Array.from([1, 2, 3]), [1, 3], 'i32')));
if (logits.shape.join() !== '1,3,61') throw new Error('bad logits shape ' + logits.shape);
await exportHf(model, 'exported');
console.log('node entry OK', loadModel('exported').config.numLayers, 'layers');
JS
node model.mjs
test -f node_modules/quantlora/dist/types/node.d.ts
test -f node_modules/quantlora/dist/types/index.d.ts
test -f node_modules/quantlora/dist/types/testing/index.d.ts
npx --no-install quantlora doctor | grep -q "wasm .*available"   # the package ships and loads its WASM modules
npx --no-install quantlora doctor | grep -q "active: native"      # and its native addon (dist/native)
echo "bin OK"
