#!/usr/bin/env bash
# Drives the `macula` tool end to end on loopback: a node in the background, `sub` in the
# background (as a node, then --via-http3), `pub`, `call` (also from stdin), `bench`, exit
# codes, graceful stop on SIGTERM;
# then a realm with a secret: client tokens (`token`, `--token`, 401 -> exit 7) and links
# refused to a subscriber with the wrong secret.
set -uo pipefail
M=$1
dir=$(mktemp -d)
# The tool reads these when flags are absent: a developer's own settings must not leak in.
unset MACULA_REALM_SECRET MACULA_CLIENT_TOKEN
node_pid=""; sub_pid=""; snode_pid=""
cleanup() {
  for p in "$sub_pid" "$snode_pid" "$node_pid"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*; do echo "== $f"; cat "$f"; done; exit 1; }
wait_for() { for _ in $(seq 100); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; return 1; }

"$M" --help | grep -q "usage:" || fail "--help"
"$M" bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command must exit 2"
"$M" pub >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing arguments must exit 2"

timeout 90 "$M" node --listen 127.0.0.1:0 --realm cli.realm --echo svc.echo --http 127.0.0.1:0 > "$dir/node.out" 2>&1 &
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

timeout 30 "$M" sub --node "$addr" --realm cli.realm --count 1 'sensors.#' > "$dir/sub.out" 2> "$dir/sub.err" &
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

# sub --via-http3: no node of its own; the node streams to it over one HTTP/3 request, its
# subscription registered before the answer, so every publish after "subscribed" arrives.
timeout 30 "$M" sub --via-http3 --node "$addr" --count 3 'alerts.#' > "$dir/hsub.out" 2> "$dir/hsub.err" &
sub_pid=$!
wait_for "subscribed" "$dir/hsub.err" || fail "sub --via-http3 did not subscribe"
# A host name works wherever an address does: localhost for 127.0.0.1.
for i in 1 2 3; do "$M" pub --node "localhost:${addr##*:}" alerts.fire "n$i" || fail "pub --node localhost:PORT (sub --via-http3)"; done
"$M" pub --node "no host!:1" a.b x 2> "$dir/badhost.err"; [ $? -eq 6 ] || fail "a malformed --node must exit 6"
grep -q -- "--node no host!:1" "$dir/badhost.err" || fail "the error names the flag and the value"
wait "$sub_pid"; rc=$?; sub_pid=""
[ $rc -eq 0 ] || fail "sub --via-http3 exit $rc"
[ "$(wc -l < "$dir/hsub.out")" -eq 3 ] || fail "sub --via-http3: 3 lines expected"
grep -q "^alerts.fire n3$" "$dir/hsub.out" || fail "sub --via-http3 output"
"$M" sub --via-http3 --node "$addr" 'bad..pattern' >/dev/null 2>&1; [ $? -eq 2 ] || fail "sub --via-http3 bad pattern must exit 2"

[ "$("$M" call --node "$addr" svc.echo hello)" = "hello" ] || fail "call"
[ "$(printf piped | "$M" call --node "$addr" svc.echo -)" = "piped" ] || fail "call from stdin"
"$M" call --node "$addr" svc.none x 2>/dev/null; [ $? -eq 3 ] || fail "no provider must exit 3"
"$M" call --node "$addr" bad..name x 2>/dev/null; [ $? -eq 2 ] || fail "bad name must exit 2"
"$M" call --node 127.0.0.1:1 svc.echo x 2>/dev/null; [ $? -eq 6 ] || fail "unreachable must exit 6"
"$M" bench rpc --node "$addr" --procedure svc.echo --count 500 | tee "$dir/bench.out" | grep -q "0 failed" || fail "bench rpc"
"$M" bench pubsub --node "$addr" --count 500 | grep -q "0 failed" || fail "bench pubsub"
"$M" bench rpc --node "$addr" --procedure nobody.serves --count 20 > /dev/null 2> "$dir/benchfail.err"; rc=$?
[ $rc -eq 1 ] || fail "bench against a missing procedure must exit 1 (got $rc)"
grep -q "the first failure: 404" "$dir/benchfail.err" || fail "bench names why its requests failed"
"$M" node --listen 127.0.0.1:0 --key "$dir/no.key" --cert "$dir/no.crt" 2> "$dir/nokey.err"; rc=$?
[ $rc -eq 2 ] || fail "node with a missing key file must exit 2 (got $rc)"
grep -q -- "--key $dir/no.key: cannot read the file" "$dir/nokey.err" || fail "the missing key file is named"

# A subscriber of another realm is told which realm the node is in (it has no secret).
timeout 20 "$M" sub --node "$addr" --realm not.this --count 1 'sensors.#' > /dev/null 2> "$dir/realmsub.err"; rc=$?
[ $rc -eq 7 ] || fail "sub in another realm must exit 7 (got $rc)"
grep -q "its realm is cli.realm, not not.this" "$dir/realmsub.err" || fail "sub in another realm: message names the node's realm"
[ "$(wc -l < "$dir/realmsub.err")" -eq 1 ] || fail "sub in another realm: one line"

