/* The quorum engine: which recorded decisions count, and whether M of them
 * make a ceremony executable or its rejects make that impossible. */
#include "cer.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void
cer_officers_free(struct cer_officer *o, size_t n)
{
	size_t i;

	if (o == NULL)
		return;
	for (i = 0; i < n; i++)
		free(o[i].spki);
	free(o);
}

const char *
cer_why_name(enum cer_why w)
{
	switch (w) {
	case CER_COUNTED: return "counted";
	case CER_NOT_OFFICER: return "not a registered officer";
	case CER_REMOVED: return "officer removed";
	case CER_REQUESTER: return "the requester's own decision";
	case CER_BAD_SIGNATURE: return "signature does not verify";
	case CER_DUPLICATE: return "second decision of the same officer";
	}
	return "unknown";
}

static const struct cer_officer *
officer_find(const struct cer_officer *off, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(off[i].name, name) == 0)
			return &off[i];
	return NULL;
}

static int
cmp_name(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

int
cer_tally(const char *digest, const char *requester, int required,
    const struct cer_officer *off, size_t n_off, const struct cer_decision *d,
    size_t n_d, struct cer_tally *t)
{
	const struct cer_officer *o = NULL;
	char *msg = NULL;
	size_t i, j;
	int rc = KM_ERR_INTERNAL;

	memset(t, 0, sizeof(*t));
	if (required < 1 || n_d > CER_MAX_OFFICERS * 2 ||
	    n_off > CER_MAX_OFFICERS || requester == NULL || digest == NULL) {
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	t->required = required;
	for (i = 0; i < n_off; i++)
		if (off[i].active && strcmp(off[i].name, requester) != 0)
			t->eligible++;
	for (i = 0; i < n_d; i++) {
		enum cer_why w = CER_COUNTED;

		for (j = 0; j < i && w == CER_COUNTED; j++)
			if (strcmp(d[j].officer, d[i].officer) == 0)
				w = CER_DUPLICATE;
		if (w == CER_COUNTED && strcmp(d[i].officer, requester) == 0)
			w = CER_REQUESTER;
		if (w == CER_COUNTED &&
		    (o = officer_find(off, n_off, d[i].officer)) == NULL)
			w = CER_NOT_OFFICER;
		else if (w == CER_COUNTED && !o->active)
			w = CER_REMOVED;
		if (w == CER_COUNTED) {
			free(msg);
			msg = NULL;
			if ((rc = cer_approval_message(digest, d[i].officer,
			    d[i].approve ? "approve" : "reject", &msg)) != KM_OK)
				goto out;
			if (cer_verify(o->spki, o->spki_len, msg, strlen(msg),
			    d[i].signature) != KM_OK)
				w = CER_BAD_SIGNATURE;
		}
		t->why[i] = w;
		if (w != CER_COUNTED)
			continue;
		if (d[i].approve) {
			memcpy(t->approvers[t->approved], d[i].officer,
			    sizeof(t->approvers[0]));
			t->approved++;
		} else
			t->rejected++;
	}
	qsort(t->approvers, t->approved, sizeof(t->approvers[0]), cmp_name);
	t->executable = t->approved >= (size_t)required;
	t->impossible = t->eligible < (size_t)required ||
	    t->eligible - t->rejected < (size_t)required;
	rc = KM_OK;
out:
	free(msg);
	return rc;
}
