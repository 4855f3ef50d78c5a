#!/bin/bash
# The RoPE study (docs/study.md): every table and plot there comes from this
# script, through `rotary compare`.
#
# usage: studies/run.sh [--scale X] [--only NAME] [--rotary PATH]
#   --scale X   multiply every run's steps by X (default 1: minutes per run on
#               2 cores); a GPU or a bigger machine can afford 5 or 10
#   --only NAME run one part: shakespeare, seeds, kjv, chinese, chinese-bpe, linear
#
# Runs go to runs/study/PART/ (resumable: rerun the same command after an
# interruption); the reports are copied to docs/study/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROTARY="$ROOT/build/rotary"
SCALE=1
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) SCALE="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --rotary) ROTARY="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "studies/run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
RUNS="$ROOT/runs/study"
DOCS="$ROOT/docs/study"
mkdir -p "$RUNS" "$DOCS"
steps() { awk -v s="$SCALE" -v n="$1" 'BEGIN { printf "%d", n * s }'; }
SHAKESPEARE="$ROOT/../shared/data/tinyshakespeare.txt"

# Shape S of the benchmarks: 4 layers, 4 heads, d_model 128, ctx 128, batch 32.
S=(--layers 4 --heads 4 --dim 128 --ctx 128 --batch 32 --eval-every 100 --sample-tokens 200)

part() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
# Copy a comparison's report to docs/study/ and splice its table into
# docs/study.md between the markers <!-- BEGIN NAME --> and <!-- END NAME -->.
publish() { # DIR NAME DOCNAME
    for ext in md csv png svg; do cp "$1/$2.$ext" "$DOCS/$3.$ext"; done
    local doc="$ROOT/docs/study.md"
    grep -q "<!-- BEGIN $3 -->" "$doc" || return 0
    awk -v name="$3" -v table="$DOCS/$3.md" '
        $0 == "<!-- BEGIN " name " -->" { print; while ((getline line < table) > 0) print line; skip = 1; next }
        $0 == "<!-- END " name " -->" { skip = 0 }
        !skip { print }' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
}

if part shakespeare; then # every encoding, one seed, with extrapolation
    "$ROTARY" compare "${S[@]}" --data "$SHAKESPEARE" --steps "$(steps 2000)" \
        --pos rope,learned,sinusoidal,alibi,t5,none --seeds 1 --eval-lengths 1,2,4,8 \
        --out "$RUNS/shakespeare" --name all
    publish "$RUNS/shakespeare" all shakespeare-all
fi
if part seeds; then # rope vs learned over three seeds (reuses seed 1 above)
    "$ROTARY" compare "${S[@]}" --data "$SHAKESPEARE" --steps "$(steps 2000)" \
        --pos rope,learned --seeds 1,2,3 --out "$RUNS/shakespeare" --name seeds
    publish "$RUNS/shakespeare" seeds shakespeare-seeds
fi
if part kjv; then # English with a BPE vocabulary of 4096
    tok="$RUNS/kjv-bpe4096.json"
    [ -f "$tok" ] || "$ROTARY" tokenizer train --vocab 4096 -o "$tok" "$("$ROTARY" corpus english)"
    "$ROTARY" compare "${S[@]}" --data english --tokenizer "$tok" --steps "$(steps 2000)" \
        --pos rope,learned --seeds 1 --out "$RUNS/kjv" --name kjv
    publish "$RUNS/kjv" kjv kjv-bpe
fi
# The Chinese and linear-attention parts run 1000 steps each so that the whole
# study fits one session on 2 cores; --scale 2 gives them 2000.
if part chinese; then # Chinese, byte tokens
    "$ROTARY" compare "${S[@]}" --data chinese --steps "$(steps 1000)" \
        --pos rope,learned --seeds 1 --out "$RUNS/chinese-bytes" --name chinese
    publish "$RUNS/chinese-bytes" chinese chinese-bytes
fi
if part chinese-bpe; then # Chinese, BPE vocabulary of 4096
    tok="$RUNS/chinese-bpe4096.json"
    [ -f "$tok" ] || "$ROTARY" tokenizer train --vocab 4096 -o "$tok" "$("$ROTARY" corpus chinese)"
    "$ROTARY" compare "${S[@]}" --data chinese --tokenizer "$tok" --steps "$(steps 1000)" \
        --pos rope,learned --seeds 1 --out "$RUNS/chinese-bpe" --name chinese-bpe
    publish "$RUNS/chinese-bpe" chinese-bpe chinese-bpe
fi
if part linear; then # RoPE with linear attention (RoFormer section 3.3)
    "$ROTARY" compare "${S[@]}" --data "$SHAKESPEARE" --attn linear --steps "$(steps 1000)" \
        --pos rope,learned --seeds 1 --out "$RUNS/linear" --name linear
    publish "$RUNS/linear" linear shakespeare-linear
fi
echo "studies/run.sh: reports in $DOCS"
