#!/bin/bash
# End to end through the `rotary` command: train, Ctrl-C, resume (bit-identical
# to a run that never stopped), eval, sample, and bad input.
# usage: cli_train.sh ROTARY_BINARY SOURCE_DIR
set -u
rotary="$1"
src="$2"
py=/usr/bin/python3
. "$src/tests/lib.sh"

data=$(some_text "$src")
tiny=(--data "$data" --layers 2 --heads 2 --dim 32 --ctx 32 --batch 4 --eval-every 25 --eval-batches 2
      --warmup 10 --sample-tokens 20 --threads 2)

# Weights of two checkpoints, bit for bit (through an independent reader).
same_weights() {
    "$py" - "$1" "$2" "$src/tests/torch" <<'PY'
import sys
sys.path.insert(0, sys.argv[3])
import st
a, _ = st.load(sys.argv[1]); b, _ = st.load(sys.argv[2])
assert a.keys() == b.keys()
sys.exit(0 if all(a[k].tobytes() == b[k].tobytes() for k in a) else 1)
PY
}
# metrics.csv without the timing columns.
metrics() { cut -d, -f1-4 "$1/metrics.csv"; }

# 1. An uninterrupted run.
"$rotary" train "${tiny[@]}" --steps 150 --out "$tmp/a" > "$tmp/a.out" 2> "$tmp/a.err"
[ $? -eq 0 ] && [ -f "$tmp/a/checkpoint.safetensors" ] && [ -s "$tmp/a/samples.txt" ] &&
    [ "$(wc -l < "$tmp/a/metrics.csv")" -eq 151 ] && ok "train writes the run directory" ||
    { bad "train"; cat "$tmp/a.err"; }
head -1 "$tmp/a/metrics.csv" | grep -qx "step,train_loss,val_loss,lr,tokens_per_s,elapsed_s" &&
    ok "metrics.csv header" || bad "metrics.csv header"

# 2. The same run stopped by SIGINT, then resumed.
"$rotary" train "${tiny[@]}" --steps 150 --out "$tmp/b" > /dev/null 2> "$tmp/b.err" &
pid=$!
for _ in $(seq 1 300); do
    [ -f "$tmp/b/metrics.csv" ] && [ "$(wc -l < "$tmp/b/metrics.csv")" -gt 30 ] && break
    sleep 0.05
done
kill -INT $pid
wait $pid
status=$?
stopped=$(tail -1 "$tmp/b/metrics.csv" | cut -d, -f1)
if [ $status -eq 130 ] && grep -q "interrupted" "$tmp/b.err" && [ "$stopped" -lt 150 ]; then
    ok "SIGINT stops at step $stopped with a checkpoint (status 130)"
else
    bad "SIGINT: status $status, last step $stopped"; cat "$tmp/b.err"
fi
"$rotary" train --resume "$tmp/b" > /dev/null 2> "$tmp/b2.err" || { bad "resume"; cat "$tmp/b2.err"; }
same_weights "$tmp/a/checkpoint.safetensors" "$tmp/b/checkpoint.safetensors" &&
    ok "resumed weights equal the uninterrupted run's, bit for bit" || bad "resumed weights differ"
[ "$(metrics "$tmp/a")" = "$(metrics "$tmp/b")" ] && ok "resumed metrics equal (step, losses, lr)" ||
    bad "resumed metrics differ"

# 3. eval and sample.
out=$("$rotary" eval --run "$tmp/a" 2>/dev/null)
[[ "$out" == *"bits/byte"* ]] && ok "eval: $out" || bad "eval: $out"
# The same bytes as a token file: the same split and the same loss (a run
# trained from a token file is evaluated on its tokens, not on their bytes).
"$rotary" prepare --data "$data" -o "$tmp/data.tok" > /dev/null 2>&1
out_tok=$("$rotary" eval --run "$tmp/a" --data "$tmp/data.tok" 2>/dev/null)
[ -n "$out" ] && [ "$out_tok" = "$out" ] && ok "eval of a token file equals eval of its text" ||
    bad "eval of a token file: '$out_tok' vs '$out'"
out=$("$rotary" eval --run "$tmp/a" --ctx 64 2>/dev/null)
[[ "$out" == *"ctx 64 (trained at 32)"* ]] && ok "eval at twice the context" || bad "eval 2x: $out"
s1=$("$rotary" sample --run "$tmp/a" --prompt "First" -n 40 --seed 3 2>/dev/null)
s2=$("$rotary" sample --run "$tmp/a" --prompt "First" -n 40 --seed 3 2>/dev/null)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && [[ "$s1" == First* ]] && ok "sample is reproducible from a seed" ||
    bad "sample: '$s1' vs '$s2'"
