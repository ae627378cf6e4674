// The results table of the methods: which rows exist at each preset, and the Markdown table and
// SVG plot made from the measured rows. Running the rows (loading, evaluating, writing files) is
// ts/cli/experiment.ts; this file is pure data so it can be tested without a model.

import { formats, type QuantFormat } from '../quant/formats.js';
import type { MethodSpec } from './pipeline.js';

export interface Preset {
  name: string;
  /** Calibration windows (train, validation) and their length. */
  calib: { count: number; validation: number; seqlen: number };
  /** Evaluation windows of WikiText-2 test (undefined = all) and their length. */
  evalWindows?: number;
  evalSeqlen: number;
  bits: (2 | 3 | 4)[];
  group: number;
  rank: number;
  ranks: number[];
  apiqEpochs: number;
  rilqSteps: number;
  rilqLr: number;
  finetuneSteps: number;
}

export const PRESETS: Record<string, Preset> = {
  // what a 2-core CPU finishes in about an hour: few windows, short training
  small: { name: 'small', calib: { count: 16, validation: 4, seqlen: 256 }, evalWindows: 8, evalSeqlen: 512, bits: [4, 3, 2], group: 64, rank: 16, ranks: [4, 8, 16, 32, 64], apiqEpochs: 1, rilqSteps: 16, rilqLr: 2e-4, finetuneSteps: 16 },
  // a 16-core CPU in about 20 minutes (the GPU machine's host): more evaluation text, longer training
  device: { name: 'device', calib: { count: 32, validation: 8, seqlen: 256 }, evalWindows: 24, evalSeqlen: 512, bits: [2, 3, 4], group: 64, rank: 16, ranks: [4, 8, 16, 32, 64], apiqEpochs: 1, rilqSteps: 48, rilqLr: 5e-4, finetuneSteps: 48 },
  // the papers' settings where the model allows (ApiQ: 128 windows; RILQ: many steps); for a GPU
  paper: { name: 'paper', calib: { count: 128, validation: 16, seqlen: 512 }, evalSeqlen: 512, bits: [4, 3, 2], group: 64, rank: 16, ranks: [4, 8, 16, 32, 64], apiqEpochs: 2, rilqSteps: 1000, rilqLr: 1e-4, finetuneSteps: 500 },
  // the tiny test model: every row in seconds (tests and CI)
  tiny: { name: 'tiny', calib: { count: 4, validation: 2, seqlen: 24 }, evalWindows: 2, evalSeqlen: 32, bits: [4, 2], group: 16, rank: 4, ranks: [2, 4], apiqEpochs: 1, rilqSteps: 3, rilqLr: 1e-3, finetuneSteps: 3 },
};

export interface Row {
  /** Unique key (the table's row id, used to resume an interrupted experiment). */
  key: string;
  group: 'main' | 'rank sweep' | 'finetune';
  label: string;
  bits: number | 'fp';
  rank?: number;
  spec?: MethodSpec;
}

export interface RowResult extends Row {
  perplexity: number;
  evalWindows: number;
  /** Mean code entropy per quantization block (bits), for plain and ICQ quantizers. */
  entropy?: number;
  /** sum ||W - deq(Q)||² / sum ||W||² over the quantized layers (plain and ICQ quantizers). */
  weightError?: number;
  /** Wall seconds of this process's part of the row (a row resumed from a checkpoint ran partly
   *  in an earlier process: then `resumed` is true and the earlier part is not counted). */
  seconds: number;
  resumed?: boolean;
  /** The most device memory the backend held during the row (MiB), where it counts it (gpu). */
  peakMiB?: number;
  details?: unknown;
}

