#!/usr/bin/env bash
# Tamper matrix of `kmsctl audit verify` (issue 4, DESIGN.md section 5):
# starts a private kmsd (127.0.0.1:0, a fresh SoftHSM token, small segments
# and frequent checkpoints), makes traffic, exports a bundle with an auditor
# token, then checks that the untouched bundle verifies (with kmsctl and
# with the independent sha256sum/sed/openssl steps of docs/AUDIT.md) and
# that each tampered copy is refused with the exact first bad seq.
#
#   KMSD_BIN=build/service/kmsd KMSCTL_BIN=build/tools/kmsctl \
#       tests/integration/audit_tamper.sh
#
# Prints "ok - ..." / "FAIL - ..." per case and "N passed, N failed" at the
# end; exits 1 if any case failed, 2 if kmsd could not be set up.
# KMS_TEST_KEEP=1 keeps the directory (config, log, bundles) for a look.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
docs=$here/../../docs/AUDIT.md
kms_it_name=audit_tamper
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

say() { kms_it_say "$@"; }

kms_it_check_bins
for t in curl openssl sha256sum od dd; do
	if ! command -v "$t" >/dev/null 2>&1; then
		say "$t is required"
		exit 2
	fi
done
if [ ! -r "$docs" ]; then
	say "cannot read $docs"
	exit 2
fi

kms_it_clear_env
kms_it_mkdir kmsd-audit-tamper
kms_it_traps

setup_fail() {
	say "$*"
	kms_it_show_log
	exit 2
}

# ---- a private kmsd: 4 KiB segments, a checkpoint every 10 records ----

mkdir -p "$D/t"
kms_it_softhsm_conf
kms_it_kmsd_conf 'audit_checkpoint_records = 10' 'audit_segment_bytes = 4096'

if ! "$KMSCTL_BIN" init --config "$D/kmsd.conf" --init-token >"$D/init.log" 2>&1; then
	cat "$D/init.log" >&2
	setup_fail "kmsctl init failed"
fi

kms_it_start setup_fail

export KMS_ADDR=http://127.0.0.1:$port
kc() { "$KMSCTL_BIN" "$@"; }
admin() { "$KMSCTL_BIN" --token-file "$D/admin.token" "$@"; }
app() { "$KMSCTL_BIN" --token-file "$D/app.token" "$@"; }
auditor() { "$KMSCTL_BIN" --token-file "$D/auditor.token" "$@"; }

(umask 077 && admin token create --role app --keys 'matter-*' >"$D/app.token" \
    2>/dev/null && admin token create --role auditor >"$D/auditor.token" \
    2>/dev/null) || setup_fail "cannot create the app and auditor tokens"

# ---- traffic: keys, wraps with contexts, a batch, a rotation, refusals ----

for k in matter-1 matter-2; do
	admin key create "$k" >/dev/null || setup_fail "cannot create key $k"
done
for i in $(seq 1 24); do
	printf 'dek-%s' "$i" | app wrap matter-1 --context matter=m1 \
	    --context user="u$i" >"$D/ct.$i" || setup_fail "wrap $i failed"
done
for i in 1 2 3 4; do
	printf 'dek-%s' "$i" | app wrap matter-2 --context matter=m2 >/dev/null ||
	    setup_fail "wrap matter-2 failed"
done
curl -s -o /dev/null -H "Authorization: Bearer $(cat "$D/app.token")" \
    "$KMS_ADDR/v1/keys/matter-1/wrap" \
    --json '{"batch":[{"plaintext":"aGVsbG8=","context":{"matter":"b1"}},{"plaintext":"aGk=","context":{"matter":"b2"}}]}' ||
    setup_fail "batch wrap failed"
printf 'x' | app wrap other-key >/dev/null 2>&1 # 403: refused, recorded
admin key rotate matter-1 >/dev/null || setup_fail "rotate failed"
app unwrap matter-1 --context matter=m1 --context user=u1 --in "$D/ct.1" \
    >/dev/null 2>&1 || setup_fail "unwrap failed"
for i in $(seq 1 6); do
	printf 'dek-%s' "$i" | app wrap matter-1 --context matter=m1 >/dev/null ||
	    setup_fail "wrap v2 failed"
done

# ---- the cases ----

