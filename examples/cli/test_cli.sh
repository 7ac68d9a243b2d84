#!/usr/bin/env bash
# Drives the `macula` tool end to end on loopback: a node in the background, `sub` in the
# background, `pub`, `call` (also from stdin), `bench`, exit codes, graceful stop on SIGTERM.
set -uo pipefail
M=$1
dir=$(mktemp -d)
node_pid=""; sub_pid=""
cleanup() { [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null; [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*; do echo "== $f"; cat "$f"; done; exit 1; }
wait_for() { for _ in $(seq 100); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; return 1; }

"$M" --help | grep -q "usage:" || fail "--help"
"$M" bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command must exit 2"
"$M" pub >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing arguments must exit 2"

"$M" node --listen 127.0.0.1:0 --realm cli.realm --echo svc.echo --http 127.0.0.1:0 > "$dir/node.out" 2>&1 &
node_pid=$!
wait_for "listening on" "$dir/node.out" || fail "node did not start"
addr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/node.out")
echo "node at $addr"
wait_for "status pages" "$dir/node.out" || fail "no status pages line"
http=$(sed -n 's|.*http://\([^/]*\)/metrics.*|\1|p' "$dir/node.out")
exec 3<>"/dev/tcp/${http%:*}/${http##*:}" || fail "cannot reach $http"
printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
cat <&3 > "$dir/metrics.out"; exec 3<&-
grep -q "^HTTP/1.1 200" "$dir/metrics.out" || fail "GET /metrics"
grep -q "macula_transport_connections" "$dir/metrics.out" || fail "/metrics content"

"$M" sub --node "$addr" --realm cli.realm --count 1 'sensors.#' > "$dir/sub.out" 2> "$dir/sub.err" &
sub_pid=$!
wait_for "subscribed" "$dir/sub.err" || fail "sub did not link"
# QoS 0 over HTTP/3: the subscription's interest reaches the node right after the link is up;
# publish until the subscriber has its message and exits (bounded).
for _ in $(seq 50); do
  "$M" pub --node "$addr" sensors.kitchen.temp 21.5 || fail "pub exit code"
  kill -0 "$sub_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$sub_pid"; rc=$?; sub_pid=""
[ $rc -eq 0 ] || fail "sub exit $rc"
grep -q "^sensors.kitchen.temp 21.5$" "$dir/sub.out" || fail "sub output"

[ "$("$M" call --node "$addr" svc.echo hello)" = "hello" ] || fail "call"
[ "$(printf piped | "$M" call --node "$addr" svc.echo -)" = "piped" ] || fail "call from stdin"
"$M" call --node "$addr" svc.none x 2>/dev/null; [ $? -eq 3 ] || fail "no provider must exit 3"
"$M" call --node "$addr" bad..name x 2>/dev/null; [ $? -eq 2 ] || fail "bad name must exit 2"
"$M" call --node 127.0.0.1:1 svc.echo x 2>/dev/null; [ $? -eq 6 ] || fail "unreachable must exit 6"
"$M" bench rpc --node "$addr" --procedure svc.echo --count 500 | tee "$dir/bench.out" | grep -q "0 failed" || fail "bench rpc"
"$M" bench pubsub --node "$addr" --count 500 | grep -q "0 failed" || fail "bench pubsub"

kill -TERM "$node_pid"; wait "$node_pid"; rc=$?; node_pid=""
[ $rc -eq 0 ] || fail "node exit $rc after SIGTERM"
grep -q "stopping" "$dir/node.out" || fail "node did not stop gracefully"
cat "$dir/bench.out"
echo "cli: all checks passed"