/** Every row of the table for a preset, in the order they are run. */
export function experimentRows(p: Preset): Row[] {
  const rows: Row[] = [{ key: 'fp', group: 'main', label: 'FP', bits: 'fp' }];
  const nf = (b: 2 | 3 | 4): QuantFormat => formats.nf(b, { group: p.group });
  const int = (b: 2 | 3 | 4): QuantFormat => formats.int(b, { group: p.group });
  const apiq = { epochs: p.apiqEpochs };
  const rilq = (extra = {}) => ({ steps: p.rilqSteps, lr: p.rilqLr, evalEvery: Math.max(1, Math.floor(p.rilqSteps / 4)), ...extra });
  const add = (key: string, label: string, b: 2 | 3 | 4, spec: MethodSpec, group: Row['group'] = 'main', rank?: number) =>
    rows.push({ key, group, label, bits: b, spec: { seed: 1, ...spec }, rank });
  for (const b of p.bits) {
    add(`nf${b}-rtn`, 'NF RTN (= QLoRA init)', b, { format: nf(b), init: 'none' });
    add(`int${b}-rtn`, 'INT RTN', b, { format: int(b), init: 'none' });
    add(`nf${b}-icq`, 'NF + ICQ', b, { format: nf(b), icq: true, init: 'none' });
    add(`int${b}-icq`, 'INT + ICQ', b, { format: int(b), icq: true, init: 'none' });
    add(`nf${b}-loftq`, 'LoftQ (NF)', b, { format: nf(b), init: 'loftq', rank: p.rank, loftqIters: 5 });
    add(`int${b}-apiq-layer`, 'ApiQ-layer (INT, LWC)', b, { format: int(b), init: 'apiq-layer', rank: p.rank, apiq });
    add(`int${b}-apiq-block`, 'ApiQ-block (INT, LWC)', b, { format: int(b), init: 'apiq-block', rank: p.rank, apiq });
    add(`nf${b}-rilq`, 'RILQ on NF RTN', b, { format: nf(b), init: 'kaiming', rank: p.rank, rilq: rilq() });
    add(`int${b}-apiq-block-rilq`, 'RILQ on ApiQ-block', b, { format: int(b), init: 'apiq-block', rank: p.rank, apiq, rilq: rilq() });
  }
  const low = Math.min(...p.bits) as 2 | 3 | 4;
  for (const r of p.ranks.filter((r) => r !== p.rank)) { // the main rows are the sweep's rank p.rank
    add(`nf${low}-rilq-r${r}`, `RILQ r${r}`, low, { format: nf(low), init: 'kaiming', rank: r, rilq: rilq() }, 'rank sweep', r);
    add(`nf${low}-loftq-r${r}`, `LoftQ r${r}`, low, { format: nf(low), init: 'loftq', rank: r, loftqIters: 5 }, 'rank sweep', r);
  }
  const ft = { steps: p.finetuneSteps, lr: 2e-4, schedule: 'cosine' as const, evalEvery: Math.max(1, Math.floor(p.finetuneSteps / 4)) };
  for (const iec of [false, true]) {
    add(`nf${low}-finetune${iec ? '-iec' : ''}`, `finetune, IEC ${iec ? 'on' : 'off'}`, low, { format: nf(low), init: 'kaiming', rank: p.rank, iec, finetune: ft }, 'finetune');
  }
  return rows;
}

/** The checkpoint files a row writes under `dir` (ApiQ after every block, the adapter trainers
 *  every `every` steps), so a run stopped inside a long row resumes inside it. */
export function rowCheckpoints(row: Row, dir: string, every = 25): { spec: MethodSpec | undefined; files: string[] } {
  const s = row.spec;
  if (!s) return { spec: undefined, files: [] };
  const file = (part: string) => `${dir}/${row.key}.${part}.safetensors`;
  const spec: MethodSpec = { ...s };
  const files: string[] = [];
  if (s.init === 'apiq-layer' || s.init === 'apiq-block') files.push((spec.apiq = { ...s.apiq, checkpoint: file('apiq') }).checkpoint!);
  if (s.rilq) files.push((spec.rilq = { ...s.rilq, checkpoint: file('rilq'), checkpointEvery: every }).checkpoint!);
  if (s.finetune) files.push((spec.finetune = { ...s.finetune, checkpoint: file('finetune'), checkpointEvery: every }).checkpoint!);
  return { spec, files };
}

const fmt = (v: number | undefined, d = 2): string => (v === undefined || !Number.isFinite(v) ? '—' : Math.abs(v) >= 1e4 ? v.toExponential(2) : v.toFixed(d));

