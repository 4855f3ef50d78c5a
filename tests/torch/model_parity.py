"""Model parity: our C forward, backward and AdamW against PyTorch.

usage: /usr/bin/python3 model_parity.py PATH/TO/parity_dump

For each configuration, parity_dump writes a checkpoint and the results of two
training steps. This script builds the same architecture in PyTorch from the
checkpoint's metadata alone, written from the papers' definitions, runs it in
float64 on the same batches, and compares logits, loss, every parameter
gradient at both steps, and clipping + AdamW (torch's, fed our gradients) for
steps 1 and 2.
Error measure per tensor: max |ours - torch| / max |torch|.
"""
import math
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

TOL = 1e-4

CONFIGS = [
    "pos=rope rope_pairing=interleaved",
    "pos=rope rope_pairing=half",
    "pos=rope rope_pairing=half rotary_dim=4 n_kv_head=2",
    "pos=rope rope_pairing=interleaved rotary_dim=6 n_kv_head=1 norm=layernorm bias=1",
    "pos=learned norm=layernorm mlp=gelu bias=1 tied=0",
    "pos=sinusoidal norm=layernorm mlp=gelu tied=0",
    "pos=alibi n_kv_head=2 mlp=gelu",
    "pos=alibi n_head=8 n_kv_head=4 d_model=48",
    "pos=alibi n_head=6 n_kv_head=3 d_model=48 norm=layernorm bias=1",
    "pos=none mlp=swiglu bias=1 tied=0",
    "pos=rope n_head=2 n_kv_head=2 d_model=32 rope_base=500000 mlp=swiglu norm=layernorm tied=0",
    "pos=t5 t5_buckets=6 t5_max_distance=8",
    "pos=t5 n_head=8 n_kv_head=2 d_model=48 norm=layernorm mlp=gelu tied=0",
    "attn=linear pos=rope rope_pairing=interleaved",
    "attn=linear pos=rope rope_pairing=half",
    "attn=linear pos=rope rope_pairing=half rotary_dim=4 n_kv_head=2 norm=layernorm bias=1",
    "attn=linear pos=rope rope_pairing=interleaved n_head=8 n_kv_head=2 d_model=48",
    "attn=linear pos=learned norm=layernorm mlp=gelu bias=1 tied=0",
    "attn=linear pos=none n_kv_head=1",
]


def rope_inv_freq(rd, base):
    return 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd))


def apply_rope(x, cfg):
    """x: (B, H, T, hd). RoFormer/GPT-J interleaved or GPT-NeoX half pairing."""
    hd = x.shape[-1]
    rd = cfg["rotary_dim"] or hd
    T = x.shape[2]
    ang = torch.arange(T, dtype=torch.float64)[:, None] * rope_inv_freq(rd, cfg["rope_base"])[None, :]
    xr, xp = x[..., :rd], x[..., rd:]
    if cfg["rope_pairing"] == "half":
        cos = torch.cat([ang.cos(), ang.cos()], -1)
        sin = torch.cat([ang.sin(), ang.sin()], -1)
        x1, x2 = xr[..., : rd // 2], xr[..., rd // 2:]
        rot = torch.cat([-x2, x1], -1)
    else:
        cos = ang.cos().repeat_interleave(2, -1)
        sin = ang.sin().repeat_interleave(2, -1)
        rot = torch.stack([-xr[..., 1::2], xr[..., ::2]], -1).flatten(-2)
    return torch.cat([xr * cos + rot * sin, xp], -1)


def alibi_slopes(n):
    def pow2(k):
        start = 2.0 ** (-8.0 / k)
        return [start ** (i + 1) for i in range(k)]

    if math.log2(n).is_integer():
        return pow2(n)
    p = 2 ** math.floor(math.log2(n))
    return pow2(p) + alibi_slopes(2 * p)[0::2][: n - p]


def t5_bucket(n, nb, md):
    """T5's causal bucket of distance n = i - j >= 0 (docs/model.md)."""
    exact = nb // 2
    if n < exact:
        return n
    return min(nb - 1, exact + math.floor(math.log(n / exact) / math.log(md / exact) * (nb - exact)))


def linear_attention(q, k, v, cfg):
    """RoFormer eq. 19 as a masked quadratic form: phi = elu + 1; RoPE (if
    any) rotates phi(q), phi(k) in the numerator only. q, k, v: (B, H, T, hd)."""
    T = q.shape[2]
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    rq, rk = (apply_rope(fq, cfg), apply_rope(fk, cfg)) if cfg["pos"] == "rope" else (fq, fk)
    mask = torch.ones(T, T, dtype=torch.float64).tril()
    num = ((rq @ rk.transpose(-1, -2)) * mask) @ v
    den = ((fq @ fk.transpose(-1, -2)) * mask).sum(-1, keepdim=True)
    return num / den


def sinusoid(T, C, amp):
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    w = 10000.0 ** (-torch.arange(0, C, 2, dtype=torch.float64) / C)
    pe = torch.zeros(T, C, dtype=torch.float64)
    pe[:, 0::2] = amp * torch.sin(pos * w)
    pe[:, 1::2] = amp * torch.cos(pos * w)
    return pe


def norm(x, P, name, cfg):
    w = P[name + ".weight"]
    if cfg["norm"] == "layernorm":
        b = P.get(name + ".bias")
        return F.layer_norm(x, (x.shape[-1],), w, b, cfg["norm_eps"])
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg["norm_eps"]) * w


