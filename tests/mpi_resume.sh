#!/bin/bash
# A 2-rank run whose rank is killed (kill -9) mid-run: mpirun must end the
# job, non-zero, within 30 s and say which rank died; the last checkpoint
# must load; resumed on 2 ranks the run must equal one that never stopped,
# bit for bit (the killed run had ZeRO-1 on, the resumed one has it off: on
# 2 ranks the two give the same bits, tests/mpi_equivalence.sh), and resumed
# on 1 rank it must agree within the tolerance of mpi_equivalence.sh.
# usage: mpi_resume.sh ROTARY_BINARY SOURCE_DIR MPIRUN
set -u
. "$2/tests/mpi_lib.sh"
tiny=(--data "$data" --layers 2 --heads 2 --dim 64 --ctx 64 --batch 16 --steps 100 --eval-every 20
      --eval-batches 2 --warmup 10 --sample-tokens 0 --threads 1)
rows() { [ -f "$1/metrics.csv" ] && wc -l < "$1/metrics.csv" || echo 0; }

# 1. The run that never stops.
np 2 "$rotary" train "${tiny[@]}" --out "$tmp/straight" >/dev/null 2>"$tmp/straight.err" ||
    { bad "uninterrupted 2-rank run"; cat "$tmp/straight.err"; }

# 2. The same run with ZeRO-1; past its step-40 checkpoint, kill one rank.
"$mpirun" --allow-run-as-root --oversubscribe -np 2 "$rotary" train "${tiny[@]}" --zero1 \
    --out "$tmp/killed" >/dev/null 2>"$tmp/killed.err" &
mp=$! # mpirun, whose children are the ranks
for _ in $(seq 1 600); do [ "$(rows "$tmp/killed")" -gt 46 ] && break; sleep 0.05; done
victim=$(pgrep -P $mp | tail -1)
at=$(rows "$tmp/killed")
if [ -n "$victim" ] && [ "$at" -gt 46 ] && [ "$at" -lt 100 ]; then
    kill -9 "$victim"
    t0=$(date +%s)
    while kill -0 $mp 2>/dev/null && [ $(($(date +%s) - t0)) -lt 30 ]; do sleep 0.1; done
    if kill -0 $mp 2>/dev/null; then
        bad "mpirun still running 30 s after a rank died"
        kill -9 $mp
    fi
    wait $mp
    status=$?
    took=$(($(date +%s) - t0))
    [ $status -ne 0 ] && grep -q "exited on signal 9" "$tmp/killed.err" &&
        ok "a killed rank ends the job in ${took}s (status $status): $(grep -m1 "exited on signal" "$tmp/killed.err")" ||
        { bad "killed rank: status $status"; cat "$tmp/killed.err"; }
else
    bad "could not kill a rank mid-run (pid '$victim', $at metric rows)"
    wait $mp
fi

# 3. The last checkpoint loads (an independent reader, then rotary itself).
step=$("$py" - "$tmp/killed/checkpoint.safetensors" "$src/tests/torch" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import st
t, meta = st.load(sys.argv[1])
assert meta["optim.step"] == meta["train.step"] and t["optim.m"].size == t["optim.v"].size
print(meta["train.step"])
PY
)
[ -n "$step" ] && [ $((step % 20)) -eq 0 ] && [ "$step" -ge 40 ] && [ "$step" -lt 100 ] &&
    "$rotary" info "$tmp/killed/checkpoint.safetensors" >/dev/null 2>&1 &&
    ok "the last checkpoint (step $step) loads, with the whole AdamW state" ||
    bad "checkpoint after the kill: step '$step'"

# 4. Resume on 2 ranks (ZeRO-1 off now) and, from a copy, on 1 rank.
cp -r "$tmp/killed" "$tmp/killed1"
np 2 "$rotary" train --resume "$tmp/killed" >/dev/null 2>"$tmp/resume2.err" ||
    { bad "resume on 2 ranks"; cat "$tmp/resume2.err"; }
out=$(compare same "$tmp/straight" "$tmp/killed") &&
    ok "resumed on 2 ranks = never stopped, bit for bit: $out" || bad "resume on 2 ranks: $out"
"$rotary" train --resume "$tmp/killed1" >/dev/null 2>"$tmp/resume1.err" ||
    { bad "resume on 1 rank"; cat "$tmp/resume1.err"; }
out=$(compare close "$tmp/straight" "$tmp/killed1" 1e-5) &&
    ok "resumed on 1 rank = never stopped: $out" || bad "resume on 1 rank: $out"
finish
