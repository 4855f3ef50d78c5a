#!/bin/bash
# `rotary compare` end to end on a tiny model: runs, table, CSV, plots,
# reuse of finished runs, and refusal to reuse runs made with other options.
# usage: cli_compare.sh ROTARY_BINARY SOURCE_DIR
set -u
rotary="$1"
src="$2"
. "$src/tests/lib.sh"
data=$(some_text "$src")
args=(--data "$data" --layers 1 --heads 2 --dim 32 --ctx 32 --batch 4 --steps 40 --eval-every 10
      --warmup 5 --eval-batches 2 --sample-tokens 0 --threads 2)

out=$("$rotary" compare "${args[@]}" --pos rope,learned --seeds 1,2 --eval-lengths 1,2 --out "$tmp/c" 2> "$tmp/err")
status=$?
[ $status -eq 0 ] && ok "compare runs 4 trainings" || { bad "compare status $status"; cat "$tmp/err"; }
[ "$(head -1 "$tmp/c/compare.csv")" = "step,rope,rope_sd,learned,learned_sd" ] &&
    [ "$(wc -l < "$tmp/c/compare.csv")" -eq 5 ] && ok "compare.csv: header and 4 evaluations" ||
    bad "compare.csv: $(cat "$tmp/c/compare.csv")"
grep -q "^| rope | .* ± " "$tmp/c/compare.md" && grep -q "^| learned |.*| 40 ± 0 | 0.0% ± 0.0% |" "$tmp/c/compare.md" &&
    ok "table: mean ± sd over seeds; learned saves 0% against itself" ||
    bad "table: $(cat "$tmp/c/compare.md")"
grep -q "^| rope + PI |" "$tmp/c/compare.md" && grep -q "^| learned | [0-9.]* ± [0-9.]* | - |" "$tmp/c/compare.md" &&
    ok "extrapolation table: RoPE scalings; learned has no 2x" || bad "extrapolation: $(cat "$tmp/c/compare.md")"
if [ -x /usr/bin/gnuplot ]; then
    [ -s "$tmp/c/compare.png" ] && head -c 4 "$tmp/c/compare.png" | grep -q PNG && grep -q "<svg" "$tmp/c/compare.svg" &&
        ok "plots written (PNG and SVG)" || bad "plots"
else
    echo "skip plots: gnuplot is not installed"
fi
"$rotary" compare "${args[@]}" --pos rope,learned --seeds 1,2 --out "$tmp/c" --name again > /dev/null 2> "$tmp/err2"
[ "$(grep -c "is complete" "$tmp/err2")" -eq 4 ] && [ -s "$tmp/c/again.md" ] && ok "finished runs are reused" ||
    { bad "reuse"; cat "$tmp/err2"; }
err=$("$rotary" compare "${args[@]}" --steps 50 --pos rope --seeds 1 --out "$tmp/c" 2>&1 >/dev/null)
[ $? -ne 0 ] && [[ "$err" == *"other options"* ]] && ok "runs made with other options are refused" || bad "mismatch: $err"
err=$("$rotary" compare "${args[@]}" --pos rope,spiral --out "$tmp/d" 2>&1 >/dev/null)
[ $? -ne 0 ] && [[ "$err" == *"--pos"* ]] && ok "unknown encoding refused" || bad "bad --pos: $err"
finish
