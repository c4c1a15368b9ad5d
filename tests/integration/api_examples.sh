#!/usr/bin/env bash
# Runs every curl example of docs/API.md, in the order of the document,
# against a live kmsd and checks each answer's HTTP status and, for errors,
# its error.code.
#
#   KMS_ADDR=http://127.0.0.1:PORT ADMIN=$(cat DATA/admin.token) \
#       OFFICERS=DIR tests/integration/api_examples.sh
#
# KMS_ADDR  base URL of kmsd
# ADMIN     an admin bearer token
# OFFICERS  a directory with alice.pem, bob.pem and carol.pem, the private
#           keys of the officers registered at init (quorum 2)
#
# The instance must be fresh (no keys named matter-1 or matter-2): the
# examples create them. tests/integration/api_examples_run.sh starts such an
# instance, runs this script and stops the instance.
#
# Each example prints the command line exactly as it runs (tokens and values
# taken from earlier answers appear as shell variables: $ADMIN, $OFFICER,
# $APP, $AUDITOR, $APP2, $APP2_ID, $CT, $CT2, $CID, $DIGEST, $SIGNER,
# $SIG, $JWS), the HTTP
# status, the answer, and "ok" or "FAIL". Only bash and curl (>= 7.82, for
# --json), grep, sed, head, tr, and openssl, base64 and date for the
# officers' signatures, are used. Ends with "N passed, N failed"; exits 1
# if anything failed.
set -u

if [ -z "${KMS_ADDR:-}" ] || [ -z "${ADMIN:-}" ] || [ -z "${OFFICERS:-}" ]; then
	echo "api_examples.sh: set KMS_ADDR (e.g. http://127.0.0.1:8420)," \
	    "ADMIN (an admin token) and OFFICERS (the officers' key directory)" >&2
	exit 2
fi
if ! command -v curl >/dev/null 2>&1; then
	echo "api_examples.sh: curl is required" >&2
	exit 2
fi
KMS_ADDR=${KMS_ADDR%/}

