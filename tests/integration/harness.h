/* Integration-test harness: a live kmsd on a free port with a temporary
 * SoftHSM token, an HTTP client (libcurl) with global answer checks, and
 * small helpers for the suites. Everything public is prefixed ith_. */
#ifndef HARNESS_H
#define HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include <CUnit/CUnit.h>
#include <jansson.h>

/* Headers of one answer that the suites look at. */
struct ith_headers {
	char request_id[128];	/* X-Request-Id of the final answer; "" if absent */
	int n_request_id;	/* how many X-Request-Id lines it had */
	char content_type[128];
};

/* --- Lifecycle ---------------------------------------------------------- */

/* Creates a temporary data dir under /tmp, writes softhsm2.conf (and sets
 * SOFTHSM2_CONF) and kmsd.conf (plus `extra_conf`, key = value lines, may be
 * NULL), runs `kmsctl init --init-token`, reads admin.token and starts kmsd.
 * Returns 0, or -1 after printing why to stderr. */
int ith_setup(const char *extra_conf);
/* Starts kmsd on the existing data dir and waits (bounded) for its port file
 * and GET /v1/ready == 200. 0 or -1. */
int ith_start(void);
/* SIGTERM, a bounded wait, then SIGKILL. Returns 0 when kmsd exited on its
 * own with status 0, 1 when it exited otherwise or had to be killed, -1 when
 * it was not running. *how (may be NULL) describes the exit. */
int ith_stop(char *how, size_t howlen);
/* ith_stop then ith_start on the same data dir. */
int ith_restart(void);
/* Stops kmsd and removes the data dir unless KMS_TEST_KEEP is set. */
void ith_teardown(void);

int ith_running(void);
/* kmsd's pid, or -1. */
pid_t ith_pid(void);
/* SIGKILL, no drain, no stop record: a crash. 0, or -1 if not running. */
int ith_kill9(void);
const char *ith_data_dir(void);
const char *ith_base_url(void);	/* "http://127.0.0.1:<port>" */
const char *ith_admin_token(void);
/* Prints the last `lines` lines of <dir>/kmsd.log to stderr. */
void ith_print_log_tail(int lines);

/* --- Failure reporting (into the running CUnit test) -------------------- */

