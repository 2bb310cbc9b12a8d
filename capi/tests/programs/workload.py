# A Python workload for the LD_PRELOAD comparison: dicts, sets, strings,
# big integers, json, re, sorting, cyclic garbage, threads, sqlite3 and
# a subprocess. Prints deterministic results (run with PYTHONHASHSEED=0).
import collections
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import threading
import zlib


def rng(seed):
    x = seed
    while True:
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        yield x


r = rng(88172645463325252)
words = ["".join(chr(97 + next(r) % 26) for _ in range(next(r) % 12 + 1)) for _ in range(60000)]
counts = collections.Counter(words)
print("words", len(words), "distinct", len(counts), "top", counts.most_common(3))

d = {}
for i, w in enumerate(words):
    d.setdefault(w[:3], []).append(i)
print("prefixes", len(d), "longest", max(len(v) for v in d.values()))

s = set(words[::2]) ^ set(words[1::3])
print("symdiff", len(s))

text = " ".join(words)
print("regex", len(re.findall(r"\b[aeiou][a-z]{3,}\b", text)), len(re.sub(r"(a+)", r"<\1>", text)))

big = 1
for i in range(1, 3000):
    big *= i
print("factorial bits", big.bit_length(), hex(big)[-12:])

blob = json.dumps({"words": words[:20000], "d": {k: v[:5] for k, v in list(d.items())[:3000]}}, sort_keys=True)
back = json.loads(blob)
print("json", len(blob), hashlib.sha256(blob.encode()).hexdigest()[:16], len(back["words"]))
print("zlib", len(zlib.compress(blob.encode(), 6)))

items = [(next(r) % 1000, w) for w in words]
items.sort()
print("sorted", items[0], items[-1])


class Node:
    def __init__(self, v):
        self.v = v
        self.peer = None


for round_ in range(20):
    nodes = [Node(i) for i in range(5000)]
    for a, b in zip(nodes, nodes[1:] + nodes[:1]):
        a.peer = b
    del nodes
import gc

print("gc", gc.collect() >= 0)

results = [0] * 8
lock = threading.Lock()


def work(k):
    local = collections.defaultdict(int)
    for w in words[k::8]:
        local[w] += len(w)
        tmp = [w * 3 for _ in range(5)]
        del tmp
    with lock:
        results[k] = sum(local.values())


threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("threads", results)

db = sqlite3.connect(":memory:")
db.execute("create table t (w text, n integer)")
db.executemany("insert into t values (?, ?)", ((w, i) for i, w in enumerate(words)))
db.execute("create index tw on t (w)")
print("sqlite", db.execute("select count(distinct w), sum(n) % 1000003, max(length(w)) from t").fetchone())
print("sqlite top", db.execute("select w, count(*) c from t group by w order by c desc, w limit 3").fetchall())

out = subprocess.run([sys.executable, "-c", "print(sum(range(10**6)))"], capture_output=True, text=True)
print("subprocess", out.stdout.strip(), out.returncode)
