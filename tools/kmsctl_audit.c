/* kmsctl audit: exports a bundle of kmsd's hash-chained log over HTTP,
 * verifies a bundle offline, shows the chain head and queries records
 * (the exposure report). The format is DESIGN.md section 5 and
 * docs/AUDIT.md. */
#include "kmsctl_audit.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "jwk.h"
#include "kmsctl_cli.h"
#include "kmsctl_http.h"
#include "kmsd_version.h"

#define AV_MAX_LINE (4u << 20)		/* service/audit.c's MAX_LINE */
#define AV_MAX_SMALL (1u << 20)		/* keys.json, MANIFEST */
#define AV_MAX_TRUSTED (64u << 10)	/* a --trusted-checkpoint file */
#define AV_MAX_ORIGIN 256
#define AV_MAX_KID 63
#define AV_MAX_KEYS 64
#define AV_MAX_TS 64
#define AV_MAX_SIG_B64 256		/* a P-256 DER signature is <= 72 bytes */
#define AV_MAX_CHECKPOINTS_FILE (256u << 20)
#define AV_MAX_SEGMENT_FILE ((uint64_t)1 << 31)	/* cfg max 1 GiB + a line */
#define AV_HASH 32

#define SEG_PREFIX "audit-"
#define SEG_SUFFIX ".jsonl"
#define SEG_DIGITS 12
#define SEG_NAME_LEN (sizeof(SEG_PREFIX) - 1 + SEG_DIGITS + sizeof(SEG_SUFFIX) - 1)
#define CP_FILE "checkpoints.jsonl"
#define KEYS_FILE "keys.json"
#define MANIFEST_FILE "MANIFEST"
#define MANIFEST_TMP "MANIFEST.tmp"
#define CP_TEXT_PREFIX "kms-audit-checkpoint/v1\n"
#define RECORD_PAGE 1000

static const char zero_hash_hex[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* ================================================================== */
/* The verifier: pure checks on buffers, no I/O.                       */
/* ================================================================== */

struct av_key {
	char kid[AV_MAX_KID + 1];
	EVP_PKEY *pkey;
};

struct av_cp {
	uint64_t seq;
	unsigned char hash[AV_HASH];
	size_t line;			/* in checkpoints.jsonl, from 1 */
};

struct cli_audit_verifier {
	char origin[AV_MAX_ORIGIN + 1];
	struct av_key keys[AV_MAX_KEYS];
	size_t nkeys;
	struct av_cp *cps;		/* seq strictly increasing */
	size_t ncps, cps_cap, cp_lines, cp_next;
	int has_trusted;
	struct av_cp trusted;
	int started;			/* a segment has begun */
	uint64_t first_seq;		/* of the bundle */
	uint64_t next_seq;		/* the seq the next line must have */
	uint64_t nrecords;
	unsigned char prev[AV_HASH];	/* SHA-256 of the line of next_seq - 1 */
	int prev_sealed;		/* ... and a checkpoint vouched for it */
	int have_sealed;
	uint64_t last_sealed;
	char segment[SEG_NAME_LEN + 1];
	int result;			/* sticky once not CLI_AUDIT_VALID */
	char msg[640];
	char notes[16384];
	size_t notes_len;
};

static int fail(struct cli_audit_verifier *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(struct cli_audit_verifier *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct cli_audit_verifier *v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
	va_end(ap);
	v->result = CLI_AUDIT_INVALID;
	return v->result;
}

static int
nomem(struct cli_audit_verifier *v)
{
	snprintf(v->msg, sizeof(v->msg), "out of memory");
	v->result = CLI_AUDIT_ERROR;
	return v->result;
}

static void
note(struct cli_audit_verifier *v, const char *fmt, ...)
{
	size_t room = sizeof(v->notes) - v->notes_len;
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	n = snprintf(v->notes + v->notes_len, room, "note: %s\n", line);
	if (n > 0 && (size_t)n < room)
		v->notes_len += (size_t)n;
	else
		v->notes[v->notes_len] = '\0';	/* full: the note is dropped */
}

/* 1..max bytes of printable ASCII (space allowed when `space`). */
static int
text_ok(const char *s, size_t max, int space)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++)
		if (n >= max || (unsigned char)*s < (space ? 0x20 : 0x21) ||
		    (unsigned char)*s > 0x7e)
			return 0;
	return n > 0;
}

static int
hex64_ok(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[64] == '\0';
}

/* A hostile string for a message: at most 48 bytes, non-printables '?'. */
static const char *
safe(const char *s, char buf[52])
{
	size_t i;

	for (i = 0; s[i] != '\0' && i < 48; i++)
		buf[i] = (s[i] >= 0x20 && s[i] <= 0x7e) ? s[i] : '?';
	if (s[i] != '\0') {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/* "audit-<12 digits>.jsonl" -> 1 and *first. */
static int
segment_name(const char *name, uint64_t *first)
{
	const size_t plen = sizeof(SEG_PREFIX) - 1;
	uint64_t n = 0;
	size_t i;

	if (strlen(name) != SEG_NAME_LEN || strncmp(name, SEG_PREFIX, plen) != 0 ||
	    strcmp(name + plen + SEG_DIGITS, SEG_SUFFIX) != 0)
		return 0;
	for (i = plen; i < plen + SEG_DIGITS; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		n = n * 10 + (uint64_t)(name[i] - '0');
	}
	if (first != NULL)
		*first = n;
	return 1;
}

/* One line as a JSON object, or NULL. Duplicate member names are refused:
 * two readers must never see two different records in one line. */
static json_t *
parse_object(const char *line, size_t len)
{
	json_t *doc;

	if (len == 0 || len > AV_MAX_LINE || memchr(line, '\0', len) != NULL)
		return NULL;
	doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (doc != NULL && !json_is_object(doc)) {
		json_decref(doc);
		doc = NULL;
	}
	return doc;
}

static int
is_p256(EVP_PKEY *pkey)
{
	char group[64];
	size_t len = 0;

	return EVP_PKEY_is_a(pkey, "EC") &&
	    EVP_PKEY_get_group_name(pkey, group, sizeof(group), &len) == 1 &&
	    OBJ_sn2nid(group) == NID_X9_62_prime256v1;
}

/* The RFC 7638 thumbprint of `pkey`, as kmsd computes its kid. */
static int
thumbprint(EVP_PKEY *pkey, char kid[44])
{
	unsigned char *der = NULL;
	json_t *jwk = NULL;
	int n, r;

	if ((n = i2d_PUBKEY(pkey, &der)) <= 0)
		return KM_ERR_INTERNAL;
	r = jwk_from_spki(der, (size_t)n, &jwk, kid);
	json_decref(jwk);
	OPENSSL_free(der);
	return r;
}

static int
load_key(struct cli_audit_verifier *v, size_t i, json_t *k)
{
	const char *kid = json_string_value(json_object_get(k, "kid"));
	const char *pem = json_string_value(json_object_get(k, "pem"));
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	char thumb[44];
	size_t j;
	int r;

	if (kid == NULL || pem == NULL || !text_ok(kid, AV_MAX_KID, 0))
		return fail(v, "keys.json: key %zu has no well-formed kid and pem", i);
	if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
		return nomem(v);
	pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	ERR_clear_error();
	if (pkey == NULL || !is_p256(pkey)) {
		r = fail(v, "keys.json: key %s is not an EC P-256 public key", kid);
		goto out;
	}
	if (thumbprint(pkey, thumb) != KM_OK || strcmp(thumb, kid) != 0) {
		r = fail(v, "keys.json: kid %s is not the RFC 7638 thumbprint of "
		    "its key", kid);
		goto out;
	}
	for (j = 0; j < v->nkeys; j++)
		if (strcmp(v->keys[j].kid, kid) == 0) {
			r = fail(v, "keys.json: kid %s is listed twice", kid);
			goto out;
		}
	memcpy(v->keys[v->nkeys].kid, kid, strlen(kid) + 1);
	v->keys[v->nkeys++].pkey = pkey;
	pkey = NULL;
	/* keys.json travels with the bundle: the auditor compares the kid
	 * with one from a trusted channel. */
	note(v, "checkpoint key kid %s, origin '%s' (from keys.json)", kid,
	    v->origin);
	r = CLI_AUDIT_VALID;
out:
	EVP_PKEY_free(pkey);
	return r;
}

static int
load_keys(struct cli_audit_verifier *v, json_t *doc)
{
	const char *origin = json_string_value(json_object_get(doc, "origin"));
	json_t *keys = json_object_get(doc, "keys"), *k;
	size_t i;
	int r;

	if (origin == NULL || !text_ok(origin, AV_MAX_ORIGIN, 1))
		return fail(v, "keys.json: origin is not 1..%d printable characters",
		    AV_MAX_ORIGIN);
	memcpy(v->origin, origin, strlen(origin) + 1);
	if (!json_is_array(keys) || json_array_size(keys) < 1 ||
	    json_array_size(keys) > AV_MAX_KEYS)
		return fail(v, "keys.json: keys is not an array of 1..%d keys",
		    AV_MAX_KEYS);
	json_array_foreach(keys, i, k)
		if ((r = load_key(v, i, k)) != CLI_AUDIT_VALID)
			return r;
	return CLI_AUDIT_VALID;
}

int
cli_audit_verifier_new(const char *keys_json, size_t len,
    struct cli_audit_verifier **out)
{
	struct cli_audit_verifier *v;
	json_t *doc = NULL;
	int r;

	if ((*out = v = calloc(1, sizeof(*v))) == NULL)
		return CLI_AUDIT_ERROR;
	if (keys_json != NULL && len > 0 && len <= AV_MAX_SMALL &&
	    memchr(keys_json, '\0', len) == NULL)
		doc = json_loadb(keys_json, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(doc))
		r = fail(v, "keys.json: not a JSON object");
	else
		r = load_keys(v, doc);
	json_decref(doc);
	return r;
}

void
cli_audit_verifier_free(struct cli_audit_verifier *v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < v->nkeys; i++)
		EVP_PKEY_free(v->keys[i].pkey);
	free(v->cps);
	free(v);
}

const char *
cli_audit_verifier_message(const struct cli_audit_verifier *v)
{
	return v->msg;
}

const char *
cli_audit_verifier_notes(const struct cli_audit_verifier *v)
{
	return v->notes;
}

/* ---- checkpoints ---- */

struct cp_in {
	uint64_t seq;
	const char *hash, *ts, *kid, *sig;	/* owned by the parsed line */
};

/* Reads a checkpoint's members. With `need_sig`, ts, kid and sig are
 * required; without, they are checked only when one of them is there. */
static int
cp_fields(struct cli_audit_verifier *v, const char *where, json_t *doc,
    int need_sig, struct cp_in *c)
{
	json_t *s = json_object_get(doc, "seq");
	int64_t us;

	memset(c, 0, sizeof(*c));
	if (!json_is_integer(s) || json_integer_value(s) < 0)
		return fail(v, "%s: no non-negative integer seq", where);
	c->seq = (uint64_t)json_integer_value(s);
	c->hash = json_string_value(json_object_get(doc, "hash"));
	if (c->hash == NULL || !hex64_ok(c->hash))
		return fail(v, "%s: seq %" PRIu64 ": hash is not 64 lower-case hex "
		    "digits", where, c->seq);
	c->ts = json_string_value(json_object_get(doc, "ts"));
	c->kid = json_string_value(json_object_get(doc, "kid"));
	c->sig = json_string_value(json_object_get(doc, "sig"));
	if (!need_sig && c->ts == NULL && c->kid == NULL && c->sig == NULL)
		return CLI_AUDIT_VALID;
	if (c->ts == NULL || !text_ok(c->ts, AV_MAX_TS, 0) ||
	    km_time_parse(c->ts, &us) != KM_OK)
		return fail(v, "%s: seq %" PRIu64 ": ts is not an RFC 3339 time",
		    where, c->seq);
	if (c->kid == NULL || !text_ok(c->kid, AV_MAX_KID, 0))
		return fail(v, "%s: seq %" PRIu64 ": kid is missing or malformed",
		    where, c->seq);
	if (c->sig == NULL || strlen(c->sig) > AV_MAX_SIG_B64)
		return fail(v, "%s: seq %" PRIu64 ": sig is missing or too long",
		    where, c->seq);
	return CLI_AUDIT_VALID;
}

static const struct av_key *
find_key(const struct cli_audit_verifier *v, const char *kid)
{
	size_t i;

	for (i = 0; i < v->nkeys; i++)
		if (strcmp(v->keys[i].kid, kid) == 0)
			return &v->keys[i];
	return NULL;
}

/* 1 good, 0 bad, -1 out of memory. ECDSA P-256 over SHA-256 of `text`,
 * `sig` DER, as `openssl dgst -sha256 -verify` checks it. */
static int
sig_verify(EVP_PKEY *pkey, const unsigned char *sig, size_t sig_len,
    const char *text, size_t text_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	if (md == NULL)
		return -1;
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
	    EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)text,
	    text_len) == 1;
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return ok;
}

