// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, Llama 3, Qwen 2, ...), built from GGUF metadata or
// from a Hugging Face tokenizer.json, and written back as tokenizer.json + tokenizer_config.json.
// encode: split out added/special tokens (longest first), NFC if asked, pre-tokenize, map each piece's
// UTF-8 bytes to the GPT-2 alphabet and merge by rank (heap + linked list per word, cached per piece).
import { FormatError, ValueError } from '../errors.js';
import { BYTE_TO_CHAR, CHAR_TO_BYTE, compilePreTokenizer, ggufPreTokenizer, mergeWord, utf8, type PreTokenize, PAIR, POS } from './pretokenize.js';

type Json = Record<string, unknown>;

// GGUF token types (llama.cpp's llama_token_type).
const NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4;

const CACHE_MAX = 1 << 18;

interface Parts {
  tokens: string[];
  types: Uint8Array;
  merges: [string, string][];
  preJson: unknown;
  ignoreMerges: boolean;
  nfc: boolean;
  bosId?: number; eosId?: number; unkId?: number; padId?: number;
  addBos: boolean; addEos: boolean;
  chatTemplate?: string;
  modelMaxLength?: number;
  where: string;
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;
  readonly unkId?: number;
  readonly padId?: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly chatTemplate?: string;
  readonly modelMaxLength?: number;

  private readonly tokens: string[];
  private readonly types: Uint8Array;
  private readonly vocab = new Map<string, number>();
  private readonly merges: [string, string][];
  private readonly pairRank = new Map<number, number>();
  private readonly mergeId: Int32Array;
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly preJson: unknown;
  private readonly preTokenize: PreTokenize;
  private readonly ignoreMerges: boolean;
  private readonly nfc: boolean;
  private readonly specialRe?: RegExp; // control + user-defined tokens
  private readonly userRe?: RegExp;    // user-defined tokens only (always matched)
  private readonly cache = new Map<string, number[]>();
  private readonly pieceBytes: (Uint8Array | undefined)[] = [];

  private constructor(p: Parts) {
    const where = p.where;
    this.tokens = p.tokens;
    this.types = p.types;
    this.vocabSize = p.tokens.length;
    for (let id = 0; id < p.tokens.length; id++) {
      const t = p.tokens[id];
      if (t !== undefined && !this.vocab.has(t)) this.vocab.set(t, id);
    }
    if (this.vocabSize > PAIR) throw new FormatError(`${where}: vocabulary of ${this.vocabSize} tokens is larger than the supported ${PAIR}`);
    this.merges = p.merges;
    this.mergeId = new Int32Array(p.merges.length);
    p.merges.forEach(([a, b], rank) => {
      const ia = this.vocab.get(a), ib = this.vocab.get(b), ic = this.vocab.get(a + b);
      if (ia === undefined || ib === undefined) throw new FormatError(`${where}: merge ${rank} '${a} ${b}' refers to unknown token '${ia === undefined ? a : b}'`);
      if (ic === undefined) throw new FormatError(`${where}: merge ${rank} '${a} ${b}' makes '${a + b}', which is not in the vocabulary`);
      const key = ia * PAIR + ib;
      if (!this.pairRank.has(key)) this.pairRank.set(key, rank);
      this.mergeId[rank] = ic;
    });
    for (let b = 0; b < 256; b++) this.byteIds[b] = this.vocab.get(BYTE_TO_CHAR[b]) ?? -1;
    this.preJson = p.preJson;
    this.preTokenize = compilePreTokenizer(p.preJson, where);
    this.ignoreMerges = p.ignoreMerges;
    this.nfc = p.nfc;
    const special: string[] = [], user: string[] = [];
    p.types.forEach((t, id) => {
      const s = p.tokens[id];
      if (!s) return;
      if (t === CONTROL || t === UNKNOWN) special.push(s);
      else if (t === USER_DEFINED) { special.push(s); user.push(s); }
    });
    this.specialRe = alternation(special);
    this.userRe = alternation(user);
    const checkId = (name: string, id: number | undefined) => {
      if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) throw new FormatError(`${where}: ${name} token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      return id;
    };
    this.bosId = checkId('bos', p.bosId);
    this.eosId = checkId('eos', p.eosId);
    this.unkId = checkId('unknown', p.unkId);
    this.padId = checkId('padding', p.padId);
    this.addBos = p.addBos;
    this.addEos = p.addEos;
    this.chatTemplate = p.chatTemplate;
    this.modelMaxLength = p.modelMaxLength;
  }

  /** From GGUF metadata (tokenizer.ggml.*); only the 'gpt2' (byte-level BPE) tokenizer model. */
  static fromGguf(metadata: Record<string, unknown>, where = 'GGUF metadata'): Tokenizer {
    const m = metadata;
    const model = m['tokenizer.ggml.model'];
    if (model === undefined) throw new FormatError(`${where}: tokenizer.ggml.model is missing`);
    if (model !== 'gpt2') throw new FormatError(`${where}: tokenizer model '${String(model)}' is not supported (only 'gpt2', byte-level BPE)`);
    const tokens = m['tokenizer.ggml.tokens'];
    if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((t) => typeof t === 'string'))
      throw new FormatError(`${where}: tokenizer.ggml.tokens is missing or not a list of strings`);
    const mergeStrs = m['tokenizer.ggml.merges'];
    if (!Array.isArray(mergeStrs) || !mergeStrs.every((t) => typeof t === 'string'))
      throw new FormatError(`${where}: tokenizer.ggml.merges is missing or not a list of strings`);
    const merges = mergeStrs.map((s: string, i): [string, string] => {
      const sp = s.indexOf(' ', 1);
      if (sp < 0) throw new FormatError(`${where}: merge ${i} '${s}' has no space between its two tokens`);
      return [s.slice(0, sp), s.slice(sp + 1)];
    });
    const types = new Uint8Array(tokens.length).fill(NORMAL);
    const tt = m['tokenizer.ggml.token_type'];
    if (tt !== undefined) {
      if (!Array.isArray(tt) || tt.length !== tokens.length) throw new FormatError(`${where}: tokenizer.ggml.token_type has ${Array.isArray(tt) ? tt.length : 'no'} entries, expected ${tokens.length}`);
      tt.forEach((t, i) => { types[i] = Number(t); });
    }
    const pre = m['tokenizer.ggml.pre'] ?? 'default';
    const preInfo = ggufPreTokenizer(String(pre));
    if (!preInfo) throw new FormatError(`${where}: pre-tokenizer tokenizer.ggml.pre = '${String(pre)}' is not supported (smollm, gpt-2, llama-bpe, qwen2, default and their aliases are)`);
    const num = (k: string) => {
      const v = m[k];
      if (v === undefined) return undefined;
      if (typeof v !== 'number' && typeof v !== 'bigint') throw new FormatError(`${where}: ${k} is not a number`);
      return Number(v);
    };
    const bool = (k: string) => (m[k] === undefined ? undefined : Boolean(m[k]));
    const arch = m['general.architecture'];
    const template = m['tokenizer.chat_template'];
    return new Tokenizer({
      tokens: tokens as string[], types, merges, preJson: preInfo.json, ignoreMerges: preInfo.ignoreMerges, nfc: false,
      bosId: num('tokenizer.ggml.bos_token_id'), eosId: num('tokenizer.ggml.eos_token_id'),
      unkId: num('tokenizer.ggml.unknown_token_id'), padId: num('tokenizer.ggml.padding_token_id'),
      // llama.cpp turns add_bos on for the llama3 family when the key is absent
      addBos: bool('tokenizer.ggml.add_bos_token') ?? preInfo.ignoreMerges,
      addEos: bool('tokenizer.ggml.add_eos_token') ?? false,
      chatTemplate: typeof template === 'string' ? template : undefined,
      modelMaxLength: typeof arch === 'string' ? num(`${arch}.context_length`) : undefined,
      where,
    });
  }

  /** From a parsed tokenizer.json (and optionally tokenizer_config.json). */
  static fromTokenizerJson(tokenizerJson: unknown, tokenizerConfig?: unknown, where = 'tokenizer.json'): Tokenizer {
    if (!isObj(tokenizerJson)) throw new FormatError(`${where}: not a JSON object`);
    const j = tokenizerJson;
    const cfg = isObj(tokenizerConfig) ? tokenizerConfig : {};
    const model = j.model;
    if (!isObj(model)) throw new FormatError(`${where}: model is missing`);
    if (model.type !== undefined && model.type !== 'BPE') throw new FormatError(`${where}: model type '${String(model.type)}' is not supported (only BPE)`);
    if (!isObj(model.vocab)) throw new FormatError(`${where}: model.vocab is missing`);
    if (!Array.isArray(model.merges)) throw new FormatError(`${where}: model.merges is missing`);
    if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) throw new FormatError(`${where}: BPE dropout is not supported`);
    for (const k of ['continuing_subword_prefix', 'end_of_word_suffix'] as const)
      if (model[k] !== undefined && model[k] !== null && model[k] !== '') throw new FormatError(`${where}: BPE ${k} is not supported`);
    if (model.byte_fallback === true) throw new FormatError(`${where}: BPE byte_fallback is not supported (byte-level BPE only)`);

    const tokens: string[] = [];
    for (const [tok, id] of Object.entries(model.vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0) throw new FormatError(`${where}: vocab entry '${tok}' has id ${String(id)}, expected an integer >= 0`);
      tokens[id as number] = tok;
    }
    const added = Array.isArray(j.added_tokens) ? j.added_tokens : [];
    const addedTypes = new Map<number, number>();
    for (const a of added) {
      if (!isObj(a) || typeof a.content !== 'string' || !Number.isInteger(a.id)) throw new FormatError(`${where}: added_tokens entry ${JSON.stringify(a)} needs an integer id and a string content`);
      for (const k of ['lstrip', 'rstrip', 'single_word'] as const)
        if (a[k] === true) throw new FormatError(`${where}: added token '${a.content}' has ${k}: true, which is not supported`);
      tokens[a.id as number] = a.content;
      addedTypes.set(a.id as number, a.special === true ? CONTROL : USER_DEFINED);
    }
    for (let i = 0; i < tokens.length; i++) if (tokens[i] === undefined) throw new FormatError(`${where}: token id ${i} is missing (ids must be 0..${tokens.length - 1})`);
    const tt = new Uint8Array(tokens.length).fill(NORMAL);
    for (const [id, t] of addedTypes) tt[id] = t;

    const merges = model.merges.map((mg, i): [string, string] => {
      if (Array.isArray(mg) && mg.length === 2 && typeof mg[0] === 'string' && typeof mg[1] === 'string') return [mg[0], mg[1]];
      if (typeof mg === 'string') {
        const parts = mg.split(' ');
        if (parts.length === 2) return [parts[0], parts[1]];
      }
      throw new FormatError(`${where}: merge ${i} ${JSON.stringify(mg)} is neither 'a b' nor [a, b]`);
    });

    let nfc = false;
    const norm = j.normalizer;
    if (isObj(norm)) {
      if (norm.type === 'NFC') nfc = true;
      else throw new FormatError(`${where}: normalizer '${String(norm.type)}' is not supported (null or NFC)`);
    } else if (norm !== null && norm !== undefined) throw new FormatError(`${where}: normalizer is not an object`);
    compilePreTokenizer(j.pre_tokenizer ?? null, where); // names an unsupported step before the check below
    if (!JSON.stringify(j.pre_tokenizer ?? null).includes('"ByteLevel"')) throw new FormatError(`${where}: pre_tokenizer has no ByteLevel step: not a byte-level BPE, which is all that is supported`);
    const dec = j.decoder;
    if (!isObj(dec) || dec.type !== 'ByteLevel') throw new FormatError(`${where}: decoder ${isObj(dec) ? `'${String(dec.type)}'` : 'null'} is not supported (ByteLevel)`);

    // the post-processor decides what HF adds around a sequence: leading / trailing special tokens
    let bosPost: number | undefined, eosPost: number | undefined;
    const post = j.post_processor;
    const posts = isObj(post) && post.type === 'Sequence' && Array.isArray(post.processors) ? post.processors : [post];
    for (const pp of posts) {
      if (pp === null || pp === undefined || (isObj(pp) && pp.type === 'ByteLevel')) continue;
      if (!isObj(pp) || pp.type !== 'TemplateProcessing' || !Array.isArray(pp.single)) throw new FormatError(`${where}: post_processor '${isObj(pp) ? String(pp.type) : String(pp)}' is not supported (ByteLevel, TemplateProcessing)`);
      const single = pp.single as Json[];
      const specials = isObj(pp.special_tokens) ? pp.special_tokens : {};
      const idOf = (el: Json | undefined) => {
        const st = el && isObj(el.SpecialToken) ? String(el.SpecialToken.id) : undefined;
        if (st === undefined) return undefined;
        const ent = specials[st];
        const ids = isObj(ent) && Array.isArray(ent.ids) ? ent.ids : undefined;
        if (!ids || ids.length !== 1) throw new FormatError(`${where}: post_processor special token '${st}' must map to exactly one id`);
        return Number(ids[0]);
      };
      if (single.length > 3 || single.filter((e) => isObj(e) && 'Sequence' in e).length !== 1) throw new FormatError(`${where}: post_processor template ${JSON.stringify(single)} is not supported`);
      bosPost = idOf(single[0]);
      eosPost = idOf(single[single.length - 1]);
    }

    const cfgToken = (k: string) => {
      const v = cfg[k];
      const s = typeof v === 'string' ? v : isObj(v) && typeof v.content === 'string' ? v.content : undefined;
      if (s === undefined) return undefined;
      const id = tokens.indexOf(s);
      if (id < 0) throw new FormatError(`${where}: tokenizer_config ${k} '${s}' is not in the vocabulary`);
      return id;
    };
    let template = cfg.chat_template;
    if (Array.isArray(template)) template = (template.find((t) => isObj(t) && t.name === 'default') as Json | undefined)?.template;
    const unkName = typeof model.unk_token === 'string' ? model.unk_token : undefined;
    const mml = cfg.model_max_length;
    return new Tokenizer({
      tokens, types: tt, merges, preJson: j.pre_tokenizer ?? null, ignoreMerges: model.ignore_merges === true, nfc,
      bosId: bosPost ?? cfgToken('bos_token'), eosId: eosPost ?? cfgToken('eos_token'), // the ids HF adds win
      unkId: cfgToken('unk_token') ?? (unkName !== undefined && tokens.includes(unkName) ? tokens.indexOf(unkName) : undefined),
      padId: cfgToken('pad_token'),
      addBos: bosPost !== undefined || (post == null && cfg.add_bos_token === true),
      addEos: eosPost !== undefined || (post == null && cfg.add_eos_token === true),
      chatTemplate: typeof template === 'string' ? template : undefined,
      modelMaxLength: typeof mml === 'number' && mml < 1e15 ? mml : undefined,
      where,
    });
  }

  idToToken(id: number): string | undefined { return this.tokens[id]; }
  tokenToId(token: string): number | undefined { return this.vocab.get(token); }

  /** Text -> token ids. special: recognize control-token strings in the text (user-defined ones always are). */
  encode(text: string, opts: { addBos?: boolean; addEos?: boolean; special?: boolean } = {}): number[] {
    const ids: number[] = [];
    if ((opts.addBos ?? this.addBos) && this.bosId !== undefined) ids.push(this.bosId);
    const re = opts.special === false ? this.userRe : this.specialRe;
    let prev = 0;
    if (re) {
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        if (m.index > prev) this.encodeOrdinary(text.slice(prev, m.index), ids);
        ids.push(this.vocab.get(m[0])!);
        prev = m.index + m[0].length;
      }
    }
    if (prev < text.length) this.encodeOrdinary(prev === 0 ? text : text.slice(prev), ids);
    if ((opts.addEos ?? this.addEos) && this.eosId !== undefined) ids.push(this.eosId);
    return ids;
  }

  private encodeOrdinary(text: string, out: number[]): void {
    for (const piece of this.preTokenize(this.nfc ? text.normalize('NFC') : text)) {
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        ids = this.bpe(piece);
        if (this.cache.size >= CACHE_MAX) this.cache.clear();
        this.cache.set(piece, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
  }

  /** BPE of one pre-tokenized piece. */
  private bpe(piece: string): number[] {
    const bytes = utf8(piece);
    if (this.ignoreMerges) {
      let s = '';
      for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
      const id = this.vocab.get(s);
      if (id !== undefined) return [id];
    }
    const sym: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      const id = this.byteIds[bytes[i]];
      if (id >= 0) sym.push(id);
      else if (this.unkId !== undefined) sym.push(this.unkId); // tokenizers drops the byte when there is no unk
    }
    if (sym.length >= POS) throw new ValueError(`tokenizer: a pre-tokenized piece of ${sym.length} bytes is longer than the supported ${POS - 1}`);
    return mergeWord(sym, this.pairRank, this.mergeId);
  }

  /** Token ids -> text; bytes that are not valid UTF-8 become U+FFFD. */
  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    let buf = new Uint8Array(Math.max(16, ids.length * 4));
    let len = 0;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.tokens[id] === undefined)
        throw new ValueError(`decode: token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      if (opts.skipSpecial && (this.types[id] === CONTROL || this.types[id] === UNKNOWN)) continue;
      const b = this.pieceBytes[id] ?? (this.pieceBytes[id] = this.tokenBytes(id));
      if (len + b.length > buf.length) { const nb = new Uint8Array(2 * (len + b.length)); nb.set(buf.subarray(0, len)); buf = nb; }
      buf.set(b, len);
      len += b.length;
    }
    return DECODER.decode(buf.subarray(0, len));
  }

