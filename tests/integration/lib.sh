# Sourced by the integration scripts that run their own kmsd: a private
# kmsd on 127.0.0.1:0 with a fresh SoftHSM token in a temporary directory,
# started, waited for and stopped the same way in each.
#
# The sourcing script sets kms_it_name (the prefix of its messages) first.
# The functions set and read the globals D (the directory), pid (kmsd's
# process id, empty when none runs) and port (kmsd's port once ready).
# KMS_TEST_KEEP=1 keeps the directory for a look.

kms_it_keep=${KMS_TEST_KEEP:-}
kms_it_start_timeout=20 # seconds until the port file and /v1/ready
kms_it_stop_timeout=15  # seconds from SIGTERM to exit
pid=
port=

kms_it_say() { printf '%s: %s\n' "$kms_it_name" "$*" >&2; }

# Exits 2 unless KMSD_BIN and KMSCTL_BIN name executables.
kms_it_check_bins() {
	local b

	if [ -z "${KMSD_BIN:-}" ] || [ -z "${KMSCTL_BIN:-}" ]; then
		kms_it_say "set KMSD_BIN and KMSCTL_BIN to the kmsd and kmsctl binaries"
		exit 2
	fi
	for b in "$KMSD_BIN" "$KMSCTL_BIN"; do
		if [ ! -x "$b" ]; then
			kms_it_say "$b is not an executable"
			exit 2
		fi
	done
}

# The caller's KMS_* settings (KMS_LISTEN, KMS_DATA_DIR, KMS_PIN, ...) would
# override the private config; the instance must not see them.
kms_it_clear_env() {
	local v

	while read -r v; do
		unset "$v"
	done < <(compgen -e | grep '^KMS_')
}

# kms_it_mkdir NAME: D becomes a new directory named after NAME under
# $TMPDIR (/tmp); exits 2 if it cannot be made.
kms_it_mkdir() {
	D=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || exit 2
}

# Stops kmsd with SIGTERM, and SIGKILL after kms_it_stop_timeout. Returns 0
# if it exited 0 after SIGTERM (or none ran), else 1 after saying why;
# with "--quiet-status" an exit status other than 0 is not said.
kms_it_stop() {
	local i rc

	[ -n "$pid" ] || return 0
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid"
		rc=$?
		pid=
		kms_it_say "kmsd had exited already (status $rc)"
		return 1
	fi
	kill -TERM "$pid"
	for ((i = 0; i < kms_it_stop_timeout * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kms_it_say "kmsd did not stop within ${kms_it_stop_timeout}s of SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		pid=
		return 1
	fi
	wait "$pid"
	rc=$?
	pid=
	if [ "$rc" -ne 0 ]; then
		[ "${1:-}" = --quiet-status ] ||
		    kms_it_say "kmsd exited with status $rc after SIGTERM"
		return 1
	fi
	return 0
}

# shellcheck disable=SC2317 # called by the EXIT trap
kms_it_cleanup() {
	kms_it_stop >/dev/null 2>&1
	if [ -n "$kms_it_keep" ]; then
		kms_it_say "kept $D"
	else
		rm -rf "$D"
	fi
}

# Stops kmsd and removes D when the script exits, however it exits.
kms_it_traps() {
	trap kms_it_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

kms_it_show_log() {
	kms_it_say "kmsd log ($D/kmsd.log):"
	tail -n 40 "$D/kmsd.log" >&2 2>/dev/null
}

# A SoftHSM configuration with its token directory in D, exported.
kms_it_softhsm_conf() {
	mkdir -p "$D/tokens"
	printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
	    "$D" >"$D/softhsm2.conf"
	export SOFTHSM2_CONF=$D/softhsm2.conf
}

# kms_it_kmsd_conf [LINE...]: $D/kmsd.conf for 127.0.0.1:0 with the port
# file in D, and each LINE added.
kms_it_kmsd_conf() {
	printf 'data_dir = %s\nlisten = 127.0.0.1:0\nport_file = %s/kmsd.port\n' \
	    "$D" "$D" >"$D/kmsd.conf"
	[ "$#" -eq 0 ] || printf '%s\n' "$@" >>"$D/kmsd.conf"
}

kms_it_start_failed() {
	kms_it_say "$*"
	kms_it_show_log
	exit 1
}

# kms_it_start [FAIL]: starts kmsd on $D/kmsd.conf (its log in $D/kmsd.log)
# and waits until its port file names a port whose /v1/ready answers 200;
# sets pid and port. If kmsd exits or is not ready within
# kms_it_start_timeout, calls FAIL (default kms_it_start_failed: say why,
# show the log, exit 1) with the reason; FAIL does not return.
kms_it_start() {
	local fail=${1:-kms_it_start_failed} i

	"$KMSD_BIN" --config "$D/kmsd.conf" 2>"$D/kmsd.log" &
	pid=$!
	port=
	for ((i = 0; i < kms_it_start_timeout * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || "$fail" "kmsd exited during start-up"
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
	if [ -z "$port" ] || [ "$i" -ge $((kms_it_start_timeout * 10)) ]; then
		"$fail" "kmsd was not ready within ${kms_it_start_timeout}s"
	fi
}
