#!/bin/bash
# The command's answer to bad input: a one-line "rotary: ..." error and a
# non-zero status, never a crash (a status >= 128 would be a signal).
set -u
rotary="$1"
. "$(dirname "$0")/lib.sh"

printf 'just some text, not a checkpoint\n' > "$tmp/text.safetensors"
: > "$tmp/empty.safetensors"
"$rotary" demo --steps 1 --save "$tmp/good.safetensors" >/dev/null || { echo "FAIL demo --save"; exit 1; }
head -c 2000 "$tmp/good.safetensors" > "$tmp/cut-header.safetensors"
size=$(stat -c %s "$tmp/good.safetensors")
head -c $((size - 100)) "$tmp/good.safetensors" > "$tmp/cut-data.safetensors"
# A header length far past the end of the file.
python3 - "$tmp/huge.safetensors" <<'PY'
import struct, sys
open(sys.argv[1], "wb").write(struct.pack("<Q", 1 << 40) + b"{}")
PY

expect_error --first "missing file" "$tmp/nope" "$rotary" info "$tmp/nope.safetensors"
expect_error --first "empty file" "empty" "$rotary" info "$tmp/empty.safetensors"
expect_error --first "text file" "text.safetensors" "$rotary" info "$tmp/text.safetensors"
expect_error --first "cut in the header" "cut-header" "$rotary" info "$tmp/cut-header.safetensors"
expect_error --first "cut in the data" "cut-data" "$rotary" info "$tmp/cut-data.safetensors"
expect_error --first "header past end" "huge" "$rotary" info "$tmp/huge.safetensors"
expect_error --first "unknown command" "unknown command" "$rotary" frobnicate
expect_error --first "unknown option" "--bogus" "$rotary" demo --bogus 1
expect_error --first "bad number" "--steps" "$rotary" demo --steps ten
expect_error --first "bad encoding" "--pos" "$rotary" demo --pos spiral
"$rotary" info "$tmp/good.safetensors" | grep -q "tok_emb.weight" && ok "good checkpoint lists its tensors" ||
    bad "good checkpoint"
finish
