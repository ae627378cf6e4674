// Benchmarks of the methods (issue 6): ICQ against plain NF quantization of the default model's
// projection weights, one ApiQ-block calibration step (LWC + LoRA, INT2) on block 0, and one RILQ
// step on the whole model. js is skipped where one call takes minutes (the sizes say what ran).

import { existsSync } from 'node:fs';
import { formats, quantize, type Backend, type Tensor } from '../ts/index.js';
import { loadModel } from '../ts/io/load-model.js';
import { defaultModelPath } from '../ts/io/model-cache.js';
import { apiq } from '../ts/methods/apiq.js';
import { calibrationWindows } from '../ts/methods/calibration.js';
import { layerSites, quantizeModel, rtnLayers } from '../ts/methods/quantize-model.js';
import { rilq } from '../ts/methods/rilq.js';
import { quantizeIcq } from '../ts/quant/icq.js';
import type { Prepared, Suite } from './suites.js';

const nf4 = formats.nf(4, { group: 64, doubleQuant: true });

function modelFor(backend: Backend, quick: boolean) {
  const path = quick || !existsSync(defaultModelPath()) ? 'test/fixtures/tiny-llama/llama-tied' : defaultModelPath();
  return loadModel(path, { backend }).model;
}

/** The model's name for the size column, and the tokens per window it allows. */
function described(m: { config: { maxPositions: number; numLayers: number } }, want: number): { label: string; T: number } {
  const tiny = m.config.numLayers < 30;
  return { label: tiny ? 'the tiny fixture model' : 'SmolLM2-135M', T: Math.min(want, m.config.maxPositions) };
}

/** Token windows with some structure (the benches time steps, not what is learned). */
function windows(count: number, seqlen: number, vocab: number) {
  const ids = Int32Array.from({ length: count * seqlen * 4 }, (_, i) => (i * 7919 + (i >> 3) * 13) % vocab);
  return calibrationWindows(ids, { count, seqlen, seed: 1 });
}

function weightsSuite(name: string, quant: (w: Tensor) => { dispose(): void }): Suite {
  return {
    name,
    skip: (backend, quick) => (backend === 'js' && !quick ? 'the whole model takes tens of minutes on js' : undefined),
    prepare(backend, quick): Prepared {
      const model = modelFor(backend, quick);
      const ws = layerSites(model).map((s) => model.blocks[s.block][s.key].dense().weight);
      const n = ws.reduce((s, w) => s + w.size, 0);
      return {
        size: `${ws.length} projection weights, ${(n / 1e6).toFixed(1)}M values`,
        run: async () => { for (const w of ws) quant(w).dispose(); },
        work: { bytes: 4 * n },
        dispose: () => model.dispose(),
      };
    },
  };
}

export const methodSuites: Suite[] = [
  weightsSuite('quantize nf4-dq, model weights', (w) => quantize(w, nf4)),
  weightsSuite('icq nf4-dq, model weights', (w) => quantizeIcq(w, nf4)),
  {
    name: 'apiq block step',
    prepare(backend, quick): Prepared {
      const fp = modelFor(backend, quick);
      const qm = quantizeModel(fp, rtnLayers({ format: formats.int(2, { group: 64 }), lora: { rank: 16 } }));
      // calibrate block 0 only: one window, one epoch = one optimizer step (plus the before/after loss passes)
      fp.blocks.length = 1;
      const blocks = qm.blocks.splice(1);
      const { label, T } = described(fp, quick ? 16 : 128);
      const data = windows(1, T, fp.config.vocabSize);
      return {
        size: `block 0 of ${label}, ${T} tokens, int2 + LWC + rank 16`,
        run: async () => { apiq(fp, qm, { mode: 'block', windows: data.train, epochs: 1 }); },
        work: {},
        dispose: () => { qm.blocks.push(...blocks); fp.dispose(); qm.dispose(); },
      };
    },
  },
  {
    name: 'rilq step',
    skip: (backend, quick) => (backend === 'js' && !quick ? 'one step of the whole model takes minutes on js' : undefined),
    prepare(backend, quick): Prepared {
      const fp = modelFor(backend, quick);
      const qm = quantizeModel(fp, rtnLayers({ format: formats.nf(2, { group: 64 }), lora: { rank: 16 } }));
      const { label, T } = described(fp, quick ? 16 : 128);
      const data = windows(1, T, fp.config.vocabSize);
      return {
        size: `${label}, 1 x ${T} tokens, nf2 + rank 16`,
        run: async () => { rilq(fp, qm, { data, steps: 1, lr: 1e-4 }); },
        work: {},
        dispose: () => { fp.dispose(); qm.dispose(); },
      };
    },
  },
];
