#!/bin/bash
# Data-parallel scaling on one machine: `rotary train` on 1 rank x 2 threads
# against `mpirun -np 2` x 1 thread each (the same 2 cores, the same global
# batch, so the same work per step), at the shapes S and M of bench/README.md.
# Prints a markdown table for docs/distributed.md. Run it on an idle machine:
# any other busy process makes the numbers meaningless.
#
# usage: bench/mpi_scaling.sh [--steps N] [--build DIR]   (default 30, build-mpi)
# tokens/s is the median of metrics.csv's per-step column past the first 3
# steps (no step of the measured ones evaluates or writes a checkpoint).
set -euo pipefail
steps=30
build=build-mpi
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) steps=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        *) echo "usage: $0 [--steps N] [--build DIR]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
cmake -S . -B "$build" -DROTARY_MPI=ON >/dev/null
cmake --build "$build" -j 2 --target rotary_cli >/dev/null
rotary="$PWD/$build/rotary"
data="$PWD/../shared/data/tinyshakespeare.txt"
[ -f "$data" ] || data=english
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none

# shape name and flags (bench/README.md: S is the `rotary train` default model)
shapes=("S|--layers 4 --heads 4 --dim 128 --ctx 128 --batch 32"
        "M|--layers 6 --heads 6 --dim 384 --ff 1024 --ctx 256 --batch 16")
common=(--data "$data" --steps "$steps" --eval-every 0 --eval-batches 1 --sample-tokens 0 --warmup 5)

median_tok_s() { # metrics.csv past the first 3 steps and the last (it evaluates)
    tail -n +5 "$1/metrics.csv" | head -n -1 | cut -d, -f5 | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| shape | params | global batch x ctx | 1 rank x 2 threads tok/s | 2 ranks x 1 thread tok/s | 2 ranks / 1 rank |"
echo "|---|---|---|---|---|---|"
for s in "${shapes[@]}"; do
    name=${s%%|*}
    read -r -a flags <<< "${s#*|}"
    OMP_NUM_THREADS=2 "$rotary" train "${common[@]}" "${flags[@]}" --threads 2 --out "$tmp/$name-1" \
        >/dev/null 2>"$tmp/$name-1.err"
    mpirun --allow-run-as-root -np 2 --bind-to core -x OMP_NUM_THREADS=1 \
        "$rotary" train "${common[@]}" "${flags[@]}" --threads 1 --out "$tmp/$name-2" \
        >/dev/null 2>"$tmp/$name-2.err"
    params=$(sed -n 's/^rotary: \([0-9]*\) parameters.*/\1/p' "$tmp/$name-1.err")
    one=$(median_tok_s "$tmp/$name-1")
    two=$(median_tok_s "$tmp/$name-2")
    bt=$(echo "${flags[@]}" | sed 's/.*--ctx \([0-9]*\) --batch \([0-9]*\).*/\2 x \1/')
    printf "| %s | %s | %s | %.0f | %.0f | %.2f |\n" "$name" "$params" "$bt" "$one" "$two" \
        "$(echo "$two / $one" | bc -l)"
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