static int
cp_check_sig(struct cli_audit_verifier *v, const char *where,
    const struct av_key *k, const struct cp_in *c)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	char text[AV_MAX_ORIGIN + AV_MAX_TS + 160];
	int n, ok;

	if (km_b64_decode(c->sig, strlen(c->sig), &sig, &sig_len) != KM_OK ||
	    sig_len == 0) {
		km_secure_free(sig, sig_len);
		return fail(v, "%s: seq %" PRIu64 ": sig is not base64", where,
		    c->seq);
	}
	n = snprintf(text, sizeof(text), CP_TEXT_PREFIX "%s\n%" PRIu64 "\n%s\n%s\n",
	    v->origin, c->seq, c->hash, c->ts);
	ok = (n > 0 && (size_t)n < sizeof(text)) ?
	    sig_verify(k->pkey, sig, sig_len, text, (size_t)n) : 0;
	km_secure_free(sig, sig_len);
	if (ok < 0)
		return nomem(v);
	if (!ok)
		return fail(v, "%s: seq %" PRIu64 ": the signature does not verify "
		    "with key %s and origin '%s'", where, c->seq, k->kid, v->origin);
	return CLI_AUDIT_VALID;
}

static int
cp_push(struct cli_audit_verifier *v, const struct cp_in *c)
{
	struct av_cp *n;
	size_t cap;

	if (v->ncps == v->cps_cap) {
		cap = v->cps_cap ? v->cps_cap * 2 : 64;
		if (cap > SIZE_MAX / sizeof(*n) ||
		    (n = realloc(v->cps, cap * sizeof(*n))) == NULL)
			return nomem(v);
		v->cps = n;
		v->cps_cap = cap;
	}
	n = &v->cps[v->ncps];
	n->seq = c->seq;
	n->line = v->cp_lines;
	if (km_unhex(c->hash, n->hash, AV_HASH) != KM_OK)
		return fail(v, "checkpoint at line %zu: bad hash", v->cp_lines);
	v->ncps++;
	return CLI_AUDIT_VALID;
}

int
cli_audit_checkpoint_line(struct cli_audit_verifier *v, const char *line,
    size_t len, int complete)
{
	const struct av_key *k;
	struct cp_in c;
	json_t *doc = NULL;
	char where[48];
	int r;

	if (v->result != CLI_AUDIT_VALID)
		return v->result;
	snprintf(where, sizeof(where), "checkpoint at line %zu", ++v->cp_lines);
	if (v->started)
		return fail(v, "%s: checkpoints come before the records", where);
	if (!complete)
		return fail(v, "%s: the line has no newline (torn)", where);
	if ((doc = parse_object(line, len)) == NULL)
		return fail(v, "%s: not a JSON object", where);
	if ((r = cp_fields(v, where, doc, 1, &c)) != CLI_AUDIT_VALID)
		goto out;
	if ((k = find_key(v, c.kid)) == NULL) {
		r = fail(v, "%s: seq %" PRIu64 ": kid %s is not in keys.json", where,
		    c.seq, c.kid);
		goto out;
	}
	if ((r = cp_check_sig(v, where, k, &c)) != CLI_AUDIT_VALID)
		goto out;
	if (v->ncps > 0 && c.seq <= v->cps[v->ncps - 1].seq) {
		r = fail(v, "%s: seq %" PRIu64 " is not above the seq of the "
		    "checkpoint before it (%" PRIu64 ")", where, c.seq,
		    v->cps[v->ncps - 1].seq);
		goto out;
	}
	r = cp_push(v, &c);
out:
	json_decref(doc);
	return r;
}

int
cli_audit_trusted_checkpoint(struct cli_audit_verifier *v, const char *line,
    size_t len)
{
	const char *where = "trusted checkpoint";
	const struct av_key *k;
	struct cp_in c;
	json_t *doc;
	int r;

	if (v->result != CLI_AUDIT_VALID)
		return v->result;
	if ((doc = parse_object(line, len)) == NULL)
		return fail(v, "%s: not a JSON object", where);
	if ((r = cp_fields(v, where, doc, 0, &c)) != CLI_AUDIT_VALID)
		goto out;
	if (c.kid == NULL)
		note(v, "the trusted checkpoint carries no signature; it is taken "
		    "as given");
	else if ((k = find_key(v, c.kid)) == NULL)
		note(v, "the trusted checkpoint's kid %s is not in keys.json; its "
		    "signature was not checked", c.kid);
	else if ((r = cp_check_sig(v, where, k, &c)) != CLI_AUDIT_VALID)
		goto out;
	v->trusted.seq = c.seq;
	if (km_unhex(c.hash, v->trusted.hash, AV_HASH) != KM_OK) {
		r = fail(v, "%s: bad hash", where);
		goto out;
	}
	v->has_trusted = 1;
	r = CLI_AUDIT_VALID;
out:
	json_decref(doc);
	return r;
}

/* ---- records ---- */

int
cli_audit_segment_begin(struct cli_audit_verifier *v, const char *name)
{
	uint64_t first;

	if (v->result != CLI_AUDIT_VALID)
		return v->result;
	if (!segment_name(name, &first))
		return fail(v, "seq %" PRIu64 ": a segment file name is not "
		    "audit-<12 digits>.jsonl", v->next_seq);
	if (v->started && first != v->next_seq)
		return fail(v, "seq %" PRIu64 ": expected next, but segment %s "
		    "starts at seq %" PRIu64 " (%s)", v->next_seq, name, first,
		    first > v->next_seq ? "records missing" : "segments overlap");
	if (!v->started) {
		v->started = 1;
		v->first_seq = v->next_seq = first;
	}
	memcpy(v->segment, name, SEG_NAME_LEN + 1);
	return CLI_AUDIT_VALID;
}

static int
check_seq(struct cli_audit_verifier *v, json_t *rec)
{
	json_t *s = json_object_get(rec, "seq");
	uint64_t want = v->next_seq;

	if (!json_is_integer(s) || json_integer_value(s) < 0)
		return fail(v, "seq %" PRIu64 ": the record has no non-negative "
		    "integer seq", want);
	if ((uint64_t)json_integer_value(s) != want)
		return fail(v, "seq %" PRIu64 ": expected here (%s), found seq %"
		    PRIu64, want, v->segment, (uint64_t)json_integer_value(s));
	return CLI_AUDIT_VALID;
}

/* The first record of a bundle that starts at seq 0 links to 64 zeros; one
 * that starts later (an export with --from) links to a record the bundle
 * does not hold, so its prev is taken as given and reported. When a link
 * breaks, the record before it is named unless a checkpoint vouched for
 * it: a changed record shows up as the next record's prev not matching. */
static int
check_prev(struct cli_audit_verifier *v, json_t *rec)
{
	const char *p = json_string_value(json_object_get(rec, "prev"));
	uint64_t seq = v->next_seq;
	char want[2 * AV_HASH + 1];

	if (p == NULL || !hex64_ok(p))
		return fail(v, "seq %" PRIu64 ": prev is not 64 lower-case hex "
		    "digits", seq);
	if (v->nrecords == 0) {
		if (seq == 0 && strcmp(p, zero_hash_hex) != 0)
			return fail(v, "seq 0: prev is not 64 zeros");
		if (seq > 0)
			note(v, "the bundle starts at seq %" PRIu64 "; the prev of "
			    "that record (%s) is taken as given", seq, p);
		return CLI_AUDIT_VALID;
	}
	km_hex(v->prev, AV_HASH, want);
	if (strcmp(p, want) == 0)
		return CLI_AUDIT_VALID;
	if (v->prev_sealed)
		return fail(v, "seq %" PRIu64 ": prev does not match the hash of "
		    "seq %" PRIu64 ", which a checkpoint seals", seq, seq - 1);
	return fail(v, "seq %" PRIu64 ": its line hash does not match the prev "
	    "of seq %" PRIu64 " (seq %" PRIu64 " was changed, or that link)",
	    seq - 1, seq, seq - 1);
}

