"""Minimal safetensors reader for the parity tests (independent of our C code)."""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "I32": np.int32, "F64": np.float64}


def load(path):
    """Return ({name: np.ndarray}, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dt = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(raw[base + begin:base + end], dtype=dt)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta
