#!/bin/bash
# Data parallelism is the same training: 2 ranks with b sequences each give
# the losses and weights of 1 rank with 2b, with and without ZeRO-1, and
# with the ranks' sequences in micro-batches (--grad-accum).
# usage: mpi_equivalence.sh ROTARY_BINARY SOURCE_DIR MPIRUN (tests/mpi.cmake
# sets the Open MPI environment).
#
# Tolerance 1e-5: absolute on every weight and loss, relative to the largest
# value of the tensor on the AdamW moments. One rank sums the gradient over 2b*T tokens in one GEMM; two ranks
# sum b*T each and then add the halves, so the float32 sums round in a
# different order (relative error a few 2^-24 per sum). AdamW turns a relative
# gradient error into an update error of about lr times that, so after these
# 30 steps the weights differ by ~1e-7 (measured: 1.6e-7 after 20 steps).
# Any real mistake (a wrong or repeated slice, a sum instead of a mean, a
# clip on the local norm, a skipped step) moves weights by a fraction of one
# update, lr = 1e-3, far above 1e-5. ZeRO-1 on 2 ranks is held to the bit
# (with other buckets, too): it adds the same two halves (a + b == b + a in
# IEEE arithmetic), computes the norm from the same blocks in the same order,
# and AdamW is elementwise.
set -u
. "$2/tests/mpi_lib.sh"
# 123k parameters: 8 norm blocks, so the two ZeRO-1 shards are 4 blocks each.
tiny=(--data "$data" --layers 2 --heads 2 --dim 64 --ctx 32 --batch 8 --steps 30 --eval-every 10
      --eval-batches 2 --warmup 5 --sample-tokens 0 --threads 1)

"$rotary" train "${tiny[@]}" --out "$tmp/one" >/dev/null 2>"$tmp/one.err" ||
    { bad "1 rank, batch 8"; cat "$tmp/one.err"; }
# Buckets of 10000 and 7000 floats: 13 and 18 of them, most started while
# the backward pass is still running, cutting the ZeRO-1 shards unevenly.
np 2 "$rotary" train "${tiny[@]}" --dist-bucket 10000 --out "$tmp/two" >/dev/null 2>"$tmp/two.err" ||
    { bad "2 ranks, batch 4 each"; cat "$tmp/two.err"; }
np 2 "$rotary" train "${tiny[@]}" --zero1 --dist-bucket 7000 --out "$tmp/zero" >/dev/null 2>"$tmp/zero.err" ||
    { bad "2 ranks with ZeRO-1"; cat "$tmp/zero.err"; }

# 2 ranks under ZeRO-1 (each scales only its shard), each its 4 sequences
# in 2 micro-batches, without clipping (which would hide their sum left
# undivided): against 1 rank, also unclipped.
"$rotary" train "${tiny[@]}" --clip 0 --out "$tmp/one0" >/dev/null 2>"$tmp/one0.err" ||
    { bad "1 rank, no clipping"; cat "$tmp/one0.err"; }
np 2 "$rotary" train "${tiny[@]}" --clip 0 --grad-accum 2 --zero1 --out "$tmp/acc" >/dev/null \
    2>"$tmp/acc.err" || { bad "2 ranks, 2 micro-batches"; cat "$tmp/acc.err"; }
out=$(compare close "$tmp/one0" "$tmp/acc" 1e-5) &&
    ok "ZeRO-1 2 ranks x 2 micro-batches of 2 = 1 rank x 8: $out" ||
    bad "2 ranks with micro-batches vs 1: $out"

grep -q "2 ranks, batch 8 (4 per rank)" "$tmp/two.err" && ok "2 ranks say how they split the batch" ||
    bad "no rank line: $(cat "$tmp/two.err")"
[ "$(grep -c "^step 30/30" "$tmp/two.err")" -eq 1 ] && ok "one progress line per step (rank 0 alone)" ||
    bad "progress lines: $(grep -c "^step 30/30" "$tmp/two.err")"
out=$(compare close "$tmp/one" "$tmp/two" 1e-5) && ok "2 ranks x 4 = 1 rank x 8: $out" || bad "2 ranks vs 1: $out"
out=$(compare close "$tmp/one" "$tmp/zero" 1e-5) && ok "ZeRO-1 2 ranks x 4 = 1 rank x 8: $out" ||
    bad "ZeRO-1 vs 1 rank: $out"
out=$(compare same "$tmp/two" "$tmp/zero") && ok "ZeRO-1 = plain data parallel, bit for bit: $out" ||
    bad "ZeRO-1 vs plain: $out"
# The optimizer state each rank keeps: halved by ZeRO-1 (4 of the 8 blocks).
mb_plain=$(sed -n 's/.*AdamW state \([0-9.]*\) MB per rank.*/\1/p' "$tmp/two.err")
mb_zero=$(sed -n 's/.*AdamW state \([0-9.]*\) MB per rank.*/\1/p' "$tmp/zero.err")
[ "$mb_plain" = "0.99" ] && [ "$mb_zero" = "0.52" ] &&
    ok "AdamW state per rank: $mb_plain MB, $mb_zero MB with ZeRO-1" ||
    bad "AdamW state per rank: '$mb_plain' and '$mb_zero' MB"

# A batch the ranks cannot share equally is refused, by every rank at once.
expect_error "batch not a multiple of the ranks" "--batch: 8 sequences do not split equally into 3 ranks" \
    np 3 "$rotary" train "${tiny[@]}" --out "$tmp/three"
finish
