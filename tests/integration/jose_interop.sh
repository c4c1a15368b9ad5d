#!/usr/bin/env bash
# "Done means" of the signing work: a verifier that knows only the JWKS URL
# verifies every JWS kmsd signs (ES256, RS256, PS256, EdDSA), across two
# rotations, with a standard JOSE library (Debian's python3-jwcrypto) and
# no kmsd code: tests/integration/jose_verify.py.
#
# Starts a private kmsd (127.0.0.1:0, a fresh SoftHSM token in a temporary
# directory), signs a JWS per algorithm, saves the JWKS and its ETag (the
# verifier's cache from before the rotations), rotates every key twice,
# signing again after each rotation, then runs the verifier from that stale
# cache: version-1 tokens verify from the cache, the first unknown kid
# makes it refetch the JWKS once, and everything verifies. Tampered tokens
# and an alg swapped in the header are refused. Stops kmsd with SIGTERM.
#
#   KMSD_BIN=build/service/kmsd KMSCTL_BIN=build/tools/kmsctl \
#       tests/integration/jose_interop.sh
#
# KMS_TEST_KEEP=1 keeps the directory (config, log, tokens) for a look.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kms_it_name=jose_interop
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

say() { kms_it_say "$@"; }

kms_it_check_bins
if ! command -v curl >/dev/null 2>&1; then
	say "curl is required"
	exit 2
fi
# Debian's python3 has python3-jwcrypto (tools/lib.sh installs it); a
# python3 earlier in PATH (a virtualenv, pyenv) may not.
PY=
for p in /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import jwcrypto' 2>/dev/null; then
		PY=$p
		break
	fi
done
if [ -z "$PY" ]; then
	say "no python3 with jwcrypto: apt-get install python3-jwcrypto"
	exit 1
fi

kms_it_clear_env
kms_it_mkdir kmsd-jose
kms_it_traps
kms_it_softhsm_conf
kms_it_kmsd_conf

if ! "$KMSCTL_BIN" init --config "$D/kmsd.conf" --init-token >"$D/init.log" 2>&1; then
	say "kmsctl init failed:"
	cat "$D/init.log" >&2
	exit 1
fi

kms_it_start

URL=http://127.0.0.1:$port
ADMIN=$(cat "$D/admin.token")
fail=0

# call METHOD PATH TOKEN [JSON]: the answer body on stdout; exits the
# script on a non-2xx status.
call() {
	local out status

	out=$(curl -s --max-time 60 -X "$1" -H "Authorization: Bearer $3" \
	    -w '\n%{http_code}' ${4:+--json "$4"} "$URL$2")
	status=${out##*$'\n'}
	out=${out%$'\n'*}
	if [ "${status:0:1}" != 2 ]; then
		say "$1 $2: status $status: $out"
		exit 1
	fi
	printf '%s' "$out"
}

# The first "NAME":"value" string of stdin.
json_str() {
	grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | sed 's/^"[^"]*":"\(.*\)"$/\1/'
}

APP=$(call POST /v1/tokens "$ADMIN" '{"role":"app","keys":"interop-*"}' | json_str token)
for k in es:ec-p256 rsa:rsa-2048 ed:ed25519; do
	call POST /v1/keys "$ADMIN" "{\"name\":\"interop-${k%%:*}\",\"type\":\"${k#*:}\"}" >/dev/null
done

: >"$D/tokens.txt"
# sign_round N: one JWS per algorithm, payload {"iss","alg","round"}.
sign_round() {
	local key alg payload jws

	for ka in es:ES256 rsa:RS256 rsa:PS256 ed:EdDSA; do
		key=interop-${ka%%:*}
		alg=${ka#*:}
		payload=$(printf '{"iss":"kmsd-interop","alg":"%s","round":%d}' "$alg" "$1" |
		    base64 -w0)
		jws=$(call POST "/v1/keys/$key/sign" "$APP" \
		    "{\"input\":\"$payload\",\"format\":\"jws\",\"alg\":\"$alg\",\"header\":{\"typ\":\"JWT\"}}" |
		    json_str signature)
		printf '%s-round%d %s\n' "$alg" "$1" "$jws" >>"$D/tokens.txt"
	done
}

sign_round 1
# The verifier's cache, taken before the rotations.
curl -s --max-time 60 -D "$D/jwks1.headers" -o "$D/jwks1.json" \
    "$URL/.well-known/jwks.json"
etag1=$(tr -d '\r' <"$D/jwks1.headers" | grep -i '^etag:' | sed 's/^[^:]*: *//')
for r in 2 3; do
	for k in es rsa ed; do
		call POST "/v1/keys/interop-$k/rotate" "$ADMIN" >/dev/null
	done
	sign_round "$r"
done

# Tokens that must be refused: a flipped signature byte, a payload swapped
# between two tokens, the header alg of an RS256 token changed to PS256.
{
	# (an interior character: the last one of a segment may carry only
	# unused padding bits, which decoders ignore)
	t=$(grep '^ES256-round1 ' "$D/tokens.txt" | cut -d' ' -f2)
	i=$((${#t} - 10))
	[ "${t:i:1}" = A ] && repl=B || repl=A
	printf 'ES256-flipped %s%s%s\n' "${t:0:i}" "$repl" "${t:i+1}"
	t2=$(grep '^EdDSA-round2 ' "$D/tokens.txt" | cut -d' ' -f2)
	IFS=. read -r h _ s <<<"$t2"
	IFS=. read -r _ p _ <<<"$(grep '^EdDSA-round3 ' "$D/tokens.txt" | cut -d' ' -f2)"
	printf 'EdDSA-payload-swapped %s.%s.%s\n' "$h" "$p" "$s"
	t3=$(grep '^RS256-round3 ' "$D/tokens.txt" | cut -d' ' -f2)
	IFS=. read -r h p s <<<"$t3"
	while [ $((${#h} % 4)) -ne 0 ]; do h="$h="; done
	h2=$(printf '%s' "$h" | tr '_-' '/+' | base64 -d | sed 's/"RS256"/"PS256"/' |
	    base64 -w0 | tr '/+' '_-' | tr -d '=')
	printf 'RS256-as-PS256 %s.%s.%s\n' "$h2" "$p" "$s"
} >"$D/bad.txt"

"$PY" "$here/jose_verify.py" --jwks-url "$URL/.well-known/jwks.json" \
    --stale-jwks "$D/jwks1.json" --stale-etag "$etag1" --expect-fetches 1 \
    "$D/tokens.txt" "$D/bad.txt" || fail=1

if ! kms_it_stop; then
	fail=1
fi
if [ "$fail" -ne 0 ]; then
	kms_it_show_log
fi
exit "$fail"
