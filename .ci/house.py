#!/usr/bin/env python3
"""The house rules: no source file over 1,000 lines, no production function
over 120 lines. Production code is every `src/` tree of the workspace minus
`#[cfg(test)]` modules and `src/tests/`. Functions are found by their `fn`
line and measured to the brace that closes their body (strings, chars and
comments are skipped). Exits 1 and lists the offenders when a rule breaks.

    python3 .ci/house.py            # check
    python3 .ci/house.py --top 15   # also list the longest functions
"""
import os, re, sys

MAX_FILE, MAX_FN = 1000, 120
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {"target", ".git", "node_modules"}
FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def strip(line, state):
    """Remove strings, chars and comments; `state` carries block comments."""
    out, i, n = [], 0, len(line)
    while i < n:
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"] = False
            i = j + 2
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        if c == '"':
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])+'", line[i:]).group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    state = {"block": False}
    clean = [strip(l, state) for l in lines]
    found, i = [], 0
    test_depth = None
    depth = 0
    pending_cfg_test = False
    while i < len(clean):
        l = clean[i]
        if re.match(r"\s*#\[cfg\((all\()?test", lines[i]):
            pending_cfg_test = True
        m = FN_RE.match(l)
        if m and test_depth is None:
            d, j, opened = 0, i, False
            while j < len(clean):
                for ch in clean[j]:
                    if ch == "{":
                        d += 1
                        opened = True
                    elif ch == "}":
                        d -= 1
                if opened and d <= 0:
                    break
                if not opened and ";" in clean[j]:
                    break
                j += 1
            if opened:
                found.append((m.group(7), i + 1, j - i + 1))
        for ch in l:
            if ch == "{":
                if pending_cfg_test and test_depth is None:
                    test_depth = depth
                depth += 1
                pending_cfg_test = False
            elif ch == "}":
                depth -= 1
                if test_depth is not None and depth == test_depth:
                    test_depth = None
        if pending_cfg_test and l.strip().endswith(";"):
            pending_cfg_test = False
        i += 1
    return found, len(lines) - (1 if lines and lines[-1] == "" else 0)


def main():
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 0
    bad, allfns = [], []
    for dirpath, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, ROOT)
            fns, n = functions(p)
            if n > MAX_FILE:
                bad.append(f"{rel}: {n} lines (> {MAX_FILE})")
            parts = rel.split(os.sep)
            prod = "src" in parts and "tests" not in parts[parts.index("src"):]
            if not prod:
                continue
            for name, line, length in fns:
                allfns.append((length, f"{rel}:{line} {name}"))
                if length > MAX_FN:
                    bad.append(f"{rel}:{line}: fn {name} is {length} lines (> {MAX_FN})")
    if top:
        for length, where in sorted(allfns, reverse=True)[:top]:
            print(f"{length:5} {where}")
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print(f"house: {len(allfns)} production functions, none over {MAX_FN} lines; no file over {MAX_FILE} lines")


if __name__ == "__main__":
    main()