/* The members every record has (DESIGN.md section 5). */
static int
check_fields(struct cli_audit_verifier *v, json_t *rec)
{
	static const char *const strs[] = {
		"ts", "request_id", "actor", "op", "outcome"
	};
	const char *outcome = json_string_value(json_object_get(rec, "outcome"));
	json_t *key = json_object_get(rec, "key"), *ver = json_object_get(rec,
	    "version");
	uint64_t seq = v->next_seq;
	int64_t us;
	size_t i;

	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (!json_is_string(json_object_get(rec, strs[i])))
			return fail(v, "seq %" PRIu64 ": %s is missing or not a "
			    "string", seq, strs[i]);
	if (km_time_parse(json_string_value(json_object_get(rec, "ts")), &us) !=
	    KM_OK)
		return fail(v, "seq %" PRIu64 ": ts is not an RFC 3339 time", seq);
	if (strcmp(outcome, "ok") != 0 && strcmp(outcome, "denied") != 0 &&
	    strcmp(outcome, "error") != 0)
		return fail(v, "seq %" PRIu64 ": outcome is not ok, denied or error",
		    seq);
	if (!json_is_integer(json_object_get(rec, "status")))
		return fail(v, "seq %" PRIu64 ": status is not an integer", seq);
	if (key == NULL || !(json_is_null(key) || json_is_string(key)) ||
	    ver == NULL || !(json_is_null(ver) || json_is_integer(ver)))
		return fail(v, "seq %" PRIu64 ": key or version is missing or of "
		    "the wrong type", seq);
	return CLI_AUDIT_VALID;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The approvers: distinct non-empty names, none of them the requester. */
static int
check_approvers(struct cli_audit_verifier *v, json_t *ap, const char *req)
{
	uint64_t seq = v->next_seq;
	size_t n = json_array_size(ap), i;
	const char **names;
	char b1[52];
	int r = CLI_AUDIT_VALID;

	if ((names = calloc(n ? n : 1, sizeof(*names))) == NULL)
		return nomem(v);
	for (i = 0; i < n && r == CLI_AUDIT_VALID; i++) {
		names[i] = json_string_value(json_array_get(ap, i));
		if (names[i] == NULL || names[i][0] == '\0')
			r = fail(v, "seq %" PRIu64 ": approver %zu of the executed "
			    "ceremony is not an officer name", seq, i);
		else if (strcmp(names[i], req) == 0)
			r = fail(v, "seq %" PRIu64 ": the requester %s approved their "
			    "own ceremony", seq, safe(req, b1));
	}
	if (r == CLI_AUDIT_VALID)
		qsort(names, n, sizeof(*names), cmp_str);
	for (i = 1; i < n && r == CLI_AUDIT_VALID; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			r = fail(v, "seq %" PRIu64 ": officer %s is counted twice "
			    "among the approvers", seq, safe(names[i], b1));
	free(names);
	return r;
}

/* An executed ceremony must have had its quorum (docs/AUDIT.md gives the
 * record's shape). */
static int
check_ceremony(struct cli_audit_verifier *v, json_t *rec)
{
	json_t *q = json_object_get(rec, "quorum"), *ap = json_object_get(rec,
	    "approvers");
	json_t *id = json_object_get(rec, "ceremony_id"), *op = json_object_get(rec,
	    "operation");
	const char *req = json_string_value(json_object_get(rec, "requester"));
	uint64_t seq = v->next_seq;
	char names[256], b1[52], b2[52], b3[52];
	size_t i, used;
	int r;

	if (strcmp(json_string_value(json_object_get(rec, "op")),
	    "ceremony.execute") != 0 ||
	    strcmp(json_string_value(json_object_get(rec, "outcome")), "ok") != 0)
		return CLI_AUDIT_VALID;
	if (!json_is_integer(q) || json_integer_value(q) < 1)
		return fail(v, "seq %" PRIu64 ": executed ceremony without an "
		    "integer quorum >= 1", seq);
	if (!json_is_array(ap))
		return fail(v, "seq %" PRIu64 ": executed ceremony without an "
		    "approvers array", seq);
	if (req == NULL || req[0] == '\0')
		return fail(v, "seq %" PRIu64 ": executed ceremony without a "
		    "requester", seq);
	if ((uint64_t)json_array_size(ap) < (uint64_t)json_integer_value(q))
		return fail(v, "seq %" PRIu64 ": executed ceremony had %zu "
		    "approvers but its quorum is %" JSON_INTEGER_FORMAT, seq,
		    json_array_size(ap), json_integer_value(q));
	if ((r = check_approvers(v, ap, req)) != CLI_AUDIT_VALID)
		return r;
	/* Each execution is listed, so an auditor sees who approved what. */
	names[0] = '\0';
	for (i = 0; i < json_array_size(ap); i++) {
		used = strlen(names);
		snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
		    safe(json_string_value(json_array_get(ap, i)), b1));
	}
	note(v, "seq %" PRIu64 ": ceremony %s (%s) executed with quorum %"
	    JSON_INTEGER_FORMAT ", approved by %s; requested by %s", seq,
	    safe(json_is_string(id) ? json_string_value(id) : "?", b1),
	    safe(json_is_string(op) ? json_string_value(op) : "?", b2),
	    json_integer_value(q), names, safe(req, b3));
	return CLI_AUDIT_VALID;
}

/* Compares the line hash with a checkpoint or the trusted checkpoint that
 * seals this seq. */
static int
check_sealed(struct cli_audit_verifier *v, const unsigned char hash[AV_HASH],
    int *sealed)
{
	const struct av_cp *cp = v->cp_next < v->ncps ? &v->cps[v->cp_next] : NULL;
	uint64_t seq = v->next_seq;

	*sealed = 0;
	/* Checkpoints are matched in order, so one below seq can only be
	 * below the bundle's first record. */
	if (cp != NULL && cp->seq < seq)
		return fail(v, "checkpoint at line %zu: it seals seq %" PRIu64
		    ", before the first record of the bundle (seq %" PRIu64 ")",
		    cp->line, cp->seq, seq);
	if (cp != NULL && cp->seq == seq) {
		if (CRYPTO_memcmp(cp->hash, hash, AV_HASH) != 0)
			return fail(v, "seq %" PRIu64 ": its line hash does not match "
			    "the checkpoint at line %zu", seq, cp->line);
		v->cp_next++;
		v->have_sealed = 1;
		v->last_sealed = seq;
		*sealed = 1;
	}
	if (!v->has_trusted)
		return CLI_AUDIT_VALID;
	if (v->nrecords == 0 && v->trusted.seq < seq)
		note(v, "the trusted checkpoint (seq %" PRIu64 ") is before the "
		    "bundle's first record; it was not compared", v->trusted.seq);
	if (v->trusted.seq == seq) {
		if (CRYPTO_memcmp(v->trusted.hash, hash, AV_HASH) != 0)
			return fail(v, "seq %" PRIu64 ": its line hash does not match "
			    "the trusted checkpoint", seq);
		note(v, "the trusted checkpoint (seq %" PRIu64 ") matches", seq);
		*sealed = 1;
	}
	return CLI_AUDIT_VALID;
}

int
cli_audit_verify_line(struct cli_audit_verifier *v, const char *line,
    size_t len, int complete)
{
	unsigned char hash[AV_HASH];
	json_t *rec = NULL;
	uint64_t seq = v->next_seq;
	int r, sealed = 0;

	if (v->result != CLI_AUDIT_VALID)
		return v->result;
	if (!v->started)
		return fail(v, "seq %" PRIu64 ": a record outside a segment", seq);
	if (len > AV_MAX_LINE)
		return fail(v, "seq %" PRIu64 ": the line is longer than %u bytes",
		    seq, AV_MAX_LINE);
	if (!complete)
		return fail(v, "seq %" PRIu64 ": the last line of %s has no newline "
		    "(torn)", seq, v->segment);
	if ((rec = parse_object(line, len)) == NULL)
		return fail(v, "seq %" PRIu64 ": the line is not a JSON object", seq);
	if ((r = check_seq(v, rec)) != CLI_AUDIT_VALID ||
	    (r = check_prev(v, rec)) != CLI_AUDIT_VALID ||
	    (r = check_fields(v, rec)) != CLI_AUDIT_VALID ||
	    (r = check_ceremony(v, rec)) != CLI_AUDIT_VALID)
		goto out;
	if (EVP_Digest(line, len, hash, NULL, EVP_sha256(), NULL) != 1) {
		r = nomem(v);
		goto out;
	}
	if ((r = check_sealed(v, hash, &sealed)) != CLI_AUDIT_VALID)
		goto out;
	memcpy(v->prev, hash, AV_HASH);
	v->prev_sealed = sealed;
	v->next_seq++;
	v->nrecords++;
out:
	json_decref(rec);
	return r;
}

int
cli_audit_verify_end(struct cli_audit_verifier *v)
{
	uint64_t first = v->first_seq, last = v->next_seq - 1;
	const struct av_cp *cp = v->cp_next < v->ncps ? &v->cps[v->cp_next] : NULL;
	char sealed[32], tail[64];

	if (v->result != CLI_AUDIT_VALID)
		return v->result;
	if (v->nrecords == 0)
		return fail(v, "seq %" PRIu64 ": the bundle holds no records",
		    v->next_seq);
	if (cp != NULL)
		return fail(v, "seq %" PRIu64 ": missing: the checkpoint at line %zu "
		    "seals seq %" PRIu64 " but the bundle ends at seq %" PRIu64
		    " (a truncated log)", last + 1, cp->line, cp->seq, last);
	if (v->has_trusted && v->trusted.seq > last)
		return fail(v, "seq %" PRIu64 ": missing: the trusted checkpoint "
		    "seals seq %" PRIu64 " but the bundle ends at seq %" PRIu64
		    " (a truncated log)", last + 1, v->trusted.seq, last);
	if (v->have_sealed)
		snprintf(sealed, sizeof(sealed), "%" PRIu64, v->last_sealed);
	else
		snprintf(sealed, sizeof(sealed), "none");
	if (v->have_sealed && v->last_sealed == last)
		snprintf(tail, sizeof(tail), "none");
	else
		snprintf(tail, sizeof(tail), "seq %" PRIu64 "..%" PRIu64,
		    v->have_sealed ? v->last_sealed + 1 : first, last);
	snprintf(v->msg, sizeof(v->msg), "valid: %" PRIu64 " records (seq %" PRIu64
	    "..%" PRIu64 "), %zu checkpoints, last sealed seq %s; unsealed tail: "
	    "%s", v->nrecords, first, last, v->ncps, sealed, tail);
	return CLI_AUDIT_VALID;
}

/* ================================================================== */
/* Reading a bundle from disk                                          */
/* ================================================================== */

/* Lines of a file through a bounded line buffer. */
struct lreader {
	int fd;
	size_t pos, len;
	int eof;
	struct km_buf line;		/* limit AV_MAX_LINE + 1 */
	unsigned char buf[1 << 16];
};

static int
lr_fill(struct lreader *lr)
{
	ssize_t n;

	do
		n = read(lr->fd, lr->buf, sizeof(lr->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	lr->pos = 0;
	lr->len = (size_t)n;
	lr->eof = n == 0;
	return 0;
}

/* The next line without its newline: 1 and *line, *len, *complete (0 when
 * the file ended without a newline); 0 at the end; -1 on a read error.
 * A line over AV_MAX_LINE comes back with *len = AV_MAX_LINE + 1 and no
 * usable bytes; the verifier rejects it on its length alone. */
static int
lr_next(struct lreader *lr, const char **line, size_t *len, int *complete)
{
	unsigned char *nl = NULL;
	size_t take;

	lr->line.len = 0;
	lr->line.failed = 0;
	*complete = 0;
	while (nl == NULL) {
		if (lr->pos == lr->len) {
			if (lr->eof)
				break;
			if (lr_fill(lr) != 0)
				return -1;
			continue;
		}
		nl = memchr(lr->buf + lr->pos, '\n', lr->len - lr->pos);
		take = nl != NULL ? (size_t)(nl - (lr->buf + lr->pos)) :
		    lr->len - lr->pos;
		/* km_buf_append of 0 bytes to an empty buffer is not safe. */
		if (take > 0)
			(void)km_buf_append(&lr->line, lr->buf + lr->pos, take);
		lr->pos += take + (nl != NULL);
	}
	if (nl == NULL && lr->line.len == 0 && !lr->line.failed)
		return 0;
	*complete = nl != NULL;
	*line = lr->line.data != NULL ? (const char *)lr->line.data : "";
	*len = lr->line.failed ? AV_MAX_LINE + 1 : lr->line.len;
	return 1;
}

/* Opens `name` of dirfd for reading; it must be a regular file, so a
 * hostile bundle cannot hand the verifier a FIFO or /dev/zero. -1 and
 * errno (EINVAL: not a regular file) on failure. */
static int
open_regular(int dirfd, const char *name)
{
	struct stat st;
	int fd;

	if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

/* strerror, with open_regular's EINVAL and read_small's EFBIG spelt out. */
static const char *
errtext(int err)
{
	if (err == EINVAL)
		return "not a regular file";
	if (err == EFBIG)
		return "too large";
	return strerror(err);
}

typedef int (*line_fn)(struct cli_audit_verifier *, const char *, size_t, int);

/* Feeds each line of file `name` to fn. A read error is printed and
 * returned as CLI_AUDIT_ERROR (the verifier's own state is untouched). */
static int
feed_file(struct cli_audit_verifier *v, int dirfd, const char *name, line_fn fn)
{
	struct lreader *lr;
	const char *line = NULL;
	size_t len = 0;
	int complete = 0, n = 0, r = CLI_AUDIT_VALID;

	if ((lr = calloc(1, sizeof(*lr))) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_AUDIT_ERROR;
	}
	lr->line = (struct km_buf)KM_BUF_INIT(AV_MAX_LINE + 1);
	if ((lr->fd = open_regular(dirfd, name)) < 0) {
		fprintf(stderr, "kmsctl: cannot open %s: %s\n", name,
		    errtext(errno));
		r = CLI_AUDIT_ERROR;
		goto out;
	}
	while (r == CLI_AUDIT_VALID &&
	    (n = lr_next(lr, &line, &len, &complete)) == 1)
		r = fn(v, line, len, complete);
	if (n < 0) {
		fprintf(stderr, "kmsctl: reading %s: %s\n", name, strerror(errno));
		r = CLI_AUDIT_ERROR;
	}
	close(lr->fd);
out:
	km_buf_free(&lr->line);
	free(lr);
	return r;
}

/* Reads `path` (relative to dirfd; with `regular`, a regular file) whole
 * into b (whose limit bounds it). 0, or an errno value (EFBIG: over the
 * limit). */
static int
read_small(int dirfd, const char *path, int regular, struct km_buf *b)
{
	unsigned char chunk[4096];
	ssize_t n;
	int fd, err = 0;

	fd = regular ? open_regular(dirfd, path) :
	    openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			err = errno;
		if (n <= 0)
			break;
		if (km_buf_append(b, chunk, (size_t)n) != KM_OK) {
			err = EFBIG;
			break;
		}
	}
	close(fd);
	return err;
}

/* SHA-256 of file `name` of dirfd. 0 or an errno value. */
static int
sha256_at(int dirfd, const char *name, unsigned char out[AV_HASH])
{
	unsigned char buf[1 << 16];
	EVP_MD_CTX *md = NULL;
	ssize_t n;
	int fd, err = 0;

	if ((fd = open_regular(dirfd, name)) < 0)
		return errno;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		err = ENOMEM;
		goto out;
	}
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			err = errno;
		if (n <= 0)
			break;
		if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
			err = ENOMEM;
			break;
		}
	}
	if (err == 0 && EVP_DigestFinal_ex(md, out, NULL) != 1)
		err = ENOMEM;
out:
	EVP_MD_CTX_free(md);
	close(fd);
	return err;
}

