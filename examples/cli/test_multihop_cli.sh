#!/usr/bin/env bash
# Three `macula node` processes — seed A, and B and C that know only A — with the CLI's
# defaults (DHT on). A `sub` on B (a leaf: B is its gateway and registers its interest in the
# DHT) receives what `pub` sends to C: QoS 0 once the subscription settled, and QoS 1, each
# message once. A QoS 1 publish nobody subscribes to exits 3 (404, no subscribers).
set -uo pipefail
M=$1
dir=$(mktemp -d)
unset MACULA_REALM_SECRET MACULA_CLIENT_TOKEN
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*; do echo "== $f"; cat "$f"; done; exit 1; }
wait_for() { for _ in $(seq 200); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start_node() {  # name [bootstrap]
  local extra=()
  [ -n "${2:-}" ] && extra=(--bootstrap "$2")
  timeout 120 "$M" node --listen 127.0.0.1:0 --realm mh.realm --http off "${extra[@]}" > "$dir/$1.out" 2>&1 &
  pids+=($!)
  wait_for "listening on" "$dir/$1.out" || fail "node $1 did not start"
  sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/$1.out"
}

a=$(start_node a)
b=$(start_node b "$a")
c=$(start_node c "$a")
echo "A $a, B $b, C $c"

timeout 100 "$M" sub --node "$b" --realm mh.realm 'x.#' > "$dir/sub.out" 2> "$dir/sub.err" &
sub_pid=$!
pids+=($sub_pid)
wait_for "subscribed" "$dir/sub.err" || fail "sub did not link to B"

# Settled: B's record for x.# is in the DHT once a QoS 1 publish through C is acknowledged.
settled=""
for _ in $(seq 50); do
  if "$M" pub --node "$c" --realm mh.realm --qos 1 x.probe p 2>>"$dir/probe.err"; then settled=1; break; fi
  sleep 0.2
done
[ -n "$settled" ] || fail "a QoS 1 publish through C never reached the subscriber on B"

for i in $(seq 12); do
  "$M" pub --node "$c" --realm mh.realm x.y "q0-$i" || fail "pub (QoS 0) exit code"
  sleep 0.5
done
for i in $(seq 12); do
  "$M" pub --node "$c" --realm mh.realm --qos 1 x.y "q1-$i" || fail "pub --qos 1 exit code (message $i)"
done
for _ in $(seq 100); do
  [ "$(grep -c '^x.y q' "$dir/sub.out")" -ge 24 ] && break
  sleep 0.05
done
sleep 0.3  # a duplicate would arrive right behind
for q in 0 1; do
  for i in $(seq 12); do
    n=$(grep -c "^x.y q$q-$i\$" "$dir/sub.out")
    [ "$n" -eq 1 ] || fail "QoS $q message $i received $n times (expected once)"
  done
done
echo "12 of 12 QoS 0 and 12 of 12 QoS 1 messages, each once"

"$M" pub --node "$c" --realm mh.realm --qos 1 nobody.here x 2> "$dir/nobody.err"; rc=$?
[ $rc -eq 3 ] || fail "QoS 1 publish with no subscriber: exit $rc, expected 3"
grep -q "no subscriber" "$dir/nobody.err" || fail "no_subscribers message"
echo "ok"
