/* libFuzzer target: the offline audit verifier of `kmsctl audit verify`
 * (tools/kmsctl_audit.c), driven through its buffer API.
 *
 * An input that starts with '{' is a keys.json for cli_audit_verifier_new.
 * Any other input is a bundle, one line each, under a fixed keys.json whose
 * P-256 key this target holds:
 *   "T <json>"  the trusted checkpoint      "C <json>"  a checkpoint line
 *   "S <name>"  begins a segment             anything else: a record line
 * A last line without a newline is fed as torn (complete = 0). So that
 * mutations get past the hash chain and the signatures, the target fills in
 *   @PREV@  (record lines) the hex SHA-256 of the record line before it,
 *           64 zeros for the first
 *   @H0@..@H9@, @KID@  (T and C lines) the hash of record line 0..9, the kid
 *   @SIG@   (T and C lines, after the others) a valid signature over the
 *           line's own origin/seq/hash/ts
 * Checked: no crash, leak or undefined behaviour; a verdict is sticky (once
 * INVALID, every later call says INVALID); INVALID always comes with a
 * message; VALID at the end comes with the summary line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "fuzz.h"
#include "jwk.h"
#include "km.h"
#include "kmsctl_audit.h"

#define MAX_LINES 2048
#define ORIGIN "kmsd-fuzz"

static EVP_PKEY *key;
static char kid[44];
static char *keys_json;

enum kind { K_RECORD, K_CP, K_TRUSTED, K_SEGMENT };

struct item {
	enum kind kind;
	char *text;		/* after substitution; owned */
	size_t len;
	int complete;
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	unsigned char *der = NULL;
	char *pem = NULL;
	json_t *jwk = NULL, *doc;
	int n;

	(void)argc;
	(void)argv;
	if ((key = EVP_EC_gen("P-256")) == NULL ||
	    (n = i2d_PUBKEY(key, &der)) <= 0 ||
	    jwk_from_spki(der, (size_t)n, &jwk, kid) != KM_OK ||
	    jwk_spki_pem(der, (size_t)n, &pem) != KM_OK) {
		fprintf(stderr, "fuzz_audit_verify: key setup failed\n");
		exit(1);
	}
	doc = json_pack("{s:s, s:[{s:s, s:s}]}", "origin", ORIGIN, "keys", "kid",
	    kid, "pem", pem);
	keys_json = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	json_decref(jwk);
	free(pem);
	OPENSSL_free(der);
	return keys_json != NULL ? 0 : 1;
}

/* Replaces every `from` in *s (of *len bytes) by `to`. */
static void
subst(char **s, size_t *len, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to), i = 0, o = 0, hits = 0;
	char *out;

	for (i = 0; i + fl <= *len; i++)
		if (memcmp(*s + i, from, fl) == 0)
			hits++, i += fl - 1;
	if (hits == 0)
		return;
	if ((out = malloc(*len + hits * tl + 1)) == NULL)
		abort();
	for (i = 0; i < *len;) {
		if (i + fl <= *len && memcmp(*s + i, from, fl) == 0) {
			memcpy(out + o, to, tl);
			o += tl;
			i += fl;
		} else {
			out[o++] = (*s)[i++];
		}
	}
	out[o] = '\0';
	free(*s);
	*s = out;
	*len = o;
}

/* A signature over the checkpoint text of the line, or NULL. */
static char *
sign_line(const char *line, size_t len)
{
	json_t *doc = json_loadb(line, len, 0, NULL);
	const char *hash = json_string_value(json_object_get(doc, "hash"));
	const char *ts = json_string_value(json_object_get(doc, "ts"));
	json_t *seq = json_object_get(doc, "seq");
	unsigned char sig[128];
	size_t sig_len = sizeof(sig);
	char text[1024], *b64 = NULL;
	EVP_MD_CTX *md = NULL;
	int n;

	if (hash == NULL || ts == NULL || !json_is_integer(seq))
		goto out;
	n = snprintf(text, sizeof(text), "kms-audit-checkpoint/v1\n%s\n%lld\n"
	    "%s\n%s\n", ORIGIN, (long long)json_integer_value(seq), hash, ts);
	if (n <= 0 || (size_t)n >= sizeof(text))
		goto out;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, (unsigned char *)text,
	    (size_t)n) != 1)
		goto out;
	if (km_b64_encode(sig, sig_len, &b64) != KM_OK)
		b64 = NULL;
out:
	EVP_MD_CTX_free(md);
	json_decref(doc);
	return b64;
}

