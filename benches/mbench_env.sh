#!/usr/bin/env bash
# ../shared/mbench/run.py with a per-column environment: an --alloc value
# NAME=VAR=VALUE[,VAR2=VALUE2]|LIB.so runs that column with those variables
# set (e.g. "guards=BSDALLOC_DEBUG=guards|$PWD/target/release/libbsdalloc.so").
# Writes the patched runner to a temporary file and runs it with the
# arguments given (see ../shared/mbench/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=${MBENCH_RUN:-$here/../shared/mbench/run.py}
tmp=$(mktemp --suffix=.py)
trap 'rm -f "$tmp"' EXIT
python3 - "$src" "$tmp" <<'PY'
import sys
s = open(sys.argv[1]).read()
old = '    envcmd = ["env"] + (["LD_PRELOAD=" + lib] if lib else [])'
assert old in s, "run.py changed: update benches/mbench_env.sh"
s = s.replace(old, '''    extra = []
    if lib and "|" in lib:
        e, lib = lib.split("|", 1)
        extra = os.path.basename(e).split(",")
    envcmd = ["env"] + extra + (["LD_PRELOAD=" + lib] if lib else [])''')
s = s.replace("        if p and not os.path.exists(p):",
              "        if p and not os.path.exists(p.split('|')[-1]):")
open(sys.argv[2], "w").write(s)
PY
python3 "$tmp" "$@"
