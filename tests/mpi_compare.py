"""mpi_compare.py: compare two rotary runs for tests/mpi_*.sh.

usage: mpi_compare.py same|close RUN_A RUN_B [TOL]
  same   the checkpoints' tensors (weights and AdamW moments) equal byte for
         byte, and metrics.csv's step, losses and lr columns equal as text
  close  every weight and every train and val loss within TOL (absolute),
         each AdamW moment within TOL times the largest value of its tensor
         (v is a square of gradients: 1e-3 at most here); prints the largest
         differences
"""
import csv
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch"))
import numpy as np  # noqa: E402
import st  # noqa: E402


def metrics(run):
    with open(os.path.join(run, "metrics.csv")) as f:
        return [r[:4] for r in csv.reader(f)]


def main():
    mode, a, b = sys.argv[1:4]
    ta, ma = st.load(os.path.join(a, "checkpoint.safetensors"))
    tb, mb = st.load(os.path.join(b, "checkpoint.safetensors"))
    assert ta.keys() == tb.keys(), "different tensors"
    assert ma.get("train.step") == mb.get("train.step"), "different steps"
    ra, rb = metrics(a), metrics(b)
    assert len(ra) == len(rb), f"metrics: {len(ra)} vs {len(rb)} rows"
    if mode == "same":
        diff = [k for k in ta if ta[k].tobytes() != tb[k].tobytes()]
        assert not diff, f"tensors differ: {diff[:5]}"
        assert ra == rb, "metrics differ"
        print(f"same: {len(ta)} tensors and {len(ra) - 1} metric rows identical")
        return
    tol = float(sys.argv[4])
    worst = {"weights": 0.0, "optim.m": 0.0, "optim.v": 0.0}
    for k in ta:
        d = float(np.max(np.abs(ta[k].astype(np.float64) - tb[k]))) if ta[k].size else 0.0
        if k.startswith("optim."):  # relative to the tensor's largest value
            d /= max(float(np.max(np.abs(ta[k]))), 1e-30)
        key = k if k.startswith("optim.") else "weights"
        worst[key] = max(worst[key], d)
    loss = 0.0
    for x, y in zip(ra[1:], rb[1:]):
        assert x[0] == y[0] and x[3] == y[3], f"step/lr differ: {x} {y}"
        for i in (1, 2):
            assert (x[i] == "") == (y[i] == ""), f"val loss present in one only: {x} {y}"
            if x[i]:
                loss = max(loss, abs(float(x[i]) - float(y[i])))
    print(f"close: max |dw| {worst['weights']:.3g}, |dm|/max|m| {worst['optim.m']:.3g}, "
          f"|dv|/max|v| {worst['optim.v']:.3g}, |dloss| {loss:.3g} (tolerance {tol:g})")
    assert worst["weights"] <= tol and worst["optim.m"] <= tol and worst["optim.v"] <= tol
    assert loss <= tol


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"mismatch: {e}")
        sys.exit(1)
