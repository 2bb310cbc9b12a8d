#!/usr/bin/env bash
# What heap profiling costs a whole program, in instructions (deterministic,
# unlike time on a shared machine): total Ir of CMD under LD_PRELOAD with
# BSDALLOC_PROF unset and with BSDALLOC_PROF=on, and their ratio.
#
# usage: benches/prof_ratio.sh NAME CMD [ARGS...]
#   env LIB (default target/release/libbsdalloc.so)
#   env PER=REGEX: instructions per call of the functions whose name
#       matches REGEX (e.g. PER='^(malloc|operator new)'), for programs
#       that run for a fixed time (larson, xmalloc-test): their totals
#       differ with their throughput, the cost per call does not
#   env ON (default BSDALLOC_PROF=on): the profiled column's variables
#   env COLLECT=PATTERN: count only inside the functions matching
#       callgrind's PATTERN (--toggle-collect, '*' wildcards; e.g.
#       COLLECT='*prof::sample::*'): where the difference goes
# e.g.:  benches/prof_ratio.sh mstress /tmp/mbench-bin/mstress 1 50 10
#        PER='^operator new' benches/prof_ratio.sh larson-sized \
#            /tmp/mbench-bin/larson-sized 1 8 1000 5000 100 4141 2
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(realpath "${LIB:-target/release/libbsdalloc.so}")
name=$1; shift
prog=$(basename "$1")
# total Ir of the traced program, or Ir per call of PER
ir() {
    local d f
    d=$(mktemp -d)
    local collect=()
    [ -z "${COLLECT:-}" ] || collect=(--collect-atstart=no "--toggle-collect=$COLLECT")
    valgrind --tool=callgrind --trace-children=yes "${collect[@]}" \
        --callgrind-out-file="$d/out.%p" "$@" >/dev/null 2>&1
    # (the largest of the matching processes: python3 also runs helpers)
    for f in "$d"/out.*; do
        if grep -q "^cmd:.*$prog" "$f"; then
            python3 - "$f" "${PER:-}" <<'PY'
import re, sys
path, per = sys.argv[1], sys.argv[2]
names, total, calls, target = {}, 0, 0, None
rx = re.compile(per) if per else None
for line in open(path, errors="replace"):
    if line.startswith(("summary:", "totals:")) and not total:
        total = int(line.split()[1])
    elif line.startswith("cfn="):
        m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            target = names.get(m.group(1), "")
        else:
            target = line[4:].strip()
    elif line.startswith("fn="):
        m = re.match(r"fn=\((\d+)\) (.*)", line.rstrip("\n"))
        if m:
            names[m.group(1)] = m.group(2)
    elif line.startswith("calls=") and rx and target and rx.search(target):
        calls += int(line[6:].split()[0])
print(total / calls if rx and calls else total)
PY
        fi
    done | sort -g | tail -1
    rm -rf "$d"
}
off=$(ir env LD_PRELOAD="$lib" "$@")
on=$(ir env LD_PRELOAD="$lib" ${ON:-BSDALLOC_PROF=on} "$@")
unit=Ir; [ -z "${PER:-}" ] || unit="Ir/call"
if [ "$(echo "$off == 0" | bc -l)" = 1 ]; then
    printf '%-14s off %14.1f %s  on %14.1f %s\n' "$name" "$off" "$unit" "$on" "$unit"
else
    printf '%-14s off %14.1f %s  on %14.1f %s  on/off %.4f\n' "$name" "$off" "$unit" "$on" "$unit" "$(echo "$on / $off" | bc -l)"
fi
