"""PyTorch references for bench/gpu.ts, on the same GPU in the same run (prints one JSON line).

  python3 bench/torch_ref.py matmul N          fp32 N^3 matmul, TF32 off: {"gflops": ...}
  python3 bench/torch_ref.py rilq DIR T R      one RILQ-equivalent training step in eager mode:
      {"ms": ...}
The RILQ step mirrors quantlora's (ts/methods/rilq.ts): the teacher (the Hugging Face model in
DIR, quantlora's export) computes the target hidden states without gradients; the student is the
same architecture with LoRA (rank R, alpha R, PEFT) on q/k/v/o/gate/up/down and frozen base
weights (dense fp32: PyTorch has no packed 2-bit kernels, so its student is if anything cheaper);
loss = 0.5 * MSE(final hidden states) + 0.5 * next-token cross-entropy over T tokens, backward,
one Adam step on the adapters.
"""
import json
import sys
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"


def timed(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def matmul(n):
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    s = timed(lambda: a @ b, 20)
    return {"gflops": 2 * n**3 / s / 1e9, "ms": s * 1e3, "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}


def rilq(path, tokens, rank):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).to(dev)
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    student = get_peft_model(student, cfg)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    vocab = teacher.config.vocab_size
    ids = (torch.arange(tokens, device=dev) * 7919 % vocab).unsqueeze(0)
    inner = student.base_model.model

    def step():
        with torch.no_grad():
            target = teacher.model(ids).last_hidden_state
        h = inner.model(ids).last_hidden_state
        logits = inner.lm_head(h)
        mse = torch.mean((h - target) ** 2)
        ce = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
        loss = 0.5 * mse + 0.5 * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    s = timed(step, 10)
    return {"ms": s * 1e3, "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "matmul":
        print(json.dumps(matmul(int(sys.argv[2]))))
    elif kind == "rilq":
        print(json.dumps(rilq(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        raise SystemExit(f"unknown reference {kind!r}")
