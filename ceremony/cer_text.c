/* The canonical ceremony request text, its digest, and the other messages
 * officers sign (DESIGN.md section 7, docs/CEREMONIES.md). */
#include "cer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

/* The longest canonical text: every line at its longest. */
#define CER_TEXT_MAX	(16 * 1024)

static int
is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int
is_hex_lower(const char *s, size_t n)
{
	size_t i;

	if (strlen(s) != n)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int
cer_officer_name_valid(const char *name)
{
	size_t i, n;

	if (name == NULL || (n = strlen(name)) == 0 || n > CER_NAME_MAX ||
	    !is_lower_alnum(name[0]))
		return 0;
	for (i = 1; i < n; i++)
		if (!is_lower_alnum(name[i]) && name[i] != '.' &&
		    name[i] != '_' && name[i] != '-')
			return 0;
	return 1;
}

int
cer_operation_valid(const char *op)
{
	size_t i, n, dots = 0;

	if (op == NULL || (n = strlen(op)) < 3 || n > CER_OP_MAX ||
	    op[0] == '.' || op[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (op[i] == '.')
			dots++;
		else if (!((op[i] >= 'a' && op[i] <= 'z') || op[i] == '_'))
			return 0;
	}
	return dots == 1;
}

int
cer_requester_valid(const char *s)
{
	if (s == NULL)
		return 0;
	if (strncmp(s, "token:", 6) == 0)
		return is_hex_lower(s + 6, 16);
	return cer_officer_name_valid(s);
}

static int
param_name_valid(const char *s)
{
	size_t i, n;

	if (s == NULL || (n = strlen(s)) == 0 || n > CER_PARAM_NAME_MAX ||
	    !(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (i = 1; i < n; i++)
		if (!is_lower_alnum(s[i]) && s[i] != '_')
			return 0;
	return 1;
}

/* Printable ASCII without leading or trailing space: what an officer reads
 * on a terminal is exactly what was signed, with nothing hidden. */
static int
param_value_valid(const char *s)
{
	size_t i, n;

	if (s == NULL || (n = strlen(s)) == 0 || n > CER_PARAM_VALUE_MAX ||
	    s[0] == ' ' || s[n - 1] == ' ')
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

int
cer_param_set(struct cer_request *r, const char *name, const char *value)
{
	size_t i, at;

	if (!param_name_valid(name) || !param_value_valid(value) ||
	    r->n_params >= CER_MAX_PARAMS)
		return KM_ERR_INVALID_REQUEST;
	for (at = 0; at < r->n_params; at++) {
		int c = strcmp(r->params[at].name, name);

		if (c == 0)
			return KM_ERR_INVALID_REQUEST;
		if (c > 0)
			break;
	}
	for (i = r->n_params; i > at; i--)
		r->params[i] = r->params[i - 1];
	snprintf(r->params[at].name, sizeof(r->params[at].name), "%s", name);
	snprintf(r->params[at].value, sizeof(r->params[at].value), "%s", value);
	r->n_params++;
	return KM_OK;
}

const char *
cer_param_get(const struct cer_request *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->n_params; i++)
		if (strcmp(r->params[i].name, name) == 0)
			return r->params[i].value;
	return NULL;
}

static int
whole_seconds(int64_t us)
{
	return us > 0 && us % 1000000 == 0;
}

static int
request_valid(const struct cer_request *r)
{
	size_t i;

	if (!is_hex_lower(r->id, CER_ID_HEX) ||
	    !cer_operation_valid(r->operation) ||
	    r->n_params > CER_MAX_PARAMS ||
	    r->quorum < 1 || r->quorum > CER_MAX_OFFICERS ||
	    !cer_requester_valid(r->requester) ||
	    !whole_seconds(r->created) || !whole_seconds(r->expires) ||
	    r->expires <= r->created ||
	    !is_hex_lower(r->nonce, CER_NONCE_HEX) ||
	    !is_hex_lower(r->state, 64))
		return 0;
	for (i = 0; i < r->n_params; i++) {
		if (!param_name_valid(r->params[i].name) ||
		    !param_value_valid(r->params[i].value))
			return 0;
		/* Strictly sorted: also no name twice. */
		if (i > 0 && strcmp(r->params[i - 1].name, r->params[i].name) >= 0)
			return 0;
	}
	return 1;
}

static void
append_params(struct km_buf *b, const struct cer_request *r)
{
	size_t i;

	for (i = 0; i < r->n_params; i++) {
		km_buf_append_str(b, "param.");
		km_buf_append_str(b, r->params[i].name);
		km_buf_append_str(b, ": ");
		km_buf_append_str(b, r->params[i].value);
		km_buf_append_str(b, "\n");
	}
}

static int
buf_take(struct km_buf *b, char **out)
{
	if (b->failed)
		return KM_ERR_TOO_LARGE;
	if ((*out = km_buf_take_str(b)) == NULL)
		return KM_ERR_NOMEM;
	return KM_OK;
}

int
cer_request_text(const struct cer_request *r, char **text)
{
	struct km_buf b = KM_BUF_INIT(CER_TEXT_MAX);
	char created[40], expires[40], q[16];
	int rc = KM_ERR_INTERNAL;

	*text = NULL;
	if (!request_valid(r)) {
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	km_time_format(r->created, 0, created, sizeof(created));
	km_time_format(r->expires, 0, expires, sizeof(expires));
	snprintf(q, sizeof(q), "%d", r->quorum);
	km_buf_append_str(&b, "kms-ceremony/v1\nid: ");
	km_buf_append_str(&b, r->id);
	km_buf_append_str(&b, "\noperation: ");
	km_buf_append_str(&b, r->operation);
	km_buf_append_str(&b, "\n");
	append_params(&b, r);
	km_buf_append_str(&b, "quorum: ");
	km_buf_append_str(&b, q);
	km_buf_append_str(&b, "\nrequester: ");
	km_buf_append_str(&b, r->requester);
	km_buf_append_str(&b, "\ncreated: ");
	km_buf_append_str(&b, created);
	km_buf_append_str(&b, "\nexpires: ");
	km_buf_append_str(&b, expires);
	km_buf_append_str(&b, "\nnonce: ");
	km_buf_append_str(&b, r->nonce);
	km_buf_append_str(&b, "\nstate: ");
	km_buf_append_str(&b, r->state);
	km_buf_append_str(&b, "\n");
	rc = buf_take(&b, text);
out:
	km_buf_free(&b);
	return rc;
}

/* Copies the value of line "<prefix><value>\n" at *p into out (cap bytes
 * with the NUL) and moves *p past it. */
static int
take_line(const char **p, const char *end, const char *prefix, char *out,
    size_t cap)
{
	size_t plen = strlen(prefix), n;
	const char *nl;

	if ((size_t)(end - *p) < plen || memcmp(*p, prefix, plen) != 0)
		return -1;
	*p += plen;
	if ((nl = memchr(*p, '\n', (size_t)(end - *p))) == NULL)
		return -1;
	n = (size_t)(nl - *p);
	if (n >= cap || memchr(*p, '\0', n) != NULL)
		return -1;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p = nl + 1;
	return 0;
}

int
cer_request_parse(const char *text, size_t len, struct cer_request *r)
{
	const char *p = text, *end = text + len;
	char *colon;
	char line[CER_PARAM_NAME_MAX + CER_PARAM_VALUE_MAX + 16], num[16];
	char created[40], expires[40], *again = NULL, *e;
	long q;
	int rc = KM_ERR_INVALID_REQUEST;

	memset(r, 0, sizeof(*r));
	if (len > CER_TEXT_MAX)
		goto out;
	if (take_line(&p, end, "kms-ceremony/v1", line, 1) != 0 ||
	    take_line(&p, end, "id: ", r->id, sizeof(r->id)) != 0 ||
	    take_line(&p, end, "operation: ", r->operation,
	    sizeof(r->operation)) != 0)
		goto out;
	while (end - p > 6 && memcmp(p, "param.", 6) == 0) {
		if (take_line(&p, end, "param.", line, sizeof(line)) != 0 ||
		    (colon = strstr(line, ": ")) == NULL)
			goto out;
		*colon = '\0';
		if (cer_param_set(r, line, colon + 2) != KM_OK)
			goto out;
	}
	if (take_line(&p, end, "quorum: ", num, sizeof(num)) != 0 ||
	    take_line(&p, end, "requester: ", r->requester,
	    sizeof(r->requester)) != 0 ||
	    take_line(&p, end, "created: ", created, sizeof(created)) != 0 ||
	    take_line(&p, end, "expires: ", expires, sizeof(expires)) != 0 ||
	    take_line(&p, end, "nonce: ", r->nonce, sizeof(r->nonce)) != 0 ||
	    take_line(&p, end, "state: ", r->state, sizeof(r->state)) != 0 ||
	    p != end)
		goto out;
	q = strtol(num, &e, 10);
	if (num[0] < '1' || num[0] > '9' || *e != '\0' || q > CER_MAX_OFFICERS)
		goto out;
	r->quorum = (int)q;
	if (km_time_parse(created, &r->created) != KM_OK ||
	    km_time_parse(expires, &r->expires) != KM_OK)
		goto out;
	/* Only the exact bytes cer_request_text writes (no other time
	 * spelling, no unsorted params): re-serialise and compare. */
	if (cer_request_text(r, &again) != KM_OK || strlen(again) != len ||
	    memcmp(again, text, len) != 0)
		goto out;
	rc = KM_OK;
out:
	free(again);
	if (rc != KM_OK)
		memset(r, 0, sizeof(*r));
	return rc;
}

void
cer_digest_hex(const void *data, size_t len, char out[65])
{
	unsigned char d[SHA256_DIGEST_LENGTH];

	SHA256(data, len, d);
	km_hex(d, sizeof(d), out);
}

int
cer_approval_message(const char *digest, const char *officer,
    const char *decision, char **msg)
{
	struct km_buf b = KM_BUF_INIT(1024);
	int rc;

	*msg = NULL;
	if (digest == NULL || !is_hex_lower(digest, 64) ||
	    !cer_officer_name_valid(officer) || decision == NULL ||
	    (strcmp(decision, "approve") != 0 && strcmp(decision, "reject") != 0))
		return KM_ERR_INVALID_REQUEST;
	km_buf_append_str(&b, "kms-approval/v1\n");
	km_buf_append_str(&b, digest);
	km_buf_append_str(&b, "\n");
	km_buf_append_str(&b, officer);
	km_buf_append_str(&b, "\n");
	km_buf_append_str(&b, decision);
	km_buf_append_str(&b, "\n");
	rc = buf_take(&b, msg);
	km_buf_free(&b);
	return rc;
}

static int
nonce_valid(const char *n)
{
	size_t len;

	if (n == NULL || (len = strlen(n)) < 16 || len > 64)
		return 0;
	return is_hex_lower(n, len);
}

int
cer_revoke_message(const char *key, uint32_t version, const char *officer,
    const char *ts, const char *nonce, char **msg)
{
	struct km_buf b = KM_BUF_INIT(1024);
	char v[16];
	int64_t us;
	int rc;

	*msg = NULL;
	if (key == NULL || key[0] == '\0' || strlen(key) > 128 ||
	    !param_value_valid(key) || strchr(key, ' ') != NULL ||
	    version == 0 || !cer_officer_name_valid(officer) ||
	    ts == NULL || km_time_parse(ts, &us) != KM_OK ||
	    strlen(ts) > 40 || !param_value_valid(ts) || !nonce_valid(nonce))
		return KM_ERR_INVALID_REQUEST;
	snprintf(v, sizeof(v), "%u", version);
	km_buf_append_str(&b, "kms-revoke/v1\nkey: ");
	km_buf_append_str(&b, key);
	km_buf_append_str(&b, "\nversion: ");
	km_buf_append_str(&b, v);
	km_buf_append_str(&b, "\nofficer: ");
	km_buf_append_str(&b, officer);
	km_buf_append_str(&b, "\nts: ");
	km_buf_append_str(&b, ts);
	km_buf_append_str(&b, "\nnonce: ");
	km_buf_append_str(&b, nonce);
	km_buf_append_str(&b, "\n");
	rc = buf_take(&b, msg);
	km_buf_free(&b);
	return rc;
}

int
cer_request_message(const struct cer_request *r, const char *officer,
    const char *ts, char **msg)
{
	struct km_buf b = KM_BUF_INIT(CER_TEXT_MAX);
	int64_t us;
	int rc;

	*msg = NULL;
	if (!cer_officer_name_valid(officer) ||
	    !cer_operation_valid(r->operation) || ts == NULL ||
	    strlen(ts) > 40 || !param_value_valid(ts) ||
	    km_time_parse(ts, &us) != KM_OK)
		return KM_ERR_INVALID_REQUEST;
	km_buf_append_str(&b, "kms-ceremony-request/v1\nofficer: ");
	km_buf_append_str(&b, officer);
	km_buf_append_str(&b, "\noperation: ");
	km_buf_append_str(&b, r->operation);
	km_buf_append_str(&b, "\n");
	append_params(&b, r);
	km_buf_append_str(&b, "ts: ");
	km_buf_append_str(&b, ts);
	km_buf_append_str(&b, "\n");
	rc = buf_take(&b, msg);
	km_buf_free(&b);
	return rc;
}

int
cer_ts_fresh(const char *ts, int64_t now_us)
{
	int64_t us, d;

	if (ts == NULL || km_time_parse(ts, &us) != KM_OK)
		return KM_ERR_INVALID_REQUEST;
	d = us > now_us ? us - now_us : now_us - us;
	return d <= (int64_t)CER_TS_WINDOW_S * 1000000 ? KM_OK :
	    KM_ERR_INVALID_SIGNATURE;
}
