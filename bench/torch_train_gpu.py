"""torch_train_gpu: training throughput of the same model as bench/cuda_train
in PyTorch on the GPU, the way one would write it to be fast there:
torch.compile, bf16 autocast, F.scaled_dot_product_attention (is_causal,
which takes the flash kernel), fused AdamW.

usage: python3 torch_train_gpu.py [--layers L] [--heads H] [--dim D] [--ff F]
           [--ctx T] [--batch B] [--vocab V] [--steps N] [--warmup-steps W]
           [--peak-tflops P] [--no-compile]

The architecture is librotary's default (docs/model.md), as bench/torch_train.py:
pre-norm decoder, RMSNorm (eps 1e-5), one fused q|k|v linear, RoPE with
interleaved pairs (2i, 2i+1), causal softmax attention, SwiGLU with one fused
gate|up linear, no biases, a tied head and mean cross-entropy. One step is
zero_grad + forward + backward + clip_grad_norm_(1.0) + AdamW. MFU uses the
same flops per token as bench/cuda_train (6 N + 12 L C T). Prints `key=value`
lines.
"""
import argparse
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
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope(x, cos, sin):
    # x: (B, H, T, hd), pairs (2i, 2i+1); cos, sin: (T, hd/2)
    x2 = x.float().unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).type_as(x)


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

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.h, self.hd).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
        g, u = self.gate_up(self.norm2(x)).split(self.ff, dim=-1)
        return x + self.down(F.silu(g) * u)


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.emb = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(Block(a.dim, a.heads, a.ff) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim)
        hd = a.dim // a.heads
        inv = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(a.ctx, dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * a.layers) ** 0.5 if n.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, tokens, targets):
        x = self.emb(tokens)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        logits = F.linear(self.norm(x), self.emb.weight)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def main():
    p = argparse.ArgumentParser()
    for k, v in [("layers", 12), ("heads", 12), ("dim", 768), ("ff", 2048), ("ctx", 1024),
                 ("batch", 16), ("vocab", 50304), ("steps", 10), ("warmup-steps", 3)]:
        p.add_argument("--" + k, type=int, default=v)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    torch.manual_seed(1)
    model = Model(a).to(dev)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.99), eps=1e-8, fused=True)
    step_model = model if a.no_compile else torch.compile(model)
    tok = torch.randint(0, a.vocab, (a.batch, a.ctx + 1), device=dev)
    x, y = tok[:, :-1].contiguous(), tok[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    t_compile = time.time()
    for _ in range(a.warmup_steps):
        loss = step()
    torch.cuda.synchronize()
    t_compile = time.time() - t_compile
    t0 = time.time()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.time() - t0) / a.steps
    n_params = sum(p.numel() for p in model.parameters())
    tps = a.batch * a.ctx / dt
    fpt = 6.0 * n_params + 12.0 * a.layers * a.dim * a.ctx
    print(f"device={torch.cuda.get_device_name()}")
    print(f"torch={torch.__version__}")
    print(f"compiled={not a.no_compile}")
    print(f"params={n_params}\nbatch={a.batch}\nctx={a.ctx}\nloss={loss.item():.4f}")
    print(f"warmup_s={t_compile:.1f}")
    print(f"ms_per_step={dt * 1e3:.2f}\ntokens_per_s={tps:.0f}")
    print(f"flops_per_token={fpt:.4g}\nmfu={tps * fpt / (a.peak_tflops * 1e12):.4f}")


if __name__ == "__main__":
    main()
