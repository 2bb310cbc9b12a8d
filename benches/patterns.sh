#!/usr/bin/env bash
# Rust allocation patterns (bsdalloc::patterns) under kmem::Kmem, the
# system allocator, and the system allocator's binary under LD_PRELOAD of
# libbsdalloc.so, jemalloc and mimalloc (those found), interleaved: ROUNDS
# rounds, each running every pattern under every allocator in turn; prints
# the median seconds per pattern and allocator.
#
# usage: benches/patterns.sh [ROUNDS] [PATTERN ...]   (default 3, all)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
cargo build --release -q -p bsdalloc --bin pat-kmem --bin pat-system
cargo build --release -q -p bsdalloc-capi
pats=("$@")
[ ${#pats[@]} -gt 0 ] || pats=(vec_growth buffers strings hashmap btree aligned large_mixed large_touch large_aligned channel two_threads_strings thread_churn zeroed_large tree_nodes vec_of_vecs shared_pool)
L=/usr/lib/x86_64-linux-gnu
names=(glibc kmem capi)
cmds=("target/release/pat-system" "target/release/pat-kmem" "env LD_PRELOAD=$PWD/target/release/libbsdalloc.so target/release/pat-system")
for p in jemalloc:libjemalloc.so.2 mimalloc:libmimalloc.so.2; do
    if [ -e "$L/${p#*:}" ]; then
        names+=("${p%%:*}")
        cmds+=("env LD_PRELOAD=$L/${p#*:} target/release/pat-system")
    fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((r = 0; r < rounds; r++)); do
    for p in "${pats[@]}"; do
        for i in "${!names[@]}"; do
            ${cmds[$i]} "$p" >> "$tmp/$p.${names[$i]}"
        done
    done
done
printf '%-22s' pattern
printf '%10s' "${names[@]}" "kmem/glibc"
echo
for p in "${pats[@]}"; do
    printf '%-22s' "$p"
    for n in "${names[@]}"; do
        printf '%10s' "$(sort -n "$tmp/$p.$n" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    done
    k=$(sort -n "$tmp/$p.kmem" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    g=$(sort -n "$tmp/$p.glibc" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%10.2f\n' "$(echo "$k / $g" | bc -l)"
done
