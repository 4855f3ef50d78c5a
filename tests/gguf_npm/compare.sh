#!/bin/bash
# compare.sh GGUF_LIST FILE... [--damaged FILE...]
#
# For each GGUF file, compare the listing of our reader (GGUF_LIST, built
# from tests/gguf_list.c) with the one @huggingface/gguf gives
# (tests/gguf_npm/list.mjs): they must be identical. Files after --damaged
# are known to be broken copies: they pass if both readers refuse them (or
# both read them the same). Without node or the package it fails (CI must
# run it): install both with scripts/install-deps.sh.
set -u
here=$(cd "$(dirname "$0")" && pwd)
list=${1:?usage: compare.sh GGUF_LIST FILE... [--damaged FILE...]}
shift
if ! command -v node >/dev/null; then
  echo "skip: node is not installed (scripts/install-deps.sh installs it)"
  exit 1
fi
if [ ! -d "$here/node_modules/@huggingface/gguf" ]; then
  echo "skip: $here/node_modules lacks @huggingface/gguf (run: npm ci --prefix $here)"
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0 damaged=0
for f in "$@"; do
  if [ "$f" = --damaged ]; then damaged=1; continue; fi
  if [ ! -r "$f" ]; then
    echo "FAIL $f: cannot read it"
    fail=$((fail + 1))
    continue
  fi
  "$list" "$f" >"$tmp/ours" 2>"$tmp/ours.err"
  rc_ours=$?
  node "$here/list.mjs" "$f" >"$tmp/theirs" 2>"$tmp/theirs.err"
  rc_theirs=$?
  if [ $rc_ours -eq 0 ] && [ $rc_theirs -eq 0 ]; then
    if cmp -s "$tmp/ours" "$tmp/theirs"; then
      echo "ok   $f: same listing ($(($(wc -l <"$tmp/ours") - 1)) keys and tensors)"
      pass=$((pass + 1))
    else
      echo "FAIL $f: listings differ (< rotary, > @huggingface/gguf):"
      diff "$tmp/ours" "$tmp/theirs" | cut -c1-300 | head -20
      fail=$((fail + 1))
    fi
  elif [ $rc_ours -ne 0 ] && [ $rc_theirs -ne 0 ] && [ $damaged = 1 ]; then
    echo "ok   $f: a damaged copy, refused by both"
    echo "     rotary:           $(head -c 300 "$tmp/ours.err")"
    echo "     @huggingface/gguf: $(head -c 300 "$tmp/theirs.err")"
    pass=$((pass + 1))
  else
    echo "FAIL $f: rotary exit $rc_ours, @huggingface/gguf exit $rc_theirs"
    head -c 300 "$tmp/ours.err"
    head -c 300 "$tmp/theirs.err"
    fail=$((fail + 1))
  fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
