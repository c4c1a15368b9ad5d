/* libFuzzer target: ceremony text and approvals (ceremony/cer.h). The
 * first line picks the part under test, the rest is its input:
 *   "parse"     cer_request_parse: only canonical text is accepted, i.e.
 *               whatever it accepts cer_request_text writes back byte for
 *               byte, and a refusal leaves the request zeroed
 *   "approval"  lines digest, officer, decision, signature: the approval
 *               message and cer_verify under a fixed officer key; "@SIG@"
 *               as the signature becomes a valid one over that message,
 *               which must verify, and no other message's may
 *   "pubkey"    cer_pubkey_parse (PEM or DER): what it accepts survives a
 *               round trip through cer_pubkey_pem unchanged
 *   "tally"     lines "<officer> <approve|reject> <signature|@SIG@>" against
 *               officers alice, bob (active) and carol (removed), requester
 *               alice, M = 2: the counted approvals are distinct registered
 *               active officers other than the requester, sorted, and
 *               executable is exactly approved >= M
 *   "revoke"    lines key, version, officer, ts, nonce: the revoke message */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cer.h"
#include "fuzz.h"

#define MAX_LINES 160

static EVP_PKEY *officer_key[3];
static unsigned char *officer_spki[3];
static size_t officer_spki_len[3];
static const char *const officer_name[3] = { "alice", "bob", "carol" };

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int i, n;

	(void)argc;
	(void)argv;
	for (i = 0; i < 3; i++) {
		unsigned char *der = NULL;

		if ((officer_key[i] = EVP_EC_gen("P-256")) == NULL ||
		    (n = i2d_PUBKEY(officer_key[i], &der)) <= 0) {
			fprintf(stderr, "fuzz_ceremony: key setup failed\n");
			exit(1);
		}
		officer_spki[i] = malloc((size_t)n);
		memcpy(officer_spki[i], der, (size_t)n);
		officer_spki_len[i] = (size_t)n;
		OPENSSL_free(der);
	}
	return 0;
}

/* Base64 DER ECDSA over msg by officer i; caller frees. */
static char *
sign_by(int i, const char *msg)
{
	unsigned char sig[128];
	size_t sig_len = sizeof(sig);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char *b64 = NULL;

	if (md != NULL &&
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, officer_key[i]) == 1 &&
	    EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)msg,
	    strlen(msg)) == 1 && km_b64_encode(sig, sig_len, &b64) != KM_OK)
		b64 = NULL;
	EVP_MD_CTX_free(md);
	return b64;
}

/* Splits into NUL-terminated lines (a NUL inside a line ends its C
 * string, as it would for text that came through JSON). */
static size_t
split(const uint8_t *p, size_t n, char **lines, size_t max)
{
	size_t k = 0, pos = 0;

	while (pos <= n && k < max) {
		const uint8_t *nl = memchr(p + pos, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - (p + pos)) : n - pos;

		if ((lines[k++] = strndup((const char *)p + pos, len)) == NULL)
			abort();
		if (nl == NULL)
			break;
		pos += len + 1;
	}
	return k;
}

static void
free_lines(char **lines, size_t n)
{
	while (n-- > 0)
		free(lines[n]);
}

static void
do_parse(const uint8_t *p, size_t n)
{
	struct cer_request r;
	char *text = NULL, digest[65];
	size_t i;

	memset(&r, 0x5a, sizeof(r));
	if (cer_request_parse((const char *)p, n, &r) != KM_OK) {
		for (i = 0; i < sizeof(r); i++)
			fuzz_assert(((unsigned char *)&r)[i] == 0,
			    "a refused text left the request set");
		return;
	}
	fuzz_assert(cer_request_text(&r, &text) == KM_OK, "no text back");
	fuzz_assert(strlen(text) == n && memcmp(text, p, n) == 0,
	    "a non-canonical ceremony text was accepted");
	for (i = 1; i < r.n_params; i++)
		fuzz_assert(strcmp(r.params[i - 1].name, r.params[i].name) < 0,
		    "parameters not strictly sorted");
	fuzz_assert(r.quorum >= 1 && r.quorum <= CER_MAX_OFFICERS, "quorum %d",
	    r.quorum);
	cer_digest_hex(text, strlen(text), digest);
	fuzz_assert(strlen(digest) == 64, "digest");
	free(text);
}

static void
do_approval(const uint8_t *p, size_t n)
{
	char *l[4] = { 0 }, *msg = NULL, *other = NULL, *sig = NULL;
	const char *use;
	size_t k = split(p, n, l, 4);
	int r;

	if (k < 4)
		goto out;
	if (cer_approval_message(l[0], l[1], l[2], &msg) != KM_OK) {
		fuzz_assert(msg == NULL, "refused message left output");
		goto out;
	}
	use = l[3];
	if (strcmp(l[3], "@SIG@") == 0) {
		if ((sig = sign_by(0, msg)) == NULL)
			goto out;
		use = sig;
	}
	r = cer_verify(officer_spki[0], officer_spki_len[0], msg, strlen(msg), use);
	if (sig != NULL) {
		fuzz_assert(r == KM_OK, "a valid approval signature was refused");
		/* The same signature must not carry the other decision. */
		if (cer_approval_message(l[0], l[1], strcmp(l[2], "approve") == 0 ?
		    "reject" : "approve", &other) == KM_OK)
			fuzz_assert(cer_verify(officer_spki[0], officer_spki_len[0],
			    other, strlen(other), use) != KM_OK,
			    "an approval signature verified for the other decision");
		fuzz_assert(cer_verify(officer_spki[1], officer_spki_len[1], msg,
		    strlen(msg), use) != KM_OK, "verified under another key");
	}
out:
	free(msg);
	free(other);
	free(sig);
	free_lines(l, k);
}

