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

"$M" --help | grep -q "Usage: macula" || fail "--help"
"$M" --version | grep -Eq "^macula [0-9]+\.[0-9]+\.[0-9]+$" || fail "--version"
"$M" bogus 2> "$dir/bogus.err" >/dev/null; [ $? -eq 2 ] || fail "unknown command must exit 2"
grep -q "unknown command 'bogus'" "$dir/bogus.err" || fail "unknown command is named"
"$M" pub >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing arguments must exit 2"
"$M" help | grep -q "Usage: macula" || fail "macula help"
"$M" help pub | grep -q -- "--qos" || fail "macula help pub"
# Each command has its own help; an unknown or misspelt flag is an error naming it, never ignored.
"$M" pub --help | grep -q -- "--qos" || fail "pub --help lists --qos"
"$M" pub --help | grep -q -- "--bootstrap" && fail "pub --help must not list node flags"
"$M" node --help | grep -q -- "--bootstrap" || fail "node --help lists --bootstrap"
"$M" node --lisen 127.0.0.1:9555 2> "$dir/lisen.err"; [ $? -eq 2 ] || fail "a misspelt flag must exit 2"
grep -q -- "--lisen" "$dir/lisen.err" || fail "the misspelt flag is named"
"$M" sub --count abc --node 127.0.0.1:1 'a.#' 2> "$dir/count.err"; [ $? -eq 2 ] || fail "--count abc must exit 2"
grep -q -- "--count" "$dir/count.err" || fail "--count abc: the flag is named"
"$M" pub --qos 2 --node 127.0.0.1:1 a.b 2>/dev/null; [ $? -eq 2 ] || fail "--qos 2 must exit 2"
"$M" node --log-level loud 2>/dev/null; [ $? -eq 2 ] || fail "--log-level loud must exit 2"

# --flag=value and --flag value are the same; a global flag may follow the command.
timeout 90 "$M" node --listen=127.0.0.1:0 --realm cli.realm --echo svc.echo --http=127.0.0.1:0 --log-level info > "$dir/node.out" 2>&1 &
node_pid=$!
wait_for "listening on" "$dir/node.out" || fail "node did not start"
addr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/node.out")
echo "node at $addr"
wait_for "status pages" "$dir/node.out" || fail "no status pages line"
http=$(sed -n 's|^status pages on http://\([^/]*\)/metrics.*|\1|p' "$dir/node.out")
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
"$M" node --listen 127.0.0.1:0 --http off --key "" --cert "" 2>/dev/null; [ $? -eq 2 ] || fail "node --key '' must exit 2, not run with a throw-away key"
"$M" node --listen 127.0.0.1:0 --key "$dir/no.key" --cert "$dir/no.crt" 2> "$dir/nokey.err"; rc=$?
[ $rc -eq 2 ] || fail "node with a missing key file must exit 2 (got $rc)"
grep -q -- "--key $dir/no.key: cannot read the file" "$dir/nokey.err" || fail "the missing key file is named"

# A subscriber of another realm is told which realm the node is in (it has no secret).
timeout 20 "$M" sub --node "$addr" --realm not.this --count 1 'sensors.#' > /dev/null 2> "$dir/realmsub.err"; rc=$?
[ $rc -eq 7 ] || fail "sub in another realm must exit 7 (got $rc)"
grep -q "its realm is cli.realm, not not.this" "$dir/realmsub.err" || fail "sub in another realm: message names the node's realm"
[ "$(wc -l < "$dir/realmsub.err")" -eq 1 ] || fail "sub in another realm: one line"

# sub --format: text escapes what would break a line (a NUL, a newline), json and raw keep
# every byte.
"$M" health --node "$addr" | grep -q "ok" || fail "health"
for f in text json raw; do
  timeout 30 "$M" sub --via-http3 --node "$addr" --count 1 --format $f 'bin.#' > "$dir/fmt.$f" 2> "$dir/fmt.$f.err" &
  fpid=$!
  wait_for "subscribed" "$dir/fmt.$f.err" || fail "sub --format $f did not subscribe"
  printf 'a\0b\nc\\' | "$M" pub --node "$addr" bin.x - || fail "pub binary from stdin"
  wait "$fpid" || fail "sub --format $f exit"
