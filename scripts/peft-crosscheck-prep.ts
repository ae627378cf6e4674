// Prepares the PEFT cross-check (scripts/peft_crosscheck.py runs it where PyTorch + PEFT are
// installed): the tiny fixture model quantized to NF4 with IEC adapters set to random values, saved
// as (1) base/: the dequantized weights without adapters, a Hugging Face directory; (2) adapter/:
// quantlora's PEFT export; (3) merged/: the Hugging Face export with the adapters folded in; and
// ours.json: token ids and quantlora's logits for them.
//   npx tsx scripts/peft-crosscheck-prep.ts OUT_DIR
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as q from '../ts/index.js';
import { exportPeft } from '../ts/io/adapters.js';
import { exportHf } from '../ts/io/export-hf.js';
import { loadModel } from '../ts/io/load-model.js';
import { quantLayers, quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';
import { assignHost } from '../ts/train/tensors.js';

const out = process.argv[2] ?? '/tmp/peft-crosscheck';
mkdirSync(out, { recursive: true });
const { model: fp } = loadModel('test/fixtures/tiny-llama/llama-tied');
const qm = quantizeModel(fp, rtnLayers({ format: q.formats.nf(4, { group: 16 }), lora: { rank: 4, alpha: 8, iec: true } }));
let seed = 1;
for (const { layer } of quantLayers(qm)) {
  for (const p of layer.parameters()) assignHost(p, q.gaussianArray(p.size, seed++, p.size === 1 ? 0.5 : 0.2));
}
const loras = quantLayers(qm).map(({ layer }) => layer.lora);
for (const { layer } of quantLayers(qm)) layer.lora = undefined;
await exportHf(qm, join(out, 'base'));
quantLayers(qm).forEach(({ layer }, i) => { layer.lora = loras[i]; });
await exportPeft(qm, join(out, 'adapter'), { baseModel: join(out, 'base') });
await exportHf(qm, join(out, 'merged'));
const ids = Array.from({ length: 24 }, (_, i) => (i * 17 + 3) % qm.config.vocabSize);
const logits = q.tidy(() => qm.logits(q.tensor(Int32Array.from(ids), [1, ids.length], 'i32')).dataSync());
writeFileSync(join(out, 'ours.json'), JSON.stringify({ ids, logits: Array.from(logits), vocab: qm.config.vocabSize }));
console.log(`wrote ${out}/{base,adapter,merged,ours.json}`);
