#!/usr/bin/env bash
# What heap profiling costs a whole program, in instructions (deterministic,
# unlike time on a shared machine): total Ir of CMD under LD_PRELOAD with
# BSDALLOC_PROF unset and with BSDALLOC_PROF=on, and their ratio.
#
# usage: benches/prof_ratio.sh NAME CMD [ARGS...]
#   env LIB (default target/release/libbsdalloc.so)
# e.g.:  benches/prof_ratio.sh mstress /tmp/mbench-bin/mstress 1 50 10
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(realpath "${LIB:-target/release/libbsdalloc.so}")
name=$1; shift
prog=$(basename "$1")
ir() {
    local d f
    d=$(mktemp -d)
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$d/out.%p" "$@" >/dev/null 2>&1
    for f in "$d"/out.*; do
        if grep -q "^cmd:.*$prog" "$f"; then
            grep '^summary:\|^totals:' "$f" | head -1 | awk '{print $2}'
        fi
    done
    rm -rf "$d"
}
off=$(ir env LD_PRELOAD="$lib" "$@")
on=$(ir env LD_PRELOAD="$lib" BSDALLOC_PROF=on "$@")
printf '%-14s off %14d Ir  on %14d Ir  on/off %.4f\n' "$name" "$off" "$on" "$(echo "$on / $off" | bc -l)"
