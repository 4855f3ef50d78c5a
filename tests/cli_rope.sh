#!/bin/bash
# `rotary rope decay` against a float64 computation written here in Python
# (plain math/cmath), its plot through gnuplot, and the --rope-scaling flags of
# train, eval and sample.
# usage: cli_rope.sh ROTARY_BINARY
set -u
rotary="$1"
py=/usr/bin/python3
. "$(dirname "$0")/lib.sh"

# Compare a --csv output with RoFormer's bound, (1/(d/2)) sum_j |S_j|,
# S_j = sum_{k<j} exp(i r theta_k); theta from the scaling named in $4.
check_csv() { # file dim base scaling(none|linear:S) normalize(0|1)
    "$py" - "$@" <<'PY'
import cmath, math, sys
path, d, base, scaling, norm = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
lines = open(path).read().split("\n")
assert lines[0] == "distance,bound", "header is %r" % lines[0]
rows = [l.split(",") for l in lines[1:] if l]
theta = [base ** (-2.0 * k / d) for k in range(d // 2)]
if scaling.startswith("linear:"):
    s = float(scaling.split(":")[1])
    theta = [t / s for t in theta]
def bound(r):
    acc, total = 0j, 0.0
    for t in theta:
        acc += cmath.exp(1j * r * t)
        total += abs(acc)
    return total / (d / 2)
b0 = bound(0)
worst = 0.0
for i, (r, v) in enumerate(rows):
    assert int(r) == i, "distance %s on row %d" % (r, i)
    want = bound(i) / (b0 if norm else 1.0)
    worst = max(worst, abs(float(v) - want) / abs(want))
print("%d rows, max relative error %.2e" % (len(rows), worst))
sys.exit(0 if worst <= 1e-6 else 1)
PY
}

# 1. The values, against Python.
"$rotary" rope decay --dim 128 --base 10000 --max-dist 256 --csv > "$tmp/d128.csv" 2> "$tmp/err" ||
    { bad "rope decay --csv"; cat "$tmp/err"; }
r=$(check_csv "$tmp/d128.csv" 128 10000 none 0) && ok "d 128, base 1e4: $r" || bad "d 128 vs Python: $r"
[ "$(wc -l < "$tmp/d128.csv")" -eq 258 ] && ok "header and 257 distances" || bad "line count"
"$rotary" rope decay --dim 64 --base 500000 --max-dist 1000 --csv > "$tmp/d64.csv" &&
    r=$(check_csv "$tmp/d64.csv" 64 500000 none 0) && ok "d 64, base 5e5, to 1000: $r" || bad "d 64: $r"
"$rotary" rope decay --dim 32 --max-dist 300 --csv --normalize --rope-scaling linear --rope-factor 4 \
    --rope-original-ctx 64 > "$tmp/lin.csv" &&
    r=$(check_csv "$tmp/lin.csv" 32 10000 linear:4 1) && ok "d 32, linear x4, normalized: $r" ||
    bad "linear x4: $r"

# 2. Its shape. At distance 0 every term is in phase, so the bound is
# (d/2 + 1)/2 = 32.5 for d = 128 (1 normalized); by 256 it is ~0.20 of that.
b0=$(sed -n 2p "$tmp/d128.csv" | cut -d, -f2)
[ "$b0" = "32.5" ] && ok "bound(0) = (d/2 + 1)/2 = 32.5" || bad "bound(0) = $b0"
n0=$(sed -n 2p "$tmp/lin.csv" | cut -d, -f2)
[ "$n0" = "1" ] && ok "--normalize: bound(0) = 1" || bad "normalized bound(0) = $n0"
"$py" - "$tmp/d128.csv" <<'PY' && ok "decays: bound(256) < 0.25 bound(0), mean over 192..256 < 0.3 bound(0) and < 0.6 the mean over 0..64" || bad "no decay"
import sys
v = [float(l.split(",")[1]) for l in open(sys.argv[1]).read().split("\n")[1:] if l]
far, near = sum(v[192:257]) / 65, sum(v[0:65]) / 65
print("     bound(32) %.4f  bound(128) %.4f  bound(256) %.4f = %.4f bound(0); mean 0..64 %.3f, 192..256 %.3f"
      % (v[32], v[128], v[256], v[256] / v[0], near, far))
sys.exit(0 if v[256] < 0.25 * v[0] and far < 0.3 * v[0] and far < 0.6 * near else 1)
PY
"$rotary" rope decay --max-dist 3 | grep -q "distance" && ok "table output" || bad "table output"

# 3. The plot.
if command -v gnuplot > /dev/null; then
    "$rotary" rope decay --max-dist 256 --plot "$tmp/decay.png" > /dev/null 2> "$tmp/err"
    [ -s "$tmp/decay.png" ] && [ "$(head -c 4 "$tmp/decay.png" | tail -c 3)" = "PNG" ] &&
        ok "--plot writes a PNG ($(stat -c %s "$tmp/decay.png") bytes)" || { bad "--plot png"; cat "$tmp/err"; }
    "$rotary" rope decay --max-dist 64 --plot "$tmp/decay.svg" > /dev/null 2> "$tmp/err"
    grep -q "<svg" "$tmp/decay.svg" 2> /dev/null && ok "--plot writes an SVG" || { bad "--plot svg"; cat "$tmp/err"; }
else
    echo "skip --plot: gnuplot is not installed (apt-get install gnuplot-nox)"
fi

# 4. Bad input: one "rotary: ..." line, non-zero status, no crash.
expect_error "odd --dim" "even" "$rotary" rope decay --dim 127
expect_error "unknown subcommand" "unknown subcommand" "$rotary" rope frobnicate
expect_error "plot format" ".png or .svg" "$rotary" rope decay --plot "$tmp/x.jpg"
expect_error "gnuplot missing" "gnuplot is not installed" env PATH=/nonexistent "$rotary" rope decay --plot "$tmp/x.png"
expect_error "scaling without original ctx" "--rope-original-ctx" "$rotary" rope decay --rope-scaling yarn --rope-factor 4

# 5. --rope-scaling on train, eval and sample (tiny runs: seconds).
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))"; done > "$tmp/text.txt"
tiny=(--data "$tmp/text.txt" --layers 1 --heads 2 --dim 16 --ctx 16 --batch 2 --steps 4 --eval-every 2
      --eval-batches 1 --warmup 1 --sample-tokens 8 --threads 2)
