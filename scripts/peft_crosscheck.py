"""Loads quantlora's PEFT adapter onto the base model with PEFT and compares the logits with
quantlora's (and the merged Hugging Face export's). Input: the folder written by
scripts/peft-crosscheck-prep.ts. Usage: python3 scripts/peft_crosscheck.py DIR OUT.json"""
import json, sys
import torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
import peft

d, out = sys.argv[1], sys.argv[2]
ours = json.load(open(f"{d}/ours.json"))
ids = torch.tensor([ours["ids"]])
want = torch.tensor(ours["logits"]).reshape(1, len(ours["ids"]), ours["vocab"])
torch.backends.cuda.matmul.allow_tf32 = False
base = AutoModelForCausalLM.from_pretrained(f"{d}/base", torch_dtype=torch.float32)
model = PeftModel.from_pretrained(base, f"{d}/adapter").eval()
merged = AutoModelForCausalLM.from_pretrained(f"{d}/merged", torch_dtype=torch.float32).eval()
with torch.no_grad():
    got = model(ids).logits
    got_merged = merged(ids).logits
    plain = AutoModelForCausalLM.from_pretrained(f"{d}/base", torch_dtype=torch.float32).eval()(ids).logits
res = {
    "peft_version": peft.__version__,
    "peft_vs_quantlora_max_abs": float((got - want).abs().max()),
    "merged_vs_quantlora_max_abs": float((got_merged - want).abs().max()),
    "adapter_effect_max_abs": float((plain - want).abs().max()),
    "logit_scale": float(want.abs().max()),
}
print(json.dumps(res, indent=1))
json.dump(res, open(out, "w"), indent=1)