/* ---- MANIFEST ---- */

struct mf_entry {
	char name[SEG_NAME_LEN + 1];	/* the longest name a bundle has */
	unsigned char sha[AV_HASH];
};

struct bundle {
	int dirfd;
	struct mf_entry *e;		/* sorted by name after the check */
	size_t n, cap;
	char why[160];			/* what is wrong with MANIFEST */
};

static int
bundle_name_ok(const char *name)
{
	return segment_name(name, NULL) || strcmp(name, CP_FILE) == 0 ||
	    strcmp(name, KEYS_FILE) == 0;
}

static struct mf_entry *
mf_find(struct mf_entry *e, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(e[i].name, name) == 0)
			return &e[i];
	return NULL;
}

/* Appends an entry; 0, or -1 when out of memory. */
static int
mf_add(struct mf_entry **e, size_t *n, size_t *cap, const char *name,
    const unsigned char sha[AV_HASH])
{
	struct mf_entry *ne;
	size_t nc;

	if (*n == *cap) {
		nc = *cap ? *cap * 2 : 16;
		if (nc > SIZE_MAX / sizeof(*ne) ||
		    (ne = realloc(*e, nc * sizeof(*ne))) == NULL)
			return -1;
		*e = ne;
		*cap = nc;
	}
	snprintf((*e)[*n].name, sizeof((*e)[*n].name), "%s", name);
	memcpy((*e)[*n].sha, sha, AV_HASH);
	(*n)++;
	return 0;
}

static int
bundle_invalid(struct bundle *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
bundle_invalid(struct bundle *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b->why, sizeof(b->why), fmt, ap);
	va_end(ap);
	return CLI_AUDIT_INVALID;
}

/* One "<64 hex>  <name>" line (sha256sum's text mode). */
static int
manifest_line(struct bundle *b, size_t lineno, const char *p, size_t len)
{
	char hex[2 * AV_HASH + 1], name[SEG_NAME_LEN + 1];
	unsigned char sha[AV_HASH];

	if (len < 2 * AV_HASH + 3 || len > 2 * AV_HASH + 2 + SEG_NAME_LEN ||
	    p[64] != ' ' || p[65] != ' ' || memchr(p, '\0', len) != NULL)
		return bundle_invalid(b, "line %zu is not '<sha256>  <file>'",
		    lineno);
	memcpy(hex, p, 64);
	hex[64] = '\0';
	memcpy(name, p + 66, len - 66);
	name[len - 66] = '\0';
	if (!hex64_ok(hex) || km_unhex(hex, sha, AV_HASH) != KM_OK)
		return bundle_invalid(b, "line %zu: the SHA-256 is not 64 lower-case "
		    "hex digits", lineno);
	if (!bundle_name_ok(name))
		return bundle_invalid(b, "line %zu: a file name that is not part of "
		    "a bundle", lineno);
	if (mf_find(b->e, b->n, name) != NULL)
		return bundle_invalid(b, "%s: listed twice", name);
	if (mf_add(&b->e, &b->n, &b->cap, name, sha) != 0) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_AUDIT_ERROR;
	}
	return CLI_AUDIT_VALID;
}

static int
manifest_parse(struct bundle *b, const char *p, size_t len)
{
	size_t start, lineno = 0;
	const char *nl;
	int r;

	for (start = 0; start < len; start = (size_t)(nl - p) + 1) {
		lineno++;
		if ((nl = memchr(p + start, '\n', len - start)) == NULL)
			return bundle_invalid(b, "line %zu has no newline", lineno);
		if ((r = manifest_line(b, lineno, p + start,
		    (size_t)(nl - p) - start)) != CLI_AUDIT_VALID)
			return r;
	}
	if (mf_find(b->e, b->n, KEYS_FILE) == NULL)
		return bundle_invalid(b, "%s: not listed", KEYS_FILE);
	if (mf_find(b->e, b->n, CP_FILE) == NULL)
		return bundle_invalid(b, "%s: not listed", CP_FILE);
	return CLI_AUDIT_VALID;
}

static int
manifest_hashes(struct bundle *b)
{
	unsigned char sha[AV_HASH];
	size_t i;
	int err;

	for (i = 0; i < b->n; i++) {
		if ((err = sha256_at(b->dirfd, b->e[i].name, sha)) == ENOENT)
			return bundle_invalid(b, "%s: missing", b->e[i].name);
		if (err != 0) {
			fprintf(stderr, "kmsctl: reading %s: %s\n", b->e[i].name,
			    errtext(err));
			return CLI_AUDIT_ERROR;
		}
		if (CRYPTO_memcmp(sha, b->e[i].sha, AV_HASH) != 0)
			return bundle_invalid(b, "%s: SHA-256 does not match",
			    b->e[i].name);
	}
	return CLI_AUDIT_VALID;
}

