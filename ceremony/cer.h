/* Ceremonies (DESIGN.md section 7, docs/CEREMONIES.md): the canonical
 * request text and its digest, officer signatures, and the quorum engine.
 * These parts are pure (no store, no token) so unit tests and kmsctl use
 * them as they are; cer_run.h has the parts that act on kmsd's state. */
#ifndef CER_H
#define CER_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

#define CER_NAME_MAX		32	/* officer names */
#define CER_OP_MAX		32	/* operation names ("mek.rotate") */
#define CER_ID_HEX		16	/* ceremony ids: lower-case hex */
#define CER_NONCE_HEX		32
#define CER_MAX_PARAMS		8
#define CER_PARAM_NAME_MAX	32	/* [a-z0-9_], first a letter */
#define CER_PARAM_VALUE_MAX	512	/* printable ASCII, no edge spaces */
#define CER_REQUESTER_MAX	64
#define CER_SIG_B64_MAX		160	/* base64 of a DER ECDSA P-256 signature */
#define CER_MAX_OFFICERS	64
/* How far a signed revoke's or request's ts may be from kmsd's clock. */
#define CER_TS_WINDOW_S		300

struct cer_param {
	char name[CER_PARAM_NAME_MAX + 1];
	char value[CER_PARAM_VALUE_MAX + 1];
};

/* The fields of a ceremony request; cer_request_text makes them text. */
struct cer_request {
	char id[CER_ID_HEX + 1];
	char operation[CER_OP_MAX + 1];
	struct cer_param params[CER_MAX_PARAMS];	/* sorted by name */
	size_t n_params;
	int quorum;
	char requester[CER_REQUESTER_MAX + 1];
	int64_t created;		/* microseconds, whole seconds */
	int64_t expires;		/* microseconds, whole seconds */
	char nonce[CER_NONCE_HEX + 1];
	char state[65];			/* hex SHA-256 of the target state */
};

/* 1 when `name` is an officer name: 1..32 of [a-z0-9._-], the first a
 * letter or digit. Lower case only, so "Alice" and "alice" cannot be two
 * officers. */
int cer_officer_name_valid(const char *name);
/* 1 for "<word>.<word>" of [a-z_], at most CER_OP_MAX bytes. */
int cer_operation_valid(const char *op);
/* 1 when `s` may be a requester: an officer name or "token:<16 hex>". */
int cer_requester_valid(const char *s);

/* Sets parameter `name` (kept sorted by name). KM_ERR_INVALID_REQUEST for
 * a bad name or value, a second value for a name, or too many. */
int cer_param_set(struct cer_request *r, const char *name, const char *value)
    KM_WUR;
/* The value of parameter `name`, or NULL. */
const char *cer_param_get(const struct cer_request *r, const char *name);

/* The canonical text of DESIGN.md section 7, every line ending in "\n":
 * kms-ceremony/v1, id, operation, param.<name> (sorted), quorum,
 * requester, created, expires (RFC 3339, seconds, UTC), nonce, state.
 * *text is NUL-terminated and owned by the caller (free()).
 * KM_ERR_INVALID_REQUEST if a field is malformed. */
int cer_request_text(const struct cer_request *r, char **text) KM_WUR;
/* Parses a canonical text back; only text that cer_request_text would
 * write byte for byte is accepted (KM_ERR_INVALID_REQUEST otherwise). */
int cer_request_parse(const char *text, size_t len, struct cer_request *r)
    KM_WUR;
/* Lower-case hex SHA-256 of `len` bytes. */
void cer_digest_hex(const void *data, size_t len, char out[65]);

/* Signed messages. Each *msg is NUL-terminated, owned by the caller. */
/* "kms-approval/v1\n<digest>\n<officer>\n<decision>\n"; decision is
 * "approve" or "reject". */
int cer_approval_message(const char *digest, const char *officer,
    const char *decision, char **msg) KM_WUR;
/* The emergency revoke (docs/CEREMONIES.md):
 * "kms-revoke/v1\nkey: <k>\nversion: <v>\nofficer: <o>\nts: <t>\nnonce: <n>\n" */
