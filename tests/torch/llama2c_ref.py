"""llama2.c checkpoints: our loader and decoder against PyTorch.

usage: /usr/bin/python3 llama2c_ref.py [--bf16] PATH/TO/llama2c_greedy MODEL.bin [...]

For each file, this script reads the checkpoint itself (numpy, from the
format's definition: a header of 7 int32, then the float32 arrays), runs the
Llama forward pass in float64 in PyTorch (RMSNorm eps 1e-5, RoPE on adjacent
pairs with base 10000, grouped-query attention, SwiGLU, classifier tied when
vocab_size > 0), greedily decodes N tokens from BOS, and checks that ours
gives the same ids. Where the reference's top two logits are closer than
MARGIN, float32 rounding could legitimately flip the choice: that is
reported, and the comparison stops there (it has never happened on the
shared files).

--bf16: our decoder with rotary_decoder_bf16, against the same reference
with every matrix it rounds (q, k, v, output, the MLP's three and the
classifier, not the embedding) rounded to bfloat16 by PyTorch, nearest
even, and the arithmetic still float64.
"""
import subprocess
import sys

import numpy as np
import torch

N = 200
MARGIN = 1e-4


def load(path):
    raw = open(path, "rb").read()
    h = np.frombuffer(raw[:28], dtype="<i4")
    dim, hidden, L, nh, nkv, vocab, seq = (int(x) for x in h)
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // nh
    kv = nkv * hs
    f = np.frombuffer(raw[28:], dtype="<f4").astype(np.float64)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = torch.from_numpy(f[off:off + n].reshape(shape).copy())
        off += n
        return a

    w = dict(emb=take(vocab, dim), rms_att=take(L, dim), wq=take(L, dim, dim),
             wk=take(L, kv, dim), wv=take(L, kv, dim), wo=take(L, dim, dim),
             rms_ffn=take(L, dim), w1=take(L, hidden, dim), w2=take(L, dim, hidden),
             w3=take(L, hidden, dim), rms_f=take(dim))
    take(seq, hs // 2)
    take(seq, hs // 2)
    w["cls"] = w["emb"] if shared else take(vocab, dim)
    assert off == f.size, "file size does not match its header"
    return dict(dim=dim, L=L, nh=nh, nkv=nkv, hs=hs, vocab=vocab, seq=seq), w


def rmsnorm(x, g):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * g


def rope(x, T):
    # x: (T, heads, hs); rotate pairs (2i, 2i+1) by pos * 10000^(-2i/hs).
    hs = x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def logits(cfg, w, ids):
    T, nh, nkv, hs = len(ids), cfg["nh"], cfg["nkv"], cfg["hs"]
    x = w["emb"][torch.tensor(ids)]
    mask = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    for l in range(cfg["L"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rope((h @ w["wq"][l].T).view(T, nh, hs), T)
        k = rope((h @ w["wk"][l].T).view(T, nkv, hs), T)
        v = (h @ w["wv"][l].T).view(T, nkv, hs)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / hs ** 0.5 + mask
        o = torch.einsum("hts,shd->thd", torch.softmax(att, -1), v).reshape(T, nh * hs)
        x = x + o @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        g = h @ w["w1"][l].T
        x = x + (g * torch.sigmoid(g) * (h @ w["w3"][l].T)) @ w["w2"][l].T
    return rmsnorm(x, w["rms_f"]) @ w["cls"].T


MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "cls")


def main():
    args = sys.argv[1:]
    bf16 = args[0] == "--bf16"
    tool, paths = args[bf16], args[bf16 + 1:]
    failed = 0
    for path in paths:
        cfg, w = load(path)
        if bf16:
            for name in MATRICES:
                w[name] = w[name].to(torch.bfloat16).to(torch.float64)
        out = subprocess.run([tool, path, str(N)] + (["bf16"] if bf16 else []),
                             capture_output=True, text=True)
        ours = [int(t) for t in out.stdout.split()]
        if out.returncode != 0 or len(ours) != N:
            print(f"{path}: our decoder failed: {out.stderr.strip()}")
            failed += 1
            continue
        z = logits(cfg, w, [1] + ours[:-1])
        top = torch.topk(z, 2, dim=-1).values
        ref = torch.argmax(z, dim=-1).tolist()
        checked, bad = N, None
        for i in range(N):
            if float(top[i, 0] - top[i, 1]) < MARGIN:
                print(f"{path}: near tie at token {i}; checked {i} tokens")
                checked = i
                break
            if ref[i] != ours[i]:
                bad = i
                break
        ok = bad is None
        print(f"{path}{' (bf16)' if bf16 else ''}: {checked} greedy tokens " + ("match" if ok else
              f"DIFFER at {bad}: ours {ours[bad]}, reference {ref[bad]}"))
        print("  ids:", " ".join(map(str, ours[:32])), "...")
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
