/* The append-only, hash-chained audit log of DESIGN.md section 5. Every
 * record is on disk (fsync) before audit_append returns; concurrent callers
 * share one fsync (group commit). */
#ifndef AUDIT_H
#define AUDIT_H

#include <stdint.h>

#include <jansson.h>

#include "km.h"

struct audit;

/* Opens the log in `dir` (created 0700 if absent). A torn last line left by
 * a crash is cut and a `recovery` record says how many bytes went. A last
 * line that is complete but not a valid record is refused (KM_ERR_AUDIT). */
int audit_open(const char *dir, struct audit **out) KM_WUR;
void audit_free(struct audit *a);

/* Appends `rec` (an object with request_id, actor, op, ... ; it is not
 * modified) as the next record: seq, ts and prev are put first. Returns
 * when the line is durable; *seq (may be NULL) receives its number.
 * KM_ERR_AUDIT when it could not be made durable. */
int audit_append(struct audit *a, json_t *rec, uint64_t *seq) KM_WUR;

/* KM_OK while the log is writable (the last append or sync succeeded). */
int audit_check(struct audit *a) KM_WUR;

/* Next seq to be written and the hex hash of the last line. */
void audit_head(struct audit *a, uint64_t *next_seq, char prev_hex[65]);

/* Counters since open: records appended and fsyncs of the log. */
void audit_stats(struct audit *a, uint64_t *records, uint64_t *fsyncs,
    uint64_t *failures);
/* With 0, every append runs its own fsync under the lock (no group
 * commit); for the benchmark that shows what group commit buys. */
void audit_set_group_commit(struct audit *a, int on);

/* Starts a new segment once the current one holds `bytes` (default 64 MiB). */
void audit_set_segment_bytes(struct audit *a, uint64_t bytes);

/* Signs `msg`: *sig (DER ECDSA, owned by the caller, free()) on KM_OK. */
typedef int (*audit_sign_fn)(void *arg, const unsigned char *msg,
    size_t msg_len, unsigned char **sig, size_t *sig_len);

/* Turns on signed checkpoints: one every `every_n` records or every
 * `every_seconds` (see audit_tick), over DESIGN.md section 5's text with
 * `origin`, signed by `sign` and labelled with `kid`. */
int audit_set_signer(struct audit *a, audit_sign_fn sign, void *arg,
    const char *kid, const char *origin, uint64_t every_n,
    int64_t every_seconds) KM_WUR;
/* Writes a checkpoint now if records were added since the last one. */
int audit_checkpoint(struct audit *a) KM_WUR;
/* Called about once a second: writes a time-due checkpoint, and retries a
 * failed log so the service recovers when the disk does. */
void audit_tick(struct audit *a);

/* Calls `cb` for each durable record with from <= seq <= to, in order,
 * with the line (no newline) and its seq; a non-zero return stops. */
int audit_scan(struct audit *a, uint64_t from, uint64_t to,
    int (*cb)(void *arg, uint64_t seq, const char *line, size_t len),
    void *arg) KM_WUR;
/* [{name, first_seq, bytes}] of the segment files, oldest first. */
int audit_segments(struct audit *a, json_t **list) KM_WUR;
/* Reads a whole file of the log directory: a segment or
 * "checkpoints.jsonl" (no other names). Only durable bytes are returned. */
int audit_read_file(struct audit *a, const char *name, unsigned char **data,
    size_t *len) KM_WUR;
/* The newest checkpoint as a JSON object, or NULL when there is none. */
json_t *audit_last_checkpoint(struct audit *a);

#endif