int cer_revoke_message(const char *key, uint32_t version, const char *officer,
    const char *ts, const char *nonce, char **msg) KM_WUR;
/* An officer asking for a ceremony: "kms-ceremony-request/v1\n
 * officer: <o>\noperation: <op>\nparam.<n>: <v>\n...ts: <t>\n", the
 * parameters of `r` (its other fields are not used). */
int cer_request_message(const struct cer_request *r, const char *officer,
    const char *ts, char **msg) KM_WUR;
/* Checks a ts of a signed message: RFC 3339 within CER_TS_WINDOW_S of
 * `now_us`. */
int cer_ts_fresh(const char *ts, int64_t now_us) KM_WUR;

/* Officer keys: ECDSA P-256 only. `spki` is DER SubjectPublicKeyInfo. */
/* Accepts a PEM "PUBLIC KEY" or the DER; *spki (free()) is the DER,
 * re-encoded by OpenSSL. KM_ERR_INVALID_REQUEST for anything else. */
int cer_pubkey_parse(const void *in, size_t len, unsigned char **spki,
    size_t *spki_len) KM_WUR;
/* PEM text of a DER SubjectPublicKeyInfo; *pem (free()) NUL-terminated. */
int cer_pubkey_pem(const unsigned char *spki, size_t len, char **pem) KM_WUR;
/* Verifies `sig_b64`, base64 of a DER ECDSA P-256/SHA-256 signature over
 * `msg`, under `spki`. KM_OK or KM_ERR_INVALID_SIGNATURE (also for a
 * malformed or non-canonical signature). */
int cer_verify(const unsigned char *spki, size_t spki_len, const char *msg,
    size_t msg_len, const char *sig_b64) KM_WUR;
/* Base64 DER of the raw r || s a token returns (CKM_ECDSA). */
int cer_sig_from_raw(const unsigned char rs[64], char **sig_b64) KM_WUR;

/* The quorum engine. */
struct cer_officer {
	char name[CER_NAME_MAX + 1];
	unsigned char *spki;		/* owned */
	size_t spki_len;
	int active;			/* 0: removed */
	int64_t added_at;
	int64_t removed_at;
};
void cer_officers_free(struct cer_officer *o, size_t n);

struct cer_decision {
	char officer[CER_NAME_MAX + 1];
	int approve;			/* 1 approve, 0 reject */
	char signature[CER_SIG_B64_MAX + 1];
	int64_t at;
};

/* Why a decision does not count (CER_COUNTED when it does). */
enum cer_why {
	CER_COUNTED = 0,
	CER_NOT_OFFICER,	/* no officer of that name */
	CER_REMOVED,		/* the officer was removed */
	CER_REQUESTER,		/* the requester's own decision */
	CER_BAD_SIGNATURE,	/* not a valid signature by that officer */
	CER_DUPLICATE,		/* a second decision of the same officer */
};
const char *cer_why_name(enum cer_why w);

struct cer_tally {
	int required;			/* M */
	size_t approved;		/* counted approvals */
	size_t rejected;		/* counted rejects */
	size_t eligible;		/* active officers other than the requester */
	char approvers[CER_MAX_OFFICERS][CER_NAME_MAX + 1];	/* sorted */
	enum cer_why why[CER_MAX_OFFICERS * 2];	/* per decision, in order */
	int executable;			/* approved >= required */
	int impossible;			/* eligible - rejected < required */
};

/* Counts the decisions `d` on the ceremony with `digest` asked for by
 * `requester`, against the officer registry `off`: a decision counts when
 * its officer is registered and active, is not the requester, has not
 * decided before in `d`, and signed the approval message of its decision.
 * `required` is M. At most CER_MAX_OFFICERS * 2 decisions. */
int cer_tally(const char *digest, const char *requester, int required,
    const struct cer_officer *off, size_t n_off, const struct cer_decision *d,
    size_t n_d, struct cer_tally *t) KM_WUR;

#endif
