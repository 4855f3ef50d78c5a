"""kernel_times: sum the GPU time of each kernel in an Nsight Compute CSV
(ncu --csv --page raw --metrics gpu__time_duration.sum ...) and print the
kernels by total time, largest first, with their share of the whole.

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
    total, count = defaultdict(float), defaultdict(int)
    for r in rows[head + 1:]:
        if len(r) <= max(name_at, time_at):
            continue
        try:
            t = float(r[time_at].replace(",", ""))
        except ValueError:
            continue  # the units row
        total[short(r[name_at])] += t
        count[short(r[name_at])] += 1
    whole = sum(total.values())
    if not whole:
        sys.exit("kernel_times: no kernel times in %s" % path)
    print("%-60s %6s %10s %6s" % ("kernel", "calls", "ms", "share"))
    for k, t in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        print("%-60s %6d %10.3f %5.1f%%" % (k, count[k], t / 1e6, 100 * t / whole))
    print("%-60s %6d %10.3f" % ("all kernels", sum(count.values()), whole / 1e6))


if __name__ == "__main__":
    main()