  /** The bytes a token stands for: added tokens literally, others through the byte alphabet. */
  private tokenBytes(id: number): Uint8Array {
    const t = this.tokens[id];
    if (this.types[id] === NORMAL || this.types[id] === UNKNOWN) {
      const b = new Uint8Array(t.length);
      let i = 0;
      for (; i < t.length; i++) {
        const byte = CHAR_TO_BYTE[t.charCodeAt(i)] ?? -1;
        if (byte < 0) break;
        b[i] = byte;
      }
      if (i === t.length) return b; // else like tokenizers' ByteLevel decoder: the token's own UTF-8
    }
    return utf8(t);
  }

  private tokenName(id: number | undefined): string | null { return id === undefined ? null : this.tokens[id]; }

  /** Control, unknown and user-defined tokens as tokenizers' added tokens. */
  private addedTokens(): { id: number; entry: Json }[] {
    const out: { id: number; entry: Json }[] = [];
    this.types.forEach((t, id) => {
      if (t === CONTROL || t === UNKNOWN || t === USER_DEFINED)
        out.push({ id, entry: { content: this.tokens[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: t !== USER_DEFINED } });
    });
    return out;
  }

  /** A Hugging Face tokenizer.json that encodes and decodes as this tokenizer does. */
  toTokenizerJson(): Record<string, unknown> {
    const vocab: Record<string, number> = {};
    for (const [t, id] of this.vocab) vocab[t] = id;
    const anySpace = this.merges.some(([a, b]) => a.includes(' ') || b.includes(' '));
    const template = (withBos: boolean, withEos: boolean) => {
      const specials: Json = {};
      const el = (id: number) => { specials[this.tokens[id]] = { id: this.tokens[id], ids: [id], tokens: [this.tokens[id]] }; return { SpecialToken: { id: this.tokens[id], type_id: 0 } }; };
      const seq = (s: string) => [...(withBos ? [el(this.bosId!)] : []), { Sequence: { id: s, type_id: 0 } }, ...(withEos ? [el(this.eosId!)] : [])];
      return { type: 'TemplateProcessing', single: seq('A'), pair: [...seq('A'), ...seq('B')], special_tokens: specials };
    };
    const bos = this.addBos && this.bosId !== undefined, eos = this.addEos && this.eosId !== undefined;
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: this.addedTokens().map((a) => ({ id: a.id, ...a.entry })),
      normalizer: this.nfc ? { type: 'NFC' } : null,
      pre_tokenizer: this.preJson,
      post_processor: bos || eos ? template(bos, eos) : { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE', dropout: null, unk_token: this.tokenName(this.unkId), continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: false, byte_fallback: false, ignore_merges: this.ignoreMerges,
        vocab,
        merges: anySpace ? this.merges.map(([a, b]) => [a, b]) : this.merges.map(([a, b]) => `${a} ${b}`),
      },
    };
  }

  /** tokenizer_config.json for transformers' PreTrainedTokenizerFast. */
  toTokenizerConfig(): Record<string, unknown> {
    return {
      tokenizer_class: 'PreTrainedTokenizerFast',
      add_bos_token: this.addBos,
      add_eos_token: this.addEos,
      bos_token: this.tokenName(this.bosId),
      eos_token: this.tokenName(this.eosId),
      unk_token: this.tokenName(this.unkId),
      pad_token: this.tokenName(this.padId),
      model_max_length: this.modelMaxLength ?? 1e30,
      clean_up_tokenization_spaces: false,
      ...(this.chatTemplate !== undefined ? { chat_template: this.chatTemplate } : {}),
      added_tokens_decoder: Object.fromEntries(this.addedTokens().map((a) => [String(a.id), a.entry])),
    };
  }
}

const DECODER = new TextDecoder('utf-8', { ignoreBOM: true }); // keep a leading U+FEFF

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A regex matching any of the strings, longest first at each position (undefined: none). */
function alternation(strings: string[]): RegExp | undefined {
  if (strings.length === 0) return undefined;
  const sorted = [...new Set(strings)].sort((a, b) => b.length - a.length);
  return new RegExp(sorted.map((s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|'), 'gu');
}
