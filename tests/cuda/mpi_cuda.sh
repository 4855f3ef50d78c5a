#!/bin/bash
# Data parallelism on GPUs: under mpirun each rank trains on its own GPU
# (--device cuda) with its slice of every batch, and the gradients are
# averaged through the host, so 2 ranks with b sequences each give the
# losses and weights of 1 rank with 2b; and so do --grad-accum and --zero1. Run on the CUDA emulation
# (tests/cuda/emu) by tests/cuda/cuda.cmake, and on a GPU machine by hand.
# usage: mpi_cuda.sh ROTARY_BINARY SOURCE_DIR MPIRUN [nccl|host]
# (the last: whether the build has NCCL, for the emulation, where
# EMU_DEVICES=2 gives the 2 ranks a GPU each and so NCCL's path)
#
# Tolerance TOL: 1e-5, as the CPU's (tests/mpi_equivalence.sh, which says
# why): the two runs' fp32 gradients differ only in the order of their sums.
# The GEMMs read bf16 copies of the weights, so such a difference could
# round a weight's copy the other way (2^-8 of it) and grow; in these 4
# steps it does not (measured on the emulation: weights 7.5e-9, moments
# 2.5e-7 of their largest, losses equal to metrics.csv's 6 digits). Real
# mistakes are far above it: each rank keeping its own gradients makes the
# ranks' weights differ, which train refuses to save ("the ranks' weights
# differ at step 2"); both ranks taking the first slice moves a loss by 0.03.
set -u
. "$2/tests/mpi_lib.sh"
TOL=${TOL:-1e-5}
args=(--data "$data" --layers 1 --heads 2 --dim 32 --ctx 32 --batch 4 --steps 4 --eval-every 2
      --eval-batches 1 --warmup 1 --sample-tokens 0 --threads 1 --device cuda)

"$rotary" train "${args[@]}" --out "$tmp/one" >/dev/null 2>"$tmp/one.err" ||
    { bad "1 rank, batch 4"; cat "$tmp/one.err"; }
# Without clipping, for the runs below that must show the gradients' scale
# (clipping, active at every step here, would hide a sum taken for a mean).
"$rotary" train "${args[@]}" --clip 0 --out "$tmp/one0" >/dev/null 2>"$tmp/one0.err" ||
    { bad "1 rank, no clipping"; cat "$tmp/one0.err"; }
np 2 "$rotary" train "${args[@]}" --out "$tmp/two" >/dev/null 2>"$tmp/two.err" ||
    { bad "2 ranks, batch 2 each"; cat "$tmp/two.err"; }
grep -q "2 ranks, batch 4 (2 per rank).*on each rank's GPU" "$tmp/two.err" &&
    ok "2 ranks say how they split the batch" || bad "no rank line: $(cat "$tmp/two.err")"
out=$(compare close "$tmp/one" "$tmp/two" "$TOL") && ok "2 GPU ranks x 2 = 1 GPU x 4: $out" ||
    bad "2 GPU ranks vs 1: $out"