kill -TERM "$node_pid"; wait "$node_pid"; rc=$?; node_pid=""
[ $rc -eq 0 ] || fail "node exit $rc after SIGTERM"
grep -q "stopping" "$dir/node.out" || fail "node did not stop gracefully"

# ---- a realm with a shared secret: clients need the token, nodes the secret ----
"$M" token --realm sec.realm >/dev/null 2>&1; [ $? -eq 2 ] || fail "token without a secret must exit 2"
token=$("$M" token --realm sec.realm --realm-secret s3cret) || fail "token"
[ ${#token} -eq 64 ] || fail "token length ${#token}"
[ "$(MACULA_REALM_SECRET=s3cret "$M" token --realm sec.realm)" = "$token" ] || fail "token from MACULA_REALM_SECRET"
MACULA_REALM_SECRET=s3cret timeout 10 "$M" node --listen 127.0.0.1:0 --realm sec.realm --client-access open --http off \
  > "$dir/open.out" 2>&1; [ $? -eq 2 ] || fail "open client access in a realm with a secret must exit 2"
# The secret from the environment, so that it does not show in ps.
MACULA_REALM_SECRET=s3cret timeout 60 "$M" node --listen 127.0.0.1:0 --realm sec.realm --echo svc.echo --http off \
  > "$dir/snode.out" 2>&1 &
snode_pid=$!
wait_for "listening on" "$dir/snode.out" || fail "secret node did not start"
grep -q "client API: token" "$dir/snode.out" || fail "secret node not in token mode"
saddr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/snode.out")
echo "secret node at $saddr"

"$M" pub --node "$saddr" sensors.x 1 2> "$dir/pub401.err"; rc=$?
[ $rc -eq 7 ] || fail "pub without a token must exit 7 (got $rc)"
grep -q "requires a client token" "$dir/pub401.err" || fail "pub without a token: message"
"$M" pub --node "$saddr" --token nope sensors.x 1 2>/dev/null; [ $? -eq 7 ] || fail "pub with a wrong token must exit 7"
"$M" pub --node "$saddr" --token "$token" sensors.x 1 || fail "pub with the token"
"$M" pub --node "$saddr" --realm sec.realm --realm-secret s3cret sensors.x 1 || fail "pub with the realm secret"
MACULA_CLIENT_TOKEN=$token "$M" pub --node "$saddr" sensors.x 1 || fail "pub with MACULA_CLIENT_TOKEN"
[ "$("$M" call --node "$saddr" --token "$token" svc.echo hi)" = "hi" ] || fail "call with the token"
"$M" call --node "$saddr" svc.echo hi 2>/dev/null; [ $? -eq 7 ] || fail "call without a token must exit 7"
"$M" metrics --node "$saddr" --token "$token" > "$dir/smetrics.out" || fail "metrics with the token"
grep -q "macula_client_refusals_total" "$dir/smetrics.out" || fail "metrics content"
"$M" metrics --node "$saddr" > /dev/null 2>&1; [ $? -eq 7 ] || fail "metrics without a token must exit 7"
"$M" bench pubsub --node "$saddr" --count 100 >/dev/null 2>&1; [ $? -eq 7 ] || fail "bench without a token must exit 7"
timeout 20 "$M" sub --via-http3 --node "$saddr" 'sensors.#' >/dev/null 2>&1; rc=$?
[ $rc -eq 7 ] || fail "sub --via-http3 without a token must exit 7 (got $rc)"

# A subscriber with the wrong secret is refused (promptly: the node answers), one with the
# right secret links and receives.
timeout 20 "$M" sub --node "$saddr" --realm sec.realm --realm-secret wrong --count 1 'sensors.#' \
  > /dev/null 2> "$dir/badsub.err"; rc=$?
[ $rc -eq 7 ] || fail "sub with the wrong secret must exit 7 (got $rc)"
grep -q "refused the link" "$dir/badsub.err" || fail "sub with the wrong secret: message"
MACULA_REALM_SECRET=s3cret timeout 30 "$M" sub --node "$saddr" --realm sec.realm --count 1 'sensors.#' \
  > "$dir/ssub.out" 2> "$dir/ssub.err" &
sub_pid=$!
wait_for "subscribed" "$dir/ssub.err" || fail "sub with the secret did not link"
for _ in $(seq 50); do
  "$M" pub --node "$saddr" --token "$token" sensors.hall.temp 19 || fail "pub exit code (secret realm)"
  kill -0 "$sub_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$sub_pid"; rc=$?; sub_pid=""
[ $rc -eq 0 ] || fail "sub with the secret exit $rc"
grep -q "^sensors.hall.temp 19$" "$dir/ssub.out" || fail "sub with the secret: output"

kill -TERM "$snode_pid"; wait "$snode_pid"; rc=$?; snode_pid=""
[ $rc -eq 0 ] || fail "secret node exit $rc after SIGTERM"
cat "$dir/bench.out"
echo "cli: all checks passed"
