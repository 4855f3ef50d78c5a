#!/bin/bash
# fuzz/run.sh SECONDS [HARNESS...]: build the libFuzzer harnesses (if
# needed) and run each for SECONDS with its seed corpus, AddressSanitizer
# and UndefinedBehaviorSanitizer; one summary line per harness; exit status
# non-zero when any harness found a crash (or failed to run).
#
#   ROTARY_FUZZ_BUILD  build directory (default: build-fuzz at the top)
#   ROTARY_FUZZ_JOBS   build parallelism (default 2)
#   ROTARY_FUZZ_ARGS   extra libFuzzer flags for every harness
#
# New inputs that reach new code go to BUILD/corpus/NAME (the committed
# seeds in fuzz/corpus/NAME are only read); crash inputs go to
# BUILD/crashes/NAME-crash-* (also leak-, timeout-, oom-). To keep one as a
# regression: minimise it (BUILD/fuzz_NAME -minimize_crash=1 -runs=10000
# FILE), fix the reader, and save it as tests/fuzz_regressions/NAME-WHAT.bin;
# CTest replays those (tests/fuzz.cmake). docs/reliability.md has the rest.
set -uo pipefail

usage() { echo "usage: fuzz/run.sh SECONDS [HARNESS...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
SECONDS_EACH=$1
shift
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] && [ "$SECONDS_EACH" -ge 1 ] || usage

FUZZ_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$FUZZ_DIR/.." && pwd)
BUILD=${ROTARY_FUZZ_BUILD:-$ROOT/build-fuzz}
JOBS=${ROTARY_FUZZ_JOBS:-2}
ALL="safetensors llama2c_model llama2c_tokenizer gguf gguf_tokenizer gguf_model tokenizer_json tokens run_config encode"
HARNESSES=${*:-$ALL}

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$FUZZ_DIR" -B "$BUILD" -DCMAKE_C_COMPILER="${CC:-clang}" >/dev/null || exit 1
fi
cmake --build "$BUILD" -j "$JOBS" >"$BUILD/build.log" 2>&1 || { cat "$BUILD/build.log"; exit 1; }

# Longest input per harness: room for the seeds, small enough to stay fast.
max_len() {
  case $1 in
    safetensors) echo 16384 ;;
    llama2c_model) echo 8192 ;;
    llama2c_tokenizer) echo 8192 ;;
    gguf|gguf_tokenizer|gguf_model) echo 32768 ;;
    tokenizer_json) echo 8192 ;;
    tokens) echo 1024 ;;
    run_config) echo 4096 ;;
    encode) echo 4096 ;;
    *) echo 4096 ;;
  esac
}
# stdout is closed (-close_fd_mask=1); stderr stays open for the harnesses'
# failed-check messages, except for run_config, whose code prints an error
# line for every bad input (crash reports survive either way).
fd_mask() { [ "$1" = run_config ] && echo 3 || echo 1; }
dict() {
  case $1 in
    gguf|gguf_tokenizer|gguf_model) echo "$FUZZ_DIR/dict/gguf.dict" ;;
    *) [ -f "$FUZZ_DIR/dict/$1.dict" ] && echo "$FUZZ_DIR/dict/$1.dict" ;;
  esac
}

# Readers report huge allocations as ENOMEM, which must stay testable;
# libFuzzer's -malloc_limit_mb still flags any single allocation over
# -rss_limit_mb as a crash (an "oom-" input).
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OMP_NUM_THREADS=1
# The harnesses' scratch files (the input as a file) go to a directory of
# our own, removed at the end even when a harness crashed.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
ROTARY_FUZZ_TMP=$(mktemp -d "$shm/rotary-fuzz.XXXXXX") || exit 1
export ROTARY_FUZZ_TMP
trap 'rm -rf "$ROTARY_FUZZ_TMP"' EXIT

mkdir -p "$BUILD/crashes" "$BUILD/logs"
status=0
printf '%-18s %10s %10s %8s %8s  %s\n' harness "runs" "exec/s" "corpus" crashes "artifacts"
for h in $HARNESSES; do
  bin="$BUILD/fuzz_$h"
  if [ ! -x "$bin" ]; then
    echo "fuzz/run.sh: no harness $h" >&2
    status=1
    continue
  fi
  work="$BUILD/corpus/$h"
  mkdir -p "$work"
  # Earlier crash inputs for this harness are seeds too.
  for r in "$ROOT/tests/fuzz_regressions/$h"-*; do [ -f "$r" ] && cp -f "$r" "$work/"; done
  before=$(ls "$BUILD/crashes" | grep -c "^$h-" || true)
  d=$(dict "$h")
  log="$BUILD/logs/$h.log"
  # shellcheck disable=SC2086
  "$bin" "$work" "$FUZZ_DIR/corpus/$h" \
    -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$h")" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 -close_fd_mask="$(fd_mask "$h")" \
    -artifact_prefix="$BUILD/crashes/$h-" ${d:+-dict="$d"} ${ROTARY_FUZZ_ARGS:-} \
    >"$log" 2>&1
  rc=$?
  after=$(ls "$BUILD/crashes" | grep -c "^$h-" || true)
  new=$((after - before))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(ls "$work" | wc -l)
  arts=$(ls -t "$BUILD/crashes" | grep "^$h-" | head -n "$new" | tr '\n' ' ')
  printf '%-18s %10s %10s %8s %8s  %s\n' "$h" "${runs:-?}" "${eps:-?}" "$units" "$new" "$arts"
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    status=1
    echo "---- $h: exit $rc, log $log" >&2
    grep -E "ERROR|SUMMARY|check failed|runtime error|out-of-memory|Test unit written" "$log" \
      | head -8 >&2
  fi
done
exit $status
