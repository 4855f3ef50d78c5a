# Shared by the tests/cli_*.sh scripts: a temporary directory, pass/fail
# counters, and expect_error. Source it after setting `rotary`.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
ok() { echo "ok   $1"; passes=$((passes + 1)); }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
# expect_error [--first] DESCRIPTION PATTERN COMMAND...: the command must fail
# (not by a signal) with "rotary: ...PATTERN..." on stderr; with --first, that
# message must be the first thing on stderr. Under the sanitizers (make
# sanitize) a report on the way out, a leak included, fails it too.
expect_error() {
    local lead='*'
    if [ "$1" = --first ]; then lead=''; shift; fi
    local what="$1" pattern="$2"; shift 2
    local err status
    err=$("$@" 2>&1 >/dev/null); status=$?
    if [ $status -ne 0 ] && [ $status -lt 128 ] && [[ "$err" == $lead"rotary: "*"$pattern"* ]] &&
        [[ "$err" != *"Sanitizer"* ]]; then
        ok "$what: $(echo "$err" | tail -1)"
    else
        bad "$what: status $status, stderr: $err"
    fi
}
# some_text [SOURCE_DIR]: the path of an English text to train on: the
# shared corpus beside SOURCE_DIR when there is one, else 3000 generated lines.
some_text() {
    if [ $# -gt 0 ] && [ -f "$1/../shared/data/tinyshakespeare.txt" ]; then
        echo "$1/../shared/data/tinyshakespeare.txt"
        return
    fi
    [ -f "$tmp/text.txt" ] ||
        for i in $(seq 1 3000); do
            echo "line $i: the quick brown fox jumps over the lazy dog $((i * 7 % 13))"
        done > "$tmp/text.txt"
    echo "$tmp/text.txt"
}
# The summary line and exit status.
finish() {
    echo "$passes passed, $fails failed"
    [ $fails -eq 0 ]
}
