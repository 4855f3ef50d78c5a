"""RoPE parity: our C forward/backward against PyTorch float64 references.

usage: /usr/bin/python3 tests/torch/rope_parity.py PATH_TO_rope_dump

The two references below are written from the published definitions:
  half        GPT-NeoX: rotate_half(x) = cat(-x2, x1), x*cos + rotate_half(x)*sin,
              cos/sin of cat(freqs, freqs); only the first rotary_dim dims rotate.
  interleaved GPT-J / RoFormer: rotate_every_two(x) = stack(-x[1::2], x[::2])
              flattened, cos/sin repeat_interleave(2).
The backward reference is autograd of sum(ref(x) * g) with respect to x.
The dumped inputs are float32; the references run in float64 on those values, so
the error measured is that of our float32 computation alone.
"""
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

TOL = 1e-6  # max abs error; inputs are N(0, 1)
F64 = torch.float64


def inv_freq(rotary_dim, base):
    return 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=F64) / rotary_dim))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_neox(x, pos, rotary_dim, base):
    """x: (B, T, H, D), pos: (T)."""
    freqs = pos.to(F64)[:, None] * inv_freq(rotary_dim, base)[None, :]  # (T, rd/2)
    emb = torch.cat((freqs, freqs), dim=-1)                               # (T, rd)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


def rotate_every_two(x):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope_gptj(x, pos, rotary_dim, base):
    sinusoid = pos.to(F64)[:, None] * inv_freq(rotary_dim, base)[None, :]  # (T, rd/2)
    sin = sinusoid.sin().repeat_interleave(2, dim=-1)[None, :, None, :]
    cos = sinusoid.cos().repeat_interleave(2, dim=-1)[None, :, None, :]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos + rotate_every_two(x_rot) * sin, x_pass), dim=-1)


def parse_case(s):
    kv = dict(item.split("=", 1) for item in s.split())
    return kv["pairing"], int(kv["head_dim"]), int(kv["rotary_dim"]), float(kv["base"])


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rope.safetensors")
        subprocess.run([sys.argv[1], path], check=True)
        tensors, meta = st.load(path)

    failed = 0
    worst = 0.0
    n_cases = int(meta["n_cases"])
    for k in range(n_cases):
        pairing, head_dim, rotary_dim, base = parse_case(meta[f"case{k}"])
        ref = {"half": rope_neox, "interleaved": rope_gptj}[pairing]
        x = torch.from_numpy(tensors[f"case{k}.x"]).to(F64)
        g = torch.from_numpy(tensors[f"case{k}.g"]).to(F64)
        pos = torch.from_numpy(tensors[f"case{k}.pos"]).long()
        fwd = torch.from_numpy(tensors[f"case{k}.fwd"]).to(F64)
        bwd = torch.from_numpy(tensors[f"case{k}.bwd"]).to(F64)
        assert x.shape[-1] == head_dim

        xr = x.clone().requires_grad_(True)
        y = ref(xr, pos, rotary_dim, base)
        (dx,) = torch.autograd.grad((y * g).sum(), xr)

        err_f = (fwd - y.detach()).abs().max().item()
        err_b = (bwd - dx).abs().max().item()
        tail_same = torch.equal(fwd[..., rotary_dim:], x[..., rotary_dim:])
        ok = err_f < TOL and err_b < TOL and tail_same
        failed += not ok
        worst = max(worst, err_f, err_b)
        print(f"{'ok' if ok else 'FAIL':4} case{k} {pairing:11} head_dim={head_dim:<3} "
              f"rotary_dim={rotary_dim:<3} base={base:<8g} pos={pos.min().item()}.."
              f"{pos.max().item():<5} fwd max abs err {err_f:.2e}  bwd {err_b:.2e}  "
              f"(max |x| {x.abs().max().item():.2f})")
    status = f"{failed} of {n_cases} cases FAILED" if failed else f"all {n_cases} cases passed"
    print(f"rope_parity: {status}, largest abs err {worst:.2e} (tol {TOL:.0e})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
