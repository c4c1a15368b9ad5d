/* libFuzzer target: context canonicalisation and the AAD. The input is
 *   u8 key-name length, key name, u32be version,
 *   then pairs: u16be name length, name, u16be value length, value
 * (lengths up to 65535, so the 256-byte limits are crossed). Checked:
 * blob_context_add accepts exactly what DESIGN.md section 4 allows;
 * blob_context_sort gives strictly increasing names; the AAD does not
 * depend on the order the pairs came in; the AAD decodes back to exactly
 * the key name, version and sorted pairs (it is injective); and
 * blob_context_has finds every present name and names the first absent one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "fuzz.h"

#define MAX_PAIRS_IN 64

struct in_pair {
	const char *name, *value;
	size_t name_len, value_len;
};

static int
cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static uint32_t
rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
	    p[3];
}

/* Walks the AAD and compares each part with what went in. */
static void
check_aad(const struct km_buf *aad, const char *name, uint32_t version,
    const struct blob_context *c)
{
	const unsigned char *p = aad->data;
	size_t left = aad->len, i, n;

#define TAKE(k) do { fuzz_assert(left >= (k), "AAD too short"); \
	p += (k); left -= (k); } while (0)
	fuzz_assert(left >= 10 && memcmp(p, "kms-aad/v1", 10) == 0, "prefix");
	TAKE(10);
	fuzz_assert(left >= 4, "AAD too short");
	n = rd32(p);
	TAKE(4);
	fuzz_assert(n == strlen(name) && left >= n && memcmp(p, name, n) == 0,
	    "key name");
	TAKE(n);
	fuzz_assert(left >= 4 && rd32(p) == version, "version");
	TAKE(4);
	fuzz_assert(left >= 4 && rd32(p) == c->n, "pair count");
	TAKE(4);
	for (i = 0; i < c->n; i++) {
		fuzz_assert(left >= 4, "AAD too short");
		n = rd32(p);
		TAKE(4);
		fuzz_assert(n == c->pairs[i].name_len && left >= n &&
		    memcmp(p, c->pairs[i].name, n) == 0, "pair %zu name", i);
		TAKE(n);
		fuzz_assert(left >= 4, "AAD too short");
		n = rd32(p);
		TAKE(4);
		fuzz_assert(n == c->pairs[i].value_len && left >= n &&
		    (n == 0 || memcmp(p, c->pairs[i].value, n) == 0),
		    "pair %zu value", i);
		TAKE(n);
	}
	fuzz_assert(left == 0, "%zu bytes after the last pair", left);
#undef TAKE
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in_pair in[MAX_PAIRS_IN];
	struct blob_context c1, c2;
	struct km_buf a1 = KM_BUF_INIT(1 << 20), a2 = KM_BUF_INIT(1 << 20);
	char name[256], *req[MAX_PAIRS_IN + 1], absent[300];
	const char *missing;
	size_t pos = 0, n_in = 0, nlen, i, j, n_req = 0;
	uint32_t version;

	if (size < 1)
		return 0;
	nlen = data[pos++];
	if (size - pos < nlen + 4)
		return 0;
	memcpy(name, data + pos, nlen);
	name[nlen] = '\0';		/* a C string: stops at any NUL */
	pos += nlen;
	version = rd32(data + pos);
	pos += 4;
	while (n_in < MAX_PAIRS_IN && size - pos >= 2) {
		struct in_pair *p = &in[n_in];

		p->name_len = (size_t)data[pos] << 8 | data[pos + 1];
		pos += 2;
		if (size - pos < p->name_len + 2)
			break;
		p->name = (const char *)data + pos;
		pos += p->name_len;
		p->value_len = (size_t)data[pos] << 8 | data[pos + 1];
		pos += 2;
		if (size - pos < p->value_len)
			break;
		p->value = (const char *)data + pos;
		pos += p->value_len;
		n_in++;
	}

	/* Exactly the allowed pairs are accepted. */
	memset(&c1, 0, sizeof(c1));
	for (i = 0; i < n_in; i++) {
		int dup = 0, ok, want;

		for (j = 0; j < c1.n; j++)
			dup |= cmp_bytes(c1.pairs[j].name, c1.pairs[j].name_len,
			    in[i].name, in[i].name_len) == 0;
		want = c1.n < BLOB_MAX_CONTEXT_PAIRS && in[i].name_len >= 1 &&
		    in[i].name_len <= BLOB_MAX_CONTEXT_BYTES &&
		    in[i].value_len <= BLOB_MAX_CONTEXT_BYTES && !dup;
		ok = blob_context_add(&c1, in[i].name, in[i].name_len,
		    in[i].value, in[i].value_len) == KM_OK;
		fuzz_assert(ok == want, "pair %zu (name %zu bytes, value %zu, "
		    "dup %d, have %zu): add said %d", i, in[i].name_len,
		    in[i].value_len, dup, c1.n, ok);
	}

	/* The same pairs in reverse order. */
	memset(&c2, 0, sizeof(c2));
	for (i = c1.n; i-- > 0;)
		fuzz_assert(blob_context_add(&c2, c1.pairs[i].name,
		    c1.pairs[i].name_len, c1.pairs[i].value,
		    c1.pairs[i].value_len) == KM_OK, "re-adding pair %zu", i);
	blob_context_sort(&c1);
	blob_context_sort(&c2);
	for (i = 1; i < c1.n; i++)
		fuzz_assert(cmp_bytes(c1.pairs[i - 1].name, c1.pairs[i - 1].name_len,
		    c1.pairs[i].name, c1.pairs[i].name_len) < 0,
		    "pairs %zu and %zu out of order", i - 1, i);

	fuzz_assert(blob_aad(name, version, &c1, &a1) == KM_OK, "aad 1");
	fuzz_assert(blob_aad(name, version, &c2, &a2) == KM_OK, "aad 2");
	fuzz_assert(a1.len == a2.len && memcmp(a1.data, a2.data, a1.len) == 0,
	    "the AAD depends on the order of the context pairs");
	check_aad(&a1, name, version, &c1);

	/* Every present NUL-free name is found; an absent one is named. */
	for (i = 0; i < c1.n; i++) {
		if (memchr(c1.pairs[i].name, '\0', c1.pairs[i].name_len) != NULL)
			continue;
		if ((req[n_req] = strndup(c1.pairs[i].name,
		    c1.pairs[i].name_len)) != NULL)
			n_req++;
	}
	fuzz_assert(blob_context_has(&c1, req, n_req, &missing) == 1 &&
	    missing == NULL, "a present name was reported missing");
	/* Longer than any accepted name, so surely absent. */
	memset(absent, 'x', 257);
	absent[257] = '\0';
	req[n_req] = absent;
	fuzz_assert(blob_context_has(&c1, req, n_req + 1, &missing) == 0 &&
	    missing == absent, "an absent name was not reported");
	for (i = 0; i < n_req; i++)
		free(req[i]);
	km_buf_free(&a1);
	km_buf_free(&a2);
	return 0;
}
