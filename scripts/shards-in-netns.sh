#!/bin/bash
# Two (or N) shards of the scenario suites run at once, each in its own network namespace
# standing for a CI machine (its own loopback: nothing one shard binds can collide with or
# reach the other), then merged into one report whose test count is checked against the
# unsharded collection. Needs root (ip netns). The namespaces are removed on exit.
#
#   scripts/shards-in-netns.sh [N] [OUT] [-- pytest args...]   (defaults: 2, reports/shards)
#
# Not shown here: a gateway and control plane in a third namespace serving both shards (the
# scenarios start their own gateway and platform per test; see docs/report.md).
set -euo pipefail
N=${1:-2}
OUT=${2:-reports/shards}
shift $(( $# > 2 ? 2 : $# )) || true
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
BIN=${BIN:-.venv/bin}
read -ra SUITES <<< "${SUITES:-suites}"  # space-separated paths
WORKERS=${WORKERS:-1}
case $N in ''|*[!0-9]*|0) echo "N must be a positive integer" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "ip netns needs root" >&2; exit 2; }

prefix="wbshard$$"
namespaces=()
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

rm -rf "$OUT"
mkdir -p "$OUT"
expected=$("$BIN/pytest" "${SUITES[@]}" --collect-only -q "${EXTRA[@]}" | grep -c '::' || true)
start=$(date +%s.%N)
for k in $(seq 1 "$N"); do
  ns="$prefix-$k"
  ip netns add "$ns"
  namespaces+=("$ns")
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" "$BIN/pytest" "${SUITES[@]}" -q -p no:cacheprovider -n "$WORKERS" \
    --hil-shard "$k/$N" --alluredir "$OUT/results-$k" "${EXTRA[@]}" \
    > "$OUT/shard-$k.log" 2>&1 &
  pids+=($!)
done
status=0
for k in $(seq 1 "$N"); do
  if wait "${pids[$((k - 1))]}"; then rc=0; else rc=$?; status=1; fi
  printf 'shard %s/%s in %s: exit %s after %.1f s: %s\n' "$k" "$N" "$prefix-$k" "$rc" \
    "$(echo "$(date +%s.%N) - $start" | bc)" "$(tail -1 "$OUT/shard-$k.log")"
done
pids=()
results=()
for k in $(seq 1 "$N"); do results+=("$OUT/results-$k"); done
rc=0
"$BIN/wasmbed-hil" report --current "${results[@]}" --out "$OUT" --allure off || rc=$?
[ "$rc" -le 1 ] || exit "$rc"  # 1: a new failure, reported; above: no report
[ "$rc" = 0 ] || status=1
merged=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["totals"]["total"])' \
  "$OUT/summary.json")
echo "merged report: $merged tests; unsharded collection: $expected tests"
[ "$merged" = "$expected" ] || { echo "MISMATCH" >&2; exit 1; }
exit $status
