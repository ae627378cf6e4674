#!/usr/bin/env python3
"""Reference token ids from llama.cpp's own tokenizer, for test/tokenizer.test.ts.

Loads the SmolLM2 GGUF vocab with llama-cpp-python (Llama(model_path, vocab_only=True)) and writes
test/fixtures/tokenizer/smollm2-llamacpp.json = {llama_cpp_version, model, cases: [{pre, text, ids}]},
ids from tokenize(add_bos=False, special=True). Besides the file's own pre-tokenizer ('smollm'), the
same vocab is re-written into metadata-only GGUFs with tokenizer.ggml.pre set to gpt-2, llama-bpe,
qwen2 and default, so our versions of those regex sets are checked against llama.cpp as well.

Usage: python3 scripts/tokenizer_fixture.py [model.gguf] [wiki.test.raw]
Needs: pip install llama-cpp-python gguf
"""
import json
import os
import sys
import tempfile

import gguf
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser('~/.cache/quantlora/models/SmolLM2-135M-Instruct.Q4_1.gguf')
WIKI = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, '..', '..', 'shared', 'data', 'wikitext-2-raw', 'wiki.test.raw')
OUT = os.path.join(HERE, '..', 'test', 'fixtures', 'tokenizer', 'smollm2-llamacpp.json')

TRICKY = [
    'Hello world',
    '',
    'a',
    '  leading spaces and trailing   ',
    'multiple   spaces\tand\ttabs \t mixed',
    'line1\nline2\n\n\nline5\r\nwindows\r\n',
    'spaces before newline   \n  after\n \n',
    '   \n   \n\t\t\n',
    'numbers 1234567890 3.14159 -42 1,000,000 2024-01-01 x1y2z3 v2.0.1 007',
    "I'm you're we've they'll she'd it's I'M YOU'RE WE'VE 's 's's ''' '",
    'café naïve résumé façade Ångström Straße',
    'Combining: e\u0301 a\u0308 n\u0303 vs é ä ñ',
    '日本語のテキスト、中文文本，한국어 텍스트',
    'Ελληνικά Русский текст עברית العربية हिन्दी ไทย',
    'emoji 😀👍🏽👨‍👩‍👧‍👦 🇫🇷 ❤️ 🤖🚀',
    'superscripts ²³ fractions ½¾ roman Ⅻ circled ①② full-width １２３ ＡＢＣ',
    'zero\u200bwidth\u200djoiner non\u00a0breaking\u3000ideographic\u2009thin space',
    'math ∑∫√∞≈≠ ±×÷ →⇒ ∀x∈ℝ',
    'NEL\u0085char BOM\ufeff here\u2028line sep \u0085\u0085 \ufeff\ufeff x',
    'digits ١٢٣ ௧௨ ๑๒ 𝟏𝟐𝟑 and ¼ cup, 10½ ft',
    'symbols !@#$%^&*()_+-=[]{}|;\':",./<>?`~',
    'repeated !!!!!!!!!! ........ ------ ====== ****',
    'code: def f(x):\n    return x**2  # square\n\tif a != b: pass\n\n',
    'URL https://example.com/path?q=1&r=2#frag email a.b@c.org',
    'supercalifragilisticexpialidocious antidisestablishmentarianism',
    '<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n',
    '<|endoftext|><|endoftext|>text<|endoftext|> <|im_start|> partial <|im_ <im_end|> <|im_end|>x',
    '<repo_name>quantlora<file_sep>src/main.ts<gh_stars>10',
]

OTHER_PRES = ['gpt-2', 'llama-bpe', 'qwen2', 'default']


def wiki_chunks(n_bytes=30000, n_chunks=6):
    with open(WIKI, encoding='utf-8', newline='') as f:
        text = f.read(n_bytes)
    text = text[: text.rfind('\n') + 1]
    lines = text.splitlines(keepends=True)
    per = max(1, len(lines) // n_chunks)
    return [''.join(lines[i:i + per]) for i in range(0, len(lines), per)]


def retagged_copy(reader, pre, path):
    """A GGUF with the same metadata (no tensors) but tokenizer.ggml.pre = pre."""
    arch = bytes(reader.fields['general.architecture'].parts[-1]).decode()
    w = gguf.GGUFWriter(path, arch)
    for key, field in reader.fields.items():
        if key.startswith('GGUF.') or key == 'general.architecture':
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = pre if key == 'tokenizer.ggml.pre' else field.contents()
        w.add_key_value(key, val, vtype, sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tokenize(llm, text):
    return llm.tokenize(text.encode('utf-8'), add_bos=False, special=True)


def main():
    cases = []
    llm = Llama(model_path=MODEL, vocab_only=True, verbose=False)
    wiki = wiki_chunks()
    for text in TRICKY + wiki:
        cases.append({'pre': 'smollm', 'text': text, 'ids': tokenize(llm, text)})
    del llm
    reader = gguf.GGUFReader(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        for pre in OTHER_PRES:
            path = os.path.join(tmp, f'{pre}.gguf')
            retagged_copy(reader, pre, path)
            llm = Llama(model_path=path, vocab_only=True, verbose=False)
            for text in TRICKY + wiki[:1]:
                cases.append({'pre': pre, 'text': text, 'ids': tokenize(llm, text)})
            del llm
    out = {'llama_cpp_version': llama_cpp.__version__, 'model': os.path.basename(MODEL), 'cases': cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, 'w', encoding='utf-8', newline='') as f:
        json.dump(out, f, ensure_ascii=False)
    print(f'wrote {len(cases)} cases to {OUT}')


if __name__ == '__main__':
    main()
