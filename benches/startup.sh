#!/usr/bin/env bash
# Process start-up and fork under LD_PRELOAD: no preload, libbsdalloc.so
# (or the libraries given) and the peers found, interleaved (see
# benches/c/spawn.c). The started program makes one malloc and exits.
#
# usage: benches/startup.sh [LIB.so ...]   (default: target/release/libbsdalloc.so)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -o "$tmp/spawn" benches/c/spawn.c
printf '#include <stdlib.h>\nint main(void){void *p = malloc(10); free(p); return p == 0;}\n' > "$tmp/one.c"
gcc -O2 -o "$tmp/one" "$tmp/one.c"
libs=("$@")
[ ${#libs[@]} -gt 0 ] || { cargo build --release -q -p bsdalloc-capi; libs=("$PWD/target/release/libbsdalloc.so"); }
L=/usr/lib/x86_64-linux-gnu
for p in libmimalloc.so.2 libjemalloc.so.2; do [ -e "$L/$p" ] && libs+=("$L/$p"); done
echo "== start-up (posix_spawn of a program that mallocs once; 15 rounds of 100)"
"$tmp/spawn" "$tmp/one" none "${libs[@]}"
if [ -x /usr/bin/sed ]; then
    # A real program's start: sed makes about 220 allocations of 22 sizes
    # (setlocale, regcomp) before it reads a line.
    echo 1 > "$tmp/one.txt"
    echo "== start-up of sed s/1/x/ (15 rounds of 100)"
    "$tmp/spawn" /usr/bin/sed none "${libs[@]}" -- s/1/x/ "$tmp/one.txt"
fi
echo "== fork of a process holding 2,000 blocks, child _exit (medians of 5 runs)"
for lib in none "${libs[@]}"; do
    pre=""
    [ "$lib" = none ] || pre=$lib
    for _ in 1 2 3 4 5; do LD_PRELOAD=$pre "$tmp/spawn" --fork; done | sort -n | sed -n 3p | sed "s|^|$(basename "$lib"): |"
done
