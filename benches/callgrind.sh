#!/usr/bin/env bash
# Instructions per hot malloc(SIZE)+free pair through the C ABI under
# LD_PRELOAD, and per GlobalAlloc pair through kmem::Kmem, with
# valgrind --tool=callgrind: (Ir at 2N pairs - Ir at N pairs) / N, the
# loop included.
#
# usage: benches/callgrind.sh [LIB.so ...]   (default: target/release/libbsdalloc.so)
#   env N (default 100000), SIZE (default 32)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
SIZE=${SIZE:-32}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -o "$tmp/pair" benches/c/pair.c
ir() { # out-prefix cmd... -> total Ir of the traced program (not of env)
    local out=$1; shift
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p" "$@" >/dev/null 2>&1
    local f
    for f in "$out".*; do
        if grep -q '^cmd:.*pair\|^cmd:.*global_pair' "$f"; then
            grep '^summary:\|^totals:' "$f" | head -1 | awk '{print $2}'
            return
        fi
    done
}
libs=("$@")
[ ${#libs[@]} -gt 0 ] || libs=(target/release/libbsdalloc.so)
for lib in none "${libs[@]}"; do
    pre=()
    [ "$lib" = none ] || pre=(env "LD_PRELOAD=$(realpath "$lib")")
    a=$(ir "$tmp/a$RANDOM" "${pre[@]}" "$tmp/pair" "$N" "$SIZE")
    b=$(ir "$tmp/b$RANDOM" "${pre[@]}" "$tmp/pair" $((2 * N)) "$SIZE")
    printf '%-45s C malloc(%s)+free: %6.1f Ir per pair\n' "${lib/none/glibc (no preload)}" "$SIZE" \
        "$(echo "($b - $a) / $N" | bc -l)"
done
if cargo build --release -q -p bsdalloc-kmem --example global_pair; then
    a=$(ir "$tmp/g$RANDOM" target/release/examples/global_pair "$N")
    b=$(ir "$tmp/h$RANDOM" target/release/examples/global_pair $((2 * N)))
    printf '%-45s GlobalAlloc(32)+dealloc: %6.1f Ir per pair\n' "kmem::Kmem" "$(echo "($b - $a) / $N" | bc -l)"
fi
