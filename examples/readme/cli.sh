#!/usr/bin/env bash
# The README's two shell blocks as a script: their lines, in order (check_readme.py keeps them
# equal), with what a person typing them does in between: wait for the node to listen and the
# subscriptions to link, and read what came out. Usage: cli.sh DIR_OF_MACULA
set -euo pipefail
PATH="$1:$PATH"
out=$(mktemp -d)
unset MACULA_REALM_SECRET MACULA_CLIENT_TOKEN
exec 3>&2 >"$out/log" 2>&1  # everything the README's commands print, in one place
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&3; cat "$out/log" >&3; exit 1; }
wait_for() {  # COUNT TEXT: until TEXT was printed COUNT times
  for _ in $(seq 200); do [ "$(grep -c -- "$2" "$out/log")" -ge "$1" ] && return 0; sleep 0.05; done
  fail "waited for $1 x '$2'"
}

macula node --listen 127.0.0.1:9443 --realm demo --echo svc.echo &   # until SIGINT/SIGTERM (graceful stop)
wait_for 1 "listening on 127.0.0.1:9443"
macula sub  --node 127.0.0.1:9443 --realm demo 'sensors.#' &
macula sub  --via-http3 --node 127.0.0.1:9443 'sensors.#' &      # no node: one streaming HTTP/3 GET (ndjson)
wait_for 2 "subscribed to sensors.# via 127.0.0.1:9443"
macula pub  --node 127.0.0.1:9443 sensors.kitchen.temp 21.5
wait_for 2 "^sensors.kitchen.temp 21.5$"
macula call --node 127.0.0.1:9443 svc.echo hello                     # prints hello
grep -q "^hello$" "$out/log" || fail "call did not print hello"
macula bench rpc --node 127.0.0.1:9443 --procedure svc.echo
grep -q "rpc: 10000 requests .* 0 failed" "$out/log" || fail "bench rpc"

export MACULA_REALM_SECRET='a long random secret'          # not on the command line: ps shows it
macula node --listen 127.0.0.1:9444 --realm vault --http off --echo svc.echo &
wait_for 1 "listening on 127.0.0.1:9444"
macula sub  --node 127.0.0.1:9444 --realm vault 'sensors.#' &   # a node: proves the secret
wait_for 1 "subscribed to sensors.# via 127.0.0.1:9444"
TOKEN=$(macula token --realm vault)                             # for clients; does not reveal the secret
unset MACULA_REALM_SECRET
macula pub  --node 127.0.0.1:9444 --token "$TOKEN" sensors.kitchen.temp 21.5
wait_for 3 "^sensors.kitchen.temp 21.5$"
macula metrics --node 127.0.0.1:9444 --token "$TOKEN"
grep -q "^macula_links " "$out/log" || fail "metrics"
echo "the README's shell blocks ran" >&3