work=$(mktemp -d "${TMPDIR:-/tmp}/api-examples.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
n=0
STATUS=
BODY=
HEADERS=

# The examples call curl exactly as printed; this wrapper only adds where
# the answer and its headers go and writes the status to stdout, so the
# command line shown is the one that runs.
curl() {
	command curl --max-time 60 -D "$work/headers" -o "$work/body" \
	    -w '%{http_code}' "$@"
}

# The first "NAME":"value" string of the last answer (the values read here,
# ids, tokens and base64 blobs, never hold quotes or backslashes).
json_str() {
	printf '%s' "$BODY" | grep -o "\"$1\":\"[^\"]*\"" | head -n 1 |
	    sed 's/^"[^"]*":"\(.*\)"$/\1/'
}

header() {
	printf '%s' "$HEADERS" | tr -d '\r' | grep -i "^$1:" | head -n 1 |
	    sed 's/^[^:]*: *//'
}

section() {
	printf '\n## %s\n' "$1"
}

# ex TITLE STATUS CODE <<'EOF'
# COMMAND
# EOF
#   Runs COMMAND (from stdin, shown as it is) and expects HTTP STATUS.
#   CODE is the expected error.code, "" for none. With a 2xx STATUS, a CODE
#   means a batch in which exactly one item failed, with that code.
ex() {
	local title=$1 want=$2 code=$3 cmd why="" rid brid errs

	cmd=$(cat)
	n=$((n + 1))
	printf '\n### %d. %s\n' "$n" "$title"
	printf '%s\n' "$cmd" | sed 's/^/    /; 1s/^    /    $ /'
	rm -f "$work/body" "$work/headers" "$work/stderr"
	STATUS=$(eval "$cmd" 2>"$work/stderr")
	BODY=$(cat "$work/body" 2>/dev/null)
	HEADERS=$(cat "$work/headers" 2>/dev/null)
	printf '    -> %s\n' "${STATUS:-none}"
	[ -n "$BODY" ] && printf '%s\n' "$BODY" | sed 's/^/    /'

	rid=$(header X-Request-Id)
	errs=$(printf '%s' "$BODY" | grep -o '"error":{"code":"[a-z_]*"')
	if [ "$STATUS" != "$want" ]; then
		why="status ${STATUS:-none}, expected $want"
		[ -s "$work/stderr" ] && why="$why ($(head -c 200 "$work/stderr"))"
	elif [ -n "$code" ] && [ "$errs" != "\"error\":{\"code\":\"$code\"" ]; then
		why="expected exactly one error.code \"$code\", got: ${errs:-none}"
	elif [ -z "$code" ] && [ -n "$errs" ]; then
		why="unexpected error in the answer"
	elif [ -z "$rid" ]; then
		why="no X-Request-Id header"
	elif [ "${want:0:1}" != 2 ]; then
		brid=$(json_str request_id)
		[ "$brid" = "$rid" ] ||
		    why="error.request_id '$brid' is not X-Request-Id '$rid'"
	fi
	if [ -z "$why" ]; then
		passed=$((passed + 1))
		printf 'ok %d - %s\n' "$n" "$title"
	else
		failed=$((failed + 1))
		printf 'FAIL %d - %s: %s\n' "$n" "$title" "$why"
	fi
}

# set_var NAME FIELD: NAME = the string FIELD of the last answer; a missing
# field counts as a failure (the examples that use NAME fail too).
set_var() {
	local v

	v=$(json_str "$2")
	printf -v "$1" '%s' "$v"
	export "${1?}"
	printf '    # %s = the "%s" of this answer\n' "$1" "$2"
	if [ -z "$v" ]; then
		failed=$((failed + 1))
		printf 'FAIL: the answer has no "%s"\n' "$2"
	fi
}

OFFICER='' APP='' AUDITOR='' APP2='' APP2_ID='' CT='' CT2='' CID='' DIGEST=''
SIGNER='' SIG='' JWS=''
export KMS_ADDR ADMIN OFFICERS OFFICER APP AUDITOR APP2 APP2_ID CT CT2 CID DIGEST
export SIGNER SIG JWS

section "Health"
ex "liveness" 200 "" <<'EOF'
curl -s "$KMS_ADDR/v1/health"
EOF
ex "readiness" 200 "" <<'EOF'
curl -s "$KMS_ADDR/v1/ready"
EOF

section "Keys"
ex "create a key with every option (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys" \
  --json '{"name":"matter-1","type":"aes256-gcm","rotation_period":"90d","expires_at":"2027-12-31T00:00:00Z","required_context":["matter"]}'
EOF
ex "create a key with the defaults" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys" --json '{"name":"matter-2"}'
EOF
ex "list keys, a page of one" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys?limit=1"
EOF
ex "list keys, the page after matter-1" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys?limit=1&after=matter-1"
EOF
ex "list keys, the page after matter-2" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys?limit=1&after=matter-2"
EOF
ex "show a key" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1"
EOF
ex "rotate: version 2 becomes primary, version 1 active (admin)" 200 "" <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/rotate"
EOF

ex "change a key's rotation period and expiry (admin)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-2/config" \
  --json '{"rotation_period":"30d","expires_at":"2028-06-30T00:00:00Z"}'
EOF
ex "clear the expiry (admin)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-2/config" \
  --json '{"expires_at":null}'
EOF

section "Version state moves"
ex "retire version 1 (admin, force)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"retired","force":true}'
EOF
ex "archive version 1 (admin)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"archived"}'
EOF
ex "archived -> active needs a ceremony" 403 ceremony_required <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"active"}'
EOF
ex "destroying needs a ceremony" 403 ceremony_required <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"destroyed"}'
EOF
ex "an admin may not revoke" 403 forbidden <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"revoked"}'
EOF
ex "create an officer token (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens" \
  --json '{"role":"officer","description":"duty officer"}'
EOF
set_var OFFICER token
ex "a bearer token does not revoke, not even an officer's" 403 forbidden <<'EOF'
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"revoked"}'
EOF
ex "revoke version 1: officer alice's signature" 200 "" <<'EOF'
TS=$(date -u +%Y-%m-%dT%H:%M:%SZ) NONCE=$(openssl rand -hex 16)
SIG=$(printf 'kms-revoke/v1\nkey: %s\nversion: %s\nofficer: %s\nts: %s\nnonce: %s\n' \
  matter-1 1 alice "$TS" "$NONCE" | openssl dgst -sha256 -sign "$OFFICERS/alice.pem" | base64 -w0)
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/keys/matter-1/versions/1/revoke" \
  --json '{"officer":"alice","ts":"'"$TS"'","nonce":"'"$NONCE"'","signature":"'"$SIG"'"}'
EOF
ex "revoked is final" 409 invalid_transition <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/1/state" \
  --json '{"state":"active"}'