void ith_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define ith_fail(...) ith_fail_at(__FILE__, __LINE__, __VA_ARGS__)
/* Records a pass (cond true) or a failure with the formatted message. */
int ith_check_at(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define ith_check(cond, ...) ith_check_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* --- HTTP --------------------------------------------------------------- */

/* One request to kmsd. `token` (may be NULL) becomes "Authorization: Bearer
 * <token>"; `body` (may be NULL) is sent as application/json. Every answer
 * is checked globally: X-Request-Id present, 32 hex characters, never seen
 * before; no 5xx (a 503 only while ith_expect_503 is on); an error answer
 * (>= 400) is {"error":{"code","message","request_id"}} with request_id
 * equal to the header. Outputs may be NULL; *answer is the parsed JSON body
 * (NULL if not JSON), owned by the caller. Returns 0 when an answer came,
 * -1 (failure recorded) when none did. */
int ith_request_at(const char *file, int line, const char *method,
    const char *path, const char *token, const char *body, long *status,
    json_t **answer, struct ith_headers *headers);
#define ith_request(...) ith_request_at(__FILE__, __LINE__, __VA_ARGS__)

/* The same with a body of any bytes and extra header lines (NULL-ended
 * array, may be NULL); *raw (may be NULL) gets the NUL-terminated body. */
int ith_request_raw_at(const char *file, int line, const char *method,
    const char *path, const char *token, const void *body, size_t body_len,
    const char *const *extra_headers, long *status, char **raw,
    size_t *raw_len, json_t **answer, struct ith_headers *headers);
#define ith_request_raw(...) ith_request_raw_at(__FILE__, __LINE__, __VA_ARGS__)

/* Sends `body` (reference stolen; may be NULL), records a failure unless the
 * status is `expect` and, when `code` is not NULL, error.code is `code`.
 * Returns the answer (caller decrefs) or NULL. */
json_t *ith_call_at(const char *file, int line, const char *method,
    const char *path, const char *token, json_t *body, long expect,
    const char *code);
#define ith_call(...) ith_call_at(__FILE__, __LINE__, __VA_ARGS__)

/* Same as ith_call for a status that may be any of `n` values. */
json_t *ith_call_any_at(const char *file, int line, const char *method,
    const char *path, const char *token, const char *body, const long *expect,
    size_t n, long *got);
#define ith_call_any(...) ith_call_any_at(__FILE__, __LINE__, __VA_ARGS__)

/* For a test's own client threads (one CURL handle each): POSTs `body`
 * to `path` with `token`, no global checks. Returns the parsed answer or
 * NULL; *status is 0 when no answer came; id gets X-Request-Id. */
typedef void CURL;
json_t *ith_post_mt(CURL *c, const char *path, const char *token,
    const char *body, long *status, char id[33]);
/* The same with one more header line (may be NULL). */
json_t *ith_post_mt_hdr(CURL *c, const char *path, const char *token,
    const char *body, const char *header, long *status, char id[33]);

/* While on, a 503 is not a failure by itself. */
void ith_expect_503(int on);
/* Number of distinct X-Request-Id values seen so far. */
size_t ith_request_ids_seen(void);
/* Adds an id seen by a client of a test's own (not thread-safe: call it
 * from the main thread). 1 when it was new, 0 when seen before. */
int ith_record_request_id(const char *id);

/* --- API helpers (each records failures at the caller's line) ---------- */

/* POST /v1/tokens as admin; returns the token string (caller frees) and
 * *id (caller frees; id may be NULL). keys/ttl may be NULL. */
char *ith_token_create_at(const char *file, int line, const char *role,
    const char *keys, const char *ttl, char **id);
#define ith_token_create(...) ith_token_create_at(__FILE__, __LINE__, __VA_ARGS__)

/* POST /v1/keys as admin with {name, type: aes256-gcm} plus the members of
 * `extra` (stolen; may be NULL). 0 on 201. */
int ith_key_create_at(const char *file, int line, const char *name,
    json_t *extra);
#define ith_key_create(...) ith_key_create_at(__FILE__, __LINE__, __VA_ARGS__)

/* Wrap: returns the ciphertext (caller frees) and *version (may be NULL).
 * `ctx` is borrowed; NULL sends no context field. */
char *ith_wrap_at(const char *file, int line, const char *key,
    const char *token, const unsigned char *pt, size_t len, json_t *ctx,
    long *version);
#define ith_wrap(...) ith_wrap_at(__FILE__, __LINE__, __VA_ARGS__)

/* Unwrap that must succeed with the bytes `pt`; 0 when it did. *version and
 * *rewrap (may be NULL) are the answer's key_version/rewrap_recommended. */
int ith_unwrap_expect_at(const char *file, int line, const char *key,
    const char *token, const char *ct, json_t *ctx, const unsigned char *pt,
    size_t len, long *version, int *rewrap);
#define ith_unwrap_expect(...) ith_unwrap_expect_at(__FILE__, __LINE__, __VA_ARGS__)

/* Any call expected to fail: checks status and code; returns 0 if both
 * matched. `body` is stolen. */
int ith_expect_error_at(const char *file, int line, const char *method,
    const char *path, const char *token, json_t *body, long status,
    const char *code);
#define ith_expect_error(...) ith_expect_error_at(__FILE__, __LINE__, __VA_ARGS__)

/* --- Bytes -------------------------------------------------------------- */

void ith_random(unsigned char *buf, size_t n);
/* Padded standard base64; caller frees. */
char *ith_b64(const unsigned char *in, size_t len);
/* Strict padded base64 decode; 0 or -1. *out caller frees. */
int ith_unb64(const char *in, unsigned char **out, size_t *outlen);
/* base64url without padding; caller frees. */
char *ith_b64url(const unsigned char *in, size_t len);
/* Hex into `out` (2*len+1 bytes), lower or upper case. */
void ith_hex(const unsigned char *in, size_t len, char *out, int upper);

/* Reads a whole file; NULL if it cannot. *len may be NULL. Caller frees. */
unsigned char *ith_read_file(const char *path, size_t *len);

/* A fresh name with the given prefix, unique within this run: "<p>-<n>".
 * Returned in a static ring of buffers: copy it if kept long. */
const char *ith_name(const char *prefix);

/* Runs argv (argv[0] a path) with stdout and stderr appended to `logpath`
 * and the caller's environment; returns its exit status, or -1 when it
 * could not run, died of a signal or did not finish in `timeout_ms`. */
int ith_run(char *const argv[], const char *logpath, long timeout_ms);

/* CLOCK_MONOTONIC in milliseconds. */
long long ith_now_ms(void);
/* Sleeps `ms` milliseconds, the whole time even if a signal arrives. */
void ith_sleep_ms(long ms);

/* --- Running the tests --------------------------------------------------- */

/* Runs every registered CUnit suite, verbose. Returns how many tests,
 * suites and assertions failed: 0 when all passed. The registry is left
 * for the caller to clean up. */
unsigned ith_cu_run(void);

/* One test of a program that is a single suite; a list ends with
 * { NULL, NULL }. */
struct ith_test {
	const char *name;
	CU_TestFunc run;
};

/* The whole main() of a program that is a single suite named `suite`:
 * libcurl set up, `tests` registered in order and run, `clean` (may be
 * NULL) called after the last one, everything torn down. Returns the
 * program's exit status: 0 all passed, 1 a test failed, 2 the suite could
 * not be registered. */
int ith_suite_main(const char *suite, CU_CleanupFunc clean,
    const struct ith_test *tests);

/* ith_suite_main for a benchmark (tests/bench): CUnit prints nothing, so
 * stdout holds only the benchmark's own lines. Same exit status. */
int ith_bench_main(const char *suite, const struct ith_test *tests);

/* --- The audit log on disk (shared by the durability and chaos suites) -- */

/* Every record's request id and outcome, read from the whole log. */
struct ith_audit_rec {
	char id[33];
	char outcome;		/* 'o'k, 'd'enied, 'e'rror, '?' */
};
struct ith_audit {
	struct ith_audit_rec *recs;	/* sorted by id (ids may repeat) */
	size_t n, cap;
	long long last_seq;		/* -1 for an empty log */
	int recovery_records;		/* records with op "recovery" */
};

/* Reads <data dir>/audit/audit-*.jsonl in name order and checks the
 * chain: seq runs on from 0 without gaps, seq 0's prev is 64 zeros and
 * every other prev is the hex SHA-256 of the line before (without its
 * newline). A last line without a newline is torn: a failure, unless
 * `torn_ok` (a crash just happened; kmsd cuts it at the next start), then
 * it is skipped. Each break is recorded as a failure naming the file and
 * seq. Returns 1 when the chain verifies; *l (free with ith_audit_free) is
 * filled either way. */
int ith_audit_read(struct ith_audit *l, int torn_ok);
/* The record of request `id` (the first, if several), or NULL. */
const struct ith_audit_rec *ith_audit_find(const struct ith_audit *l,
    const char *id);
void ith_audit_free(struct ith_audit *l);
/* 1 when the newest segment's last byte is not a newline (a torn line). */
int ith_audit_torn(void);

#endif
