#!/bin/bash
# Two (or N) shards of the scenario suites run at once, each in its own network namespace
# standing for a CI machine (its own loopback: nothing one shard binds can collide with or
# reach the other), then merged into one report whose test count is checked against the
# unsharded collection. Needs root (ip netns). The namespaces are removed on exit.
#
#   scripts/shards-in-netns.sh [N] [OUT] [-- pytest args...]   (defaults: 2, reports/shards)
#
# One more namespace holds a gateway and a control plane (emulated API server, controllers,
# REST API) shared by the shards, standing for a platform on another machine. The namespaces
# are joined by a switch (a bridge in a namespace of its own; the host's interfaces and
# routes are not touched): the platform at 10.213.0.1, shard K at 10.213.0.(K+1). Before the
# shards start, each shard's namespace runs suites/netns against it (a device there enrolls
# at the shared gateway and runs an Application created through the shared REST API); these
# probes are reported apart, not merged. The shards get WASMBED_HIL_REMOTE too, so the
# namespace scenario uses the shared platform wherever the split puts it; the other
# scenarios start their own gateway and platform per test, as always.
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
[ "$N" -le 200 ] || { echo "N must be at most 200" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "ip netns needs root" >&2; exit 2; }

prefix="wbshard$$"
SUBNET=10.213.0
namespaces=()
pids=()
services=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${services[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${services[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

rm -rf "$OUT"
mkdir -p "$OUT/shared/logs"
OUT=$(cd "$OUT" && pwd)
expected=$("$BIN/pytest" "${SUITES[@]}" --collect-only -q "${EXTRA[@]}" | grep -c '::' || true)

# -- the switch, then namespace 0 (the shared platform) and 1..N (the shards) ---------------
sw="$prefix-sw"
ip netns add "$sw"
namespaces+=("$sw")
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
for k in $(seq 0 "$N"); do
  ns="$prefix-$k"
  ip netns add "$ns"
  namespaces+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$sw" link add "p$k" type veth peer name eth0 netns "$ns"
  ip -n "$sw" link set "p$k" master br0 up
  ip -n "$ns" addr add "$SUBNET.$((k + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
done

# -- the shared platform in namespace 0 -------------------------------------------------------
P="$SUBNET.1"
SH="$OUT/shared"
CLI=("$BIN/python" -m wasmbed_hil)
"$BIN/python" - "$SH" "$P" <<'PY'
import secrets, sys
from pathlib import Path
from wasmbed_hil.pki import FleetCA
out, host = Path(sys.argv[1]), sys.argv[2]
ca = FleetCA.create("shared platform CA")
ca.save(out / "ca")
ca.issue_gateway("gw-shared", hosts=(host,)).write(out / "pki")
(out / "token").write_text(secrets.token_urlsafe(24))
PY
serve() {  # serve NAME ARGS...: start it in namespace 0, wait for its `ready` line (60 s)
  local name=$1 line="" fd left
  shift
  mkfifo "$SH/logs/$name.fifo"
  ip netns exec "$prefix-0" "${CLI[@]}" "$@" > "$SH/logs/$name.fifo" \
    2> "$SH/logs/$name.err" &
  services+=($!)
  exec {fd}< "$SH/logs/$name.fifo"
  local deadline=$((SECONDS + 60))
  while left=$((deadline - SECONDS)); [ "$left" -gt 0 ] && IFS= read -r -t "$left" line <&"$fd"
  do
    echo "$line" >> "$SH/logs/$name.out"
    [[ $line == ready\ * ]] && break
  done
  cat <&"$fd" >> "$SH/logs/$name.out" &  # the rest of its output, until it exits
  exec {fd}<&-
  if [[ $line != ready\ * ]]; then
    echo "the shared $name did not start: $SH/logs/$name.err" >&2
    exit 1
  fi
}
KUBE=(--kubeconfig "$SH/kubeconfig" --namespace wasmbed)
serve apiserver apiserver --host "$P" --port 6443 --kubeconfig "$SH/kubeconfig" --crds
ip netns exec "$prefix-0" "$BIN/python" - "$SH/kubeconfig" <<'PY'
import asyncio, sys
from pathlib import Path
from wasmbed_hil.kube.client import KubeClient, KubeConfig
async def main() -> None:
    async with KubeClient(KubeConfig.from_kubeconfig(Path(sys.argv[1]))) as kube:
        await kube.ensure_namespace("wasmbed")
asyncio.run(main())
PY
serve controllers controllers "${KUBE[@]}"
serve rest rest "${KUBE[@]}" --host "$P" --port 8080 --token-file "$SH/token"
serve gateway gateway "${KUBE[@]}" --name gw-shared --host "$P" --tls-port 8443 \
  --endpoint "$P:8443" --pki-dir "$SH/pki" --state-dir "$SH/state" --pairing --heartbeat 1 \
  --metrics-port 9090 --metrics-host "$P"
printf '{"kubeconfig": "%s", "rest": "%s", "token_file": "%s", "ca_dir": "%s", "gateway": "%s", "gateway_name": "gw-shared", "metrics": "%s"}\n' \
  "$SH/kubeconfig" "http://$P:8080" "$SH/token" "$SH/ca" "$P:8443" "http://$P:9090/metrics" \
  > "$SH/platform.json"
export WASMBED_HIL_REMOTE="$SH/platform.json"
echo "shared platform in $prefix-0: REST http://$P:8080, gateway $P:8443"

# -- each shard's namespace uses it (reported apart, not merged) -------------------------------
for k in $(seq 1 "$N"); do
  if ip netns exec "$prefix-$k" "$BIN/pytest" suites/netns -q -p no:cacheprovider \
      -p no:randomly > "$OUT/probe-$k.log" 2>&1 && grep -q ' passed' "$OUT/probe-$k.log"; then
    echo "shard $k's namespace ($SUBNET.$((k + 1))) used the shared platform: $(tail -1 "$OUT/probe-$k.log")"
  else
    echo "shard $k's namespace could not use the shared platform: $OUT/probe-$k.log" >&2
    exit 1
  fi
done

start=$(date +%s.%N)
for k in $(seq 1 "$N"); do
  ns="$prefix-$k"
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
served=$(ip netns exec "$prefix-0" "${CLI[@]}" devices --api "http://$P:8080" \
  --token-file "$SH/token" 2>&1 | grep -c 'edge-' || true)
echo "devices the shared platform served: $served (one per probe, one for the shard that ran suites/netns)"
[ "$merged" = "$expected" ] || { echo "MISMATCH" >&2; exit 1; }
exit $status