passed=0
failed=0
ok() {
	passed=$((passed + 1))
	printf 'ok - %s\n' "$1"
}
not_ok() {
	failed=$((failed + 1))
	printf 'FAIL - %s\n' "$1"
	[ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'
	return 0
}

# expect_verify NAME WANT_EXIT WANT_TEXT DIR [VERIFY ARGS...]: runs
# `kmsctl audit verify DIR ARGS` and wants that exit status and a line of
# output that starts with WANT_TEXT.
expect_verify() {
	local name=$1 want_rc=$2 want=$3 dir=$4 out rc
	shift 4
	out=$(kc audit verify "$dir" "$@" 2>&1)
	rc=$?
	if [ "$rc" -eq "$want_rc" ] && printf '%s\n' "$out" |
	    awk -v w="$want" 'index($0, w) == 1 { f = 1 } END { exit !f }'; then
		ok "$name"
	else
		not_ok "$name (exit $rc, wanted $want_rc and '$want')" "$out"
	fi
}

# other_hex_first LINE: sed script that changes the first hex digit of the
# "hash" member on line LINE (0 -> 1, anything else -> 0).
other_hex_first() {
	printf '%ss/"hash":"0/"hash":"X/; %ss/"hash":"[1-9a-f]/"hash":"0/; %ss/"hash":"X/"hash":"1/' \
	    "$1" "$1" "$1"
}

B=$D/bundle
out=$(auditor audit export "$B" 2>&1) ||
    setup_fail "audit export failed: $out"

# Facts about the bundle that the cases use.
segs=()
while IFS= read -r f; do segs+=("$f"); done < <(cd "$B" && printf '%s\n' audit-*.jsonl)
nsegs=${#segs[@]}
# first_of NAME: the first seq of segment NAME (audit-<12 digits>.jsonl).
first_of() {
	local n=${1#audit-}
	n=${n%.jsonl}
	echo $((10#$n))
}
ncps=$(wc -l <"$B/checkpoints.jsonl")
last_cp_seq=$(tail -n 1 "$B/checkpoints.jsonl" | sed -n 's/.*"seq":\([0-9]*\).*/\1/p')
last_seq=$(tail -n 1 "$B/${segs[nsegs - 1]}" | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p')
if [ "$nsegs" -lt 4 ] || [ "$ncps" -lt 3 ] || [ -z "$last_cp_seq" ] ||
    [ -z "$last_seq" ]; then
	setup_fail "the bundle is too small for the matrix: $nsegs segments, $ncps checkpoints"
fi

# copy NAME: a fresh copy of the bundle; prints its path.
copy() {
	rm -rf "$D/t/$1"
	cp -a "$B" "$D/t/$1"
	echo "$D/t/$1"
}
# remanifest DIR: MANIFEST for what is in DIR now, so that the chain check,
# not the MANIFEST check, has to find the change.
remanifest() {
	(cd "$1" && sha256sum keys.json checkpoints.jsonl audit-*.jsonl >MANIFEST)
}
# locate DIR SEQ: "<segment> <line>" of record SEQ.
locate() {
	local f seg='' first line=
	for f in "$1"/audit-*.jsonl; do
		f=${f##*/}
		first=$(first_of "$f")
		[ "$first" -le "$2" ] && seg=$f && line=$(($2 - first + 1))
	done
	echo "$seg $line"
}
# flip_byte FILE OFFSET: XORs one byte with 0x01.
flip_byte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059 # the format is the octal escape
	printf "$(printf '\\%03o' $((b ^ 1)))" |
	    dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
# flip_in_record DIR SEQ: flips the first character of the record's
# request_id (stays valid JSON: the parser accepts it, the chain must not).
flip_in_record() {
	local seg line start idx
	read -r seg line < <(locate "$1" "$2")
	start=$(head -n $((line - 1)) "$1/$seg" | wc -c)
	idx=$(awk -v n="$line" 'NR == n { print index($0, "\"request_id\":\"") }' \
	    "$1/$seg")
	flip_byte "$1/$seg" $((start + idx - 1 + 14))
}
# truncate_from DIR SEQ: removes every record with seq >= SEQ.
truncate_from() {
	local f first
	for f in "$1"/audit-*.jsonl; do
		first=$(first_of "${f##*/}")
		if [ "$first" -ge "$2" ]; then
			rm "$f"
		elif [ $((first + $(wc -l <"$f"))) -gt "$2" ]; then
			sed -i "$(($2 - first + 1)),\$d" "$f"
		fi
	done
}
# append_record DIR MEMBERS: appends a well-linked record with the given
# members (after seq, ts, prev) to the last segment.
append_record() {
	local seg prev n
	seg=$(cd "$1" && printf '%s\n' audit-*.jsonl | tail -n 1)
	n=$(($(tail -n 1 "$1/$seg" | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p') + 1))
	prev=$(tail -n 1 "$1/$seg" | head -c -1 | sha256sum | cut -c 1-64)
	printf '{"seq":%s,"ts":"2026-11-23T18:00:00.000000Z","prev":"%s",%s}\n' \
	    "$n" "$prev" "$2" >>"$1/$seg"
	echo "$n"
}

# A record in the middle of the third segment that no checkpoint seals.
mid=$(($(first_of "${segs[2]}") + 2))
while grep -q "\"seq\":$mid," "$B/checkpoints.jsonl"; do
	mid=$((mid + 1))
done

# 1. The untouched bundle.
expect_verify "untouched bundle verifies" 0 \
    "valid: $((last_seq + 1)) records (seq 0..$last_seq), $ncps checkpoints, last sealed seq $last_cp_seq; unsealed tail:" "$B"
kid=$(sed -n 's/^audit-signing key: .*(kid \(.*\))$/\1/p' "$D/init.log")
expect_verify "verify names the checkpoint key that kmsctl init printed" 0 \
    "note: checkpoint key kid $kid, origin 'kmsd'" "$B"
if (cd "$B" && sha256sum --quiet -c MANIFEST) >"$D/sha.out" 2>&1; then
	ok "sha256sum -c MANIFEST passes"
else
	not_ok "sha256sum -c MANIFEST passes" "$(cat "$D/sha.out")"
fi

# 2. The independent check of docs/AUDIT.md, run as it is written there.
sed -n '/^<!-- audit-independent-check: begin -->$/,/^<!-- audit-independent-check: end -->$/p' \
    "$docs" | sed '/^<!--/d; /^```/d' >"$D/independent.sh"
mkdir -p "$D/t/indep" && cp -a "$B" "$D/t/indep/bundle"
out=$(cd "$D/t/indep" && bash "$D/independent.sh" 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && grep -q -x 'Verified OK' <<<"$out" &&
    grep -q -x "record $last_cp_seq matches the checkpoint" <<<"$out" &&
    grep -q -x "chain OK: seq 0..$last_seq" <<<"$out"; then
	ok "docs/AUDIT.md independent check: openssl dgst -verify of the last checkpoint, record hash, chain"
else
	not_ok "docs/AUDIT.md independent check (exit $rc)" "$out"
fi

# 3. One byte flipped inside a record, MANIFEST recomputed: the chain.
T=$(copy flip)
flip_in_record "$T" "$mid"
remanifest "$T"
expect_verify "flipped byte in seq $mid (MANIFEST recomputed)" 1 \
    "invalid: seq $mid: its line hash does not match the prev of seq $((mid + 1))" "$T"
mkdir -p "$D/t/indep-flip" && cp -a "$T" "$D/t/indep-flip/bundle"
if ! out=$(cd "$D/t/indep-flip" && bash "$D/independent.sh" 2>&1) && grep -q -x "chain broken at seq $((mid + 1))" <<<"$out"; then
	ok "docs/AUDIT.md independent check also refuses the flipped record"
else
	not_ok "docs/AUDIT.md independent check refuses the flipped record" "$out"
fi

# 4. The same flip with MANIFEST left stale: MANIFEST.
T=$(copy flip-stale)
flip_in_record "$T" "$mid"
read -r seg _ < <(locate "$T" "$mid")
expect_verify "flipped byte, stale MANIFEST" 1 \
    "invalid: MANIFEST: $seg: SHA-256 does not match" "$T"

# 5. A flipped byte in a record that a checkpoint seals.
sealed=$(sed -n '2s/.*"seq":\([0-9]*\).*/\1/p' "$B/checkpoints.jsonl")
T=$(copy flip-sealed)
flip_in_record "$T" "$sealed"
remanifest "$T"
expect_verify "flipped byte in sealed seq $sealed" 1 \
    "invalid: seq $sealed: its line hash does not match the checkpoint at line 2" "$T"

# 6. A record deleted.
T=$(copy delete)
read -r seg line < <(locate "$T" "$mid")
sed -i "${line}d" "$T/$seg"
remanifest "$T"
expect_verify "record seq $mid deleted" 1 \
    "invalid: seq $mid: expected here ($seg), found seq $((mid + 1))" "$T"

# 7. Two records swapped.
T=$(copy swap)
read -r seg line < <(locate "$T" "$mid")
sed -i "${line}{h;d};$((line + 1)){G}" "$T/$seg"
remanifest "$T"
expect_verify "records seq $mid and $((mid + 1)) swapped" 1 \
    "invalid: seq $mid: expected here ($seg), found seq $((mid + 1))" "$T"

# 8. The tail truncated past the last checkpoint, checkpoints kept.
cut=$((last_cp_seq - 1))
T=$(copy truncate)
truncate_from "$T" "$cut"
remanifest "$T"
expect_verify "tail truncated from seq $cut, checkpoints kept" 1 \
    "invalid: seq $cut: missing: the checkpoint at line $ncps seals seq $last_cp_seq but the bundle ends at seq $((cut - 1)) (a truncated log)" "$T"

# 9. A checkpoint's signature replaced by another valid one (line 1's).
T=$(copy signature)
sig1=$(sed -n '1s/.*"sig":"\([^"]*\)".*/\1/p' "$T/checkpoints.jsonl")
seq2=$(sed -n '2s/.*"seq":\([0-9]*\).*/\1/p' "$T/checkpoints.jsonl")
sed -i "2s|\"sig\":\"[^\"]*\"|\"sig\":\"$sig1\"|" "$T/checkpoints.jsonl"
remanifest "$T"
expect_verify "checkpoint 2 carries checkpoint 1's signature" 1 \
    "invalid: checkpoint at line 2: seq $seq2: the signature does not verify" "$T"

# 10. A checkpoint's hash changed (the signature no longer covers it).
T=$(copy cp-hash)
sed -i "$(other_hex_first 3)" "$T/checkpoints.jsonl"
seq3=$(sed -n '3s/.*"seq":\([0-9]*\).*/\1/p' "$T/checkpoints.jsonl")
remanifest "$T"
expect_verify "checkpoint 3's hash changed" 1 \
    "invalid: checkpoint at line 3: seq $seq3: the signature does not verify" "$T"

# 11. A middle segment dropped.
T=$(copy drop-segment)
rm "$T/${segs[1]}"
remanifest "$T"
expect_verify "segment ${segs[1]} dropped" 1 \
    "invalid: seq $(first_of "${segs[1]}"): expected next, but segment ${segs[2]} starts at seq $(first_of "${segs[2]}") (records missing)" "$T"

# 12. The first segment dropped: its checkpoint now seals a record before
# the bundle's start.
T=$(copy drop-first)
rm "$T/${segs[0]}"
remanifest "$T"
cp1=$(sed -n '1s/.*"seq":\([0-9]*\).*/\1/p' "$T/checkpoints.jsonl")
expect_verify "first segment dropped" 1 \
    "invalid: checkpoint at line 1: it seals seq $cp1, before the first record of the bundle (seq $(first_of "${segs[1]}"))" "$T"

# 13. A segment dropped but MANIFEST left alone.
T=$(copy drop-stale)
rm "$T/${segs[1]}"
expect_verify "segment dropped, stale MANIFEST" 1 \
    "invalid: MANIFEST: ${segs[1]}: missing" "$T"

# 14. A forged segment added beside an untouched MANIFEST.
T=$(copy add-segment)
cp "$T/${segs[nsegs - 1]}" "$T/audit-999999999999.jsonl"
expect_verify "unlisted segment added" 1 \
    "invalid: MANIFEST: audit-999999999999.jsonl: not listed" "$T"

# 15. Trusted checkpoints: one from later than the bundle, and one from
# within it.
for i in $(seq 1 12); do
	printf 'later-%s' "$i" | app wrap matter-1 >/dev/null
done
auditor audit head --checkpoint >"$D/later.json" 2>"$D/later.err"
later_seq=$(sed -n 's/.*"seq":\([0-9]*\).*/\1/p' "$D/later.json")
if [ -n "$later_seq" ] && [ "$later_seq" -gt "$last_seq" ]; then
	expect_verify "older bundle against a later trusted checkpoint (seq $later_seq)" 1 \
	    "invalid: seq $((last_seq + 1)): missing: the trusted checkpoint seals seq $later_seq but the bundle ends at seq $last_seq (a truncated log)" \
	    "$B" --trusted-checkpoint "$D/later.json"
else
	not_ok "a later checkpoint from audit head --checkpoint" \
	    "$(cat "$D/later.json" "$D/later.err")"
fi
# A consistent truncation (records and their checkpoints both cut) passes
# on its own; only the checkpoint kept from before catches it.
tail -n 1 "$B/checkpoints.jsonl" >"$D/trusted.json"
T=$(copy truncate-consistent)
truncate_from "$T" "$cut"
awk -F'"seq":' -v c="$cut" '{ split($2, a, ","); if (a[1] + 0 < c) print }' \
    "$B/checkpoints.jsonl" >"$T/checkpoints.jsonl"
remanifest "$T"
expect_verify "consistently truncated bundle alone still verifies" 0 \
    "valid: $cut records (seq 0..$((cut - 1)))" "$T"
expect_verify "consistently truncated bundle against the trusted checkpoint" 1 \
    "invalid: seq $cut: missing: the trusted checkpoint seals seq $last_cp_seq but the bundle ends at seq $((cut - 1)) (a truncated log)" \
    "$T" --trusted-checkpoint "$D/trusted.json"
expect_verify "untouched bundle against the trusted checkpoint" 0 \
    "note: the trusted checkpoint (seq $last_cp_seq) matches" "$B" \
    --trusted-checkpoint "$D/trusted.json"
sed "$(other_hex_first 1)" "$D/trusted.json" >"$D/trusted-bad-signed.json"
expect_verify "trusted checkpoint with another hash, signed" 1 \
    "invalid: trusted checkpoint: seq $last_cp_seq: the signature does not verify" \
    "$B" --trusted-checkpoint "$D/trusted-bad-signed.json"
sed 's/,"kid":"[^"]*"//; s/,"sig":"[^"]*"//; s/,"ts":"[^"]*"//' \
    "$D/trusted-bad-signed.json" >"$D/trusted-bad.json"
expect_verify "trusted checkpoint with another hash, unsigned" 1 \
    "invalid: seq $last_cp_seq: its line hash does not match the trusted checkpoint" \
    "$B" --trusted-checkpoint "$D/trusted-bad.json"

# 16. Executed ceremonies must show their quorum (synthetic records at the
# unsealed end: the chain is intact, only the quorum is wrong).
cer='"request_id":"r","actor":"token:0123456789abcdef","op":"ceremony.execute","outcome":"ok","status":200,"key":null,"version":null,"ceremony_id":"c1","operation":"key.destroy","digest":"00"'
T=$(copy ceremony-ok)
append_record "$T" "$cer,\"quorum\":2,\"requester\":\"alice\",\"approvers\":[\"bob\",\"carol\"]" >/dev/null
remanifest "$T"
expect_verify "ceremony with its quorum" 0 "valid:" "$T"
T=$(copy ceremony-short)
n=$(append_record "$T" "$cer,\"quorum\":2,\"requester\":\"alice\",\"approvers\":[\"bob\"]")
remanifest "$T"
expect_verify "ceremony below quorum" 1 \
    "invalid: seq $n: executed ceremony had 1 approvers but its quorum is 2" "$T"
T=$(copy ceremony-self)
n=$(append_record "$T" "$cer,\"quorum\":2,\"requester\":\"alice\",\"approvers\":[\"bob\",\"alice\"]")
remanifest "$T"
expect_verify "ceremony approved by its requester" 1 \
    "invalid: seq $n: the requester alice approved their own ceremony" "$T"
T=$(copy ceremony-twice)
n=$(append_record "$T" "$cer,\"quorum\":2,\"requester\":\"alice\",\"approvers\":[\"bob\",\"bob\"]")
remanifest "$T"
expect_verify "ceremony with an approver counted twice" 1 \
    "invalid: seq $n: officer bob is counted twice among the approvers" "$T"
T=$(copy ceremony-noquorum)
n=$(append_record "$T" "$cer,\"requester\":\"alice\",\"approvers\":[\"bob\",\"carol\"]")
remanifest "$T"
expect_verify "ceremony record without quorum" 1 \
    "invalid: seq $n: executed ceremony without an integer quorum >= 1" "$T"

# 17. Hostile bytes: a line that is not JSON, a duplicate member, a torn
# last line, a NUL byte.
T=$(copy garbage)
read -r seg line < <(locate "$T" "$mid")
sed -i "${line}s/.*/not json/" "$T/$seg"
remanifest "$T"
expect_verify "a line that is not JSON" 1 \
    "invalid: seq $mid: the line is not a JSON object" "$T"
T=$(copy duplicate)
sed -i "${line}s/^{\"seq\":$mid,/{\"seq\":$mid,\"seq\":$mid,/" "$T/$seg"
remanifest "$T"
expect_verify "a record with a duplicate member" 1 \
    "invalid: seq $mid: the line is not a JSON object" "$T"
T=$(copy torn)
printf '{"seq":%s,"ts":"2026' "$((last_seq + 1))" >>"$T/${segs[nsegs - 1]}"
remanifest "$T"
expect_verify "a torn last line" 1 \
    "invalid: seq $((last_seq + 1)): the last line of ${segs[nsegs - 1]} has no newline (torn)" "$T"
T=$(copy nul)
read -r seg line < <(locate "$T" "$mid")
start=$(head -n $((line - 1)) "$T/$seg" | wc -c)
printf '\0' | dd of="$T/$seg" bs=1 seek=$((start + 5)) conv=notrunc status=none
remanifest "$T"
expect_verify "a NUL byte in a record" 1 \
    "invalid: seq $mid: the line is not a JSON object" "$T"

# 18. Partial exports.
f3=$(first_of "${segs[2]}")
if auditor audit export --from $((f3 + 1)) --to $((f3 + 2)) "$D/bundle-range" \
    >"$D/range.out" 2>&1; then
	expect_verify "export --from $((f3 + 1)) --to $((f3 + 2)) verifies" 0 \
	    "note: the bundle starts at seq $f3; the prev of that record" \
	    "$D/bundle-range"
	if [ "$(cd "$D/bundle-range" && printf '%s\n' audit-*.jsonl)" = "${segs[2]}" ]; then
		ok "export --from/--to takes exactly the segment that holds the range"
	else
		not_ok "export --from/--to segments" "$(ls "$D/bundle-range")"
	fi
else
	not_ok "export --from --to" "$(cat "$D/range.out")"
fi
mkdir -p "$D/t/notempty" && touch "$D/t/notempty/x"
if ! auditor audit export "$D/t/notempty" >/dev/null 2>&1; then
	ok "export refuses a directory that is not empty"
else
	not_ok "export refuses a directory that is not empty"
fi

# 19. The exposure report of matter-1 version 1: every use, batch items
# expanded, with its context.
csv=$(auditor audit records --key matter-1 --version 1 --csv 2>&1)
hdr='seq,ts,actor,op,key,version,outcome,status,request_id,context'
wraps=$(printf '%s\n' "$csv" | grep -c ',wrap,matter-1,1,ok,200,')
if [ "$(printf '%s\n' "$csv" | head -n 1)" = "$hdr" ] && [ "$wraps" -eq 26 ] &&
    printf '%s\n' "$csv" | grep -q ',"{""matter"":""b2""}"$' &&
    printf '%s\n' "$csv" | grep -q ',unwrap,matter-1,1,ok,200,'; then
	ok "audit records --csv: exposure report of matter-1 v1 ($wraps wraps, batch items, unwrap)"
else
	not_ok "audit records --csv exposure report ($wraps wrap rows)" "$csv"
fi

# 20. The verifier exits 2 on usage and I/O errors.
kc audit verify "$D/no-such-bundle" >/dev/null 2>&1
rc1=$?
kc audit verify "$B" --trusted-checkpoint "$D/no-such-file" >/dev/null 2>&1
rc2=$?
if [ "$rc1" -eq 2 ] && [ "$rc2" -eq 2 ]; then
	ok "verify exits 2 on a missing bundle or trusted-checkpoint file"
else
	not_ok "verify usage/IO exit codes ($rc1, $rc2)"
fi

if ! kms_it_stop --quiet-status; then
	not_ok "kmsd stops cleanly on SIGTERM"
	kms_it_show_log
else
	ok "kmsd stops cleanly on SIGTERM"
fi

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