g=$("$rotary" sample --run "$tmp/a" --prompt "First" -n 40 --temperature 0 2>/dev/null)
[ ${#g} -ge 40 ] && ok "greedy sample" || bad "greedy sample '$g'"

# 4. Bad input: one "rotary: ..." line, non-zero status, no crash, no damage.
: > "$tmp/empty.txt"
printf 'too short' > "$tmp/short.txt"
printf 'ok \xce\x00 then \xff bad\n' > "$tmp/bad-utf8.txt"
sum_before=$(sha256sum "$tmp/a/checkpoint.safetensors")
expect_error "empty file" "empty" "$rotary" train "${tiny[@]}" --data "$tmp/empty.txt" --out "$tmp/c1"
expect_error "shorter than a window" "context window" "$rotary" train "${tiny[@]}" --data "$tmp/short.txt" --out "$tmp/c2"
expect_error "unreadable path" "cannot open" "$rotary" train "${tiny[@]}" --data "$tmp/nope.txt" --out "$tmp/c3"
expect_error "invalid UTF-8 for BPE" "UTF-8" "$rotary" tokenizer train --vocab 300 -o "$tmp/t.json" "$tmp/bad-utf8.txt"
# A text too small for the vocabulary asked: a smaller one, and a note saying so.
printf 'abab abab abab' > "$tmp/small.txt"
note=$("$rotary" tokenizer train --vocab 300 -o "$tmp/small.json" "$tmp/small.txt" 2>&1 >/dev/null)
case $note in *"stopped at 2"*", not 300"*) ok "BPE on a small text says where it stopped" ;;
    *) bad "BPE on a small text: no note ($note)" ;; esac
expect_error "run directory in use" "already holds a run" "$rotary" train "${tiny[@]}" --steps 10 --out "$tmp/a"
expect_error "flags disagree on resume" "disagrees" "$rotary" train --resume "$tmp/a" --dim 64
expect_error "resume without a run" "no such run directory" "$rotary" train --resume "$tmp/none"
expect_error "bad number" "--lr" "$rotary" train --lr fast
# --grad-accum may change on resume, and is the run's unless given again.
"$rotary" train "${tiny[@]}" --batch 8 --grad-accum 2 --steps 2 --out "$tmp/acc" >/dev/null 2>&1 ||
    bad "a run in micro-batches"
"$rotary" train --resume "$tmp/acc" 2>&1 >/dev/null | grep -q "each step in 2 micro-batches" &&
    ok "resume keeps the run's --grad-accum" || bad "resume forgets --grad-accum 2"
"$rotary" train --resume "$tmp/acc" --grad-accum 4 2>&1 >/dev/null |
    grep -q "each step in 4 micro-batches of 2 sequences" &&
    ok "resume takes a new --grad-accum" || bad "resume ignores --grad-accum 4"
expect_error "micro-batches that do not divide the batch" "--batch: 8 sequences do not split equally into 1 rank x 3 micro-batches (--grad-accum)" \
    "$rotary" train "${tiny[@]}" --batch 8 --grad-accum 3 --steps 2 --out "$tmp/c4"
expect_error "unknown encoding" "--pos" "$rotary" train "${tiny[@]}" --pos spiral --out "$tmp/c4"
"$rotary" train "${tiny[@]}" --pos learned --steps 5 --out "$tmp/learned" >/dev/null 2>&1 || bad "learned run"
expect_error "learned positions past ctx" "learned positions" "$rotary" eval --run "$tmp/learned" --ctx 64
expect_error "prompt too long" "context" "$rotary" sample --run "$tmp/a" --prompt "$(head -c 200 "$data")"
[ "$(sha256sum "$tmp/a/checkpoint.safetensors")" = "$sum_before" ] && ok "the existing checkpoint is untouched" ||
    bad "the existing checkpoint changed"

# 5. The T5 bias and linear attention: train, eval past ctx, sample.
for kind in "t5:--pos t5 --t5-buckets 8 --t5-max-distance 20" "linear:--attn linear --rope-pairing half"; do
    name=${kind%%:*}
    read -r -a flags <<< "${kind#*:}"
    if "$rotary" train "${tiny[@]}" "${flags[@]}" --steps 20 --out "$tmp/$name" >/dev/null 2>"$tmp/$name.err" &&
        [[ "$("$rotary" eval --run "$tmp/$name" --ctx 64 2>/dev/null)" == *"ctx 64"* ]] &&
        [ -n "$("$rotary" sample --run "$tmp/$name" --prompt "First" -n 20 2>/dev/null)" ]; then
        ok "$name: train, eval at twice the context, sample"
    else
        bad "$name run"; cat "$tmp/$name.err"
    fi
done
expect_error "linear attention with alibi" "linear attention" "$rotary" train "${tiny[@]}" --attn linear --pos alibi --out "$tmp/c5"
expect_error "unknown attention" "--attn" "$rotary" train "${tiny[@]}" --attn cubic --out "$tmp/c6"

finish
