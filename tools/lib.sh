# shellcheck shell=bash
# Shared by tools/run-local and tools/run-tests: the Debian packages kmsd
# needs, their installation, and the meson build. Source it; do not run it.

# Every Debian 12 package needed to build, run and test kmsd.
KMS_DEB_PACKAGES=(
	meson ninja-build pkg-config gcc libc6-dev
	libssl-dev openssl
	libp11-kit-dev p11-kit softhsm2 libsofthsm2
	libmicrohttpd-dev libjansson-dev libsqlite3-dev sqlite3
	libcurl4-openssl-dev libcunit1-dev
	curl ca-certificates git
	# The JOSE interop test (tests/integration/jose_interop.sh): a verifier
	# that is not kmsd checks its JWS with a standard library.
	python3-jwcrypto
	# Security tests (tests/fuzz, tests/valgrind): clang alone lacks
	# libFuzzer and the sanitizer runtimes on Debian 12 (libclang-rt-14-dev
	# is only a Recommends of libclang-common-14-dev).
	clang libclang-rt-14-dev valgrind cppcheck
	# tests/bench/run: the HTTP load generator of the performance table.
	wrk
)

kms_say() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Prints the packages of KMS_DEB_PACKAGES that are not installed, one a line.
kms_missing_packages() {
	local p
	for p in "${KMS_DEB_PACKAGES[@]}"; do
		if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
			printf '%s\n' "$p"
		fi
	done
}

# Installs the missing packages when root; otherwise prints the one line to
# run and returns 1.
kms_ensure_packages() {
	local missing
	if ! command -v dpkg-query >/dev/null 2>&1; then
		kms_say "not a Debian system; make sure these (or their equivalents) are installed:"
		kms_say "  ${KMS_DEB_PACKAGES[*]}"
		return 0
	fi
	mapfile -t missing < <(kms_missing_packages)
	if [ "${#missing[@]}" -eq 0 ]; then
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		kms_say "missing Debian packages: ${missing[*]}"
		kms_say "install them with:"
		printf 'sudo apt-get update && sudo apt-get install -y %s\n' "${missing[*]}"
		return 1
	fi
	kms_say "installing: ${missing[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# kms_build DIR [MESON SETUP OPTIONS...]: configures DIR once, then builds.
kms_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@"
	fi
	ninja -C "$dir"
}
