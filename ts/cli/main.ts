#!/usr/bin/env node
// The `quantlora` command.

import '../index.js'; // registers every backend
import { QuantloraError } from '../errors.js';
import { backends, getBackend, initBackend } from '../registry.js';
import { Args } from './args.js';
import { printDemo, runDemo } from './demo.js';
import { experimentCommand } from './experiment.js';
import { evalCommand, exportCommand, fetchCommand, generateCommand } from './model-commands.js';
import { quantizeCommand } from './quantize.js';

const USAGE = `quantlora — quantize LLM linear layers to 2/3/4 bits and compensate with LoRA

Usage:
  quantlora demo [--seed N] [--json]   quantize a random Llama-shaped layer set in every format
  quantlora fetch                      download the default model (SmolLM2-135M-Instruct GGUF) and the calibration text into the cache
  quantlora eval [--model PATH] [--data FILE] [--seqlen N] [--limit WINDOWS] [--windows A:B]
                 [--jobs N] [--json] [--quiet]
                                       perplexity over non-overlapping windows (default: WikiText-2 test, 512)
  quantlora generate [--model PATH] --prompt TEXT [--chat] [--max-tokens N] [--temperature T]
                     [--top-k K] [--top-p P] [--seed S] [--json]
                                       greedy (temperature 0, the default) or sampled generation
  quantlora export [--model PATH] --out DIR [--dtype f32|f16|bf16]
                                       write a Hugging Face directory (config, safetensors, tokenizer)
  quantlora quantize --out DIR [--model PATH] [--format nf|int] [--bits 2|3|4] [--group 64]
                     [--symmetric] [--no-double-quant] [--icq]
                     [--init none|kaiming|gaussian|loftq|apiq-layer|apiq-block] [--rank 16] [--alpha A]
                     [--iec] [--loftq-iters 5] [--apiq-epochs 2] [--rilq-steps N] [--rilq-loss hidden|logits]
                     [--gt-weight 0.5] [--finetune-steps N] [--finetune-data FILE(.jsonl)] [--lr LR] [--accumulate N] [--patience N]
                     [--checkpoint FILE] [--calib FILE] [--calib-windows 32] [--calib-seqlen 512]
                     [--merged] [--eval WINDOWS] [--json]
                                       quantize + initialize + compensate; writes the packed model
                                       (model.quantlora.safetensors), PEFT adapters (adapter/) and
                                       with --merged the merged Hugging Face model (merged/)
  quantlora experiment [--preset small|paper|tiny] [--model PATH] [--eval-windows N] [--only KEYS] [--checkpoints DIR]
                       [--out results] [--name NAME] [--fresh] [--claims DIR] [--merge FILES]
                                       the methods' results table: results/NAME.{json,md,svg};
                                       resumes an interrupted run unless --fresh; processes sharing
                                       --claims DIR split the rows; --merge a.json,b.json joins
                                       their tables into NAME (runs nothing)
  quantlora doctor                     list backends and what each one found
  quantlora help

--model takes a .gguf file or a Hugging Face directory (config.json, *.safetensors, tokenizer.json);
without it the default model is fetched once into ~/.cache/quantlora (QUANTLORA_CACHE moves it).
Environment: QUANTLORA_BACKEND=<name> forces a backend; QUANTLORA_MODEL, QUANTLORA_EVAL_DATA set defaults.`;

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'demo': {
      await initBackend();
      const seed = Number(flag(args, 'seed') ?? 0);
      const reports = await runDemo({ seed });
      if (args.includes('--json')) console.log(JSON.stringify({ backend: getBackend().name, reports }, null, 2));
      else printDemo(reports);
      return 0;
    }
    case 'fetch':
      return fetchCommand();
    case 'eval':
      await initBackend();
      return evalCommand(new Args(args));
    case 'generate':
      await initBackend();
      return generateCommand(new Args(args));
    case 'export':
      await initBackend();
      return exportCommand(new Args(args));
    case 'quantize':
      await initBackend();
      return quantizeCommand(new Args(args));
    case 'experiment':
      await initBackend();
      return experimentCommand(new Args(args));
    case 'doctor': {
      for (const b of backends()) {
        const line = b.available ? 'available' : `unavailable: ${b.failure}`;
        console.log(`${b.name.padEnd(8)} priority ${b.priority}  ${line}`);
      }
      const active = await initBackend();
      console.log(`active: ${active.name}`);
      for (const [k, v] of Object.entries(active.info().details)) console.log(`  ${k}: ${v}`);
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      console.error(`quantlora: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    if (err instanceof QuantloraError) console.error(`quantlora: ${err.name}: ${err.message}`);
    else console.error(err);
    process.exitCode = 1;
  },
);
