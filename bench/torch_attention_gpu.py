"""torch_attention_gpu: causal attention forward and backward in PyTorch on
the GPU, F.scaled_dot_product_attention(is_causal=True) in bf16 (the flash
kernel), on the shape of bench/cuda_attention, which times rotary's kernels.

usage: python3 torch_attention_gpu.py [--batch B] [--ctx T] [--heads H]
           [--head-dim D] [--reps N]

Same TFLOP/s convention as cuda_attention (causal half; backward 2.5 times
the forward). Prints key=value lines.
"""
import argparse

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    torch.manual_seed(3)
    shape = (a.batch, a.heads, a.ctx, a.head_dim)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    fwd = bwd = 0.0
    for it in range(-3, a.reps):
        ev[0].record()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        ev[1].record()
        out.backward(dout)
        ev[2].record()
        torch.cuda.synchronize()
        if it >= 0:
            fwd += ev[0].elapsed_time(ev[1]) / a.reps
            bwd += ev[1].elapsed_time(ev[2]) / a.reps
        q.grad = k.grad = v.grad = None
    flop = 4.0 * a.batch * a.heads * a.ctx * a.ctx * a.head_dim / 2
    print("torch=%s" % torch.__version__)
    print("fwd_ms=%.3f\nbwd_ms=%.3f" % (fwd, bwd))
    print("fwd_tflops=%.1f\nbwd_tflops=%.1f" % (flop / fwd / 1e9, 2.5 * flop / bwd / 1e9))


if __name__ == "__main__":
    main()
