#!/usr/bin/env bash
# CI check: the shipped analysis policies hold the graph that the analyser derives now from the kernel
# Debian serves today. analysis/regenerate-policies.sh writes its result into SCRATCH_DIR (the shipped
# files are its base), and every file there is compared with policies/linux-6.1/:
#  - byte for byte equal: the kernel is a shipped build and nothing changed;
#  - a policy differing only in provenance (`ioreq-filter policy diff` exits 0: today's build gives the same
#    graph as a shipped one and is only listed in its derived_from.builds) passes, with a note;
#  - a coverage report differing only in hexadecimal numbers (addresses, offsets of a rebuilt module)
#    passes, with a note;
#  - anything else fails: a graph change (the graph of today's build is none of the shipped graphs), a
#    device-section change, a coverage change, an error. Every file is checked and reported.
# Usage: regenerate_check.sh IOREQ_FILTER_BINARY SOURCE_DIR SCRATCH_DIR
set -euo pipefail
bin=$1 src=$2 scratch=$3
shipped=$src/policies/linux-6.1
rm -rf "$scratch" && mkdir -p "$scratch/out"
if ! IOREQ_FILTER_FRESH_DIR=$scratch/fresh "$src/analysis/regenerate-policies.sh" "$bin" "$scratch/out" > "$scratch/regenerate.log" 2>&1; then
  echo "FAIL: analysis/regenerate-policies.sh failed:"; tail -20 "$scratch/regenerate.log"; exit 1
fi
grep '^kernel: ' "$scratch/regenerate.log" || true
# What add-build decided for each policy (one line each).
grep "^$scratch/out/" "$scratch/regenerate.log" | sed "s|^$scratch/out/|regenerate: |" || true
fix="run analysis/regenerate-policies.sh (it adds the new build's graph, see analysis/README.md) and commit policies/linux-6.1"
status=0 same=0 provenance=0 changed=0
for f in "$scratch"/out/*; do
  name=$(basename "$f")
  if [ ! -e "$shipped/$name" ]; then
    echo "FAIL (not shipped): the analyser generates $name, policies/linux-6.1 has no such file"; status=1 changed=$((changed + 1)); continue
  fi
  if cmp -s "$f" "$shipped/$name"; then same=$((same + 1)); continue; fi
  case $name in
    *.json)
      rc=0; "$bin" policy diff "$shipped/$name" "$f" > "$scratch/$name.diff" 2>&1 || rc=$?
      if [ "$rc" -eq 0 ]; then
        echo "provenance only: policies/linux-6.1/$name: today's graph equals a shipped graph; only the builds it was checked against change:"
        "$bin" policy diff --provenance "$shipped/$name" "$f" | grep 'derived_from' | sed 's/^/    /' || true
        provenance=$((provenance + 1))
      elif [ "$rc" -eq 1 ]; then
        echo "FAIL (graph change): policies/linux-6.1/$name: today's graph is none of the shipped graphs:"
        sed 's/^/    /' "$scratch/$name.diff"
        # What changed, node by node, against the shipped graph 0 (graphs are paired by position).
        "$bin" policy diff "$shipped/$name" "$scratch/fresh/$name" > "$scratch/$name.graph-diff" 2>&1 || true
        echo "    against the shipped graph 0 ($(grep -c '' "$scratch/$name.graph-diff") lines of \`ioreq-filter policy diff\`, first 30):"
        head -30 "$scratch/$name.graph-diff" | sed 's/^/      /'
        status=1 changed=$((changed + 1))
      else
        echo "FAIL (error): ioreq-filter policy diff policies/linux-6.1/$name $f:"; sed 's/^/    /' "$scratch/$name.diff"
        status=1 changed=$((changed + 1))
      fi
      ;;
    *.coverage.txt)
      # Addresses (.text+0x..., vmlinux 0xffffffff...) move with every rebuild; counts and names do not.
      sed -E 's/0x[0-9a-f]+/0x_/g' "$shipped/$name" > "$scratch/$name.shipped"
      sed -E 's/0x[0-9a-f]+/0x_/g' "$f" > "$scratch/$name.now"
      if cmp -s "$scratch/$name.shipped" "$scratch/$name.now"; then
        echo "provenance only: policies/linux-6.1/$name: only hexadecimal addresses differ"
        provenance=$((provenance + 1))
      else
        echo "FAIL (coverage change): policies/linux-6.1/$name differs beyond addresses (diff with addresses masked, first 20 lines):"
        diff "$scratch/$name.shipped" "$scratch/$name.now" | head -20 | sed 's/^/    /' || true
        status=1 changed=$((changed + 1))
      fi
      ;;
    *)
      echo "FAIL: policies/linux-6.1/$name differs from what the analyser generates now"; status=1 changed=$((changed + 1))
      ;;
  esac
done
for s in "$shipped"/*; do
  [ -e "$scratch/out/$(basename "$s")" ] || { echo "FAIL (not generated): policies/linux-6.1/$(basename "$s") is shipped but not generated now"; status=1 changed=$((changed + 1)); }
done
echo "$same file(s) identical, $provenance provenance only, $changed changed"
[ "$status" -eq 0 ] || echo "To fix a graph or coverage change: $fix"
exit $status
