// Pre-tokenization for byte-level BPE: the Hugging Face pre_tokenizer JSON (ByteLevel, Split, Digits,
// Sequence) compiled to a function string -> pieces, the pre-tokenizers llama.cpp picks by the GGUF key
// tokenizer.ggml.pre written as that JSON, the GPT-2 byte <-> unicode alphabet, and the BPE merge
// loop for one word (with its heap and UTF-8 helpers), which tokenizer.ts drives.
// Patterns are kept in the Oniguruma syntax tokenizer.json uses and translated to JS regexes here.
import { FormatError } from '../errors.js';

type Json = Record<string, unknown>;
export type PreTokenize = (text: string) => string[];

/** The GPT-2 pattern (ByteLevel use_regex). */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const byteLevel = (useRegex: boolean): Json => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
const isolated = (pattern: string): Json => ({ type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false });

/**
 * The pre_tokenizer JSON for a GGUF `tokenizer.ggml.pre` value, with the regexes llama.cpp uses for it
 * (src/llama-vocab.cpp), and whether that pre-tokenizer skips merges for words already in the vocab.
 */
export function ggufPreTokenizer(pre: string): { json: Json; ignoreMerges: boolean } | undefined {
  switch (pre) {
    case 'smollm': case 'starcoder': case 'refact': case 'command-r': case 'codeshell': case 'exaone': case 'minerva-7b':
      // llama.cpp's \p{N} split, the same as tokenizers' Digits(individual_digits) (char::is_numeric);
      // written as a Split because @huggingface/tokenizers (JS) implements Digits with ASCII \d only
      return { json: { type: 'Sequence', pretokenizers: [isolated('\\p{N}'), byteLevel(true)] }, ignoreMerges: false };
    case 'gpt2': case 'gpt-2': case 'phi-2': case 'mpt': case 'olmo': case 'jais':
      return { json: byteLevel(true), ignoreMerges: false };
    case 'llama3': case 'llama-v3': case 'llama-bpe': case 'falcon3': case 'smaug-bpe': case 'dbrx':
      return { json: { type: 'Sequence', pretokenizers: [isolated(LLAMA3_PATTERN), byteLevel(false)] }, ignoreMerges: pre !== 'smaug-bpe' && pre !== 'dbrx' };
    case 'qwen2': case 'stablelm2': case 'deepseek-r1-qwen':
      return { json: { type: 'Sequence', pretokenizers: [isolated(QWEN2_PATTERN), byteLevel(false)] }, ignoreMerges: false };
    case 'default': // llama.cpp's fallback: four splits in a row
      return {
        json: {
          type: 'Sequence',
          pretokenizers: [isolated('[\\p{P}\\$\\+<=>\\^~\\|]+'), isolated(GPT2_PATTERN), isolated('\\p{N}+'), isolated('[0-9][0-9][0-9]'), byteLevel(false)],
        },
        ignoreMerges: false,
      };
    default:
      return undefined;
  }
}

// ---- Oniguruma pattern -> JS RegExp -------------------------------------------------------------

// Unicode White_Space, which Oniguruma, Rust's regex and llama.cpp use for \s (JS \s also has U+FEFF
// and lacks U+0085).
const WS = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/**
 * Translate the constructs that differ between Oniguruma and JS: (?i:...) (letters, not ranges inside
 * classes), \s \S \d \D \w, \p{Han}. What JS cannot compile (possessive or atomic groups) is a FormatError.
 */
export function toJsRegex(pattern: string, where: string): RegExp {
  let out = '';
  let inClass = false;
  const caseless: boolean[] = []; // one entry per open group: does it ignore case
  const ci = () => caseless.length > 0 && caseless[caseless.length - 1];
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      const n = pattern[i + 1] ?? '';
      if (n === 'p' || n === 'P') {
        const close = pattern.indexOf('}', i);
        let name = pattern.slice(i + 3, close);
        if (/^(Han|Hiragana|Katakana|Hangul|Latin|Greek|Cyrillic|Arabic|Hebrew|Thai)$/.test(name)) name = `Script=${name}`;
        out += `\\${n}{${name}}`;
        i = close;
      } else if (n === 's') { out += inClass ? WS : `[${WS}]`; i++; }
      else if (n === 'S') {
        if (inClass) throw new FormatError(`${where}: \\S inside a character class is not supported in pattern ${JSON.stringify(pattern)}`);
        out += `[^${WS}]`; i++;
      } else if (n === 'd') { out += '\\p{Nd}'; i++; }
      else if (n === 'D') { out += '\\P{Nd}'; i++; }
      else if (n === 'w') { out += inClass ? '\\p{L}\\p{M}\\p{Nd}\\p{Pc}' : '[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]'; i++; }
      else if (n === 'x' && pattern[i + 2] !== '{') { out += pattern.slice(i, i + 4); i += 3; }
      else if (n === 'u' && pattern[i + 2] !== '{') { out += pattern.slice(i, i + 6); i += 5; }
      else if ((n === 'x' || n === 'u') && pattern[i + 2] === '{') { const close = pattern.indexOf('}', i); out += `\\u${pattern.slice(i + 2, close + 1)}`; i = close; }
      else { out += c + n; i++; }
    } else if (inClass) {
      if (c === ']') inClass = false;
      out += ci() && /[a-zA-Z]/.test(c) ? c.toLowerCase() + c.toUpperCase() : c;
    } else if (c === '[') {
      inClass = true;
      out += c;
      if (pattern[i + 1] === '^') { out += '^'; i++; }
      if (pattern[i + 1] === ']') { out += '\\]'; i++; } // a leading ] is a literal in Oniguruma
    } else if (c === '(') {
      if (pattern.startsWith('(?i:', i)) { caseless.push(true); out += '(?:'; i += 3; }
      else { caseless.push(ci()); out += c; }
    } else if (c === ')') {
      caseless.pop();
      out += c;
    } else if (ci() && /[a-zA-Z]/.test(c)) {
      out += `[${c.toLowerCase()}${c.toUpperCase()}]`;
    } else out += c;
  }
  try {
    return new RegExp(out, 'gu');
  } catch (e) {
    throw new FormatError(`${where}: regex ${JSON.stringify(pattern)} is not supported (${(e as Error).message})`);
  }
}

