#!/usr/bin/env bash
# A git workload for the LD_PRELOAD comparison: init, commits with fixed
# dates (so object ids are reproducible), branches, a merge, log, diff,
# grep, gc, fsck, archive. $1: the repository directory (created).
set -eu  # no pipefail: `| head` may cut a writer short
repo=$1
rm -rf "$repo"
git init -q -b main "$repo"
cd "$repo"
n=0
commit() {
    n=$((n + 1))
    export GIT_AUTHOR_DATE="2020-01-01T00:00:$(printf %02d $n)Z"
    export GIT_COMMITTER_DATE="$GIT_AUTHOR_DATE"
    git add -A
    git commit -q -m "$1"
}
for d in a b c d; do
    mkdir -p "$d"
    for i in $(seq 1 60); do
        seq "$i" $((i * 40)) | sed "s/^/$d line /" > "$d/f$i.txt"
    done
done
commit "initial"
for round in 1 2 3 4 5; do
    for i in $(seq "$round" 7 60); do
        sed -i "s/line 1\$/line one (round $round)/; ${round}d" "a/f$i.txt"
        echo "appended $round" >> "b/f$i.txt"
    done
    commit "round $round"
done
git checkout -q -b topic HEAD~2
for i in $(seq 1 20); do echo "topic $i" >> "c/f$i.txt"; done
commit "topic work"
git checkout -q main
export GIT_AUTHOR_DATE="2020-01-02T00:00:00Z" GIT_COMMITTER_DATE="2020-01-02T00:00:00Z"
git merge -q --no-edit topic
git log --format='%H %an %s' --stat
git diff --stat HEAD~4 HEAD
git diff HEAD~3 HEAD -- a | head -c 20000
git grep -c 'line one' | head -20
git rev-list --all --objects | wc -l
git gc -q --aggressive
git fsck --strict 2>&1
git count-objects -v | grep -v -E 'size'
git archive --format=tar HEAD | cksum
git blame -s a/f8.txt | head -20