done
[ "$(cat "$dir/fmt.text")" = 'bin.x a\x00b\nc\\' ] || fail "sub --format text: $(cat "$dir/fmt.text")"
# text: well-formed UTF-8 prints as it is; overlong forms, surrogates and C1 controls do not.
timeout 30 "$M" sub --via-http3 --node "$addr" --count 1 'utf.#' > "$dir/utf.out" 2> "$dir/utf.err" &
fpid=$!
wait_for "subscribed" "$dir/utf.err" || fail "sub (utf) did not subscribe"
printf 'h\xc3\xa9 \xe0\x80\x8a \xed\xa0\x80 \xc2\x9b \xf4\x90\x80\x80' | "$M" pub --node "$addr" utf.x - || fail "pub utf"
wait "$fpid" || fail "sub (utf) exit"
[ "$(cat "$dir/utf.out")" = "utf.x hé \\xe0\\x80\\x8a \\xed\\xa0\\x80 \\xc2\\x9b \\xf4\\x90\\x80\\x80" ] || fail "sub --format text utf-8: $(cat "$dir/utf.out")"
[ "$(cat "$dir/fmt.json")" = '{"topic":"bin.x","payload":"YQBiCmNc","qos":0}' ] || fail "sub --format json: $(cat "$dir/fmt.json")"
printf 'a\0b\nc\\' | cmp -s - "$dir/fmt.raw" || fail "sub --format raw: bytes differ"
"$M" sub --format yaml --node "$addr" 'a.#' 2>/dev/null; [ $? -eq 2 ] || fail "--format yaml must exit 2"
"$M" pub --node "$addr" --qos 1 nobody.listens x 2>/dev/null; [ $? -eq 3 ] || fail "pub --qos 1 to nobody must exit 3"
# A name cannot smuggle a query or a route: it is refused as a name.
"$M" pub --node "$addr" 'a.b?qos=1' x 2>/dev/null; [ $? -eq 2 ] || fail "a topic with '?' must be refused (exit 2)"
# After the topic everything is the message, even text that looks like a flag.
timeout 30 "$M" sub --via-http3 --node "$addr" --count 1 'dash.#' > "$dir/dash.out" 2> "$dir/dash.err" &
fpid=$!
wait_for "subscribed" "$dir/dash.err" || fail "sub (dash) did not subscribe"
"$M" pub --node "$addr" dash.x -hello > "$dir/dash.pub" || fail "pub of a message starting with '-'"
wait "$fpid" || fail "sub (dash) exit"
[ "$(cat "$dir/dash.out")" = "dash.x -hello" ] || fail "the message '-hello' was published: $(cat "$dir/dash.out")"
[ ! -s "$dir/dash.pub" ] || fail "pub printed something (help?) instead of publishing"
[ "$("$M" call --node "$addr" svc.echo --help)" = "--help" ] || fail "call with a payload that looks like a flag"

