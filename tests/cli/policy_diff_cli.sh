#!/usr/bin/env bash
# `ioreq-filter policy diff` and `policy add-build` on copies of a shipped policy: exit status 0 equal /
# 1 different / 2 error, what is printed for a graph change and for a provenance-only change, the clear
# error for an unreadable or invalid file, and a build added to a policy as a union.
# Usage: policy_diff_cli.sh IOREQ_FILTER_BINARY SOURCE_DIR SCRATCH_DIR
set -euo pipefail
bin=$1 src=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
fail() { echo "FAIL: $*"; exit 1; }
# run EXPECTED_STATUS ARGS...: runs ioreq-filter, keeps stdout+stderr in $out.
run() {
  local want=$1; shift
  local rc=0
  out=$("$bin" "$@" 2>&1) || rc=$?
  [ "$rc" -eq "$want" ] || fail "ioreq-filter $* exited $rc, expected $want: $out"
}
expect() { grep -qF -- "$1" <<<"$out" || fail "expected '$1' in: $out"; }

# The shipped floppy policy as generated from one build (without the builds it was checked against since).
old=$scratch/old.json
python3 - "$src/policies/linux-6.1/floppy.json" "$old" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
p["graphs"][0]["derived_from"].pop("builds", None)
json.dump(p, open(sys.argv[2], "w"), indent=2)
PY
# The same graph from another build: its addresses and derived_from moved, nothing else.
sed -e 's/"address": "0x1804"/"address": "0x1904"/' -e 's/6\.1\.0-56-amd64/6.1.0-99-amd64/g' "$old" > "$scratch/moved.json"
# A graph change: output_byte's first FIFO command byte 0x8 becomes 0x9.
python3 - "$old" "$scratch/changed.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
node = next(n for n in p["graphs"][0]["channels"][0]["nodes"] if n["id"] == "ch0.w1")
assert node["value"] == {"exact": "0x8"}, node
node["value"] = {"exact": "0x9"}
p["graphs"][0]["derived_from"]["guest_os"] = "Debian 12 (Linux 6.1.0-99-amd64)"
json.dump(p, open(sys.argv[2], "w"), indent=2)
PY

run 0 policy diff "$old" "$old"
expect "graphs equal: 0 graph/device/rule change(s)"
run 0 policy diff "$old" "$scratch/moved.json"
expect "graphs equal: 0 graph/device/rule change(s) (provenance not compared"
run 0 policy diff --provenance "$old" "$scratch/moved.json"
expect "provenance: graph 0 (floppy) channel ch0 node ch0.w1: provenance output_byte @0x1804 (floppy.ko .text+0x1804) -> output_byte @0x1904"
expect "provenance: graph 0 (floppy) derived_from.guest_os: 'Debian 12 (Linux 6.1.0-56-amd64)' -> 'Debian 12 (Linux 6.1.0-99-amd64)'"
run 1 policy diff "$old" "$scratch/changed.json"
expect "graph: graph 0 (floppy) channel ch0 node ch0.w1: io+0x5 size 1 write exact 0x8 -> io+0x5 size 1 write exact 0x9"
expect "graphs differ: 1 graph/device/rule change(s)"
run 1 policy diff --json "$old" "$scratch/changed.json"
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j["equal"] is False and len(j["changes"]) == 1 and j["changes"][0]["kind"] == "graph", j' "$out" \
  || fail "--json: $out"

# Errors: exit 2 and the file named.
run 2 policy diff "$old" "$scratch/missing.json"
expect "$scratch/missing.json: cannot open policy"
printf '{"format": "ioreq-filter-policy",\n "version": 1,\n "device": 7}\n' > "$scratch/invalid.json"
run 2 policy diff "$scratch/invalid.json" "$old"
expect "$scratch/invalid.json:3:"

# add-build: a new build with the same graph is listed; one with another graph is added (a union).
run 0 policy add-build "$old" "$scratch/moved.json" -o "$scratch/listed.json"
expect "provenance only: Debian 12 (Linux 6.1.0-99-amd64) gives the same graph as graph 0 (floppy"
run 0 policy diff "$old" "$scratch/listed.json"
run 0 policy diff --provenance "$old" "$scratch/listed.json"
expect "derived_from.builds: [] -> ['Debian 12 (Linux 6.1.0-99-amd64)']"
run 0 policy add-build "$old" "$scratch/changed.json" -o "$scratch/union.json"
expect "graph change: Debian 12 (Linux 6.1.0-99-amd64) gives a graph equal to none of the 1 shipped; added as graph 1"
run 0 policy validate "$scratch/union.json"
expect "2 graph(s)"
run 1 policy diff "$old" "$scratch/union.json"
expect "graph: graph 1 (floppy [Debian 12 (Linux 6.1.0-99-amd64)]): added: 1 channel(s), 28 nodes"
# add-build refuses a file that is not one build's policy, and writes nothing.
run 2 policy add-build "$old" "$scratch/union.json" -o "$scratch/refused.json"
expect "$scratch/union.json: a fresh build's policy holds exactly one graph, this one holds 2"
[ ! -e "$scratch/refused.json" ] || fail "add-build wrote a file although it refused"
run 2 policy add-build "$old" "$scratch/missing.json" -o "$scratch/refused.json"
expect "$scratch/missing.json: cannot open policy"
echo "ok: policy diff and add-build"