// ---- splitting --------------------------------------------------------------------------------

type Behavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS: readonly string[] = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];

/** Split one piece by a regex the way tokenizers' Split does (empty matches still split). */
function splitPiece(piece: string, re: RegExp, behavior: Behavior, invert: boolean, out: string[]): void {
  if (behavior === 'Isolated' && !invert) { // the fast path: every match and every gap is a piece
    let prev = 0;
    re.lastIndex = 0;
    for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
      const start = m.index, end = start + m[0].length;
      if (start > prev) out.push(piece.slice(prev, start));
      if (end > start) out.push(m[0]);
      else re.lastIndex = end + ((piece.codePointAt(end) ?? 0) > 0xffff ? 2 : 1);
      prev = end;
    }
    if (prev < piece.length) out.push(piece.slice(prev));
    return;
  }
  const segs: [number, number, boolean][] = [];
  let prev = 0;
  re.lastIndex = 0;
  for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
    const start = m.index, end = start + m[0].length;
    if (start > prev) segs.push([prev, start, invert]);
    segs.push([start, end, !invert]);
    if (end === start) re.lastIndex = end + ((piece.codePointAt(end) ?? 0) > 0xffff ? 2 : 1);
    prev = end;
  }
  if (prev < piece.length) segs.push([prev, piece.length, invert]);
  const merged: [number, number][] = [];
  let prevMatch = false;
  if (behavior === 'MergedWithNext') {
    for (let k = segs.length - 1; k >= 0; k--) {
      const [s, e, isMatch] = segs[k];
      if (isMatch && !prevMatch && merged.length > 0) merged[merged.length - 1][0] = s;
      else merged.push([s, e]);
      prevMatch = isMatch;
    }
    merged.reverse();
  } else {
    for (const [s, e, isMatch] of segs) {
      if (behavior === 'Removed') { if (!isMatch) merged.push([s, e]); }
      else if (behavior === 'Isolated') merged.push([s, e]);
      else if (behavior === 'MergedWithPrevious' && isMatch && !prevMatch && merged.length > 0) merged[merged.length - 1][1] = e;
      else if (behavior === 'Contiguous' && isMatch === prevMatch && merged.length > 0) merged[merged.length - 1][1] = e;
      else merged.push([s, e]);
      prevMatch = isMatch;
    }
  }
  for (const [s, e] of merged) if (e > s) out.push(piece.slice(s, e));
}

function splitter(re: RegExp, behavior: Behavior, invert: boolean): (pieces: string[]) => string[] {
  return (pieces) => {
    const out: string[] = [];
    for (const p of pieces) splitPiece(p, re, behavior, invert, out);
    return out;
  };
}