# Settings from the environment and from --config; the flag beats the environment, which
# beats the file.
MACULA_NODE=$addr "$M" pub alerts.env x || fail "MACULA_NODE"
printf 'log-level = "warn"\n[call]\nnode = "%s"\n' "$addr" > "$dir/client.toml"
[ "$("$M" call --config "$dir/client.toml" svc.echo fromconfig)" = "fromconfig" ] || fail "call with node from --config"
[ "$(MACULA_CONFIG=$dir/client.toml "$M" call svc.echo fromenvconfig)" = "fromenvconfig" ] || fail "MACULA_CONFIG"
MACULA_NODE=127.0.0.1:1 "$M" call --config "$dir/client.toml" svc.echo x 2>/dev/null; [ $? -eq 6 ] || fail "env must beat the config file"
[ "$(MACULA_NODE=127.0.0.1:1 "$M" call --node "$addr" svc.echo flag)" = "flag" ] || fail "the flag must beat the environment"
printf '[call]\nnode = "%s"\nnodes = "x"\n' "$addr" > "$dir/typo.toml"
"$M" call --config "$dir/typo.toml" svc.echo x 2> "$dir/typo.err"; [ $? -eq 2 ] || fail "an unknown config key must exit 2"
grep -q "typo.toml:3: \[call\] nodes" "$dir/typo.err" || fail "the unknown key is named with its line: $(cat "$dir/typo.err")"
printf '[pub]\nqos = 5\n' > "$dir/badqos.toml"
"$M" pub --config "$dir/badqos.toml" --node "$addr" a.b 2>/dev/null; [ $? -eq 2 ] || fail "a bad config value must exit 2"
printf '[bogus]\nx = 1\n' > "$dir/badtable.toml"
"$M" call --config "$dir/badtable.toml" --node "$addr" svc.echo 2>/dev/null; [ $? -eq 2 ] || fail "an unknown config table must exit 2"
printf '[token]\nrealm = "r"\nrealm-secret = true\n' > "$dir/badtype.toml"
"$M" token --config "$dir/badtype.toml" 2> "$dir/badtype.err"; [ $? -eq 2 ] || fail "a boolean for a string option must exit 2"
grep -q "badtype.toml:3: \[token\] realm-secret: expected a string" "$dir/badtype.err" || fail "wrong type: $(cat "$dir/badtype.err")"
printf 'log-level = "loud"\n' > "$dir/toplevel.toml"
"$M" token --config "$dir/toplevel.toml" 2> "$dir/toplevel.err"; [ $? -eq 2 ] || fail "a bad top-level value must exit 2"
grep -q "toplevel.toml:1: log-level" "$dir/toplevel.err" || fail "top-level key line: $(cat "$dir/toplevel.err")"
printf '[node]\ndht-record-ttl = 10\n' > "$dir/othercmd.toml"
"$M" token --config "$dir/othercmd.toml" --realm r --realm-secret s 2>/dev/null; [ $? -eq 2 ] || fail "a bad value in another command's table must exit 2"
printf 'node = [\n' > "$dir/broken.toml"
"$M" call --config "$dir/broken.toml" --node "$addr" svc.echo 2>/dev/null; [ $? -eq 2 ] || fail "a malformed config must exit 2"

# keygen: a key the node keeps its id with; never overwritten.
id=$("$M" keygen --key "$dir/n.key" --cert "$dir/n.crt") || fail "keygen"
[ ${#id} -eq 64 ] || fail "keygen prints the node id"
[ "$(stat -c %a "$dir/n.key")" = 600 ] || fail "the key file is 0600"
"$M" keygen --key "$dir/n.key" --cert "$dir/n2.crt" 2>/dev/null; [ $? -eq 2 ] || fail "keygen must not overwrite"
"$M" keygen --key "$dir/same" --cert "$dir/same" 2>/dev/null; [ $? -eq 2 ] || fail "keygen with one path for both must exit 2"
[ ! -e "$dir/n2.crt" ] || fail "keygen refused but wrote the certificate"
printf '[node]\nlisten = "127.0.0.1:0"\nhttp = "off"\nkey = "%s"\ncert = "%s"\necho = ["svc.a", "svc.b"]\n' \
  "$dir/n.key" "$dir/n.crt" > "$dir/node.toml"
timeout 30 "$M" node --config "$dir/node.toml" > "$dir/cnode.out" 2>&1 &
cnode_pid=$!
wait_for "listening on" "$dir/cnode.out" || fail "node from --config did not start"
grep -q "node $id listening" "$dir/cnode.out" || fail "node from --config keeps the keygen id"
caddr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/cnode.out")
[ "$("$M" call --node "$caddr" svc.b two)" = "two" ] || fail "--echo list from the config"
kill -TERM "$cnode_pid"; wait "$cnode_pid"

kill -TERM "$node_pid"; wait "$node_pid"; rc=$?; node_pid=""
[ $rc -eq 0 ] || fail "node exit $rc after SIGTERM"
grep -q "stopping" "$dir/node.out" || fail "node did not stop gracefully"
grep -q "^info link: " "$dir/node.out" || fail "the node logs its links at info"

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