EOF

section "App token"
ex "create an app token for matter-* (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens" \
  --json '{"role":"app","keys":"matter-*","description":"billing service","ttl":"30d"}'
EOF
set_var APP token

section "Crypto"
ex "wrap" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/wrap" \
  --json '{"plaintext":"AAECAw==","context":{"matter":"m-1"}}'
EOF
set_var CT ciphertext
ex "unwrap" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/unwrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}'
EOF
ex "rotate again: version 3 primary, version 2 active (admin)" 200 "" <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/rotate"
EOF
ex "unwrap a version 2 blob: rewrap recommended" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/unwrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}'
EOF
ex "rewrap to the primary version of the same key" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/rewrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}'
EOF
ex "rewrap to another key and context" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/rewrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"},"destination_key":"matter-2","destination_context":{"matter":"m-2"}}'
EOF
set_var CT2 ciphertext
ex "datakey with the plaintext" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/datakey" \
  --json '{"bits":256,"context":{"matter":"m-1"},"return_plaintext":true}'
EOF
ex "datakey without the plaintext" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/datakey" \
  --json '{"bits":128,"context":{"matter":"m-1"}}'
EOF
ex "batch wrap, the second item is not base64" 200 invalid_request <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/wrap" \
  --json '{"batch":[{"plaintext":"AAECAw==","context":{"matter":"m-1"}},{"plaintext":"AAECA","context":{"matter":"m-1"}}]}'
EOF
ex "batch unwrap, the second item under the wrong context" 200 invalid_ciphertext <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/unwrap" \
  --json '{"batch":[{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}},{"ciphertext":"'"$CT"'","context":{"matter":"m-9"}}]}'
EOF
ex "batch rewrap, the second item without its context" 200 missing_context <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/rewrap" \
  --json '{"batch":[{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}},{"ciphertext":"'"$CT"'"}]}'
EOF
ex "batch rewrap with an Idempotency-Key" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" -H "Idempotency-Key: demo-batch-1" \
  "$KMS_ADDR/v1/keys/matter-1/rewrap" --json '{"batch":[{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}]}'
EOF
ex "the same request again: the stored answer" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" -H "Idempotency-Key: demo-batch-1" \
  "$KMS_ADDR/v1/keys/matter-1/rewrap" --json '{"batch":[{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}]}'
EOF
ex "another request under the same key" 422 idempotency_key_reused <<'EOF'
curl -s -H "Authorization: Bearer $APP" -H "Idempotency-Key: demo-batch-1" \
  "$KMS_ADDR/v1/keys/matter-1/rewrap" --json '{"batch":[{"ciphertext":"'"$CT2"'","context":{"matter":"m-1"}}]}'
EOF

section "Signing"
ex "create an ECDSA P-256 signing key (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys" --json '{"name":"signer-1","type":"ec-p256","rotation_period":"90d"}'
EOF
ex "create an Ed25519 signing key: kept on the token (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys" --json '{"name":"signer-2","type":"ed25519"}'
EOF
ex "create an app token for signer-* (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens" \
  --json '{"role":"app","keys":"signer-*","description":"token issuer"}'
EOF
set_var SIGNER token
ex "sign bytes: a DER ECDSA signature" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-1/sign" \
  --json '{"input":"aGVsbG8gd29ybGQ="}'
EOF
set_var SIG signature
ex "verify it (the version is found by trying each)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-1/verify" \
  --json '{"input":"aGVsbG8gd29ybGQ=","signature":"'"$SIG"'"}'
EOF
ex "sign a JWS with an extra protected header member" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-1/sign" \
  --json '{"input":"eyJzdWIiOiJtYXR0ZXItMSIsImV4cCI6MTc5OTk5OTk5OX0=","format":"jws","header":{"typ":"JWT"}}'
EOF
set_var JWS signature
ex "the public keys of the published versions" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-1/public"
EOF
ex "rotate: version 2 signs from now on (admin)" 200 "" <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/signer-1/rotate"
EOF
ex "the version 1 JWS still verifies: its kid names version 1" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-1/verify" \
  --json '{"jws":"'"$JWS"'"}'
EOF
ex "the JWKS: every published version, no token needed" 200 "" <<'EOF'
curl -s "$KMS_ADDR/.well-known/jwks.json"
EOF