"$rotary" train "${tiny[@]}" --rope-scaling yarn --rope-factor 2 --out "$tmp/run" > /dev/null 2> "$tmp/err" ||
    { bad "train --rope-scaling"; cat "$tmp/err"; }
info=$("$rotary" info "$tmp/run/checkpoint.safetensors" 2>&1)
[[ "$info" == *"rope scaling yarn  factor 2  original ctx 16"* ]] &&
    ok "train stores the scaling in the checkpoint (original ctx = --ctx)" || bad "train scaling: $info"
"$rotary" train --resume "$tmp/run" > /dev/null 2> "$tmp/err" && ok "resume keeps the scaling" ||
    { bad "resume"; cat "$tmp/err"; }
expect_error "resume with another factor" "disagrees" "$rotary" train --resume "$tmp/run" --rope-factor 3
expect_error "scaling without rope" "only for pos rope" "$rotary" train "${tiny[@]}" --pos alibi --rope-scaling linear --rope-factor 2 --out "$tmp/run2"

"$rotary" train "${tiny[@]}" --out "$tmp/plain" > /dev/null 2> "$tmp/err" || { bad "train"; cat "$tmp/err"; }
ev=(eval --run "$tmp/plain" --threads 2 --max-windows 4)
out=$("$rotary" "${ev[@]}" --ctx 64 --rope-scaling linear --rope-factor 4 2> "$tmp/err")
[[ "$out" == *"ctx 64 (trained at 16)"* ]] && grep -q "rope scaling linear, factor 4, original ctx 16" "$tmp/err" &&
    ok "eval --rope-scaling linear x4 at 4 ctx (original ctx from the checkpoint)" || { bad "eval linear: $out"; cat "$tmp/err"; }
for t in "ntk --rope-factor 4" "dynamic-ntk" "yarn --rope-factor 4 --yarn-beta 16" "llama3 --rope-factor 4" "none"; do
    out=$("$rotary" "${ev[@]}" --ctx 64 --rope-scaling $t 2> "$tmp/err")
    [[ "$out" == *"bits/byte"* ]] && ok "eval --rope-scaling $t" || { bad "eval $t: $out"; cat "$tmp/err"; }
done
expect_error "factor without a type" "needs --rope-scaling" "$rotary" "${ev[@]}" --rope-factor 2
expect_error "type without a factor" "needs --rope-factor" "$rotary" "${ev[@]}" --rope-scaling yarn
expect_error "factor below 1" "factor 0.5" "$rotary" "${ev[@]}" --rope-scaling linear --rope-factor 0.5
expect_error "yarn alpha >= beta" "alpha < beta" "$rotary" "${ev[@]}" --rope-scaling yarn --rope-factor 2 --yarn-alpha 32
expect_error "unknown type" "unknown type" "$rotary" "${ev[@]}" --rope-scaling warp --rope-factor 2
# Per-pair factors come only from a GGUF file (rope_freqs.weight); another
# scaling replaces them, and says so.
expect_error "type factors" "rope_freqs.weight" "$rotary" "${ev[@]}" --rope-scaling factors
expect_error "train with type factors" "rope_freqs.weight" "$rotary" train "${tiny[@]}" --rope-scaling factors --out "$tmp/run3"
fz="$(dirname "$0")/../fuzz/corpus/gguf_model/rope-freqs.gguf"
g1=$("$rotary" generate "$fz" -p "ab" -n 8 -t 0 --ids 2> "$tmp/err") &&
    g2=$("$rotary" generate "$fz" -p "ab" -n 8 -t 0 --ids --rope-scaling linear --rope-factor 2 2> "$tmp/err") &&
    [ -n "$g1" ] && [ -n "$g2" ] && grep -q "rope scaling linear, factor 2, .*(the checkpoint has factors)" "$tmp/err" &&
    ok "generate a GGUF with rope_freqs.weight; --rope-scaling linear replaces its factors" ||
    { bad "generate with factors: $g1 / $g2"; cat "$tmp/err"; }
# Past the model's ctx of 16.
smp=(sample --run "$tmp/plain" --ctx 40 --rope-scaling yarn --rope-factor 2.5 -n 60 --seed 4 --threads 2)
s1=$("$rotary" "${smp[@]}" 2>/dev/null | sha256sum)
s2=$("$rotary" "${smp[@]}" 2>/dev/null | sha256sum)
"$rotary" "${smp[@]}" > /dev/null 2>&1 && [ "$s1" = "$s2" ] && ok "sample --ctx 40 --rope-scaling yarn, reproducible" || bad "sample yarn"

"$rotary" train "${tiny[@]}" --pos alibi --steps 1 --out "$tmp/alibi" > /dev/null 2>&1 || bad "train alibi"
expect_error "eval scaling on alibi" "not rope" "$rotary" eval --run "$tmp/alibi" --rope-scaling linear --rope-factor 2

finish