# 2 ranks on one GPU average through host memory (NCCL needs a GPU a rank);
# on the emulation with 2 GPUs, through NCCL where the build has it.
how=$(sed -n 's/^rotary: gradients averaged through //p' "$tmp/two.err")
[ -n "$how" ] && ok "the ranks say how they average: $how" || bad "no averaging line"
if [ "${4:-}" != "" ]; then
    [[ "$how" == "host memory and MPI ("*")" ]] && ok "2 ranks on 1 GPU: host memory" ||
        bad "2 ranks on 1 GPU: $how"
    # In 2 micro-batches: NCCL's all-reduce starts during the last one's
    # backward, a part as each layer is done (comm.c), and only then.
    EMU_DEVICES=2 np 2 "$rotary" train "${args[@]}" --clip 0 --grad-accum 2 --out "$tmp/two2" \
        >/dev/null 2>"$tmp/two2.err" || { bad "2 ranks, 2 GPUs"; cat "$tmp/two2.err"; }
    how2=$(sed -n 's/^rotary: gradients averaged through //p' "$tmp/two2.err")
    want="NCCL on the GPUs"
    [ "$4" = host ] && want="host memory and MPI (built without NCCL)"
    [ "$how2" = "$want" ] && ok "2 ranks on 2 GPUs: $how2" || bad "2 ranks on 2 GPUs: $how2"
    out=$(compare close "$tmp/one0" "$tmp/two2" "$TOL") &&
        ok "through $how2, unclipped, 2 micro-batches: $out" ||
        bad "2 ranks on 2 GPUs vs 1: $out"
    EMU_DEVICES=2 ROTARY_CUDA_COMM=host np 2 "$rotary" train "${args[@]}" --steps 1 \
        --out "$tmp/two3" >/dev/null 2>"$tmp/two3.err" || { bad "ROTARY_CUDA_COMM=host"; cat "$tmp/two3.err"; }
    grep -q "through host memory and MPI (ROTARY_CUDA_COMM=host)" "$tmp/two3.err" &&
        ok "ROTARY_CUDA_COMM=host is obeyed" || bad "ROTARY_CUDA_COMM=host: $(cat "$tmp/two3.err")"
fi
# Gradient accumulation: the batch in micro-batches on one GPU, and on 2
# ranks (one sequence a pass), against one pass, unclipped (the AdamW
# moments show a sum of the micro-batches' means left undivided).
"$rotary" train "${args[@]}" --clip 0 --grad-accum 2 --out "$tmp/acc" >/dev/null 2>"$tmp/acc.err" ||
    { bad "1 rank, 2 micro-batches"; cat "$tmp/acc.err"; }
grep -q "each step in 2 micro-batches of 2 sequences" "$tmp/acc.err" &&
    ok "train says how it splits a step" || bad "no micro-batch line: $(cat "$tmp/acc.err")"
np 2 "$rotary" train "${args[@]}" --clip 0 --grad-accum 2 --out "$tmp/twoacc" >/dev/null \
    2>"$tmp/twoacc.err" || { bad "2 ranks, 2 micro-batches"; cat "$tmp/twoacc.err"; }
out=$(compare close "$tmp/one0" "$tmp/acc" "$TOL") && ok "1 GPU, 2 micro-batches of 2 = 1 of 4: $out" ||
    bad "micro-batches vs one pass: $out"
out=$(compare close "$tmp/one0" "$tmp/twoacc" "$TOL") &&
    ok "2 GPU ranks, 2 micro-batches of 1 = 1 GPU x 4: $out" || bad "2 ranks, micro-batches: $out"
# ZeRO-1: each rank keeps and updates the moments of its shard and
# gathers the others' weights; checkpoints hold the whole state. The same
# training as 1 rank, through host memory and (emulation with 2 GPUs)
# NCCL's broadcasts. On the emulation in grid order (EMU_BLOCK_ORDER: the
# float atomics then add in one order every run) the same bits as plain
# data parallelism: the all-gather moves weights, and AdamW is elementwise.
grid() { EMU_BLOCK_ORDER=grid "$@"; }
emu=${4:-}
np 2 "$rotary" train "${args[@]}" --zero1 --out "$tmp/zero" >/dev/null 2>"$tmp/zero.err" ||
    { bad "2 ranks, ZeRO-1"; cat "$tmp/zero.err"; }
out=$(compare close "$tmp/one" "$tmp/zero" "$TOL") && ok "ZeRO-1, 2 GPU ranks x 2 = 1 GPU x 4: $out" ||
    bad "ZeRO-1 vs 1 rank: $out"
mb_plain=$(sed -n 's/.*AdamW state \([0-9.]*\) MB per rank.*/\1/p' "$tmp/two.err")
mb_zero=$(sed -n 's/.*AdamW state \([0-9.]*\) MB per rank.*/\1/p' "$tmp/zero.err")
[ -n "$mb_zero" ] && "$py" -c "import sys; sys.exit(not 0 < $mb_zero < $mb_plain)" &&
    ok "AdamW state per rank: $mb_plain MB, $mb_zero MB with ZeRO-1" ||
    bad "AdamW state per rank: '$mb_plain' and '$mb_zero' MB"
