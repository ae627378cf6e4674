// A worker thread of a parallel perplexity evaluation: loads the model on its own backend
// instance and scores the windows it is sent, one message per window.

import { parentPort, workerData } from 'node:worker_threads';
import '../index.js';
import { loadModel } from '../io/load-model.js';
import { initBackend } from '../registry.js';
import { windowNll } from './perplexity.js';

interface Job { modelPath: string; ids: Int32Array; seqlen: number; windows: number[] }

const job = workerData as Job;
await initBackend();
const { model } = loadModel(job.modelPath);
for (const w of job.windows) {
  parentPort!.postMessage({ window: w, nll: await windowNll(model, job.ids, w, job.seqlen) });
}
model.dispose();
