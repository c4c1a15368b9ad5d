/* kmsctl audit: bundle export, the offline bundle verifier, the chain head
 * and the record query (docs/AUDIT.md). */
#ifndef KMSCTL_AUDIT_H
#define KMSCTL_AUDIT_H

#include <stddef.h>

#include "km.h"

/* Runs `kmsctl audit export|verify|head|records ...`; argv[0] is "audit".
 * `token_file` is kmsctl's global --token-file (NULL when not given).
 * Returns a kmsctl exit code (kmsctl_http.h); verify returns 0 valid,
 * 1 invalid, 2 usage or I/O error. */
int cli_audit_main(int argc, char **argv, const char *token_file) KM_WUR;

/*
 * The verifier on its own: no files, no network, so a fuzz target or a unit
 * test can drive it with buffers. Feed it in this order:
 *
 *   cli_audit_verifier_new(keys.json)
 *   cli_audit_trusted_checkpoint(line)          optional
 *   cli_audit_checkpoint_line(line)             each line of checkpoints.jsonl
 *   cli_audit_segment_begin(name)               each segment, in name order,
 *     cli_audit_verify_line(line)               then each of its lines
 *   cli_audit_verify_end()
 *
 * Lines are passed without their newline; they may hold any bytes. Every
 * call returns CLI_AUDIT_VALID, or CLI_AUDIT_INVALID once a problem is
 * found (then every later call returns CLI_AUDIT_INVALID at once and
 * cli_audit_verifier_message() says where and why), or CLI_AUDIT_ERROR
 * when memory ran out.
 */
enum cli_audit_result {
	CLI_AUDIT_VALID = 0,
	CLI_AUDIT_INVALID = 1,
	CLI_AUDIT_ERROR = 2,
};

struct cli_audit_verifier;

/* Reads keys.json ({origin, keys:[{kid, pem, ...}]}); each key must be EC
 * P-256 and its kid its RFC 7638 thumbprint. *out is set even when the
 * result is CLI_AUDIT_INVALID (so the message can be read); the caller
 * frees it. */
int cli_audit_verifier_new(const char *keys_json, size_t len,
    struct cli_audit_verifier **out) KM_WUR;
void cli_audit_verifier_free(struct cli_audit_verifier *v);

/* The checkpoint an auditor kept ({seq, hash, ...}); its signature is
 * checked when its kid is in keys.json. */
int cli_audit_trusted_checkpoint(struct cli_audit_verifier *v,
    const char *line, size_t len) KM_WUR;
/* One line of checkpoints.jsonl: known kid, good signature, seq above the
 * previous checkpoint's. `complete` is 0 for a last line that had no
 * newline. */
int cli_audit_checkpoint_line(struct cli_audit_verifier *v, const char *line,
    size_t len, int complete) KM_WUR;
/* Starts segment `name` (audit-<12 digits>.jsonl): it must begin where the
 * previous one ended. */
int cli_audit_segment_begin(struct cli_audit_verifier *v, const char *name)
    KM_WUR;
/* One record line: JSON object, contiguous seq, prev = SHA-256 of the line
 * before, the fields every record has, the quorum of an executed ceremony,
 * and the hash of any checkpoint that seals it. `complete` is 0 for a last
 * line that had no newline. */
int cli_audit_verify_line(struct cli_audit_verifier *v, const char *line,
    size_t len, int complete) KM_WUR;
/* The checks that need the whole bundle (a checkpoint or the trusted
 * checkpoint beyond its end: a truncated log). On CLI_AUDIT_VALID the
 * message is the summary line. */
int cli_audit_verify_end(struct cli_audit_verifier *v) KM_WUR;

/* After CLI_AUDIT_INVALID: "seq N: why", "checkpoint at line K: why",
 * "keys.json: why" or "trusted checkpoint: why". After a successful
 * cli_audit_verify_end: "valid: ...". Owned by the verifier. */
const char *cli_audit_verifier_message(const struct cli_audit_verifier *v);
/* Informational lines ("note: ..."), each ending in a newline; "" if none. */
const char *cli_audit_verifier_notes(const struct cli_audit_verifier *v);

#endif