/* Every bundle file in the directory must be listed: a segment added
 * beside the MANIFEST would otherwise be read unchecked. */
static int
manifest_covers(struct bundle *b)
{
	struct dirent *de;
	DIR *d;
	int fd, r = CLI_AUDIT_VALID;

	if ((fd = dup(b->dirfd)) < 0 || (d = fdopendir(fd)) == NULL) {
		fprintf(stderr, "kmsctl: cannot list the bundle: %s\n",
		    strerror(errno));
		if (fd >= 0)
			close(fd);
		return CLI_AUDIT_ERROR;
	}
	while (r == CLI_AUDIT_VALID && (de = readdir(d)) != NULL)
		if (bundle_name_ok(de->d_name) &&
		    mf_find(b->e, b->n, de->d_name) == NULL)
			r = bundle_invalid(b, "%s: not listed", de->d_name);
	closedir(d);
	return r;
}

static int
cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct mf_entry *)a)->name,
	    ((const struct mf_entry *)b)->name);
}

static int
manifest_check(struct bundle *b)
{
	struct km_buf m = KM_BUF_INIT(AV_MAX_SMALL);
	int err, r;

	if ((err = read_small(b->dirfd, MANIFEST_FILE, 1, &m)) == ENOENT)
		r = bundle_invalid(b, "missing");
	else if (err == EFBIG)
		r = bundle_invalid(b, "larger than %u bytes", AV_MAX_SMALL);
	else if (err != 0) {
		fprintf(stderr, "kmsctl: reading MANIFEST: %s\n", errtext(err));
		r = CLI_AUDIT_ERROR;
	} else if ((r = manifest_parse(b, (const char *)m.data, m.len)) ==
	    CLI_AUDIT_VALID && (r = manifest_hashes(b)) == CLI_AUDIT_VALID)
		r = manifest_covers(b);
	if (r == CLI_AUDIT_VALID)
		qsort(b->e, b->n, sizeof(*b->e), cmp_entry);
	km_buf_free(&m);
	return r;
}

/* ================================================================== */
/* Command-line plumbing                                               */
/* ================================================================== */

enum {
	OPT_HELP = 'h',
	OPT_TOKEN_FILE = 256,
	OPT_JSON,
	OPT_CSV,
	OPT_FROM,
	OPT_TO,
	OPT_TRUSTED,
	OPT_KEY,
	OPT_VERSION,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_ACTOR,
	OPT_OP,
	OPT_CHECKPOINT,
};

#define O_HELP { "help", no_argument, NULL, OPT_HELP }
#define O_TOKEN_FILE { "token-file", required_argument, NULL, OPT_TOKEN_FILE }
#define O_JSON { "json", no_argument, NULL, OPT_JSON }
#define O_END { NULL, 0, NULL, 0 }

#define EXIT_HELP \
	"Exit status: 0 ok; 1 the server refused (4xx) or the operation failed;\n" \
	"2 usage error or local I/O error; 3 kmsd unreachable, 5xx or a bad answer.\n"

static const char usage_audit[] =
    "Usage: kmsctl audit export|verify|head|records ...\n"
    "\n"
    "  audit export [--from SEQ] [--to SEQ] DIR      download a bundle\n"
    "  audit verify DIR [--trusted-checkpoint FILE]  check a bundle offline\n"
    "  audit head [--json|--checkpoint]              chain head, newest checkpoint\n"
    "  audit records [filters] [--json|--csv]        query records\n"
    "\n"
    "See 'kmsctl audit COMMAND --help' and docs/AUDIT.md.\n";

static const char usage_export[] =
    "Usage: kmsctl audit export [--from SEQ] [--to SEQ] [--token-file FILE] DIR\n"
    "\n"
    "Downloads a bundle of the audit log into DIR (created; it must not exist or\n"
    "be empty): every segment file that holds a record in FROM..TO (whole\n"
    "segments; default: all), checkpoints.jsonl, keys.json (the checkpoint keys\n"
    "and origin) and, last, MANIFEST (sha256sum format). Auditor token.\n"
    "Check it with 'kmsctl audit verify DIR'.\n"
    "\n" EXIT_HELP;

static const char usage_verify[] =
    "Usage: kmsctl audit verify DIR [--trusted-checkpoint FILE]\n"
    "\n"
    "Checks a bundle offline (no server, no token): MANIFEST hashes, the hash\n"
    "chain and seq of every record, every checkpoint signature, consistency\n"
    "with the checkpoint in FILE (one JSON line you kept from before), and the\n"
    "quorum of every executed ceremony. Prints\n"
    "  valid: N records (seq A..B), M checkpoints, last sealed seq S; unsealed tail: ...\n"
    "or the first problem:\n"
    "  invalid: seq N: why | invalid: checkpoint at line K: why | invalid: MANIFEST: ...\n"
    "\n"
    "Exit status: 0 valid; 1 invalid; 2 usage or I/O error.\n";

static const char usage_head[] =
    "Usage: kmsctl audit head [--json|--checkpoint] [--token-file FILE]\n"
    "\n"
    "Shows the last durable record (seq, hash), the origin and the newest\n"
    "signed checkpoint. --checkpoint prints only that checkpoint as one JSON\n"
    "line: keep it, and later pass it to 'audit verify --trusted-checkpoint'.\n"
    "Auditor, admin or officer token.\n"
    "\n" EXIT_HELP;

static const char usage_records[] =
    "Usage: kmsctl audit records [--key K] [--version N] [--since T] [--until T]\n"
    "                            [--actor A] [--op O] [--from SEQ] [--to SEQ]\n"
    "                            [--json|--csv] [--token-file FILE]\n"
    "\n"
    "Prints the records that match every filter, oldest first, following the\n"
    "server's pages. --key also matches a rewrap's destination key; --version\n"
    "also matches a batch item's version. T is RFC 3339. Auditor token.\n"
    "\n"
    "  (default)  a table, one row per use: a batch record gives one row per\n"
    "             item (with --version, only that version's items)\n"
    "  --csv      the same rows as CSV: seq,ts,actor,op,key,version,outcome,\n"
    "             status,request_id,context (the exposure report)\n"
    "  --json     each record as one JSON line, as in the log\n"
    "\n" EXIT_HELP;

static int
parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > INT64_MAX)
		return -1;
	*out = v;
	return 0;
}

/* Server strings go to a terminal: control bytes become '?'. */
static void
fput_safe(FILE *f, const char *s)
{
	for (; *s != '\0'; s++)
		putc(iscntrl((unsigned char)*s) ? '?' : *s, f);
}

static int
flush_stdout(void)
{
	if (ferror(stdout) || fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		return CLI_USAGE;
	}
	return CLI_OK;
}

static int
write_all(int fd, const void *p, size_t len)
{
	const unsigned char *c = p;
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, c, len)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ================================================================== */
/* audit verify                                                        */
/* ================================================================== */

/* The first line of FILE, which must be a checkpoint ({seq, hash, ...}). */
static int
read_trusted(const char *path, struct km_buf *b)
{
	const char *nl;
	json_t *doc;
	int err;

	if ((err = read_small(AT_FDCWD, path, 0, b)) != 0) {
		fprintf(stderr, "kmsctl: reading %s: %s\n", path, errtext(err));
		return CLI_AUDIT_ERROR;
	}
	if (b->data != NULL &&
	    (nl = memchr(b->data, '\n', b->len)) != NULL)
		b->len = (size_t)(nl - (const char *)b->data);
	while (b->len > 0 && isspace(b->data[b->len - 1]))
		b->len--;
	doc = b->len > 0 ? parse_object((const char *)b->data, b->len) : NULL;
	if (!json_is_integer(json_object_get(doc, "seq")) ||
	    !json_is_string(json_object_get(doc, "hash"))) {
		json_decref(doc);
		fprintf(stderr, "kmsctl: %s does not hold a checkpoint "
		    "({\"seq\":..,\"hash\":..,...}) on its first line\n", path);
		return CLI_AUDIT_ERROR;
	}
	json_decref(doc);
	return CLI_AUDIT_VALID;
}

/* Prints the notes and the verdict; returns the exit code. */
static int
verify_report(struct cli_audit_verifier *v, int r)
{
	if (v != NULL)
		fputs(cli_audit_verifier_notes(v), stdout);
	if (r == CLI_AUDIT_VALID)
		printf("%s\n", cli_audit_verifier_message(v));
	else if (r == CLI_AUDIT_INVALID)
		printf("invalid: %s\n", cli_audit_verifier_message(v));
	else if (v != NULL && cli_audit_verifier_message(v)[0] != '\0')
		fprintf(stderr, "kmsctl: %s\n", cli_audit_verifier_message(v));
	if (flush_stdout() != CLI_OK)
		return CLI_USAGE;
	return r == CLI_AUDIT_VALID ? CLI_OK :
	    r == CLI_AUDIT_INVALID ? CLI_FAIL : CLI_USAGE;
}

static int
verify_bundle(struct bundle *b, const char *trusted)
{
	struct km_buf keys = KM_BUF_INIT(AV_MAX_SMALL);
	struct km_buf tc = KM_BUF_INIT(AV_MAX_TRUSTED);
	struct cli_audit_verifier *v = NULL;
	size_t i;
	int err, r;

	if ((err = read_small(b->dirfd, KEYS_FILE, 1, &keys)) != 0) {
		fprintf(stderr, "kmsctl: reading %s: %s\n", KEYS_FILE, errtext(err));
		r = CLI_AUDIT_ERROR;
		goto out;
	}
	if (trusted != NULL && (r = read_trusted(trusted, &tc)) != CLI_AUDIT_VALID)
		goto out;
	r = cli_audit_verifier_new((const char *)keys.data, keys.len, &v);
	if (r == CLI_AUDIT_VALID && trusted != NULL)
		r = cli_audit_trusted_checkpoint(v, (const char *)tc.data, tc.len);
	if (r == CLI_AUDIT_VALID)
		r = feed_file(v, b->dirfd, CP_FILE, cli_audit_checkpoint_line);
	for (i = 0; r == CLI_AUDIT_VALID && i < b->n; i++) {
		if (!segment_name(b->e[i].name, NULL))
			continue;
		if ((r = cli_audit_segment_begin(v, b->e[i].name)) ==
		    CLI_AUDIT_VALID)
			r = feed_file(v, b->dirfd, b->e[i].name,
			    cli_audit_verify_line);
	}
	if (r == CLI_AUDIT_VALID)
		r = cli_audit_verify_end(v);
out:
	r = verify_report(v, r);
	cli_audit_verifier_free(v);
	km_buf_free(&keys);
	km_buf_free(&tc);
	return r;
}

