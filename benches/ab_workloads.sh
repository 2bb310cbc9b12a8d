#!/usr/bin/env bash
# A/B of two wl-kmem builds (our own workload suite through kmem::Kmem),
# interleaved: each round runs every workload once per build, the order
# alternating, and the medians are compared.
#
# usage: benches/ab_workloads.sh OLD_WL_KMEM NEW_WL_KMEM [ROUNDS] [SCALE]
set -euo pipefail
old=${1:?old wl-kmem}; new=${2:?new wl-kmem}; rounds=${3:-5}; scale=${4:-0.5}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
wls=$("$new" --list | awk '{print $1}')
for r in $(seq 1 "$rounds"); do
  for w in $wls; do
    if [ $((r % 2)) -eq 0 ]; then order="old new"; else order="new old"; fi
    for v in $order; do
      exe=$old; [ "$v" = new ] && exe=$new
      "$exe" "$w" --scale "$scale" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' >> "$tmp/$w.$v"
    done
  done
done
printf '%-14s %10s %10s %7s\n' workload old_med new_med new/old
for w in $wls; do
  o=$(sort -n "$tmp/$w.old" | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
  n=$(sort -n "$tmp/$w.new" | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
  printf '%-14s %10.4f %10.4f %7.3f\n' "$w" "$o" "$n" "$(echo "$n / $o" | bc -l)"
done