static int
feed(struct cli_audit_verifier *v, const struct item *it)
{
	char *name;
	int r;

	switch (it->kind) {
	case K_TRUSTED:
		return cli_audit_trusted_checkpoint(v, it->text, it->len);
	case K_CP:
		return cli_audit_checkpoint_line(v, it->text, it->len, it->complete);
	case K_SEGMENT:
		if ((name = strndup(it->text, it->len)) == NULL)
			abort();
		r = cli_audit_segment_begin(v, name);
		free(name);
		return r;
	default:
		return cli_audit_verify_line(v, it->text, it->len, it->complete);
	}
}

static void
run_bundle(const uint8_t *data, size_t size)
{
	static struct item items[MAX_LINES];
	unsigned char hashes[10][SHA256_DIGEST_LENGTH], prev[SHA256_DIGEST_LENGTH];
	char hex[65], tag[8];
	struct cli_audit_verifier *v = NULL;
	size_t n = 0, pos = 0, i, nrec = 0;
	int r, sticky = CLI_AUDIT_VALID;

	memset(prev, 0, sizeof(prev));
	while (pos < size && n < MAX_LINES) {
		const uint8_t *nl = memchr(data + pos, '\n', size - pos);
		size_t len = nl ? (size_t)(nl - (data + pos)) : size - pos;
		struct item *it = &items[n++];
		size_t skip = 0;

		it->complete = nl != NULL;
		it->kind = K_RECORD;
		if (len >= 2 && data[pos + 1] == ' ') {
			skip = 2;
			if (data[pos] == 'C')
				it->kind = K_CP;
			else if (data[pos] == 'T')
				it->kind = K_TRUSTED;
			else if (data[pos] == 'S')
				it->kind = K_SEGMENT;
			else
				skip = 0;
		}
		it->len = len - skip;
		if ((it->text = malloc(it->len + 1)) == NULL)
			abort();
		memcpy(it->text, data + pos + skip, it->len);
		it->text[it->len] = '\0';
		pos += len + (nl != NULL);
		if (it->kind != K_RECORD)
			continue;
		km_hex(prev, sizeof(prev), hex);
		subst(&it->text, &it->len, "@PREV@", hex);
		SHA256((unsigned char *)it->text, it->len, prev);
		if (nrec < 10)
			memcpy(hashes[nrec], prev, sizeof(prev));
		nrec++;
	}
	for (i = 0; i < n; i++) {
		struct item *it = &items[i];
		char *sig;
		size_t h;

		if (it->kind != K_CP && it->kind != K_TRUSTED)
			continue;
		subst(&it->text, &it->len, "@KID@", kid);
		for (h = 0; h < 10 && h < nrec; h++) {
			snprintf(tag, sizeof(tag), "@H%zu@", h);
			km_hex(hashes[h], sizeof(hashes[h]), hex);
			subst(&it->text, &it->len, tag, hex);
		}
		if (memmem(it->text, it->len, "@SIG@", 5) != NULL &&
		    (sig = sign_line(it->text, it->len)) != NULL) {
			subst(&it->text, &it->len, "@SIG@", sig);
			free(sig);
		}
	}

	r = cli_audit_verifier_new(keys_json, strlen(keys_json), &v);
	fuzz_assert(r == CLI_AUDIT_VALID && v != NULL, "fixed keys.json refused");
	for (i = 0; i < n; i++) {
		r = feed(v, &items[i]);
		if (sticky != CLI_AUDIT_VALID)
			fuzz_assert(r == sticky, "line %zu: verdict %d after %d", i,
			    r, sticky);
		sticky = r;
	}
	r = cli_audit_verify_end(v);
	if (getenv("FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "verdict %d: %s\n%s", r,
		    cli_audit_verifier_message(v), cli_audit_verifier_notes(v));
	if (sticky != CLI_AUDIT_VALID)
		fuzz_assert(r == sticky, "end: verdict %d after %d", r, sticky);
	if (r == CLI_AUDIT_INVALID)
		fuzz_assert(cli_audit_verifier_message(v)[0] != '\0',
		    "INVALID without a message");
	if (r == CLI_AUDIT_VALID)
		fuzz_assert(strncmp(cli_audit_verifier_message(v), "valid: ", 7) == 0,
		    "VALID without the summary: %s", cli_audit_verifier_message(v));
	cli_audit_verifier_free(v);
	for (i = 0; i < n; i++)
		free(items[i].text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cli_audit_verifier *v = NULL;
	int r;

	if (size > 0 && data[0] == '{') {
		r = cli_audit_verifier_new((const char *)data, size, &v);
		fuzz_assert(v != NULL || r == CLI_AUDIT_ERROR, "no verifier");
		if (r == CLI_AUDIT_INVALID)
			fuzz_assert(cli_audit_verifier_message(v)[0] != '\0',
			    "INVALID keys.json without a message");
		cli_audit_verifier_free(v);
		return 0;
	}
	run_bundle(data, size);
	return 0;
}
