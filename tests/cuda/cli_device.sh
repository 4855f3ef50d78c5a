#!/bin/bash
# --device on train, eval, generate (sample) and compare. A default build
# answers --device cuda with "built without CUDA", a CUDA build without a GPU
# with "no CUDA device"; with a GPU, a tiny run trains, evaluates and
# generates on it, and the CPU evaluates the same checkpoint to the same loss.
# usage: cli_device.sh ROTARY_BINARY SOURCE_DIR cpu|cuda|emu (how it was built;
# emu: against the CUDA emulation of tests/cuda/emu, which always has a GPU)
set -u
rotary="$1"
src="$2"
built="$3"
. "$src/tests/lib.sh"
data="$tmp/text.txt"
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog"; done > "$data"
args=(--data "$data" --layers 1 --heads 2 --dim 32 --ctx 32 --batch 4 --steps 20 --eval-every 10
      --warmup 2 --eval-batches 2 --sample-tokens 0 --threads 2)

# The emulation runs each kernel launch in milliseconds: a shorter run, and
# 8 windows evaluated (on both devices).
evargs=()
[ "$built" = emu ] && args+=(--steps 3 --eval-every 3 --eval-batches 1 --batch 2) &&
    evargs=(--max-windows 8)
expect_error "unknown device" "cpu or cuda" "$rotary" train "${args[@]}" --out "$tmp/x" --device tpu
gpu=0
if [ "$built" = cpu ]; then
    why="built without CUDA"
elif [ "$built" = emu ] || [ "$(nvidia-smi -L 2>/dev/null | grep -c GPU)" -gt 0 ]; then
    gpu=1
else
    why="no CUDA device"
fi
if [ $gpu = 0 ]; then
    expect_error "train --device cuda" "$why" "$rotary" train "${args[@]}" --out "$tmp/r" --device cuda
    "$rotary" train "${args[@]}" --out "$tmp/r" 2>/dev/null && ok "a CPU run to evaluate" || bad "cpu run"
    expect_error "eval --device cuda" "$why" "$rotary" eval --run "$tmp/r" --device cuda
    expect_error "generate --device cuda" "$why" "$rotary" generate "$tmp/r" -n 4 --device cuda
    expect_error "sample --device cuda" "$why" "$rotary" sample "$tmp/r" -n 4 --device cuda
    out=$("$rotary" compare "${args[@]}" --pos rope --seeds 1 --out "$tmp/c" --device cuda 2>&1)
    [ $? -ne 0 ] && [[ "$out" == *"$why"* || "$out" == *"failed"* ]] &&
        ok "compare --device cuda fails" || bad "compare --device cuda: $out"