if [ -n "$emu" ]; then
    grid np 2 "$rotary" train "${args[@]}" --out "$tmp/twog" >/dev/null 2>&1 &&
        grid np 2 "$rotary" train "${args[@]}" --zero1 --out "$tmp/zerog" >/dev/null 2>&1 ||
        bad "2 ranks in grid order"
    out=$(compare same "$tmp/twog" "$tmp/zerog") && ok "ZeRO-1 = plain data parallel, bit for bit: $out" ||
        bad "ZeRO-1 vs plain: $out"
    # Through NCCL ZeRO-1 reduce-scatters (each rank the mean of its shard
    # only) and gathers the norm's blocks: still the same bits.
    EMU_DEVICES=2 grid np 2 "$rotary" train "${args[@]}" --out "$tmp/twogn" >/dev/null 2>&1 &&
        EMU_DEVICES=2 grid np 2 "$rotary" train "${args[@]}" --zero1 --out "$tmp/zerogn" \
            >/dev/null 2>&1 || bad "2 ranks on 2 GPUs in grid order"
    out=$(compare same "$tmp/twogn" "$tmp/zerogn") &&
        ok "ZeRO-1 through NCCL = plain data parallel, bit for bit: $out" ||
        bad "ZeRO-1 through NCCL vs plain: $out"
    EMU_DEVICES=2 np 2 "$rotary" train "${args[@]}" --clip 0 --zero1 --grad-accum 2 \
        --out "$tmp/zero2" >/dev/null 2>"$tmp/zero2.err" || { bad "ZeRO-1 on 2 GPUs"; cat "$tmp/zero2.err"; }
    out=$(compare close "$tmp/one0" "$tmp/zero2" "$TOL") &&
        ok "ZeRO-1 through $(sed -n 's/^rotary: gradients averaged through //p' "$tmp/zero2.err"), unclipped, 2 micro-batches: $out" ||
        bad "ZeRO-1 on 2 GPUs vs 1: $out"
fi
# Stopped by SIGTERM after its first steps (the ranks agree on the step
# and save), then resumed: each rank's shard of the moments goes back to
# its GPU. Against the same run never stopped: bit for bit on the
# emulation in grid order, within TOL on a GPU (float atomics).
# (A GPU takes milliseconds a step: more steps, so that the signal lands
# mid-run.)
n_long=6 every=2
[ -z "$emu" ] && n_long=100 every=10
long=(--steps $n_long --eval-every $every --zero1)
grid np 2 "$rotary" train "${args[@]}" "${long[@]}" --out "$tmp/zlong" >/dev/null 2>&1 ||
    bad "ZeRO-1, $n_long steps"
grid np 2 "$rotary" train "${args[@]}" "${long[@]}" --out "$tmp/zres" >/dev/null 2>&1 &
mp=$!
for _ in $(seq 1 1200); do
    [ -f "$tmp/zres/metrics.csv" ] && [ "$(wc -l < "$tmp/zres/metrics.csv")" -gt 1 ] && break
    sleep 0.05
done
pkill -TERM -P $mp
wait $mp
stopped=$(tail -1 "$tmp/zres/metrics.csv" | cut -d, -f1)
grid np 2 "$rotary" train --resume "$tmp/zres" --device cuda --zero1 >/dev/null 2>"$tmp/zres.err" ||
    { bad "ZeRO-1 resumed"; cat "$tmp/zres.err"; }
if ! [ "$stopped" -lt $n_long ] 2>/dev/null; then
    bad "ZeRO-1 run not stopped mid-run (last step '$stopped')"
elif [ -n "$emu" ]; then
    out=$(compare same "$tmp/zlong" "$tmp/zres") &&
        ok "ZeRO-1 stopped at step $stopped and resumed = never stopped: $out" || bad "ZeRO-1 resumed: $out"
else
    out=$(compare close "$tmp/zlong" "$tmp/zres" "$TOL") &&
        ok "ZeRO-1 stopped at step $stopped and resumed = never stopped: $out" || bad "ZeRO-1 resumed: $out"
fi
finish