/** Compile a tokenizer.json pre_tokenizer (null: the whole text is one piece). */
export function compilePreTokenizer(json: unknown, where: string): PreTokenize {
  const steps: ((pieces: string[]) => string[])[] = [];
  const add = (node: unknown, path: string): void => {
    if (node === null || node === undefined) return;
    if (typeof node !== 'object') throw new FormatError(`${where}: ${path} is not an object`);
    const n = node as Json;
    switch (n.type) {
      case 'Sequence': {
        if (!Array.isArray(n.pretokenizers)) throw new FormatError(`${where}: ${path}.pretokenizers is missing`);
        n.pretokenizers.forEach((p, i) => add(p, `${path}.pretokenizers[${i}]`));
        return;
      }
      case 'ByteLevel': {
        if (n.add_prefix_space === true) steps.push((ps) => ps.map((p) => (p.startsWith(' ') ? p : ' ' + p)));
        if (n.use_regex !== false) steps.push(splitter(toJsRegex(GPT2_PATTERN, where), 'Isolated', false));
        return;
      }
      case 'Digits': {
        steps.push(splitter(/\p{N}/gu, n.individual_digits === true ? 'Isolated' : 'Contiguous', false));
        return;
      }
      case 'Split': {
        const pat = n.pattern as Json | undefined;
        const behavior = String(n.behavior);
        if (!BEHAVIORS.includes(behavior)) throw new FormatError(`${where}: ${path} has unsupported Split behavior '${behavior}'`);
        let re: RegExp;
        if (pat && typeof pat.Regex === 'string') re = toJsRegex(pat.Regex, where);
        else if (pat && typeof pat.String === 'string') re = new RegExp(pat.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
        else throw new FormatError(`${where}: ${path}.pattern must be {Regex} or {String}`);
        steps.push(splitter(re, behavior as Behavior, n.invert === true));
        return;
      }
      default:
        throw new FormatError(`${where}: pre-tokenizer type '${String(n.type)}' at ${path} is not supported (ByteLevel, Split, Digits, Sequence are)`);
    }
  };
  add(json, 'pre_tokenizer');
  return (text) => {
    let pieces = [text];
    for (const step of steps) pieces = step(pieces);
    return pieces;
  };
}

// ---- the GPT-2 byte <-> unicode alphabet --------------------------------------------------------

/** BYTE_TO_CHAR[b] is the printable character GPT-2 uses for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const chars: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return chars;
})();

/** Inverse of BYTE_TO_CHAR indexed by char code (-1: not in the alphabet). */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(324).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => { t[ch.charCodeAt(0)] = b; });
  return t;
})();

// ---- the BPE merge loop ---------------------------------------------------------------------------

export const PAIR = 0x200000; // pair key = left * PAIR + right (ids below 2^21)
export const POS = 0x400000;  // heap key = rank * POS + position (words below 2^22 symbols)

/**
 * Merge one word's symbol ids (its byte tokens; sym is overwritten): the lowest-rank pair first, the leftmost on ties
 * (as tokenizers and llama.cpp do), with a heap of candidate pairs and a linked list of live symbols.
 * pairRank maps left * PAIR + right to the merge's rank; mergeId[rank] is the merged token.
 */
export function mergeWord(sym: number[], pairRank: Map<number, number>, mergeId: Int32Array): number[] {
  const n = sym.length;
  if (n < 2) return sym;
  const next = new Int32Array(n), prev = new Int32Array(n);
  for (let i = 0; i < n; i++) { next[i] = i + 1; prev[i] = i - 1; }
  next[n - 1] = -1;
  const heap: number[] = [];
  const rankOf = (a: number, b: number) => pairRank.get(a * PAIR + b) ?? -1;
  for (let i = 0; i + 1 < n; i++) {
    const r = rankOf(sym[i], sym[i + 1]);
    if (r >= 0) heapPush(heap, r * POS + i);
  }
  while (heap.length > 0) {
    const top = heapPop(heap);
    const rank = Math.floor(top / POS), pos = top - rank * POS;
    const q = next[pos];
    if (sym[pos] < 0 || q < 0 || rankOf(sym[pos], sym[q]) !== rank) continue; // stale entry
    const id = mergeId[rank];
    sym[pos] = id;
    sym[q] = -1;
    next[pos] = next[q];
    if (next[q] >= 0) prev[next[q]] = pos;
    if (prev[pos] >= 0) { const r = rankOf(sym[prev[pos]], id); if (r >= 0) heapPush(heap, r * POS + prev[pos]); }
    if (next[pos] >= 0) { const r = rankOf(id, sym[next[pos]]); if (r >= 0) heapPush(heap, r * POS + pos); }
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
  return out;
}

/** UTF-8 bytes of a string (lone surrogates as U+FFFD, as TextEncoder does). */
export function utf8(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 3);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) { out[n++] = c; continue; }
    if (c < 0x800) { out[n++] = 0xc0 | (c >> 6); out[n++] = 0x80 | (c & 63); continue; }
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        out[n++] = 0xf0 | (c >> 18); out[n++] = 0x80 | ((c >> 12) & 63); out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63);
        continue;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    out[n++] = 0xe0 | (c >> 12); out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63);
  }
  return out.subarray(0, n);
}

function heapPush(h: number[], v: number): void {
  let i = h.length;
  h.push(v);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p] <= v) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = v;
}

function heapPop(h: number[]): number {
  const top = h[0], last = h.pop()!;
  if (h.length > 0) {
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= h.length) break;
      if (c + 1 < h.length && h[c + 1] < h[c]) c++;
      if (h[c] >= last) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
  }
  return top;
}