else
    # run label: the GPU and the CPU evaluate the run to within 1%
    same_loss() {
        local lg lc
        lg=$("$rotary" eval --run "$1" "${evargs[@]}" --device cuda 2>/dev/null | awk '{print $2}')
        lc=$("$rotary" eval --run "$1" "${evargs[@]}" 2>/dev/null | awk '{print $2}')
        awk -v a="$lg" -v b="$lc" 'BEGIN { d = a - b; exit !(a > 0 && d < 0.01 * b && -d < 0.01 * b) }' &&
            ok "$2: eval gpu $lg, cpu $lc on the GPU-trained checkpoint" ||
            bad "$2: eval gpu $lg cpu $lc"
    }
    "$rotary" train "${args[@]}" --out "$tmp/g" --device cuda 2>"$tmp/err" &&
        ok "train --device cuda" || { bad "train --device cuda"; cat "$tmp/err"; }
    same_loss "$tmp/g" "pos rope"
    # A batch or a cache too big for the GPU (the emulation's, made 40 MB,
    # 32 of them cuBLAS's workspace): a clear error that names the size and
    # the way out, not a crash.
    if [ "$built" = emu ]; then
        expect_error "a batch too big for the GPU" \
            "MiB are free); a smaller batch needs less (train: --grad-accum K" \
            env EMU_DEVICE_MEMORY=40000000 "$rotary" train "${args[@]}" --batch 512 --out "$tmp/oom" --device cuda
        expect_error "a cache too big for the GPU" \
            "MiB are free); fewer positions (--ctx) need less" \
            env EMU_DEVICE_MEMORY=40000000 "$rotary" generate "$tmp/g" --ctx 30000 -n 4 --device cuda
        expect_error "weights too big for the GPU" "MiB for the parameters: out of memory (0 of the GPU's 32 MiB are free)" \
            env EMU_DEVICE_MEMORY=33594432 "$rotary" eval --run "$tmp/g" --device cuda
    fi
    # A resumed run keeps its device unless told otherwise.
    "$rotary" train --resume "$tmp/g" 2>&1 >/dev/null | grep -q "on the GPU, resuming" &&
        ok "resume keeps --device cuda" || bad "resume forgets --device cuda"
    "$rotary" train --resume "$tmp/g" --device cpu 2>&1 >/dev/null | grep -q "threads, resuming" &&
        ok "resume takes --device cpu" || bad "resume ignores --device cpu"
    n=$("$rotary" generate "$tmp/g" -n 20 -t 0 --ids --device cuda 2>"$tmp/err" | wc -w)
    [ "$n" -ge 20 ] && ok "generate --device cuda: $n ids" || bad "generate --device cuda: $n ids"
    grep -q "a CUDA graph a token" "$tmp/err" && ok "generate --device cuda replays a CUDA graph" ||
        bad "generate --device cuda: $(tail -n 2 "$tmp/err")"
    # --int8 on the GPU: Q8_0 weights, greedy ids mostly the float32 run's
    f32=$("$rotary" generate "$tmp/g" -n 12 -t 0 --ids --device cuda 2>/dev/null)
    i8=$("$rotary" generate "$tmp/g" -n 12 -t 0 --ids --int8 --device cuda 2>"$tmp/err")
    grep -q "(int8, a CUDA graph a token)" "$tmp/err" && [ "$(echo "$i8" | wc -w)" -ge 12 ] &&
        ok "generate --int8 --device cuda: $(echo "$i8" | wc -w) ids" ||
        bad "generate --int8 --device cuda: $(tail -n 2 "$tmp/err")"
    same=$(paste <(echo "$f32" | tr ' ' '\n') <(echo "$i8" | tr ' ' '\n') | awk '$1 == $2 && $1 != ""' | wc -l)
    [ "$same" -ge 6 ] && ok "generate --int8 --device cuda: $same ids as float32's" ||
        bad "generate --int8 --device cuda: only $same ids as float32's ($f32 / $i8)"
    # T5's bias on the GPU (the fp32 attention kernels): the CPU's loss again
    "$rotary" train "${args[@]}" --pos t5 --out "$tmp/t5" --device cuda 2>"$tmp/err" ||
        { bad "train --pos t5 --device cuda"; cat "$tmp/err"; }
    same_loss "$tmp/t5" "pos t5"
    # Linear attention decodes from its state on the GPU: the CPU's ids,
    # sampled at temperature 1 with one seed (a barely trained model's greedy
    # ids repeat one token; sampled ones use the whole distribution, and a
    # rounding difference moves a draw only if it lands within ~1e-6 of a
    # boundary).
    "$rotary" train "${args[@]}" --steps 3 --attn linear --out "$tmp/lin" 2>/dev/null ||
        bad "train --attn linear"
    gen=(generate "$tmp/lin" -n 24 -t 1 --top-p 1 --seed 7 --no-stop --ids)
    ig=$("$rotary" "${gen[@]}" --device cuda 2>"$tmp/err")
    ic=$("$rotary" "${gen[@]}" 2>/dev/null)
    [ -n "$ig" ] && [ "$ig" = "$ic" ] && ok "generate --device cuda, linear attention: the CPU's ids" ||
        bad "linear attention ids: gpu '$ig' cpu '$ic' $(tail -n 2 "$tmp/err")"
    # Real llama2.c checkpoints (../shared/data, or the copy tests/cuda/deps.sh
    # puts in tests/cuda/deps/data for the GPU machine): greedy ids on the GPU
    # against the CPU's (which tests/cli_generate.sh and tests/torch check
    # against the reference). Long enough that the decode attention splits
    # each head's keys over several blocks. aidreams260K is trained, so its
    # argmax has margins far above rounding: every id must match. stories260K
    # (grouped-query attention) is noise, so a near-tie may flip an id late:
    # the first half must match.
    dd=""
    for d in "${ROTARY_DATA_DIR:-}" "$src/tests/cuda/deps/data" "$src/../shared/data"; do
        [ -n "$d" ] && [ -f "$d/aidreams260K.bin" ] && [ -f "$d/stories260K.bin" ] && dd=$d && break
    done
    if [ -z "$dd" ]; then
        echo "skip llama2.c checkpoints: no data directory (run tests/cuda/deps.sh)"
    else
        same_prefix() { # the number of leading ids two lists share
            paste <(echo "$1" | tr -s ' ' '\n') <(echo "$2" | tr -s ' ' '\n') |
                awk '$1 != $2 || $1 == "" { exit } { n++ } END { print n + 0 }'
        }
        n1=200 n2=300
        [ "$built" = emu ] && n1=40 n2=60
        # model, tokenizer, context, ids, how many of them (with BOS) must match
        for m in "aidreams260K aidreams_tok512 256 $n1 $((n1 + 1))" \
                 "stories260K tok512 512 $n2 $((n2 / 2))"; do
            set -- $m
            gen=(generate "$dd/$1.bin" -z "$dd/$2.bin" -p "" -n "$4" -t 0 --ctx "$3" --no-stop --ids)
            ig=$("$rotary" "${gen[@]}" --device cuda 2>"$tmp/err")
            ic=$("$rotary" "${gen[@]}" 2>/dev/null)
            k=$(same_prefix "$ig" "$ic")
            [ "$k" -ge "$5" ] && ok "generate --device cuda, $1: the first $k ids the CPU's" ||
                bad "$1: the first $k ids the CPU's, not $5 $(tail -n 2 "$tmp/err")"
        done
        # --bf16: the GPU reads the model's bf16 copy, the CPU its own; the
        # same weight bits, so the same greedy ids (64 of aidreams260K: a
        # near tie at id 72 flips under rounding; 40 under the emulation)
        n3=$((n1 < 64 ? n1 : 64))
        gen=(generate "$dd/aidreams260K.bin" -z "$dd/aidreams_tok512.bin" -p "" -n "$n3" -t 0
             --ctx 256 --no-stop --ids --bf16)
        ig=$("$rotary" "${gen[@]}" --device cuda 2>"$tmp/err")
        ic=$("$rotary" "${gen[@]}" 2>/dev/null)
        k=$(same_prefix "$ig" "$ic")
        [ "$k" -ge $((n3 + 1)) ] && grep -q "(bf16, a CUDA graph a token)" "$tmp/err" &&
            ok "generate --bf16 --device cuda, aidreams260K: the first $k ids the CPU's" ||
            bad "--bf16: the first $k ids the CPU's, not $((n3 + 1)) $(tail -n 2 "$tmp/err")"
        # chat on the GPU (the Llama 2 template: aidreams has BOS and EOS):
        # two turns, the CPU's greedy reply ids (short under the emulation,
        # which takes about a second a token)
        n4=16
        [ "$built" = emu ] && n4=4
        chat=(chat "$dd/aidreams260K.bin" -z "$dd/aidreams_tok512.bin" -t 0 -n "$n4" --ids)
        ig=$(printf 'Hi\nMore\n' | "$rotary" "${chat[@]}" --device cuda 2>"$tmp/err")
        ic=$(printf 'Hi\nMore\n' | "$rotary" "${chat[@]}" 2>/dev/null)
        [ -n "$ig" ] && [ "$ig" = "$ic" ] && grep -q "2 turns.*(a CUDA graph a token)" "$tmp/err" &&
            ok "chat --device cuda: two turns, the CPU's ids" ||
            bad "chat --device cuda: gpu '$ig' cpu '$ic' $(tail -n 2 "$tmp/err")"
    fi
fi
finish
