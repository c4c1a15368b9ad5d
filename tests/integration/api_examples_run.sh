#!/usr/bin/env bash
# Starts a private kmsd (127.0.0.1:0, a fresh SoftHSM token in a temporary
# directory), runs tests/integration/api_examples.sh against it, stops kmsd
# with SIGTERM and removes the directory. Exits with the examples' status,
# or non-zero if kmsd did not start or did not stop cleanly.
#
#   KMSD_BIN=build/service/kmsd KMSCTL_BIN=build/tools/kmsctl \
#       tests/integration/api_examples_run.sh
#
# KMS_TEST_KEEP=1 keeps the directory (config, log, audit) for a look.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kms_it_name=api_examples_run
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

say() { kms_it_say "$@"; }

kms_it_check_bins
if ! command -v curl >/dev/null 2>&1; then
	say "curl is required"
	exit 2
fi

kms_it_clear_env
kms_it_mkdir kmsd-api-examples
kms_it_traps
kms_it_softhsm_conf
# A checkpoint every 20 records, so that the audit examples have one to show
# (the default, 1000 records or 60 s, is not reached in a run).
kms_it_kmsd_conf 'audit_checkpoint_records = 20'

# Three security officers, quorum 2 (the ceremony and revoke examples sign
# with their keys, as an officer would with openssl).
mkdir -m 0700 "$D/officers"
for o in alice bob carol; do
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	    -out "$D/officers/$o.pem" 2>/dev/null &&
	    openssl pkey -in "$D/officers/$o.pem" -pubout -out "$D/officers/$o.pub.pem" ||
	    { say "openssl cannot make officer keys"; exit 1; }
done
if ! "$KMSCTL_BIN" init --config "$D/kmsd.conf" --init-token \
    --officers "$D/officers" --quorum 2 >"$D/init.log" 2>&1; then
	say "kmsctl init failed:"
	cat "$D/init.log" >&2
	exit 1
fi

kms_it_start

KMS_ADDR=http://127.0.0.1:$port
ADMIN=$(cat "$D/admin.token")
OFFICERS=$D/officers
export KMS_ADDR ADMIN OFFICERS

rc=0
bash "$here/api_examples.sh" || rc=$?

if ! kms_it_stop; then
	[ "$rc" -eq 0 ] && rc=1
fi
if [ "$rc" -ne 0 ]; then
	kms_it_show_log
fi
exit "$rc"
