#!/bin/bash
# Training when the disk fills up or the run directory turns read-only: a
# clear error, a non-zero status, the last checkpoint byte-identical, and a
# resume that finishes once the disk has room again (docs/reliability.md).
# Also: --resume on a directory where a run was killed before it wrote
# anything starts the run from the beginning.
# usage: cli_reliability.sh ROTARY_BINARY
set -u
rotary="$1"
. "$(dirname "$0")/lib.sh"
chmod 755 "$tmp" # the read-only check may run as another user

text=$(some_text)
tiny=(--data "$text" --layers 2 --heads 2 --dim 64 --ctx 32 --batch 4 --steps 400
      --eval-every 10 --eval-batches 1 --sample-tokens 0 --threads 2)

# A mounted tmpfs gives a real "No space left on device" and a real
# read-only file system; without the right to mount, a file-size limit
# (ulimit -f: EFBIG) and a directory without write permission stand in.
can_mount=0
mkdir -p "$tmp/mnt"
if mount -t tmpfs -o size=4m tmpfs "$tmp/mnt" 2>/dev/null; then
    can_mount=1
    trap 'umount "$tmp/mnt" 2>/dev/null; rm -rf "$tmp"' EXIT
fi

# Start a run in $1 and stop it (SIGINT) once it has written a checkpoint.
start_run() {
    "$rotary" train "${tiny[@]}" --out "$1" > /dev/null 2> "$1.err" &
    local pid=$!
    for _ in $(seq 1 600); do
        [ -f "$1/checkpoint.safetensors" ] && break
        sleep 0.05
    done
    kill -INT $pid
    wait $pid
}
sum() { sha256sum "$1/checkpoint.safetensors" | cut -d' ' -f1; }
leftovers() { ls "$1" | grep -c '\.tmp\.' ; }

# 1. Disk full; $1 = mount (tmpfs) or limit (ulimit -f).
disk_full() {
    local dir before size what
    if [ $1 = mount ]; then
        dir="$tmp/mnt/run"
        start_run "$dir"
        before=$(sum "$dir")
        head -c 8m /dev/zero > "$tmp/mnt/filler" 2>/dev/null # fills the 4 MB tmpfs
        what="tmpfs"
        expect_error "disk full ($what)" "No space left on device" "$rotary" train --resume "$dir"
    else
        dir="$tmp/run-full"
        start_run "$dir"
        before=$(sum "$dir")
        size=$(stat -c %s "$dir/checkpoint.safetensors")
        what="ulimit -f"
        expect_error "disk full ($what)" "File too large" \
            bash -c "ulimit -f $((size / 2048)); exec \"\$@\"" _ "$rotary" train --resume "$dir"
    fi
    [ "$(sum "$dir")" = "$before" ] && ok "disk full ($what): checkpoint unchanged" ||
        bad "disk full ($what): checkpoint changed"
    [ "$(leftovers "$dir")" = 0 ] && ok "disk full ($what): no temporary file left" ||
        bad "disk full ($what): temporary files left: $(ls "$dir")"
    rm -f "$tmp/mnt/filler"
    "$rotary" train --resume "$dir" > /dev/null 2>&1 && [ "$(wc -l < "$dir/metrics.csv")" = 401 ] &&
        ok "disk full ($what): resume finishes once there is room" || bad "disk full ($what): resume"
}

# 2. Read-only run directory; $1 = mount (read-only file system) or limit
#    (no write permission; as root, run as nobody, whom it binds).
read_only() {
    local dir before what as=()
    if [ $1 = mount ]; then
        umount "$tmp/mnt"
        mount -t tmpfs -o size=4m tmpfs "$tmp/mnt"
        dir="$tmp/mnt/run"
        start_run "$dir"
        before=$(sum "$dir")
        mount -o remount,ro "$tmp/mnt"
        what="read-only mount"
        expect_error "read-only ($what)" "Read-only file system" "$rotary" train --resume "$dir"
        mount -o remount,rw "$tmp/mnt"
    else
        dir="$tmp/run-ro"
        start_run "$dir"
        before=$(sum "$dir")
        chmod -R a-w "$dir"
        [ "$(id -u)" = 0 ] && as=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
        what="no write permission"
        expect_error "read-only ($what)" "Permission denied" "${as[@]}" "$rotary" train --resume "$dir"
        chmod -R u+w "$dir"
    fi
    [ "$(sum "$dir")" = "$before" ] && ok "read-only ($what): checkpoint unchanged" ||
        bad "read-only ($what): checkpoint changed"
    "$rotary" train --resume "$dir" > /dev/null 2>&1 && [ "$(wc -l < "$dir/metrics.csv")" = 401 ] &&
        ok "read-only ($what): resume finishes once writable" || bad "read-only ($what): resume"
}

disk_full limit
read_only limit
if [ $can_mount = 1 ]; then
    disk_full mount
    read_only mount
else
    echo "note: cannot mount a tmpfs here; ENOSPC and EROFS checked through ulimit -f and permissions only"
fi

# 3. Killed before it wrote config.json: the directory exists, holds no run,
#    and --resume with the run's flags starts it from the beginning.
mkdir "$tmp/empty"
"$rotary" train "${tiny[@]}" --steps 20 --resume "$tmp/empty" > /dev/null 2> "$tmp/empty.err" &&
    grep -q "starting it from the beginning" "$tmp/empty.err" &&
    [ "$(wc -l < "$tmp/empty/metrics.csv")" = 21 ] &&
    ok "resume of a run killed before config.json starts it" || { bad "resume of an empty run"; cat "$tmp/empty.err"; }
expect_error "resume of a missing directory" "no such run directory" "$rotary" train --resume "$tmp/nowhere"

# 4. A model that cannot fit in memory is refused before it is touched, with
#    the bytes it needs: 12.9 G parameters (51 GB) against this machine, and
#    1.2 G parameters (4.8 GB) under ulimit -v 3 GB (room for the program
#    itself: a CUDA build maps cuBLAS, over 0.5 GB).
expect_error "model larger than memory" "needs" \
    "$rotary" train --data "$text" --dim 8192 --layers 16 --heads 8 --out "$tmp/huge"
if [ -z "${ROTARY_SANITIZED:-}" ]; then # ASan reserves terabytes of address space
    expect_error "model larger than ulimit -v" "needs" bash -c 'ulimit -v 3000000; exec "$@"' _ \
        "$rotary" train --data "$text" --dim 2048 --layers 24 --heads 16 --out "$tmp/huge2"
fi

[ $can_mount = 1 ] && umount "$tmp/mnt"
finish
