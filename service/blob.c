/* Wrapped-DEK text format and the AAD that binds it to key and context. */
#include "blob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

int
blob_context_add(struct blob_context *c, const char *name, size_t name_len,
    const char *value, size_t value_len)
{
	size_t i;

	if (c->n >= BLOB_MAX_CONTEXT_PAIRS || name_len == 0 ||
	    name_len > BLOB_MAX_CONTEXT_BYTES ||
	    value_len > BLOB_MAX_CONTEXT_BYTES)
		return KM_ERR_INVALID_REQUEST;
	for (i = 0; i < c->n; i++)
		if (bytes_cmp(c->pairs[i].name, c->pairs[i].name_len, name,
		    name_len) == 0)
			return KM_ERR_INVALID_REQUEST;
	c->pairs[c->n].name = name;
	c->pairs[c->n].name_len = name_len;
	c->pairs[c->n].value = value;
	c->pairs[c->n].value_len = value_len;
	c->n++;
	return KM_OK;
}

void
blob_context_sort(struct blob_context *c)
{
	size_t i, j;

	/* At most 16 pairs: insertion sort. */
	for (i = 1; i < c->n; i++) {
		struct blob_pair p = c->pairs[i];

		for (j = i; j > 0 && bytes_cmp(c->pairs[j - 1].name,
		    c->pairs[j - 1].name_len, p.name, p.name_len) > 0; j--)
			c->pairs[j] = c->pairs[j - 1];
		c->pairs[j] = p;
	}
}

int
blob_context_has(const struct blob_context *c, char *const *names,
    size_t n_names, const char **missing)
{
	size_t i, j;

	*missing = NULL;
	for (i = 0; i < n_names; i++) {
		size_t len = strlen(names[i]);

		for (j = 0; j < c->n; j++)
			if (bytes_cmp(c->pairs[j].name, c->pairs[j].name_len,
			    names[i], len) == 0)
				break;
		if (j == c->n) {
			*missing = names[i];
			return 0;
		}
	}
	return 1;
}

int
blob_aad(const char *key_name, uint32_t version, const struct blob_context *c,
    struct km_buf *out)
{
	size_t i;

	km_buf_append_str(out, "kms-aad/v1");
	km_buf_append_u32be(out, (uint32_t)strlen(key_name));
	km_buf_append_str(out, key_name);
	km_buf_append_u32be(out, version);
	km_buf_append_u32be(out, (uint32_t)c->n);
	for (i = 0; i < c->n; i++) {
		km_buf_append_u32be(out, (uint32_t)c->pairs[i].name_len);
		km_buf_append(out, c->pairs[i].name, c->pairs[i].name_len);
		km_buf_append_u32be(out, (uint32_t)c->pairs[i].value_len);
		km_buf_append(out, c->pairs[i].value, c->pairs[i].value_len);
	}
	return out->failed ? KM_ERR_NOMEM : KM_OK;
}

int
blob_format(uint32_t version, const unsigned char nonce[BLOB_NONCE_LEN],
    const unsigned char *sealed, size_t sealed_len, char **out)
{
	struct km_buf raw = KM_BUF_INIT(BLOB_NONCE_LEN + BLOB_MAX_PLAINTEXT +
	    BLOB_TAG_LEN), txt = KM_BUF_INIT(8192);
	char head[32], *b64 = NULL;
	int r;

	*out = NULL;
	km_buf_append(&raw, nonce, BLOB_NONCE_LEN);
	km_buf_append(&raw, sealed, sealed_len);
	if (raw.failed) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = km_b64_encode(raw.data, raw.len, &b64)) != KM_OK)
		goto out;
	snprintf(head, sizeof(head), "kms:v%u:", version);
	km_buf_append_str(&txt, head);
	km_buf_append_str(&txt, b64);
	if ((*out = km_buf_take_str(&txt)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	r = KM_OK;
out:
	free(b64);
	km_buf_free(&raw);
	km_buf_free(&txt);
	return r;
}

int
blob_parse(const char *s, size_t len, uint32_t *version, unsigned char **raw,
    size_t *raw_len)
{
	unsigned char *dec = NULL;
	size_t i = 5, declen = 0;
	uint64_t v = 0;

	*version = 0;
	*raw = NULL;
	*raw_len = 0;
	if (len < 7 || memcmp(s, "kms:v", 5) != 0)
		return KM_ERR_INVALID_CIPHERTEXT;
	/* Decimal version without leading zeros, 1 .. 2^32-1. */
	if (s[i] < '1' || s[i] > '9')
		return KM_ERR_INVALID_CIPHERTEXT;
	for (; i < len && s[i] >= '0' && s[i] <= '9' && i < 16; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	if (i >= len || s[i] != ':' || v > UINT32_MAX)
		return KM_ERR_INVALID_CIPHERTEXT;
	i++;
	if (km_b64_decode(s + i, len - i, &dec, &declen) != KM_OK)
		return KM_ERR_INVALID_CIPHERTEXT;
	if (declen < BLOB_NONCE_LEN + 1 + BLOB_TAG_LEN ||
	    declen > BLOB_NONCE_LEN + BLOB_MAX_PLAINTEXT + BLOB_TAG_LEN) {
		km_secure_free(dec, declen);
		return KM_ERR_INVALID_CIPHERTEXT;
	}
	*version = (uint32_t)v;
	*raw = dec;
	*raw_len = declen;
	return KM_OK;
}