static int
cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP,
		{ "trusted-checkpoint", required_argument, NULL, OPT_TRUSTED },
		O_END
	};
	struct bundle b = { -1, NULL, 0, 0, "" };
	const char *trusted = NULL;
	int ch, r;

	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		switch (ch) {
		case OPT_HELP:
			return cli_print_help(usage_verify);
		case OPT_TRUSTED:
			trusted = optarg;
			break;
		default:
			return cli_usage_hint("audit verify ");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("audit verify ", "expected one bundle DIR");
	if ((b.dirfd = open(argv[optind], O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "kmsctl: cannot open bundle %s: %s\n", argv[optind],
		    strerror(errno));
		return CLI_USAGE;
	}
	r = manifest_check(&b);
	if (r == CLI_AUDIT_VALID)
		r = verify_bundle(&b, trusted);
	else if (r == CLI_AUDIT_INVALID) {
		printf("invalid: MANIFEST: %s\n", b.why);
		r = flush_stdout() == CLI_OK ? CLI_FAIL : CLI_USAGE;
	} else
		r = CLI_USAGE;
	close(b.dirfd);
	free(b.e);
	return r;
}

/* ================================================================== */
/* Raw downloads                                                       */
/* ================================================================== */

/* Where cli_http_get_stream puts a file: a descriptor or memory, hashed
 * on the way, its lines counted. */
struct sink {
	int fd;				/* -1: into mem */
	struct km_buf *mem;
	EVP_MD_CTX *md;			/* may be NULL */
	uint64_t lines;
};

static int
sink_write(void *arg, const char *p, size_t n)
{
	struct sink *s = arg;
	size_t i;

	if (s->md != NULL && EVP_DigestUpdate(s->md, p, n) != 1)
		return ENOMEM;
	if (s->fd >= 0 ? write_all(s->fd, p, n) != 0 :
	    km_buf_append(s->mem, p, n) != KM_OK)
		return s->fd >= 0 ? errno : EFBIG;
	for (i = 0; i < n; i++)
		s->lines += p[i] == '\n';
	return 0;
}

/* ================================================================== */
/* audit export                                                        */
/* ================================================================== */

struct seg {
	char name[SEG_NAME_LEN + 1];
	uint64_t first;
};

struct export {
	const char *dir;
	int dirfd;
	uint64_t from, to;
	struct cli_http *h;
	struct km_buf cps;		/* checkpoints.jsonl as served */
	struct seg *segs;		/* the server's segments */
	size_t nsegs, lo, hi;		/* [lo, hi) go into the bundle */
	uint64_t end;			/* one past the bundle's last seq */
	size_t ncps;			/* checkpoints in the bundle */
	struct mf_entry *mf;		/* what MANIFEST lists */
	size_t nmf, mfcap;
	int touched;			/* a file was created in DIR */
};

/* Creates DIR 0700, or takes an existing empty one. */
static int
export_dir(struct export *e)
{
	struct dirent *de;
	DIR *d;
	int fd, empty = 1;

	if (mkdir(e->dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "kmsctl: cannot create %s: %s\n", e->dir,
		    strerror(errno));
		return CLI_USAGE;
	}
	if ((e->dirfd = open(e->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (fd = dup(e->dirfd)) < 0 || (d = fdopendir(fd)) == NULL) {
		fprintf(stderr, "kmsctl: cannot open directory %s: %s\n", e->dir,
		    strerror(errno));
		return CLI_USAGE;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			empty = 0;
	closedir(d);
	if (!empty) {
		fprintf(stderr, "kmsctl: %s is not empty\n", e->dir);
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* Writes a new file `name` in the bundle (0600, fsynced) and records its
 * SHA-256 for MANIFEST unless `mf` is 0. */
static int
export_write(struct export *e, const char *name, const void *data, size_t len,
    int mf)
{
	unsigned char sha[AV_HASH];
	int fd, r = CLI_USAGE;

	e->touched = 1;
	if ((fd = openat(e->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) < 0) {
		fprintf(stderr, "kmsctl: cannot create %s/%s: %s\n", e->dir, name,
		    strerror(errno));
		return CLI_USAGE;
	}
	if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
		fprintf(stderr, "kmsctl: writing %s/%s: %s\n", e->dir, name,
		    strerror(errno));
		goto out;
	}
	if (EVP_Digest(len > 0 ? data : "", len, sha, NULL, EVP_sha256(),
	    NULL) != 1 || (mf && mf_add(&e->mf, &e->nmf, &e->mfcap, name, sha))) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	r = CLI_OK;
out:
	if (close(fd) != 0 && r == CLI_OK) {
		fprintf(stderr, "kmsctl: writing %s/%s: %s\n", e->dir, name,
		    strerror(errno));
		r = CLI_USAGE;
	}
	return r;
}

/* keys.json: the /v1/audit/keys answer, indented, with a newline. */
static int
export_keys(struct export *e)
{
	struct km_buf b = KM_BUF_INIT(AV_MAX_SMALL);
	json_t *ans = NULL;
	char *s = NULL;
	int r;

	if ((r = cli_http_call(e->h, "GET", "/v1/audit/keys", NULL, &ans)) !=
	    CLI_OK)
		return r;
	r = CLI_UNREACHABLE;
	if (!json_is_string(json_object_get(ans, "origin")) ||
	    !json_is_array(json_object_get(ans, "keys"))) {
		fprintf(stderr, "kmsctl: the /v1/audit/keys answer has no origin "
		    "and keys\n");
		goto out;
	}
	if ((s = json_dumps(ans, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL ||
	    km_buf_append_str(&b, s) != KM_OK || km_buf_append(&b, "\n", 1) != KM_OK) {
		fprintf(stderr, "kmsctl: cannot encode keys.json\n");
		r = CLI_USAGE;
		goto out;
	}
	r = export_write(e, KEYS_FILE, b.data, b.len, 1);
out:
	cli_json_str_free(s);
	km_buf_free(&b);
	json_decref(ans);
	return r;
}

/* checkpoints.jsonl is fetched before the segments: every checkpoint in it
 * seals a record that was durable then, so the segments fetched after
 * hold it. */
static int
export_fetch_checkpoints(struct export *e)
{
	struct sink s = { -1, &e->cps, NULL, 0 };

	return cli_http_get_stream(e->h, "/v1/audit/files/" CP_FILE,
	    AV_MAX_CHECKPOINTS_FILE, sink_write, &s);
}

/* The server's segment list, checked (names are used as file names) and
 * narrowed to the segments that hold a seq in [from, to]. */
static int
export_list(struct export *e)
{
	json_t *ans = NULL, *segs, *s;
	const char *name;
	uint64_t first;
	size_t i;
	int r;

	if ((r = cli_http_call(e->h, "GET", "/v1/audit/files", NULL, &ans)) != CLI_OK)
		return r;
	r = CLI_UNREACHABLE;
	segs = json_object_get(ans, "segments");
	if (!json_is_array(segs) || json_array_size(segs) == 0 ||
	    (e->segs = calloc(json_array_size(segs), sizeof(*e->segs))) == NULL) {
		fprintf(stderr, "kmsctl: the /v1/audit/files answer lists no "
		    "segments\n");
		goto out;
	}
	json_array_foreach(segs, i, s) {
		name = json_string_value(json_object_get(s, "name"));
		if (name == NULL || !segment_name(name, &first) ||
		    json_integer_value(json_object_get(s, "first_seq")) !=
		    (json_int_t)first || (i > 0 && first <= e->segs[i - 1].first)) {
			fprintf(stderr, "kmsctl: the /v1/audit/files answer has a "
			    "malformed segment list\n");
			goto out;
		}
		memcpy(e->segs[i].name, name, SEG_NAME_LEN + 1);
		e->segs[i].first = first;
	}
	e->nsegs = json_array_size(segs);
	/* Segment i holds seq first_i .. first_{i+1} - 1. */
	for (e->lo = 0; e->lo + 1 < e->nsegs && e->segs[e->lo + 1].first <= e->from;
	    e->lo++)
		;
	for (e->hi = e->lo + 1; e->hi < e->nsegs && e->segs[e->hi].first <= e->to;
	    e->hi++)
		;
	r = CLI_OK;
out:
	json_decref(ans);
	return r;
}

static int
export_segment(struct export *e, const struct seg *sg, uint64_t *lines)
{
	struct sink s = { -1, NULL, NULL, 0 };
	unsigned char sha[AV_HASH];
	char path[64];
	int r = CLI_USAGE;

	snprintf(path, sizeof(path), "/v1/audit/files/%s", sg->name);
	e->touched = 1;
	if ((s.fd = openat(e->dirfd, sg->name, O_WRONLY | O_CREAT | O_EXCL |
	    O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		fprintf(stderr, "kmsctl: cannot create %s/%s: %s\n", e->dir,
		    sg->name, strerror(errno));
		goto out;
	}
	if ((s.md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(s.md, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	if ((r = cli_http_get_stream(e->h, path, AV_MAX_SEGMENT_FILE, sink_write,
	    &s)) != CLI_OK)
		goto out;
	r = CLI_USAGE;
	if (fsync(s.fd) != 0) {
		fprintf(stderr, "kmsctl: writing %s/%s: %s\n", e->dir, sg->name,
		    strerror(errno));
		goto out;
	}
	if (EVP_DigestFinal_ex(s.md, sha, NULL) != 1 ||
	    mf_add(&e->mf, &e->nmf, &e->mfcap, sg->name, sha) != 0) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	*lines = s.lines;
	r = CLI_OK;
out:
	if (s.fd >= 0 && close(s.fd) != 0 && r == CLI_OK) {
		fprintf(stderr, "kmsctl: writing %s/%s: %s\n", e->dir, sg->name,
		    strerror(errno));
		r = CLI_USAGE;
	}
	EVP_MD_CTX_free(s.md);
	return r;
}

static int
export_segments(struct export *e)
{
	uint64_t lines = 0;
	size_t i;
	int r;

	for (i = e->lo; i < e->hi; i++)
		if ((r = export_segment(e, &e->segs[i], &lines)) != CLI_OK)
			return r;
	e->end = e->segs[e->hi - 1].first + lines;
	if (e->end <= e->segs[e->lo].first) {
		fprintf(stderr, "kmsctl: the selected segments hold no records\n");
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* Keeps a checkpoint line unless the bundle was cut (by --from or --to)
 * before the record it seals. Lines without a readable seq stay, so the
 * verifier sees them. The whole log's file is kept as served: a
 * checkpoint beyond its records is the evidence of a truncation. */
static int
keep_checkpoint(const struct export *e, const char *line, size_t len)
{
	int cut_lo = e->lo > 0, cut_hi = e->hi < e->nsegs, keep = 1;
	json_t *doc, *s;
	uint64_t seq;

	if (!cut_lo && !cut_hi)
		return 1;
	if ((doc = json_loadb(line, len, 0, NULL)) == NULL)
		return 1;
	if (json_is_integer(s = json_object_get(doc, "seq")) &&
	    json_integer_value(s) >= 0) {
		seq = (uint64_t)json_integer_value(s);
		if ((cut_lo && seq < e->segs[e->lo].first) ||
		    (cut_hi && seq >= e->end))
			keep = 0;
	}
	json_decref(doc);
	return keep;
}

static int
export_checkpoints(struct export *e)
{
	struct km_buf out = KM_BUF_INIT(AV_MAX_CHECKPOINTS_FILE);
	const char *p = (const char *)e->cps.data, *nl;
	size_t pos = 0, len;
	int r;

	while (p != NULL && pos < e->cps.len) {
		nl = memchr(p + pos, '\n', e->cps.len - pos);
		len = (nl != NULL ? (size_t)(nl - p) : e->cps.len) - pos;
		if (keep_checkpoint(e, p + pos, len)) {
			(void)km_buf_append(&out, p + pos, len + (nl != NULL));
			e->ncps++;
		}
		pos += len + (nl != NULL);
	}
	if (out.failed) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
	} else
		r = export_write(e, CP_FILE, out.data, out.len, 1);
	km_buf_free(&out);
	return r;
}

/* MANIFEST goes last, through a rename: a bundle that has one is whole. */
static int
export_manifest(struct export *e)
{
	struct km_buf m = KM_BUF_INIT(AV_MAX_SMALL);
	char hex[2 * AV_HASH + 1];
	size_t i;
	int r;

	for (i = 0; i < e->nmf; i++) {
		km_hex(e->mf[i].sha, AV_HASH, hex);
		km_buf_append_str(&m, hex);
		km_buf_append_str(&m, "  ");
		km_buf_append_str(&m, e->mf[i].name);
		km_buf_append(&m, "\n", 1);
	}
	if (m.failed) {
		fprintf(stderr, "kmsctl: MANIFEST is too large\n");
		r = CLI_USAGE;
	} else if ((r = export_write(e, MANIFEST_TMP, m.data, m.len, 0)) == CLI_OK &&
	    (renameat(e->dirfd, MANIFEST_TMP, e->dirfd, MANIFEST_FILE) != 0 ||
	    fsync(e->dirfd) != 0)) {
		fprintf(stderr, "kmsctl: writing %s/MANIFEST: %s\n", e->dir,
		    strerror(errno));
		r = CLI_USAGE;
	}
	km_buf_free(&m);
	return r;
}

static int
export_run(struct export *e, const char *token_file)
{
	int r;

	if ((r = export_dir(e)) != CLI_OK ||
	    (r = cli_http_new(token_file, &e->h)) != CLI_OK ||
	    (r = export_keys(e)) != CLI_OK ||
	    (r = export_fetch_checkpoints(e)) != CLI_OK ||
	    (r = export_list(e)) != CLI_OK ||
	    (r = export_segments(e)) != CLI_OK ||
	    (r = export_checkpoints(e)) != CLI_OK ||
	    (r = export_manifest(e)) != CLI_OK)
		return r;
	printf("exported seq %" PRIu64 "..%" PRIu64 " (%zu segments, %zu "
	    "checkpoints) to %s\n", e->segs[e->lo].first, e->end - 1,
	    e->hi - e->lo, e->ncps, e->dir);
	return flush_stdout();
}

static int
cmd_export(int argc, char **argv, const char *global_token_file)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE,
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		O_END
	};
	struct export e;
	const char *token_file = global_token_file;
	int ch, r;

	memset(&e, 0, sizeof(e));
	e.dirfd = -1;
	e.to = INT64_MAX;
	e.cps = (struct km_buf)KM_BUF_INIT(AV_MAX_CHECKPOINTS_FILE);
	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		switch (ch) {
		case OPT_HELP:
			return cli_print_help(usage_export);
		case OPT_TOKEN_FILE:
			token_file = optarg;
			break;
		case OPT_FROM:
		case OPT_TO:
			if (parse_u64(optarg, ch == OPT_FROM ? &e.from : &e.to) != 0)
				return cli_usage_error("audit export ", "%s must be a seq "
				    "(a non-negative integer)", ch == OPT_FROM ?
				    "--from" : "--to");
			break;
		default:
			return cli_usage_hint("audit export ");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("audit export ", "expected one DIR");
	if (e.from > e.to)
		return cli_usage_error("audit export ", "--from is after --to");
	e.dir = argv[optind];
	r = export_run(&e, token_file);
	if (r != CLI_OK && e.touched)
		fprintf(stderr, "kmsctl: %s is incomplete (it has no MANIFEST)\n",
		    e.dir);
	if (e.dirfd >= 0)
		close(e.dirfd);
	cli_http_free(e.h);
	km_buf_free(&e.cps);
	free(e.segs);
	free(e.mf);
	return r;
}

/* ================================================================== */
/* audit head                                                          */
/* ================================================================== */

static const char *
str_or(const json_t *obj, const char *k, const char *def)
{
	const char *s = json_string_value(json_object_get(obj, k));

	return s != NULL ? s : def;
}

static void
print_field(const char *label, const char *value)
{
	printf("%-12s", label);
	fput_safe(stdout, value);
	putchar('\n');
}

static int
print_head(const json_t *ans)
{
	const json_t *seq = json_object_get(ans, "seq");
	const json_t *cp = json_object_get(ans, "checkpoint");
	json_int_t head = json_integer_value(seq);
	char buf[96];

	if (json_is_integer(seq))
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, head);
	else
		snprintf(buf, sizeof(buf), "none (the log is empty)");
	print_field("seq:", buf);
	print_field("hash:", str_or(ans, "hash", "-"));
	print_field("origin:", str_or(ans, "origin", "-"));
	if (!json_is_object(cp)) {
		print_field("checkpoint:", "none yet");
		return flush_stdout();
	}
	snprintf(buf, sizeof(buf), "seq %" JSON_INTEGER_FORMAT,
	    json_integer_value(json_object_get(cp, "seq")));
	print_field("checkpoint:", buf);
	print_field("  hash:", str_or(cp, "hash", "-"));
	print_field("  ts:", str_or(cp, "ts", "-"));
	print_field("  kid:", str_or(cp, "kid", "-"));
	if (json_is_integer(seq) &&
	    json_integer_value(json_object_get(cp, "seq")) < head)
		snprintf(buf, sizeof(buf), "seq %" JSON_INTEGER_FORMAT "..%"
		    JSON_INTEGER_FORMAT, json_integer_value(json_object_get(cp,
		    "seq")) + 1, head);
	else
		snprintf(buf, sizeof(buf), "none");
	print_field("unsealed:", buf);
	return flush_stdout();
}

static int
print_compact(const json_t *doc)
{
	char *s = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);

	if (s == NULL) {
		fprintf(stderr, "kmsctl: cannot encode JSON\n");
		return CLI_USAGE;
	}
	puts(s);
	cli_json_str_free(s);
	return CLI_OK;
}

static int
cmd_head(int argc, char **argv, const char *global_token_file)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_JSON,
		{ "checkpoint", no_argument, NULL, OPT_CHECKPOINT },
		O_END
	};
	const char *token_file = global_token_file;
	struct cli_http *h = NULL;
	json_t *ans = NULL, *cp;
	int ch, mode = 0, r;

	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		switch (ch) {
		case OPT_HELP:
			return cli_print_help(usage_head);
		case OPT_TOKEN_FILE:
			token_file = optarg;
			break;
		case OPT_JSON:
		case OPT_CHECKPOINT:
			mode = ch;
			break;
		default:
			return cli_usage_hint("audit head ");
		}
	}
	if (optind != argc)
		return cli_usage_error("audit head ", "unexpected argument '%s'",
		    argv[optind]);
	if ((r = cli_http_new(token_file, &h)) != CLI_OK ||
	    (r = cli_http_call(h, "GET", "/v1/audit/head", NULL, &ans)) != CLI_OK)
		goto out;
	if (mode == OPT_JSON) {
		if (json_dumpf(ans, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
			r = CLI_USAGE;
		putchar('\n');
		r = r == CLI_OK ? flush_stdout() : r;
	} else if (mode == OPT_CHECKPOINT) {
		if (!json_is_object(cp = json_object_get(ans, "checkpoint"))) {
			fprintf(stderr, "kmsctl: no checkpoint has been written yet\n");
			r = CLI_FAIL;
			goto out;
		}
		if ((r = print_compact(cp)) == CLI_OK)
			r = flush_stdout();
	} else
		r = print_head(ans);
out:
	json_decref(ans);
	cli_http_free(h);
	return r;
}

/* ================================================================== */
/* audit records                                                       */
/* ================================================================== */

enum rec_mode { MODE_TABLE, MODE_CSV, MODE_JSON };

struct rec_query {
	const char *key, *since, *until, *actor, *op, *version_s;
	uint64_t from, to;
	int has_to, has_version;
	json_int_t version;
	enum rec_mode mode;
	char *base;			/* the path without from= */
};

/* One use of a key: a record, or one item of a batch record. */
struct row {
	const json_t *rec, *item;
};

static const json_t *
row_get(const struct row *rw, const char *k)
{
	const json_t *v = rw->item != NULL ? json_object_get(rw->item, k) : NULL;

	return v != NULL ? v : json_object_get(rw->rec, k);
}

/* A JSON scalar as text: "" for null or absent; objects compact. *tmp
 * holds an allocation to free. */
static const char *
row_text(const struct row *rw, const char *k, char num[32], char **tmp)
{
	const json_t *v = row_get(rw, k);

	*tmp = NULL;
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(num, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return num;
	}
	if (json_is_object(v) || json_is_array(v)) {
		*tmp = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
		return *tmp != NULL ? *tmp : "";
	}
	return "";
}

/* RFC 4180 quoting. A value a spreadsheet would run as a formula (=, +,
 * -, @ first) gets a leading apostrophe: context values come from
 * applications. */
static void
csv_field(const char *s, int first)
{
	int formula = strchr("=+-@\t\r", s[0]) != NULL && s[0] != '\0';

	if (!first)
		putchar(',');
	if (!formula && strpbrk(s, ",\"\r\n") == NULL) {
		fputs(s, stdout);
		return;
	}
	putchar('"');
	if (formula)
		putchar('\'');
	for (; *s != '\0'; s++) {
		if (*s == '"')
			putchar('"');
		putchar(*s);
	}
	putchar('"');
}

static const char *const row_cols[] = {
	"seq", "ts", "actor", "op", "key", "version", "outcome", "status",
	"request_id", "context"
};
#define NCOLS (sizeof(row_cols) / sizeof(row_cols[0]))

/* One line of the table or the CSV; the table leaves out request_id. */
static void
emit_cells(const char *const vals[NCOLS], enum rec_mode mode)
{
	static const int width[NCOLS] = { 8, 27, 24, 16, 20, 7, 7, 6, 0, 0 };
	size_t i;
	int n;

	for (i = 0; i < NCOLS; i++) {
		if (mode == MODE_CSV) {
			csv_field(vals[i], i == 0);
			continue;
		}
		if (i == 8)
			continue;
		fput_safe(stdout, vals[i]);
		for (n = (int)strlen(vals[i]); n < width[i]; n++)
			putchar(' ');
		if (i + 1 < NCOLS)
			fputs("  ", stdout);
	}
	putchar('\n');
}

static void
emit_row(const struct row *rw, enum rec_mode mode)
{
	const char *vals[NCOLS];
	char num[NCOLS][32], *tmp[NCOLS];
	size_t i;

	for (i = 0; i < NCOLS; i++)
		vals[i] = row_text(rw, row_cols[i], num[i], &tmp[i]);
	emit_cells(vals, mode);
	for (i = 0; i < NCOLS; i++)
		cli_json_str_free(tmp[i]);
}

static void
emit_header(enum rec_mode mode)
{
	static const char *const upper[NCOLS] = {
		"SEQ", "TS", "ACTOR", "OP", "KEY", "VERSION", "OUTCOME", "STATUS",
		"REQUEST_ID", "CONTEXT"
	};

	if (mode != MODE_JSON)
		emit_cells(mode == MODE_CSV ? row_cols : upper, mode);
}

static int
item_matches(const struct rec_query *q, const json_t *item)
{
	const json_t *v = json_object_get(item, "version");

	return !q->has_version ||
	    (json_is_integer(v) && json_integer_value(v) == q->version);
}

static int
emit_record(const struct rec_query *q, json_t *rec)
{
	const json_t *items = json_object_get(rec, "items"), *it;
	struct row rw = { rec, NULL };
	size_t i;

	if (!json_is_object(rec))
		return CLI_OK;
	if (q->mode == MODE_JSON)
		return print_compact(rec);
	if (!json_is_array(items) || json_array_size(items) == 0) {
		emit_row(&rw, q->mode);
		return CLI_OK;
	}
	json_array_foreach(items, i, it) {
		if (!json_is_object(it) || !item_matches(q, it))
			continue;
		rw.item = it;
		emit_row(&rw, q->mode);
	}
	return CLI_OK;
}

/* Adds "&name=<escaped value>" to *path. */
static int
add_arg(struct cli_http *h, char **path, const char *name, const char *value)
{
	char *prefix = NULL, *np = NULL;
	int r;

	if (value == NULL)
		return CLI_OK;
	if (asprintf(&prefix, "%s&%s=", *path, name) < 0) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_USAGE;
	}
	r = cli_http_path(h, prefix, value, NULL, &np);
	free(prefix);
	if (r == CLI_OK) {
		free(*path);
		*path = np;
	}
	return r;
}

static int
records_base(struct cli_http *h, struct rec_query *q)
{
	char to[32];
	int r;

	if ((q->base = strdup("/v1/audit/records?limit=" "1000")) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_USAGE;
	}
	snprintf(to, sizeof(to), "%" PRIu64, q->to);
	if ((r = add_arg(h, &q->base, "key", q->key)) != CLI_OK ||
	    (r = add_arg(h, &q->base, "version", q->version_s)) != CLI_OK ||
	    (r = add_arg(h, &q->base, "since", q->since)) != CLI_OK ||
	    (r = add_arg(h, &q->base, "until", q->until)) != CLI_OK ||
	    (r = add_arg(h, &q->base, "actor", q->actor)) != CLI_OK ||
	    (r = add_arg(h, &q->base, "op", q->op)) != CLI_OK ||
	    (r = add_arg(h, &q->base, "to", q->has_to ? to : NULL)) != CLI_OK)
		return r;
	return CLI_OK;
}

/* Follows `next` until the server has no more pages. */
static int
records_run(struct cli_http *h, struct rec_query *q)
{
	json_t *page = NULL, *recs, *rec, *next;
	uint64_t from = q->from;
	char *path = NULL;
	size_t i;
	int r;

	if ((r = records_base(h, q)) != CLI_OK)
		return r;
	emit_header(q->mode);
	for (;;) {
		free(path);
		if (asprintf(&path, "%s&from=%" PRIu64, q->base, from) < 0) {
			path = NULL;
			fprintf(stderr, "kmsctl: out of memory\n");
			r = CLI_USAGE;
			break;
		}
		json_decref(page);
		if ((r = cli_http_call(h, "GET", path, NULL, &page)) != CLI_OK)
			break;
		if (!json_is_array(recs = json_object_get(page, "records"))) {
			fprintf(stderr, "kmsctl: the records answer has no records "
			    "array\n");
			r = CLI_UNREACHABLE;
			break;
		}
		json_array_foreach(recs, i, rec)
			if ((r = emit_record(q, rec)) != CLI_OK)
				break;
		next = json_object_get(page, "next");
		if (r != CLI_OK || json_is_null(next) || next == NULL)
			break;
		if (!json_is_integer(next) || json_integer_value(next) < 0 ||
		    (uint64_t)json_integer_value(next) <= from) {
			fprintf(stderr, "kmsctl: the records answer has a bad next\n");
			r = CLI_UNREACHABLE;
			break;
		}
		from = (uint64_t)json_integer_value(next);
	}
	free(path);
	json_decref(page);
	return r == CLI_OK ? flush_stdout() : r;
}

/* Checks one records option; returns 0 or a usage error. */
static int
records_opt(struct rec_query *q, int ch, const char *arg)
{
	uint64_t n;
	int64_t us;

	if (ch == OPT_KEY)
		q->key = arg;
	else if (ch == OPT_ACTOR)
		q->actor = arg;
	else if (ch == OPT_OP)
		q->op = arg;
	else if (ch == OPT_JSON || ch == OPT_CSV)
		q->mode = ch == OPT_JSON ? MODE_JSON : MODE_CSV;
	else if (ch == OPT_SINCE || ch == OPT_UNTIL) {
		if (km_time_parse(arg, &us) != KM_OK)
			return cli_usage_error("audit records ", "'%s' is not an RFC 3339 "
			    "time", arg);
		*(ch == OPT_SINCE ? &q->since : &q->until) = arg;
	} else if (ch == OPT_VERSION) {
		if (parse_u64(arg, &n) != 0 || n < 1 || n > 0xffffffffu)
			return cli_usage_error("audit records ", "--version must be a "
			    "positive number");
		q->version_s = arg;
		q->has_version = 1;
		q->version = (json_int_t)n;
	} else if (ch == OPT_FROM || ch == OPT_TO) {
		if (parse_u64(arg, ch == OPT_FROM ? &q->from : &q->to) != 0)
			return cli_usage_error("audit records ", "%s must be a seq",
			    ch == OPT_FROM ? "--from" : "--to");
		q->has_to |= ch == OPT_TO;
	} else
		return cli_usage_hint("audit records ");
	return 0;
}

static int
cmd_records(int argc, char **argv, const char *global_token_file)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_JSON,
		{ "csv", no_argument, NULL, OPT_CSV },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "version", required_argument, NULL, OPT_VERSION },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "until", required_argument, NULL, OPT_UNTIL },
		{ "actor", required_argument, NULL, OPT_ACTOR },
		{ "op", required_argument, NULL, OPT_OP },
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		O_END
	};
	const char *token_file = global_token_file;
	struct rec_query q;
	struct cli_http *h = NULL;
	int ch, r;

	memset(&q, 0, sizeof(q));
	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		if (ch == OPT_HELP)
			return cli_print_help(usage_records);
		if (ch == OPT_TOKEN_FILE)
			token_file = optarg;
		else if (records_opt(&q, ch, optarg) != 0)
			return CLI_USAGE;
	}
	if (optind != argc)
		return cli_usage_error("audit records ", "unexpected argument '%s'",
		    argv[optind]);
	if (q.has_to && q.from > q.to)
		return cli_usage_error("audit records ", "--from is after --to");
	if ((r = cli_http_new(token_file, &h)) == CLI_OK)
		r = records_run(h, &q);
	free(q.base);
	cli_http_free(h);
	return r;
}

/* ================================================================== */
/* kmsctl audit                                                        */
/* ================================================================== */

int
cli_audit_main(int argc, char **argv, const char *token_file)
{
	const char *sub;

	if (argc < 2)
		return cli_usage_error("audit ", "expected a command");
	sub = argv[1];
	optind = 0;	/* glibc: 0 re-initialises getopt */
	if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 ||
	    strcmp(sub, "help") == 0)
		return cli_print_help(usage_audit);
	if (strcmp(sub, "export") == 0)
		return cmd_export(argc - 1, argv + 1, token_file);
	if (strcmp(sub, "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	if (strcmp(sub, "head") == 0)
		return cmd_head(argc - 1, argv + 1, token_file);
	if (strcmp(sub, "records") == 0)
		return cmd_records(argc - 1, argv + 1, token_file);
	return cli_usage_error("audit ", "unknown command '%s'", sub);
}