static void
do_pubkey(const uint8_t *p, size_t n)
{
	unsigned char *spki = NULL, *again = NULL;
	size_t len = 0, len2 = 0;
	char *pem = NULL;

	if (cer_pubkey_parse(p, n, &spki, &len) != KM_OK)
		return;
	fuzz_assert(cer_pubkey_pem(spki, len, &pem) == KM_OK, "no PEM");
	fuzz_assert(cer_pubkey_parse(pem, strlen(pem), &again, &len2) == KM_OK &&
	    len2 == len && memcmp(again, spki, len) == 0, "PEM round trip");
	free(spki);
	free(again);
	free(pem);
}

static void
do_tally(const uint8_t *p, size_t n)
{
	static struct cer_decision d[CER_MAX_OFFICERS * 2];
	struct cer_officer off[3];
	struct cer_tally t;
	char *l[MAX_LINES], digest[65];
	size_t k = split(p, n, l, MAX_LINES), nd = 0, i, j;
	int seen[3] = { 0, 0, 0 };

	cer_digest_hex(p, n, digest);
	memset(off, 0, sizeof(off));
	for (i = 0; i < 3; i++) {
		snprintf(off[i].name, sizeof(off[i].name), "%s", officer_name[i]);
		off[i].spki = officer_spki[i];
		off[i].spki_len = officer_spki_len[i];
		off[i].active = i != 2;
	}
	memset(d, 0, sizeof(d));
	for (i = 0; i < k && nd < CER_MAX_OFFICERS * 2; i++) {
		char *sp1 = strchr(l[i], ' '), *sp2;

		if (sp1 == NULL || (sp2 = strchr(sp1 + 1, ' ')) == NULL)
			continue;
		*sp1 = *sp2 = '\0';
		snprintf(d[nd].officer, sizeof(d[nd].officer), "%s", l[i]);
		d[nd].approve = strcmp(sp1 + 1, "approve") == 0;
		if (strcmp(sp2 + 1, "@SIG@") == 0) {
			char *msg = NULL, *sig = NULL;

			for (j = 0; j < 3; j++)
				if (strcmp(d[nd].officer, officer_name[j]) == 0 &&
				    cer_approval_message(digest, d[nd].officer,
				    d[nd].approve ? "approve" : "reject", &msg) == KM_OK)
					sig = sign_by((int)j, msg);
			snprintf(d[nd].signature, sizeof(d[nd].signature), "%s",
			    sig ? sig : "");
			free(msg);
			free(sig);
		} else {
			snprintf(d[nd].signature, sizeof(d[nd].signature), "%s",
			    sp2 + 1);
		}
		nd++;
	}
	fuzz_assert(cer_tally(digest, "alice", 2, off, 3, d, nd, &t) == KM_OK,
	    "tally refused");
	fuzz_assert(t.eligible == 1, "eligible %zu", t.eligible);
	for (i = 0; i < t.approved; i++) {
		for (j = 0; j < 3; j++)
			if (strcmp(t.approvers[i], officer_name[j]) == 0)
				break;
		fuzz_assert(j == 1, "approver %s counted (requester, removed or "
		    "not an officer)", t.approvers[i]);
		fuzz_assert(!seen[j], "approver %s counted twice", t.approvers[i]);
		seen[j] = 1;
		if (i > 0)
			fuzz_assert(strcmp(t.approvers[i - 1], t.approvers[i]) < 0,
			    "approvers not sorted");
	}
	fuzz_assert(t.executable == (t.approved >= 2), "executable");
	fuzz_assert(!t.executable, "executable with one eligible officer");
	free_lines(l, k);
}

static void
do_revoke(const uint8_t *p, size_t n)
{
	char *l[5] = { 0 }, *msg = NULL;
	size_t k = split(p, n, l, 5);

	if (k == 5 && cer_revoke_message(l[0], (uint32_t)strtoul(l[1], NULL, 10),
	    l[2], l[3], l[4], &msg) == KM_OK)
		fuzz_assert(strncmp(msg, "kms-revoke/v1\n", 14) == 0, "prefix");
	if (k >= 4)
		(void)cer_ts_fresh(l[3], km_now_us());
	free(msg);
	free_lines(l, k);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hl, rest;

	if (nl == NULL)
		return 0;
	hl = (size_t)(nl - data);
	rest = size - hl - 1;
	fuzz_quiet_begin();
	if (hl == 5 && memcmp(data, "parse", 5) == 0)
		do_parse(nl + 1, rest);
	else if (hl == 8 && memcmp(data, "approval", 8) == 0)
		do_approval(nl + 1, rest);
	else if (hl == 6 && memcmp(data, "pubkey", 6) == 0)
		do_pubkey(nl + 1, rest);
	else if (hl == 5 && memcmp(data, "tally", 5) == 0)
		do_tally(nl + 1, rest);
	else if (hl == 6 && memcmp(data, "revoke", 6) == 0)
		do_revoke(nl + 1, rest);
	fuzz_quiet_end();
	return 0;
}
