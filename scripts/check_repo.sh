#!/usr/bin/env bash
# The repository stays lean: no committed file over 2 MB except the embedded demo data
# (data/cifar10-mini.tar.gz). Run folders, run tarballs and large models stay out of the tree:
# results are kept as small summaries in bench/results/. Part of `./x test`, so CI fails on one.
set -euo pipefail
cd "$(dirname "$0")/.."
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "check_repo: not a git checkout, skipped" >&2; exit 0; }
limit=$((2 * 1024 * 1024))
bad=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  [ "$f" = data/cifar10-mini.tar.gz ] && continue
  size=$(stat -c %s "$f")
  if [ "$size" -gt "$limit" ]; then
    echo "check_repo: $f is $size bytes, over the 2 MB limit for committed files (keep a summary in bench/results/ instead)" >&2
    bad=1
  fi
done < <(git ls-files -z)
exit $bad
