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

#endif