def linear(x, P, name):
    return F.linear(x, P[name + ".weight"], P.get(name + ".bias"))


def forward(P, cfg, tokens, targets):
    B, T = tokens.shape
    C, nh, nkv = cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    hd = C // nh
    x = P["tok_emb.weight"][tokens]
    if cfg["pos"] == "learned":
        x = x + P["pos_emb.weight"][:T]
    elif cfg["pos"] == "sinusoidal":
        x = x + sinusoid(T, C, cfg["sin_amplitude"])
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    dist = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).to(torch.float64)
    buckets = torch.tensor([[t5_bucket(max(i - j, 0), cfg["t5_buckets"], cfg["t5_max_distance"])
                             for j in range(T)] for i in range(T)])
    for l in range(cfg["n_layer"]):
        pre = f"layers.{l}."
        h = norm(x, P, pre + "norm1", cfg)
        q = linear(h, P, pre + "attn.q").view(B, T, nh, hd).transpose(1, 2)
        k = linear(h, P, pre + "attn.k").view(B, T, nkv, hd).transpose(1, 2)
        v = linear(h, P, pre + "attn.v").view(B, T, nkv, hd).transpose(1, 2)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        if cfg["attn"] == "linear":
            a = linear_attention(q, k, v, cfg).transpose(1, 2).reshape(B, T, C)
        else:
            if cfg["pos"] == "rope":
                q, k = apply_rope(q, cfg), apply_rope(k, cfg)
            s = q @ k.transpose(-1, -2) / math.sqrt(hd)
            if cfg["pos"] == "alibi":
                slopes = torch.tensor(alibi_slopes(nh), dtype=torch.float64)
                s = s - slopes[:, None, None] * dist
            elif cfg["pos"] == "t5":
                # bias[h, i, j] = rel_bias[bucket(i - j), h], after the scaling
                s = s + P["rel_bias.weight"][buckets].permute(2, 0, 1)
            s = s.masked_fill(~mask, float("-inf"))
            a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + linear(a, P, pre + "attn.o")
        h = norm(x, P, pre + "norm2", cfg)
        if cfg["mlp"] == "swiglu":
            u = F.silu(linear(h, P, pre + "mlp.gate")) * linear(h, P, pre + "mlp.up")
        else:
            u = F.gelu(linear(h, P, pre + "mlp.up"), approximate="tanh")
        x = x + linear(u, P, pre + "mlp.down")
    x = norm(x, P, "norm_f", cfg)
    head = P["tok_emb.weight"] if cfg["tied"] else P["lm_head.weight"]
    logits = x @ head.T
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return logits, loss


def parse_config(meta):
    cfg = {}
    for k in ["n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "ctx", "vocab", "rotary_dim",
              "tied", "bias"]:
        cfg[k] = int(meta[k])
    for k in ["rope_base", "norm_eps", "sin_amplitude"]:
        cfg[k] = float(meta[k])
    for k in ["norm", "mlp", "pos", "rope_pairing"]:
        cfg[k] = meta[k]
    # Optional keys (docs/formats.md) and their defaults.
    cfg["attn"] = meta.get("attn", "softmax")
    cfg["t5_buckets"] = int(meta.get("t5_buckets", 32))
    cfg["t5_max_distance"] = int(meta.get("t5_max_distance", 128))
    return cfg


def rel_err(ours, ref, floor=1e-12):
    """max |ours - ref| / max(max |ref|, floor)."""
    ours = torch.as_tensor(ours, dtype=torch.float64)
    scale = max(ref.abs().max().item(), floor)
    return (ours - ref).abs().max().item() / scale


def check_config(tool, overrides, tmp):
    out = subprocess.run([tool, tmp] + overrides.split(), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"parity_dump failed: {out.stderr}")
    params, meta = st.load(os.path.join(tmp, "model.safetensors"))
    res, rmeta = st.load(os.path.join(tmp, "out.safetensors"))
    cfg = parse_config(meta)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    names = list(params.keys())
    tokens = torch.tensor(res["tokens"], dtype=torch.long)
    targets = torch.tensor(res["targets"], dtype=torch.long)
    errs = {}
    worst = ("", 0.0)
    # Gradients: torch's own forward/backward at our parameters before each step.
    for step in range(2):
        start = params if step == 0 else {n: res["step1." + n] for n in names}
        Q = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in start.items()}
        logits, loss = forward(Q, cfg, tokens[step], targets[step])
        loss.backward()
        errs[f"loss{step + 1}"] = abs(res["loss"][step] - loss.item()) / abs(loss.item())
        if step == 0:
            errs["logits"] = rel_err(res["logits"], logits.detach())
        # A tensor whose true gradient is ~0 (a key bias without RoPE: softmax
        # ignores a constant shift) is measured against 1e-3 of the largest
        # gradient of the model instead of its own ~0 scale.
        floor = 1e-3 * max(Q[n].grad.abs().max().item() for n in names)
        errs[f"grad{step + 1}"] = 0.0
        for n in names:
            e = rel_err(res[f"grad{step + 1}." + n], Q[n].grad, floor)
            errs[f"grad{step + 1}"] = max(errs[f"grad{step + 1}"], e)
            if e > worst[1]:
                worst = (f"grad{step + 1}.{n}", e)
    # Optimizer: torch's clip_grad_norm_ and AdamW fed with our gradients, so
    # this isolates the update from the (already checked) gradients.
    # Decay: matrices and embeddings, not vectors nor T5's bias table.
    decay = {n: P[n].dim() == 2 and n != "rel_bias.weight" for n in names}
    opt = torch.optim.AdamW([{"params": [P[n] for n in names if decay[n]],
                              "weight_decay": float(rmeta["weight_decay"])},
                             {"params": [P[n] for n in names if not decay[n]], "weight_decay": 0.0}],
                            lr=float(rmeta["lr"]), betas=(float(rmeta["beta1"]), float(rmeta["beta2"])),
                            eps=float(rmeta["eps"]))
    for step in range(2):
        before = params if step == 0 else {n: res["step1." + n] for n in names}
        with torch.no_grad():
            for n in names:
                P[n].copy_(torch.tensor(before[n], dtype=torch.float64))
                P[n].grad = torch.tensor(res[f"grad{step + 1}." + n], dtype=torch.float64)
        gn = torch.nn.utils.clip_grad_norm_([P[n] for n in names], float(rmeta["clip"]))
        errs[f"gnorm{step + 1}"] = abs(res["grad_norm"][step] - gn.item()) / gn.item()
        opt.step()
        # Compare the update p_after - p_before: the parameters dwarf it.
        with torch.no_grad():
            errs[f"adamw{step + 1}"] = max(
                rel_err(res[f"step{step + 1}." + n] - before[n],
                        P[n] - torch.tensor(before[n], dtype=torch.float64)) for n in names)
    return errs, worst, len(names)


def main():
    tool = sys.argv[1]
    torch.set_num_threads(2)
    failed = 0
    worst_all = {}
    for overrides in CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            errs, worst, n = check_config(tool, overrides, tmp)
        bad = {k: v for k, v in errs.items() if not (v < TOL)}
        status = "FAIL" if bad else "ok"
        failed += bool(bad)
        print(f"{status:4} {overrides:75} " + " ".join(f"{k}={v:.1e}" for k, v in errs.items())
              + f"  ({n} tensors, worst {worst[0]})")
        for k, v in errs.items():
            worst_all[k] = max(worst_all.get(k, 0.0), v)
    print("largest relative errors: " + " ".join(f"{k}={v:.2e}" for k, v in worst_all.items()))
    print(f"{len(CONFIGS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
