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
keep=${KMS_TEST_KEEP:-}
start_timeout=20 # seconds until the port file and /v1/ready
stop_timeout=15  # seconds from SIGTERM to exit

say() { printf 'api_examples_run: %s\n' "$*" >&2; }

if [ -z "${KMSD_BIN:-}" ] || [ -z "${KMSCTL_BIN:-}" ]; then
	say "set KMSD_BIN and KMSCTL_BIN to the kmsd and kmsctl binaries"
	exit 2
fi
for b in "$KMSD_BIN" "$KMSCTL_BIN"; do
	if [ ! -x "$b" ]; then
		say "$b is not an executable"
		exit 2
	fi
done
if ! command -v curl >/dev/null 2>&1; then
	say "curl is required"
	exit 2
fi

# The caller's KMS_* settings (KMS_LISTEN, KMS_DATA_DIR, KMS_PIN, ...) would
# override the private config; the instance must not see them.
while read -r v; do
	unset "$v"
done < <(compgen -e | grep '^KMS_')

D=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-api-examples.XXXXXX") || exit 2
pid=

stop_kmsd() {
	local i rc

	[ -n "$pid" ] || return 0
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid"
		rc=$?
		pid=
		say "kmsd had exited already (status $rc)"
		return 1
	fi
	kill -TERM "$pid"
	for ((i = 0; i < stop_timeout * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "kmsd did not stop within ${stop_timeout}s of SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		pid=
		return 1
	fi
	wait "$pid"
	rc=$?
	pid=
	if [ "$rc" -ne 0 ]; then
		say "kmsd exited with status $rc after SIGTERM"
		return 1
	fi
	return 0
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	stop_kmsd >/dev/null 2>&1
	if [ -n "$keep" ]; then
		say "kept $D"
	else
		rm -rf "$D"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() {
	say "kmsd log ($D/kmsd.log):"
	tail -n 40 "$D/kmsd.log" >&2 2>/dev/null
}

mkdir -p "$D/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$D" >"$D/softhsm2.conf"
export SOFTHSM2_CONF=$D/softhsm2.conf
# A checkpoint every 20 records, so that the audit examples have one to show
# (the default, 1000 records or 60 s, is not reached in a run).
printf 'data_dir = %s\nlisten = 127.0.0.1:0\nport_file = %s/kmsd.port\naudit_checkpoint_records = 20\n' \
    "$D" "$D" >"$D/kmsd.conf"

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

"$KMSD_BIN" --config "$D/kmsd.conf" 2>"$D/kmsd.log" &
pid=$!

port=
for ((i = 0; i < start_timeout * 10; i++)); do
	if ! kill -0 "$pid" 2>/dev/null; then
		say "kmsd exited during start-up"
		show_log
		exit 1
	fi
	port=$(cat "$D/kmsd.port" 2>/dev/null)
	case $port in
	'' | *[!0-9]*) port= ;;
	*)
		[ "$(curl -s -o /dev/null -w '%{http_code}' \
		    "http://127.0.0.1:$port/v1/ready")" = 200 ] && break
		;;
	esac
	sleep 0.1
done
if [ -z "$port" ] || [ "$i" -ge $((start_timeout * 10)) ]; then
	say "kmsd was not ready within ${start_timeout}s"
	show_log
	exit 1
fi

KMS_ADDR=http://127.0.0.1:$port
ADMIN=$(cat "$D/admin.token")
OFFICERS=$D/officers
export KMS_ADDR ADMIN OFFICERS

rc=0
bash "$here/api_examples.sh" || rc=$?

if ! stop_kmsd; then
	[ "$rc" -eq 0 ] && rc=1
fi
if [ "$rc" -ne 0 ]; then
	show_log
fi
exit "$rc"