section "Tokens"
ex "create an auditor token (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens" --json '{"role":"auditor","description":"audit export"}'
EOF
set_var AUDITOR token
ex "create an app token that expires in an hour (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens" --json '{"role":"app","keys":"matter-1","ttl":"1h"}'
EOF
set_var APP2 token
set_var APP2_ID id
ex "list tokens (admin)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens"
EOF
ex "revoke a token (admin)" 200 "" <<'EOF'
curl -s -X DELETE -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens/$APP2_ID"
EOF

section "Audit"
ex "chain head and newest checkpoint (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/head"
EOF
ex "signed checkpoints (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/checkpoints"
EOF
ex "checkpoint-signing public keys (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/keys"
EOF
ex "records: who used version 2 of matter-1 (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/records?key=matter-1&version=2&op=unwrap&limit=2"
EOF
ex "records: token revocations (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/records?op=token.revoke"
EOF
ex "the log's files (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/files"
EOF
ex "one segment, as stored (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/files/audit-000000000000.jsonl"
EOF

section "Errors"
ex "401: no token" 401 unauthenticated <<'EOF'
curl -s "$KMS_ADDR/v1/keys"
EOF
ex "401: a revoked token" 401 unauthenticated <<'EOF'
curl -s -H "Authorization: Bearer $APP2" "$KMS_ADDR/v1/keys"
EOF
ex "403: admins do not use keys" 403 forbidden <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/wrap" \
  --json '{"plaintext":"AAECAw==","context":{"matter":"m-1"}}'
EOF
ex "403: a key outside the app token's pattern" 403 forbidden <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/hr-1/wrap" --json '{"plaintext":"AAECAw=="}'
EOF
ex "403: app tokens do not manage tokens" 403 forbidden <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/tokens"
EOF
ex "403: only auditors read audit records" 403 forbidden <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/audit/records"
EOF
ex "404: unknown key" 404 key_not_found <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-404"
EOF
ex "404: unknown version" 404 version_not_found <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/9/state" \
  --json '{"state":"retired"}'
EOF
ex "404: unknown token" 404 token_not_found <<'EOF'
curl -s -X DELETE -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/tokens/0123456789abcdef"
EOF
ex "404: unknown audit file" 404 not_found <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/audit/files/kmsd.db"
EOF
ex "404: no such route" 404 not_found <<'EOF'
curl -s "$KMS_ADDR/v1/nothing"
EOF
ex "405: the route exists, the method does not" 405 method_not_allowed <<'EOF'
curl -s -X DELETE -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1"
EOF
ex "409: key_exists" 409 key_exists <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys" --json '{"name":"matter-1"}'
EOF
ex "400: invalid_ciphertext (another context)" 400 invalid_ciphertext <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/unwrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-2"}}'
EOF
ex "400: invalid_ciphertext (another key)" 400 invalid_ciphertext <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-2/unwrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}'
EOF
ex "400: invalid_ciphertext (not a blob)" 400 invalid_ciphertext <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/unwrap" \
  --json '{"ciphertext":"kms:v2:AAAA","context":{"matter":"m-1"}}'
EOF
ex "400: missing_context" 400 missing_context <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/wrap" --json '{"plaintext":"AAECAw=="}'
EOF
ex "400: invalid_json" 400 invalid_json <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/wrap" --json '{"plaintext":'
EOF
ex "400: invalid_request" 400 invalid_request <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/datakey" \
  --json '{"bits":512,"context":{"matter":"m-1"}}'
EOF
ex "400: invalid_request (a signing key does not wrap)" 400 invalid_request <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-1/wrap" --json '{"plaintext":"AAECAw=="}'
EOF
ex "400: invalid_request (the JWS alg is not the key's)" 400 invalid_request <<'EOF'
curl -s -H "Authorization: Bearer $SIGNER" "$KMS_ADDR/v1/keys/signer-2/verify" \
  --json '{"jws":"'"$JWS"'"}'
EOF
ex "409: version_in_use (version 2 was used a moment ago)" 409 version_in_use <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/2/state" \
  --json '{"state":"retired"}'
EOF
ex "retire version 2 anyway (force)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-1/versions/2/state" \
  --json '{"state":"retired","force":true}'
EOF
ex "409: version_state (no unwrap under a retired version)" 409 version_state <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/unwrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}'
EOF
ex "a retired version still rewraps" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/rewrap" \
  --json '{"ciphertext":"'"$CT"'","context":{"matter":"m-1"}}'
EOF
ex "revoke the primary version of matter-2 (officer bob's signature)" 200 "" <<'EOF'
TS=$(date -u +%Y-%m-%dT%H:%M:%SZ) NONCE=$(openssl rand -hex 16)
SIG=$(printf 'kms-revoke/v1\nkey: %s\nversion: %s\nofficer: %s\nts: %s\nnonce: %s\n' \
  matter-2 1 bob "$TS" "$NONCE" | openssl dgst -sha256 -sign "$OFFICERS/bob.pem" | base64 -w0)
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/keys/matter-2/versions/1/revoke" \
  --json '{"officer":"bob","ts":"'"$TS"'","nonce":"'"$NONCE"'","signature":"'"$SIG"'"}'
EOF
ex "409: no_primary_version" 409 no_primary_version <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-2/wrap" --json '{"plaintext":"AAECAw=="}'
EOF
ex "409: version_state (no unwrap under a revoked version)" 409 version_state <<'EOF'
curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-2/unwrap" \
  --json '{"ciphertext":"'"$CT2"'","context":{"matter":"m-2"}}'
EOF
ex "rotate gives matter-2 a primary version again (admin)" 200 "" <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/keys/matter-2/rotate"
EOF
ex "413: a body over 1 MiB" 413 payload_too_large <<'EOF'
head -c 1100000 /dev/zero | tr '\0' ' ' | curl -s -H "Authorization: Bearer $APP" "$KMS_ADDR/v1/keys/matter-1/wrap" --json @-
EOF

section "Ceremonies"
ex "the officers and the quorum" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/officers"
EOF
ex "ask for an MEK rotation (admin)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/ceremonies" --json '{"operation":"mek.rotate"}'
EOF
set_var CID id
set_var DIGEST digest
ex "409: quorum_not_met (no approvals yet)" 409 quorum_not_met <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/ceremonies/$CID/execute"
EOF
ex "alice approves: her signature over kms-approval/v1, the digest, her name, approve" 200 "" <<'EOF'
SIG=$(printf 'kms-approval/v1\n%s\n%s\n%s\n' "$DIGEST" alice approve |
  openssl dgst -sha256 -sign "$OFFICERS/alice.pem" | base64 -w0)
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/ceremonies/$CID/approvals" \
  --json '{"officer":"alice","decision":"approve","signature":"'"$SIG"'"}'
EOF
ex "403: invalid_signature (bob's key, but alice's name)" 403 invalid_signature <<'EOF'
SIG=$(printf 'kms-approval/v1\n%s\n%s\n%s\n' "$DIGEST" alice approve |
  openssl dgst -sha256 -sign "$OFFICERS/bob.pem" | base64 -w0)
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/ceremonies/$CID/approvals" \
  --json '{"officer":"alice","decision":"approve","signature":"'"$SIG"'"}'
EOF
ex "bob approves" 200 "" <<'EOF'
SIG=$(printf 'kms-approval/v1\n%s\n%s\n%s\n' "$DIGEST" bob approve |
  openssl dgst -sha256 -sign "$OFFICERS/bob.pem" | base64 -w0)
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/ceremonies/$CID/approvals" \
  --json '{"officer":"bob","decision":"approve","signature":"'"$SIG"'"}'
EOF
ex "execute: MEK version 2, every key version rewrapped in the background" 200 "" <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/ceremonies/$CID/execute"
EOF
ex "409: ceremony_closed (a ceremony runs at most once)" 409 ceremony_closed <<'EOF'
curl -s -X POST -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/ceremonies/$CID/execute"
EOF
ex "the MEK versions and the rotation's progress" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/mek"
EOF
ex "the executed ceremonies (auditor)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $AUDITOR" "$KMS_ADDR/v1/ceremonies?state=executed"
EOF
ex "ask for destroying version 1 of matter-2 (officer token)" 201 "" <<'EOF'
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/ceremonies" \
  --json '{"operation":"key.destroy","params":{"key":"matter-2","version":1},"expires_in":"1h"}'
EOF
set_var CID id
ex "cancel it" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $ADMIN" "$KMS_ADDR/v1/ceremonies/$CID/cancel" --json '{"reason":"asked in error"}'
EOF
ex "the import key of key.import (made on the first read)" 200 "" <<'EOF'
curl -s -H "Authorization: Bearer $OFFICER" "$KMS_ADDR/v1/import-key"
EOF

printf '\n%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