/** The Markdown table: one line per method, a column per bit width; then the sweeps. */
export function markdownTable(results: RowResult[], p: Preset): string {
  const fp = results.find((r) => r.key === 'fp');
  const windows = results[0]?.evalWindows;
  const lines = [
    `WikiText-2 test perplexity, seqlen ${p.evalSeqlen}, ${windows ?? '?'} windows; group ${p.group}; rank ${p.rank}; calibration: ${p.calib.count} + ${p.calib.validation} windows of ${p.calib.seqlen} tokens (State of the Union). FP: ${fmt(fp?.perplexity)}.`,
    '',
    `| method | ${p.bits.map((b) => `${b}-bit`).join(' | ')} |`,
    `| --- | ${p.bits.map(() => '---:').join(' | ')} |`,
  ];
  const main = results.filter((r) => r.group === 'main' && r.bits !== 'fp');
  for (const label of [...new Set(main.map((r) => r.label))]) {
    const cells = p.bits.map((b) => fmt(main.find((r) => r.label === label && r.bits === b)?.perplexity));
    lines.push(`| ${label} | ${cells.join(' | ')} |`);
  }
  const ent = main.filter((r) => r.entropy !== undefined);
  if (ent.length) {
    lines.push('', 'The quantizers alone: mean code entropy per block (bits; at most the bit width) / relative squared weight error:', '',
      `| quantizer | ${p.bits.map((b) => `${b}-bit`).join(' | ')} |`, `| --- | ${p.bits.map(() => '---:').join(' | ')} |`);
    for (const label of [...new Set(ent.map((r) => r.label))]) {
      lines.push(`| ${label} | ${p.bits.map((b) => {
        const r = ent.find((x) => x.label === label && x.bits === b);
        return r ? `${fmt(r.entropy, 3)} / ${r.weightError !== undefined ? r.weightError.toExponential(2) : '—'}` : '—';
      }).join(' | ')} |`);
    }
  }
  const sweep = results.filter((r) => r.group === 'rank sweep');
  if (sweep.length) {
    const low = sweep[0].bits;
    const ranks = [...new Set([...sweep.map((r) => r.rank!), p.rank])].sort((a, b) => a - b);
    // rank p.rank is the main table's row at the same bits
    const main0 = { RILQ: 'RILQ on NF RTN', LoftQ: 'LoftQ (NF)' } as const;
    const at = (m: 'RILQ' | 'LoftQ', r: number) => (r === p.rank ? main.find((x) => x.label === main0[m] && x.bits === low) : sweep.find((x) => x.label === `${m} r${r}`))?.perplexity;
    lines.push('', `Rank sweep at ${low} bits:`, '', `| method | ${ranks.map((r) => `r${r}`).join(' | ')} |`, `| --- | ${ranks.map(() => '---:').join(' | ')} |`);
    for (const m of ['RILQ', 'LoftQ'] as const) lines.push(`| ${m} | ${ranks.map((r) => fmt(at(m, r))).join(' | ')} |`);
  }
  const ft = results.filter((r) => r.group === 'finetune');
  if (ft.length) {
    lines.push('', `Finetuning at ${ft[0].bits} bits (LoRA on the calibration text):`, '', '| run | perplexity |', '| --- | ---: |');
    for (const r of ft) lines.push(`| ${r.label} | ${fmt(r.perplexity)} |`);
  }
  return lines.join('\n') + '\n';
}

/** Perplexity (log scale) against bits, one line per method of the main table. */
export function svgPlot(results: RowResult[], p: Preset): string {
  const W = 720, H = 420, L = 70, R = 230, T = 30, B = 50;
  const main = results.filter((r) => r.group === 'main' && r.bits !== 'fp' && Number.isFinite(r.perplexity));
  const fp = results.find((r) => r.key === 'fp');
  const values = [...main.map((r) => r.perplexity), ...(fp ? [fp.perplexity] : [])];
  if (!values.length) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}"></svg>\n`;
  const lo = Math.log10(Math.min(...values)) - 0.05;
  const hi = Math.log10(Math.max(...values)) + 0.05;
  const bits = [...p.bits].sort((a, b) => a - b);
  const x = (b: number) => L + ((bits.indexOf(b as 2 | 3 | 4) + 0.5) / bits.length) * (W - L - R);
  const y = (v: number) => T + (1 - (Math.log10(v) - lo) / (hi - lo)) * (H - T - B);
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="18">WikiText-2 perplexity (log scale) vs bits, SmolLM2-135M, group ${p.group}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`, `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`];
  for (const b of bits) parts.push(`<text x="${x(b)}" y="${H - B + 18}" text-anchor="middle">${b} bits</text>`);
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
      parts.push(`<line x1="${L - 4}" y1="${y(v)}" x2="${W - R}" y2="${y(v)}" stroke="#ddd"/>`, `<text x="${L - 8}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
    }
  }
  if (fp) parts.push(`<line x1="${L}" y1="${y(fp.perplexity)}" x2="${W - R}" y2="${y(fp.perplexity)}" stroke="black" stroke-dasharray="4 3"/>`, `<text x="${W - R + 8}" y="${y(fp.perplexity) + 4}">FP</text>`);
  [...new Set(main.map((r) => r.label))].forEach((label, i) => {
    const pts = main.filter((r) => r.label === label).sort((a, b) => (a.bits as number) - (b.bits as number));
    const c = colors[i % colors.length];
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((r) => `${x(r.bits as number).toFixed(1)},${y(r.perplexity).toFixed(1)}`).join(' ')}"/>`);
    for (const r of pts) parts.push(`<circle cx="${x(r.bits as number).toFixed(1)}" cy="${y(r.perplexity).toFixed(1)}" r="3" fill="${c}"/>`);
    parts.push(`<rect x="${W - R + 8}" y="${T + 20 + i * 18}" width="12" height="3" fill="${c}"/>`, `<text x="${W - R + 26}" y="${T + 25 + i * 18}">${esc(label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
