"""kernel_times: sum the GPU time of each kernel in an Nsight Compute CSV
(ncu --csv --page raw --metrics gpu__time_duration.sum[,dram__bytes.sum] ...)
and print the kernels by total time, largest first, with their share of the
whole; with dram__bytes.sum also the bytes each moved to and from memory
and the rate (GB/s), to hold against the memory's bound.

usage: python3 kernel_times.py NCU.csv [TOP]
"""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    # "void ns::kernel<64>(float *, ...)" -> "kernel<64>"
    name = re.sub(r"\(.*$", "", name).replace("void ", "").strip()
    name = re.sub(r"^.*::(?=[A-Za-z_])", "", name)
    return name[:60]


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    head = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if head is None:
        sys.exit("kernel_times: no 'Kernel Name' column in %s" % path)
    cols = rows[head]
    name_at = cols.index("Kernel Name")
    time_at = cols.index("gpu__time_duration.sum")
    # The row after the names gives each column's unit.
    units = rows[head + 1] if len(rows) > head + 1 else []
    bytes_at = cols.index("dram__bytes.sum") if "dram__bytes.sum" in cols else None
    unit = units[bytes_at] if bytes_at is not None and bytes_at < len(units) else ""
    scale = BYTE_UNITS.get(unit.strip().lower())
    if bytes_at is not None and scale is None:
        print("kernel_times: dram__bytes.sum in unknown unit '%s'; bytes left out" % unit)
        bytes_at = None
    total, count, moved = defaultdict(float), defaultdict(int), defaultdict(float)
    for r in rows[head + 1:]:
        if len(r) <= max(name_at, time_at):
            continue
        try:
            t = float(r[time_at].replace(",", ""))
            b = float(r[bytes_at].replace(",", "")) * scale if bytes_at is not None else 0.0
        except (ValueError, IndexError):
            continue  # the units row
        k = short(r[name_at])
        total[k] += t
        count[k] += 1
        moved[k] += b
    whole = sum(total.values())
    if not whole:
        sys.exit("kernel_times: no kernel times in %s" % path)
    extra = bytes_at is not None
    print("%-60s %6s %10s %6s" % ("kernel", "calls", "ms", "share") +
          (" %9s %8s" % ("GB", "GB/s") if extra else ""))
    for k, t in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        line = "%-60s %6d %10.3f %5.1f%%" % (k, count[k], t / 1e6, 100 * t / whole)
        if extra:
            line += " %9.3f %8.0f" % (moved[k] / 1e9, moved[k] / t if t else 0.0)
        print(line)
    line = "%-60s %6d %10.3f" % ("all kernels", sum(count.values()), whole / 1e6)
    if extra:
        line += " %16.3f %8.0f" % (sum(moved.values()) / 1e9, sum(moved.values()) / whole)
    print(line)


# Nsight Compute's byte units (powers of 1000); GB/s is then bytes per ns.
BYTE_UNITS = {"byte": 1.0, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12}


if __name__ == "__main__":
    main()
