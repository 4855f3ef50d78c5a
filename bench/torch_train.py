"""torch_train: training throughput of the same model in PyTorch (eager, CPU).

usage: /usr/bin/python3 torch_train.py [--layers L] [--heads H] [--dim D] [--ff F]
           [--ctx T] [--batch B] [--vocab V] [--steps N] [--warmup-steps W]
           [--threads P] [--pos rope|none] [--rope-impl real|complex]

The architecture is librotary's default (docs/model.md): pre-norm decoder,
RMSNorm (eps 1e-5, no bias), one fused q|k|v linear, RoPE with interleaved
pairs (2i, 2i+1) from precomputed cos/sin buffers, explicit causal softmax
attention, SwiGLU with one fused gate|up linear, no biases, a tied head and
mean cross-entropy. One step is zero_grad + forward + backward +
clip_grad_norm_(1.0) + AdamW(lr 1e-3, betas (0.9, 0.99), eps 1e-8, wd 0.1 on
matrices and the embedding), as bench/train_bench.c does.

Written to be as fast as plain eager PyTorch reasonably gets: fused
projections, RoPE on q and k in one pass, an additive precomputed mask,
set_to_none gradients, foreach AdamW. Run it with Debian's torch linked to the
OpenMP OpenBLAS (LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp);
bench/train-vs-pytorch does. Prints `key=value` lines like train_bench.
"""
import argparse
import inspect
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.h, self.hd, self.ff = h, d // h, ff
        self.norm1 = RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.norm2 = RMSNorm(d)
        self.gate_up = nn.Linear(d, 2 * ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x, rope, mask):
        # x: (B*T, C). Everything outside attention stays 2-D: torch 1.13's CPU
        # cat (the backward of split/unbind/stack) is ~10x slower on 3-D+
        # tensors split along the last dim than on 2-D ones.
        BT, C = x.shape
        T = mask.shape[0]
        B = BT // T
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.h, self.hd)
        if rope is not None:
            qk = rope(qkv[:, :, :2])  # q and k in one pass: (B, T, 2, h, hd)
            q, k = qk[:, :, 0], qk[:, :, 1]
        else:
            q, k = qkv[:, :, 0], qkv[:, :, 1]
        v = qkv[:, :, 2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, h, T, hd)
        s = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(self.hd)).add_(mask)
        a = torch.matmul(s.softmax(-1), v).transpose(1, 2).reshape(BT, C)
        x = x + self.o(a)
        g, u = self.gate_up(self.norm2(x)).split(self.ff, -1)
        return x + self.down(F.silu(g) * u)


class RoPE(nn.Module):
    """Interleaved pairs (2i, 2i+1), angle t * base^(-2i/hd), tables from float64."""

    def __init__(self, hd, ctx, base=10000.0, impl="real"):
        super().__init__()
        inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.arange(ctx, dtype=torch.float64)[:, None] * inv[None, :]  # (ctx, hd/2)
        self.impl = impl
        # Shaped to broadcast over (B, T, 2, h, hd/2).
        self.register_buffer("cos", ang.cos().float()[:, None, None, :], persistent=False)
        self.register_buffer("sin", ang.sin().float()[:, None, None, :], persistent=False)
        self.register_buffer("cis", torch.polar(torch.ones_like(ang), ang).to(torch.complex64)[:, None, None, :],
                             persistent=False)

    def forward(self, x):
        T = x.shape[1]
        if self.impl == "complex":
            xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
            return torch.view_as_real(xc * self.cis[:T]).flatten(-2)
        x2 = x.unflatten(-1, (-1, 2))
        x0, x1 = x2[..., 0], x2[..., 1]
        c, s = self.cos[:T], self.sin[:T]
        return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), -1).flatten(-2)


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.emb = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(Block(a.dim, a.heads, a.ff) for _ in range(a.layers))
        self.norm_f = RMSNorm(a.dim)
        self.rope = RoPE(a.dim // a.heads, a.ctx, impl=a.rope_impl) if a.pos == "rope" else None
        self.register_buffer("mask", torch.full((a.ctx, a.ctx), float("-inf")).triu(1), persistent=False)
        std = 0.02
        for n, p in self.named_parameters():
            if p.dim() == 2:
                scaled = n.endswith("o.weight") or n.endswith("down.weight")
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * a.layers) if scaled else std)

    def forward(self, tokens, targets):
        B, T = tokens.shape
        x = self.emb(tokens.view(-1))  # (B*T, C)
        mask = self.mask[:T, :T]
        for blk in self.blocks:
            x = blk(x, self.rope, mask)
        logits = F.linear(self.norm_f(x), self.emb.weight)  # tied head
        return F.cross_entropy(logits, targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ff", type=int, default=352)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pos", choices=["rope", "none"], default="rope")
    ap.add_argument("--rope-impl", choices=["real", "complex"], default="complex")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(1337)
    model = Model(a)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    kw = {"foreach": True} if "foreach" in inspect.signature(torch.optim.AdamW).parameters else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), eps=1e-8, **kw)
    g = torch.Generator().manual_seed(42)
    tokens = torch.randint(0, a.vocab, (a.batch, a.ctx), generator=g)
    targets = torch.randint(0, a.vocab, (a.batch, a.ctx), generator=g)

    first_loss = loss = None
    t0 = 0.0
    for s in range(a.warmup_steps + a.steps):
        if s == a.warmup_steps:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s == 0:
            first_loss = loss.item()
    loss = loss.item()  # eager CPU: already synchronous
    secs = time.perf_counter() - t0

    n_params = sum(p.numel() for p in model.parameters())
    flops_tok = 6.0 * n_params + 12.0 * a.layers * a.ctx * a.dim
    ntok = a.batch * a.ctx * a.steps
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "layers": a.layers, "heads": a.heads, "dim": a.dim, "ff": a.ff, "ctx": a.ctx,
        "batch": a.batch, "vocab": a.vocab, "pos": a.pos,
        "params": n_params,
        "steps": a.steps,
        "warmup_steps": a.warmup_steps,
        "first_loss": f"{first_loss:.4f}",
        "loss": f"{loss:.4f}",
        "ms_per_step": f"{1e3 * secs / a.steps:.3f}",
        "tokens_per_s": f"{ntok / secs:.1f}",
        "flops_per_token": f"{flops_tok:.0f}",
        "flops_convention": "6*N_all_params+12*L*T*d",
        "gflops": f"{flops_tok * ntok / secs * 1e-9:.2f}",
        "peak_rss_mb": f"{rss_mb:.1f}",
        "blas_libdir": os.environ.get("LD_LIBRARY_PATH", ""),
    }
    for k, v in out.items():
        print(f"{k}={v}")


if __name__ == "__main__":
    main()
