#!/usr/bin/env bash
# TLS and mutual TLS against a private kmsd, with certificates made by the
# openssl command line: TLS 1.2+ only, plain HTTP refused, a verified client
# certificate acts as the token it is mapped to, an unknown or untrusted one
# does not, and a bearer token must agree with the certificate.
# Needs KMSD_BIN and KMSCTL_BIN. Ends with "N passed, N failed".
set -euo pipefail

: "${KMSD_BIN:?}" "${KMSCTL_BIN:?}"
kms_it_name=tls_test
# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kms_it_clear_env
D=$(mktemp -d /tmp/kms-tls-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[ -n "$kms_it_keep" ] || rm -rf "$D"
}
trap cleanup EXIT
pass=0 fail=0
check() { # name, expected, got
	if [ "$2" = "$3" ]; then
		pass=$((pass + 1)); echo "ok   $1"
	else
		fail=$((fail + 1)); echo "FAIL $1: expected $2, got $3"
	fi
}

cd "$D"
mk_ca() { # name
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" 2>/dev/null
}
mk_cert() { # name ca subject [ext]
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
	openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
	    -CAcreateserial -out "$1.pem" -days 2 ${4:+-extfile <(printf '%s\n' "$4")} 2>/dev/null
}
mk_ca ca
mk_ca rogue
mk_cert server ca "/CN=kmsd" "subjectAltName=IP:127.0.0.1"
mk_cert billing ca "/O=kmsd-test/CN=billing"
mk_cert stranger ca "/O=kmsd-test/CN=stranger"
mk_cert impostor rogue "/O=kmsd-test/CN=billing"

kms_it_softhsm_conf
cat > kmsd.conf <<CONF
data_dir = $D
listen = 127.0.0.1:0
port_file = $D/kmsd.port
tls_cert_file = $D/server.pem
tls_key_file = $D/server.key
tls_client_ca_file = $D/ca.pem
mtls_subjects_file = $D/mtls.map
CONF
"$KMSCTL_BIN" init --config kmsd.conf --init-token >/dev/null
admin=$(cat admin.token)
admin_id=$(echo "$admin" | cut -d. -f2)
echo "$admin_id CN=billing,O=kmsd-test" > mtls.map

"$KMSD_BIN" --config kmsd.conf 2> kmsd.log &
pid=$!
for _ in $(seq 1 100); do [ -s kmsd.port ] && break; sleep 0.1; done
port=$(cat kmsd.port)
U=https://127.0.0.1:$port
C=(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem)

check "ready over TLS" 200 "$("${C[@]}" "$U/v1/ready")"
check "plain HTTP to the TLS port gets no answer" 000 \
    "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$port/v1/ready" || true)"
check "TLS 1.1 refused" 000 "$("${C[@]}" --tls-max 1.1 "$U/v1/ready" || true)"
check "TLS 1.2 accepted" 200 "$("${C[@]}" --tls-max 1.2 "$U/v1/ready")"
check "bearer over TLS" 200 "$("${C[@]}" -H "Authorization: Bearer $admin" "$U/v1/keys")"
check "no token, no certificate: 401" 401 "$("${C[@]}" "$U/v1/keys")"
check "mapped client certificate acts as its token" 200 \
    "$("${C[@]}" --cert billing.pem --key billing.key "$U/v1/keys")"
check "mapped certificate may create keys as admin" 201 \
    "$("${C[@]}" --cert billing.pem --key billing.key -d '{"name":"tls-1"}' "$U/v1/keys")"
check "trusted but unmapped certificate: 401" 401 \
    "$("${C[@]}" --cert stranger.pem --key stranger.key "$U/v1/keys")"
check "right subject from an untrusted CA: 401" 401 \
    "$("${C[@]}" --cert impostor.pem --key impostor.key "$U/v1/keys" || echo 000)"
app=$(curl -s --cacert ca.pem -H "Authorization: Bearer $admin" \
    -d '{"role":"app","keys":"*"}' "$U/v1/tokens" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
check "bearer of another token with the certificate: 401" 401 \
    "$("${C[@]}" --cert billing.pem --key billing.key -H "Authorization: Bearer $app" "$U/v1/keys")"
check "bearer of the mapped token with the certificate" 200 \
    "$("${C[@]}" --cert billing.pem --key billing.key -H "Authorization: Bearer $admin" "$U/v1/keys")"
check "the audit log names the certificate subject" 1 \
    "$(cat audit/audit-*.jsonl | grep '"op":"key.create"' | grep '"actor":"token:'"$admin_id"'"' |
       grep -c '"tls_subject":"CN=billing,O=kmsd-test"' || true)"

kill -TERM "$pid"
wait "$pid" && check "clean stop" 0 0 || check "clean stop" 0 $?
pid=
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
