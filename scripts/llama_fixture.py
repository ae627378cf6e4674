"""Tiny random Llama-family models and their reference outputs, computed with plain numpy in
float64 following Hugging Face's modeling_llama / modeling_qwen2 (rotate_half RoPE, repeat_kv,
SwiGLU, RMSNorm in float). Writes test/fixtures/tiny-llama/<name>/{config.json,model.safetensors,
reference.json}. Run: python3 scripts/llama_fixture.py"""
import json, os, struct
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'tiny-llama')

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype='<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)

def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

def rope(x, theta):  # x [heads, T, D], HF rotate_half
    T, D = x.shape[-2:]
    inv = 1.0 / theta ** (np.arange(0, D, 2) / D)
    ang = np.outer(np.arange(T), inv)
    cos = np.concatenate([np.cos(ang)] * 2, -1); sin = np.concatenate([np.sin(ang)] * 2, -1)
    rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * cos + rot * sin

def forward(c, W, ids):
    H, nh, nkv, D = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
    eps, theta = c['rms_norm_eps'], c['rope_theta']
    x = W['model.embed_tokens.weight'][ids]
    T = len(ids)
    for i in range(c['num_hidden_layers']):
        p = f'model.layers.{i}.'
        h = rmsnorm(x, W[p + 'input_layernorm.weight'], eps)
        def proj(n, y):
            out = y @ W[p + n + '.weight'].T
            return out + W[p + n + '.bias'] if p + n + '.bias' in W else out
        q = proj('self_attn.q_proj', h).reshape(T, nh, D).transpose(1, 0, 2)
        k = proj('self_attn.k_proj', h).reshape(T, nkv, D).transpose(1, 0, 2)
        v = proj('self_attn.v_proj', h).reshape(T, nkv, D).transpose(1, 0, 2)
        q, k = rope(q, theta), rope(k, theta)
        k = np.repeat(k, nh // nkv, 0); v = np.repeat(v, nh // nkv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(D)
        s = s + np.triu(np.full((T, T), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * D)
        x = x + proj('self_attn.o_proj', o)
        h = rmsnorm(x, W[p + 'post_attention_layernorm.weight'], eps)
        g = proj('mlp.gate_proj', h)
        x = x + proj('mlp.down_proj', g / (1 + np.exp(-g)) * proj('mlp.up_proj', h))
    x = rmsnorm(x, W['model.norm.weight'], eps)
    head = W['model.embed_tokens.weight'] if c['tie_word_embeddings'] else W['lm_head.weight']
    return x, x @ head.T

def make(name, model_type, tied, bias, seed):
    rng = np.random.default_rng(seed)
    c = dict(architectures=['LlamaForCausalLM' if model_type == 'llama' else 'Qwen2ForCausalLM'], model_type=model_type,
             vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=64,
             tie_word_embeddings=tied, hidden_act='silu', bos_token_id=1, eos_token_id=2)
    if model_type == 'llama': c['attention_bias'] = bias
    H, I, V, D = 32, 48, 61, 8
    W = {'model.embed_tokens.weight': rng.normal(0, 0.5, (V, H)), 'model.norm.weight': 1 + rng.normal(0, 0.1, H)}
    for i in range(2):
        p = f'model.layers.{i}.'
        for n, shape in [('self_attn.q_proj', (4 * D, H)), ('self_attn.k_proj', (2 * D, H)), ('self_attn.v_proj', (2 * D, H)),
                         ('self_attn.o_proj', (H, 4 * D)), ('mlp.gate_proj', (I, H)), ('mlp.up_proj', (I, H)), ('mlp.down_proj', (H, I))]:
            W[p + n + '.weight'] = rng.normal(0, 0.3, shape)
            if bias and n in ('self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'): W[p + n + '.bias'] = rng.normal(0, 0.2, shape[0])
        W[p + 'input_layernorm.weight'] = 1 + rng.normal(0, 0.1, H)
        W[p + 'post_attention_layernorm.weight'] = 1 + rng.normal(0, 0.1, H)
    if not tied: W['lm_head.weight'] = rng.normal(0, 0.5, (V, H))
    W = {k: v.astype(np.float32).astype(np.float64) for k, v in W.items()}  # what the f32 file holds
    ids = rng.integers(0, V, 12)
    hidden, logits = forward(c, W, ids)
    lp = logits - logits.max(-1, keepdims=True); lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    loss = -lp[np.arange(len(ids) - 1), ids[1:]].mean()
    d = os.path.join(OUT, name); os.makedirs(d, exist_ok=True)
    json.dump(c, open(os.path.join(d, 'config.json'), 'w'), indent=1)
    write_safetensors(os.path.join(d, 'model.safetensors'), W)
    json.dump({'ids': ids.tolist(), 'logits': logits.round(7).tolist(), 'hidden': hidden.round(7).tolist(), 'loss': float(loss)},
              open(os.path.join(d, 'reference.json'), 'w'))

make('llama-tied', 'llama', True, False, 1)
make('qwen2-untied', 'qwen2', False, True, 2)
