// For the PyTorch cross-check: tokenizes the evaluation text with quantlora and writes the ids
// (int32 little-endian) and the logits of window 0 (float32, seqlen x vocab).
// node scripts/crosscheck-dump.mjs MODEL TEXT IDS_OUT LOGITS_OUT [SEQLEN]
import { readFileSync, writeFileSync } from 'node:fs';
import { initBackend, loadModel, tensor, tidy } from '../dist/node.js';

const [model, text, idsOut, logitsOut, seqlenArg] = process.argv.slice(2);
const seqlen = Number(seqlenArg ?? 512);
await initBackend();
const loaded = loadModel(model);
const ids = Int32Array.from(loaded.tokenizer.encode(readFileSync(text, 'utf8'), { addBos: false }));
writeFileSync(idsOut, new Uint8Array(ids.buffer));
const logits = tidy(() => loaded.model.logits(tensor(ids.subarray(0, seqlen), [1, seqlen], 'i32')));
writeFileSync(logitsOut, new Uint8Array((await logits.data()).buffer));
console.log(`${ids.length} tokens, window 0 logits written`);
