"""Cross-check of quantlora against PyTorch + transformers (run on the GPU machine).

Loads the Hugging Face directory that `quantlora export` wrote, tokenizes the evaluation text with
the exported tokenizer (through transformers) and compares the ids with quantlora's, computes
perplexity on quantlora's windows (fp32, TF32 off) and compares it with quantlora's own result,
and compares the logits of window 0 with the ones quantlora wrote.

  python3 scripts/hf_crosscheck.py --hf DIR --text FILE --ids ids.i32 --logits w0.f32 \
      --ours eval-*.json --seqlen 512 --out result.json
"""
import argparse, glob, json, math, time
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument('--hf', required=True); ap.add_argument('--text', required=True)
ap.add_argument('--ids', required=True); ap.add_argument('--logits', required=True)
ap.add_argument('--ours', nargs='+', required=True); ap.add_argument('--seqlen', type=int, default=512)
ap.add_argument('--out', required=True)
a = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = 'cuda' if torch.cuda.is_available() else 'cpu'

ours_ids = np.fromfile(a.ids, dtype='<i4')
tok = AutoTokenizer.from_pretrained(a.hf)
text = open(a.text, encoding='utf-8', newline='').read()  # keep CRLF as in the file
t0 = time.time()
hf_ids = np.array(tok(text, add_special_tokens=False)['input_ids'], dtype=np.int64)
mismatch = next((i for i in range(min(len(hf_ids), len(ours_ids))) if hf_ids[i] != ours_ids[i]), None)
ids_equal = len(hf_ids) == len(ours_ids) and mismatch is None

model = AutoModelForCausalLM.from_pretrained(a.hf, torch_dtype=torch.float32).to(dev).eval()
n = len(ours_ids) // a.seqlen
ids = torch.tensor(ours_ids[: n * a.seqlen], dtype=torch.long, device=dev).view(n, a.seqlen)
nll = []
with torch.no_grad():
    for w in range(n):
        logits = model(ids[w : w + 1]).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[w, 1:])
        nll.append(loss.item())
        if w == 0:
            ours_logits = torch.from_numpy(np.fromfile(a.logits, dtype='<f4').reshape(a.seqlen, -1)).to(dev)
            diff = (logits[0] - ours_logits).abs()
            logits_max_abs = diff.max().item()
            logits_scale = logits[0].abs().max().item()
            argmax_agree = (logits[0].argmax(-1) == ours_logits.argmax(-1)).float().mean().item()
torch_ppl = math.exp(sum(nll) / n)

ours = {}
for f in sorted(p for pat in a.ours for p in glob.glob(pat)):
    r = json.load(open(f))
    for i, v in enumerate(r['windowNll']): ours[r['first'] + i] = v
ours_n = len(ours)
ours_ppl = math.exp(sum(ours.values()) / ours_n) if ours_n else None
same = [w for w in ours if w < n]
torch_same = math.exp(sum(nll[w] for w in same) / len(same)) if same else None
ours_same = math.exp(sum(ours[w] for w in same) / len(same)) if same else None
res = dict(
    device=torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu', torch=torch.__version__,
    tokens=len(ours_ids), hf_tokens=len(hf_ids), ids_equal=ids_equal, first_id_mismatch=mismatch,
    seqlen=a.seqlen, windows=n, torch_ppl=torch_ppl, ours_windows=ours_n, ours_ppl=ours_ppl,
    compared_windows=len(same), torch_ppl_same_windows=torch_same, ours_ppl_same_windows=ours_same,
    ppl_rel_diff=abs(ours_same - torch_same) / torch_same if same else None,
    max_window_nll_diff=max(abs(ours[w] - nll[w]) for w in same) if same else None,
    logits_max_abs_diff=logits_max_abs, logits_max_abs=logits_scale, argmax_agreement=argmax_agree,
    seconds=time.time() - t0,
)
json.dump(res, open(a.out, 'w'), indent=1)
print(json.dumps(res, indent=1))
