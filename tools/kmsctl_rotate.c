/* kmsctl emergency-rotate (rotate, revoke the exposed version, exposure
 * report from the audit log, bulk rewrap) and kmsctl key inventory. */
#include "kmsctl_rewrap.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "kmsctl_ceremony.h"
#include "kmsctl_cli.h"
#include "kmsctl_http.h"

#define REPORT_PAGE "50"	/* records per page: batches can be large */

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
is_use_op(const char *op)
{
	static const char *const ops[] = { "wrap", "unwrap", "rewrap", "datakey",
		"sign", "verify", NULL };
	size_t i;

	for (i = 0; op != NULL && ops[i] != NULL; i++)
		if (strcmp(op, ops[i]) == 0)
			return 1;
	return 0;
}

static const char *
str_of(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static int
int_is(const json_t *o, const char *k, json_int_t v)
{
	json_t *x = json_object_get(o, k);

	return json_is_integer(x) && json_integer_value(x) == v;
}

static int
str_is(const json_t *o, const char *k, const char *v)
{
	const char *s = str_of(o, k);

	return s != NULL && strcmp(s, v) == 0;
}

/* ---- the exposure report ---- */

struct report {
	json_t *uses;		/* [{seq, ts, actor, op, outcome, ...}] */
	uint64_t ok;		/* uses with outcome ok */
	json_t *actors;		/* actor -> count */
	json_t *contexts;	/* canonical context text -> 1 */
	char first[40], last[40];
};

/* Adds one use: a record, or an item of a batch record (item >= 0). */
static int
report_add(struct report *rp, const json_t *rec, const json_t *src, long item,
    const char *outcome)
{
	const char *actor = str_of(rec, "actor"), *ts = str_of(rec, "ts");
	json_t *ctx = json_object_get(src, "context"), *use;
	char *ctext = NULL;

	use = json_pack("{s:O?, s:s?, s:s?, s:s?, s:s?, s:O?, s:s?, s:s?, s:O?,"
	    " s:O?, s:O?, s:O?}",
	    "seq", json_object_get(rec, "seq"), "ts", ts, "actor", actor,
	    "op", str_of(rec, "op"), "outcome", outcome,
	    "status", json_object_get(rec, "status"),
	    "request_id", str_of(rec, "request_id"), "key", str_of(rec, "key"),
	    "version", json_object_get(src, "version"),
	    "context", ctx,
	    "destination_key", json_object_get(src, "destination_key"),
	    "destination_version", json_object_get(src, "destination_version"));
	if (use == NULL)
		return -1;
	if (item >= 0)
		json_object_set_new(use, "item", json_integer(item));
	if (json_array_append_new(rp->uses, use) != 0)
		return -1;
	if (outcome != NULL && strcmp(outcome, "ok") == 0)
		rp->ok++;
	if (actor != NULL)
		json_object_set_new(rp->actors, actor, json_integer(
		    json_integer_value(json_object_get(rp->actors, actor)) + 1));
	if (ctx != NULL &&
	    (ctext = json_dumps(ctx, JSON_COMPACT | JSON_SORT_KEYS)) != NULL) {
		json_object_set_new(rp->contexts, ctext, json_true());
		cli_json_str_free(ctext);
	}
	if (ts != NULL) {
		if (rp->first[0] == '\0' || strcmp(ts, rp->first) < 0)
			snprintf(rp->first, sizeof(rp->first), "%s", ts);
		if (strcmp(ts, rp->last) > 0)
			snprintf(rp->last, sizeof(rp->last), "%s", ts);
	}
	return 0;
}

/* The uses of version v of key `key` in one record: the record itself,
 * or the items of a batch, as the source of an operation or as the
 * destination of a rewrap. */
static int
report_record(struct report *rp, const json_t *rec, const char *key,
    json_int_t v)
{
	const json_t *items = json_object_get(rec, "items"), *it;
	int src_key = str_is(rec, "key", key);
	size_t i;

	if (!is_use_op(str_of(rec, "op")))
		return 0;
	if (json_is_array(items)) {
		json_array_foreach(items, i, it) {
			int dst = str_is(it, "destination_key", key) &&
			    int_is(it, "destination_version", v);

			if ((src_key && int_is(it, "version", v)) || dst)
				if (report_add(rp, rec, it, (long)i,
				    str_of(it, "outcome")) != 0)
					return -1;
		}
		return 0;
	}
	if ((src_key && int_is(rec, "version", v)) ||
	    (str_is(rec, "destination_key", key) &&
	    int_is(rec, "destination_version", v)))
		return report_add(rp, rec, rec, -1, str_of(rec, "outcome"));
	return 0;
}

/* Appends "&name=value" with '+' (an RFC 3339 offset) percent-encoded,
 * since a query string reads '+' as a space. */
static void
query_time(char *buf, size_t len, const char *name, const char *value)
{
	size_t o = strlen(buf);

	if (value == NULL)
		return;
	o += (size_t)snprintf(buf + o, o < len ? len - o : 0, "&%s=", name);
	for (; *value != '\0' && o + 4 < len; value++) {
		if (*value == '+') {
			memcpy(buf + o, "%2B", 3);
			o += 3;
		} else
			buf[o++] = *value;
	}
	buf[o < len ? o : len - 1] = '\0';
}

/* Reads every audit record naming `key` (its own or a rewrap's
 * destination) between since and until, page by page. */
static int
report_collect(struct cli_http *h, const char *key, json_int_t v,
    const char *since, const char *until, struct report *rp)
{
	json_t *ans = NULL, *recs, *rec, *next;
	char *base = NULL, *path = NULL;
	char tail[256];
	long long from = 0;
	size_t i;
	int r;

	if ((r = cli_http_path(h, "/v1/audit/records?limit=" REPORT_PAGE "&key=",
	    key, NULL, &base)) != CLI_OK)
		goto out;
	for (;;) {
		size_t len;

		snprintf(tail, sizeof(tail), "&from=%lld", from);
		query_time(tail, sizeof(tail), "since", since);
		query_time(tail, sizeof(tail), "until", until);
		len = strlen(base) + strlen(tail) + 1;
		free(path);
		if ((path = malloc(len)) == NULL) {
			r = CLI_USAGE;
			goto out;
		}
		snprintf(path, len, "%s%s", base, tail);
		if ((r = cli_http_call(h, "GET", path, NULL, &ans)) != CLI_OK)
			goto out;
		recs = json_object_get(ans, "records");
		json_array_foreach(recs, i, rec)
			if (report_record(rp, rec, key, v) != 0) {
				r = CLI_USAGE;
				goto out;
			}
		next = json_object_get(ans, "next");
		if (!json_is_integer(next))
			break;
		from = (long long)json_integer_value(next);
		json_decref(ans);
		ans = NULL;
	}
	r = CLI_OK;
out:
	json_decref(ans);
	free(base);
	free(path);
	return r;
}

static void
csv_field(FILE *f, const char *s, int first)
{
	if (!first)
		fputc(',', f);
	if (s == NULL)
		return;
	if (strpbrk(s, ",\"\r\n") == NULL) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void
csv_json(FILE *f, const json_t *v)
{
	char buf[32], *s;

	if (v == NULL || json_is_null(v)) {
		csv_field(f, NULL, 0);
	} else if (json_is_string(v)) {
		csv_field(f, json_string_value(v), 0);
	} else if (json_is_integer(v)) {
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT,
		    json_integer_value(v));
		csv_field(f, buf, 0);
	} else if ((s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS)) != NULL) {
		csv_field(f, s, 0);
		cli_json_str_free(s);
	}
}

/* Writes the report: CSV for *.csv, JSON otherwise. */
static int
report_write(const char *path, const struct report *rp, const char *key,
    json_int_t v, const char *since, const char *until)
{
	/* The CSV columns, as in the header line. */
	static const char *const cols[] = { "seq", "ts", "actor", "op",
		"outcome", "status", "request_id", "key", "version", "context",
		"destination_key", "destination_version", "item" };
	size_t plen = strlen(path), i, j;
	const json_t *u;
	json_t *doc;
	FILE *f;
	int ok;

	if ((f = fopen(path, "w")) == NULL) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path,
		    strerror(errno));
		return CLI_USAGE;
	}
	if (plen > 4 && strcmp(path + plen - 4, ".csv") == 0) {
		fputs("seq,ts,actor,op,outcome,status,request_id,key,version,"
		    "context,destination_key,destination_version,item\n", f);
		json_array_foreach(rp->uses, i, u) {
			for (j = 0; j < sizeof(cols) / sizeof(cols[0]); j++)
				csv_json(f, json_object_get(u, cols[j]));
			fputc('\n', f);
		}
		ok = 1;
	} else {
		doc = json_pack("{s:s, s:I, s:s?, s:s?, s:I, s:I, s:O, s:I, s:O}",
		    "key", key, "version", v, "since", since, "until", until,
		    "uses", (json_int_t)json_array_size(rp->uses),
		    "ok_uses", (json_int_t)rp->ok, "actors", rp->actors,
		    "distinct_contexts", (json_int_t)json_object_size(rp->contexts),
		    "records", rp->uses);
		ok = doc != NULL && json_dumpf(doc, f, JSON_INDENT(2)) == 0 &&
		    fputc('\n', f) != EOF;
		json_decref(doc);
	}
	ok = fflush(f) == 0 && ok;
	if (fclose(f) != 0 || !ok) {
		fprintf(stderr, "kmsctl: writing %s failed\n", path);
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* ---- the signed one-officer revoke (docs/CEREMONIES.md) ---- */

/* base64 DER ECDSA P-256/SHA-256 of `msg` with the officer's PEM key. */
static int
officer_sign(const char *pem_path, const char *msg, char **sig_b64)
{
	EVP_PKEY *pk = NULL;
	FILE *f;
	int r = CLI_USAGE;

	*sig_b64 = NULL;
	if ((f = fopen(pem_path, "r")) == NULL) {
		fprintf(stderr, "kmsctl: cannot open %s: %s\n", pem_path,
		    strerror(errno));
		goto out;
	}
	pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (pk == NULL || EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC) {
		fprintf(stderr, "kmsctl: %s is not an EC private key (PEM)\n",
		    pem_path);
		goto out;
	}
	r = cli_officer_sign_key(pk, msg, "the revoke", sig_b64);
out:
	EVP_PKEY_free(pk);
	return r;
}

static int
revoke_signed(struct cli_http *h, const char *key, json_int_t v,
    const char *officer, const char *pem)
{
	unsigned char rnd[16];
	char ts[40], nonce[33], *msg = NULL, *sig = NULL, *path = NULL, sfx[64];
	json_t *body = NULL, *ans = NULL;
	size_t len;
	int r = CLI_USAGE;

	if (km_random(rnd, sizeof(rnd)) != KM_OK)
		goto out;
	km_hex(rnd, sizeof(rnd), nonce);
	km_time_format(km_now_us(), 0, ts, sizeof(ts));
	len = strlen(key) + strlen(officer) + 200;
	if ((msg = malloc(len)) == NULL)
		goto out;
	snprintf(msg, len, "kms-revoke/v1\nkey: %s\nversion: %" JSON_INTEGER_FORMAT
	    "\nofficer: %s\nts: %s\nnonce: %s\n", key, v, officer, ts, nonce);
	if ((r = officer_sign(pem, msg, &sig)) != CLI_OK)
		goto out;
	snprintf(sfx, sizeof(sfx), "/versions/%" JSON_INTEGER_FORMAT "/revoke", v);
	if ((body = json_pack("{s:s, s:s, s:s, s:s}", "officer", officer, "ts",
	    ts, "nonce", nonce, "signature", sig)) == NULL ||
	    (r = cli_http_path(h, "/v1/keys/", key, sfx, &path)) != CLI_OK)
		goto out;
	r = cli_http_call(h, "POST", path, body, &ans);
out:
	free(msg);
	free(sig);
	free(path);
	json_decref(body);
	json_decref(ans);
	return r;
}

/* ---- emergency-rotate ---- */

static const char usage_emergency[] =
    "Usage: kmsctl emergency-rotate KEY [--exposed-version N]\n"
    "           [--since TIME] [--until TIME] [--report FILE.csv|FILE.json]\n"
    "           [--admin-token-file F] [--officer-token-file F]\n"
    "           [--officer NAME --officer-key PEM] [--auditor-token-file F]\n"
    "           [--app-token-file F --sqlite DB --table T --column C\n"
    "            [--context-columns a,b] [--key-column K] | --jsonl FILE ...]\n"
    "           [--batch N] [--rewrap-first] [--no-rotate]\n"
    "\n"
    "The emergency rotation of docs/ROTATION.md in one command, with the\n"
    "elapsed time of each step:\n"
    "  1. rotate KEY (admin token), unless the exposed version is not primary\n"
    "  2. revoke the exposed version (default: the primary before step 1),\n"
    "     signed by one security officer (--officer NAME --officer-key PEM,\n"
    "     the officer's P-256 private key; docs/CEREMONIES.md)\n"
    "  3. exposure report from the audit log (auditor token): every use of\n"
    "     the version (actor, time, op, context, request id) since TIME\n"
    "     (default: the version's creation) -> --report, summary on stdout\n"
    "  4. with --sqlite or --jsonl: rewrap the application's DEKs to the new\n"
    "     primary (app token), as `kmsctl rewrap` does\n"
    "\n"
    "Blobs under a revoked version can no longer be rewrapped. With\n"
    "--rewrap-first, step 4 runs before step 2, so the DEKs under the exposed\n"
    "version are saved (use it when a token, not the key, was exposed); the\n"
    "version is revoked right after.\n"
    "\n"
    "Tokens: --admin-token-file (else --token-file / KMS_TOKEN) for step 1\n"
    "and to send step 2 (or --officer-token-file: the signature, not the\n"
    "bearer, authorises the revoke), --auditor-token-file for step 3,\n"
    "--app-token-file for step 4. A step without what it needs is skipped\n"
    "and the exit status is 1.\n"
    "\n"
    "Exit status: 0 every step done and nothing left under an old version;\n"
    "1 a step was refused or skipped, or blobs remain; 2 usage; 3 kmsd\n"
    "unreachable.\n";

enum {
	EO_EXPOSED = RO_NEXT, EO_SINCE, EO_UNTIL, EO_REPORT, EO_ADMIN, EO_OFFICER_T,
	EO_OFFICER, EO_OFFICER_KEY, EO_AUDITOR, EO_APP, EO_FIRST, EO_NOROTATE,
};

struct emergency {
	const char *key, *since, *until, *report;
	const char *admin_tf, *officer_tf, *officer, *officer_key, *auditor_tf;
	const char *app_tf;
	json_int_t exposed;
	int rewrap_first, no_rotate, rewrap;
	struct rw_opts rw;
	double t0;
	int failed;		/* a step was refused or skipped */
};

static void
step_done(struct emergency *e, int n, int total, const char *name, double t,
    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void
step_done(struct emergency *e, int n, int total, const char *name, double t,
    const char *fmt, ...)
{
	va_list ap;

	(void)e;
	printf("step %d/%d %-15s ", n, total, name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (%.2f s)\n", mono_s() - t);
	fflush(stdout);
}

/* Loads KEY and finds the version to revoke and when it was created. */
static int
em_key(struct cli_http *admin, struct emergency *e, json_t **key)
{
	char *path = NULL;
	int r;

	if ((r = cli_http_path(admin, "/v1/keys/", e->key, NULL, &path)) ==
	    CLI_OK)
		r = cli_http_call(admin, "GET", path, NULL, key);
	free(path);
	return r;
}

static const json_t *
version_of(const json_t *key, json_int_t v)
{
	const json_t *vs = json_object_get(key, "versions"), *x;
	size_t i;

	json_array_foreach(vs, i, x)
		if (int_is(x, "version", v))
			return x;
	return NULL;
}

static int
em_http(const char *tf, const char *fallback, struct cli_http **h)
{
	return cli_http_new(tf != NULL ? tf : fallback, h);
}

static int
em_rewrap(struct emergency *e, int n, int total, int *exit_code)
{
	struct cli_http *app = NULL;
	struct rw_stats st;
	double t = mono_s();
	int r;

	if (e->app_tf == NULL) {
		step_done(e, n, total, "rewrap", t, "skipped: no --app-token-file");
		e->failed = 1;
		return CLI_OK;
	}
	if ((r = cli_http_new(e->app_tf, &app)) != CLI_OK)
		return r;
	r = rw_run(app, &e->rw, &st);
	cli_http_free(app);
	if (r == CLI_UNREACHABLE || r == CLI_USAGE)
		return r;
	step_done(e, n, total, "rewrap", t, "%" PRIu64 " rewrapped, %" PRIu64
	    " skipped, %" PRIu64 " failed; %" PRIu64 " not at the primary version"
	    "%s", st.rewrapped, st.skipped, st.failed, st.not_at_target,
	    st.under_revoked ? " (under the revoked version: lost unless rewrapped "
	    "first)" : "");
	if (r != CLI_OK)
		*exit_code = CLI_FAIL;
	return CLI_OK;
}

static int
em_revoke(struct emergency *e, struct cli_http *admin, const json_t *ver,
    int n, int total)
{
	struct cli_http *off = NULL;
	const char *state = str_of(ver, "state");
	double t = mono_s();
	int r;

	if (state != NULL && (strcmp(state, "revoked") == 0 ||
	    strcmp(state, "destroyed") == 0)) {
		step_done(e, n, total, "revoke", t, "version %" JSON_INTEGER_FORMAT
		    " is %s already", e->exposed, state);
		return CLI_OK;
	}
	if (e->officer != NULL) {
		if (e->officer_tf != NULL &&
		    (r = cli_http_new(e->officer_tf, &off)) != CLI_OK)
			return r;
		r = revoke_signed(off != NULL ? off : admin, e->key, e->exposed,
		    e->officer, e->officer_key);
		cli_http_free(off);
	} else {
		step_done(e, n, total, "revoke", t, "skipped: give --officer NAME "
		    "and --officer-key PEM (a revoke is signed by an officer)");
		e->failed = 1;
		return CLI_OK;
	}
	if (r == CLI_UNREACHABLE || r == CLI_USAGE)
		return r;
	if (r != CLI_OK) {
		step_done(e, n, total, "revoke", t, "REFUSED (see above)");
		e->failed = 1;
		return CLI_OK;
	}
	step_done(e, n, total, "revoke", t, "version %" JSON_INTEGER_FORMAT
	    " revoked%s%s%s", e->exposed, e->officer ? " by officer " : "",
	    e->officer ? e->officer : "", e->officer ? " (signed)" : "");
	return CLI_OK;
}

static int
em_report(struct emergency *e, int n, int total)
{
	struct cli_http *aud = NULL;
	struct report rp;
	double t = mono_s();
	int r;

	memset(&rp, 0, sizeof(rp));
	if (e->auditor_tf == NULL) {
		step_done(e, n, total, "exposure report", t, "skipped: no "
		    "--auditor-token-file");
		e->failed = 1;
		return CLI_OK;
	}
	if ((rp.uses = json_array()) == NULL ||
	    (rp.actors = json_object()) == NULL ||
	    (rp.contexts = json_object()) == NULL) {
		r = CLI_USAGE;
		goto out;
	}
	if ((r = cli_http_new(e->auditor_tf, &aud)) != CLI_OK)
		goto out;
	if ((r = report_collect(aud, e->key, e->exposed, e->since, e->until,
	    &rp)) != CLI_OK) {
		if (r == CLI_FAIL) {
			step_done(e, n, total, "exposure report", t, "REFUSED");
			e->failed = 1;
			r = CLI_OK;
		}
		goto out;
	}
	if (e->report != NULL && (r = report_write(e->report, &rp, e->key,
	    e->exposed, e->since, e->until)) != CLI_OK)
		goto out;
	step_done(e, n, total, "exposure report", t, "%zu uses of version %"
	    JSON_INTEGER_FORMAT " (%" PRIu64 " ok) by %zu actor(s) under %zu "
	    "context(s)%s%s%s%s%s%s", json_array_size(rp.uses), e->exposed, rp.ok,
	    json_object_size(rp.actors), json_object_size(rp.contexts),
	    rp.first[0] ? ", " : "", rp.first, rp.first[0] ? " .. " : "", rp.last,
	    e->report ? " -> " : "", e->report ? e->report : "");
	{
		const char *actor;
		json_t *cnt;

		json_object_foreach(rp.actors, actor, cnt)
			printf("    %-24s %" JSON_INTEGER_FORMAT " use(s)\n", actor,
			    json_integer_value(cnt));
	}
	r = CLI_OK;
out:
	cli_http_free(aud);
	json_decref(rp.uses);
	json_decref(rp.actors);
	json_decref(rp.contexts);
	return r;
}

static int
em_parse(struct emergency *e, int argc, char **argv)
{
	static const struct option opts[] = {
		RW_LONG_OPTS,
		{ "exposed-version", required_argument, NULL, EO_EXPOSED },
		{ "since", required_argument, NULL, EO_SINCE },
		{ "until", required_argument, NULL, EO_UNTIL },
		{ "report", required_argument, NULL, EO_REPORT },
		{ "admin-token-file", required_argument, NULL, EO_ADMIN },
		{ "token-file", required_argument, NULL, EO_ADMIN },
		{ "officer-token-file", required_argument, NULL, EO_OFFICER_T },
		{ "officer", required_argument, NULL, EO_OFFICER },
		{ "officer-key", required_argument, NULL, EO_OFFICER_KEY },
		{ "auditor-token-file", required_argument, NULL, EO_AUDITOR },
		{ "app-token-file", required_argument, NULL, EO_APP },
		{ "rewrap-first", no_argument, NULL, EO_FIRST },
		{ "no-rotate", no_argument, NULL, EO_NOROTATE },
		{ "help", no_argument, NULL, RO_HELP },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int ch;

	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		switch (ch) {
		case RO_HELP:
			fputs(usage_emergency, stdout);
			return 1;
		case EO_EXPOSED:
			errno = 0;
			e->exposed = strtoll(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || e->exposed < 1) {
				fprintf(stderr, "kmsctl: --exposed-version must be a "
				    "version number\n");
				return -1;
			}
			break;
		case EO_SINCE: e->since = optarg; break;
		case EO_UNTIL: e->until = optarg; break;
		case EO_REPORT: e->report = optarg; break;
		case EO_ADMIN: e->admin_tf = optarg; break;
		case EO_OFFICER_T: e->officer_tf = optarg; break;
		case EO_OFFICER: e->officer = optarg; break;
		case EO_OFFICER_KEY: e->officer_key = optarg; break;
		case EO_AUDITOR: e->auditor_tf = optarg; break;
		case EO_APP: e->app_tf = optarg; break;
		case EO_FIRST: e->rewrap_first = 1; break;
		case EO_NOROTATE: e->no_rotate = 1; break;
		case '?':
			return -1;
		default:
			if (rw_parse_opt(&e->rw, ch, optarg) != 0)
				return -1;
			e->rewrap = 1;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "kmsctl: expected one KEY\n");
		return -1;
	}
	e->key = argv[optind];
	if ((e->officer == NULL) != (e->officer_key == NULL)) {
		fprintf(stderr, "kmsctl: --officer and --officer-key go together\n");
		return -1;
	}
	if (e->rewrap) {
		if (e->rw.key_column == NULL)
			e->rw.key = e->key;
		if (rw_check_opts(&e->rw) != 0)
			return -1;
	}
	return 0;
}

int
cli_emergency_main(int argc, char **argv, const char *token_file)
{
	struct emergency e;
	struct cli_http *admin = NULL;
	json_t *key = NULL, *after = NULL;
	const json_t *ver;
	char *path = NULL;
	int r = CLI_USAGE, step = 0, total, exit_code = CLI_OK, rotate;
	double t;

	memset(&e, 0, sizeof(e));
	e.rw.batch = 500;
	e.rw.label = "rewrap";
	e.t0 = mono_s();
	if ((r = em_parse(&e, argc, argv)) != 0) {
		if (r > 0) {
			r = CLI_OK;
			goto out;
		}
		fprintf(stderr, "Try 'kmsctl emergency-rotate --help'.\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((r = em_http(e.admin_tf, token_file, &admin)) != CLI_OK)
		goto out;
	t = mono_s();
	if ((r = em_key(admin, &e, &key)) != CLI_OK)
		goto out;
	if (e.exposed == 0)
		e.exposed = json_integer_value(json_object_get(key,
		    "primary_version"));
	if (e.exposed == 0 || (ver = version_of(key, e.exposed)) == NULL) {
		fprintf(stderr, "kmsctl: key %s has no version %" JSON_INTEGER_FORMAT
		    " (and no primary to default to)\n", e.key, e.exposed);
		r = CLI_FAIL;
		goto out;
	}
	if (e.since == NULL)
		e.since = str_of(ver, "created_at");
	rotate = !e.no_rotate && int_is(key, "primary_version", e.exposed);
	total = 3 + e.rewrap;
	printf("emergency-rotate %s: exposed version %" JSON_INTEGER_FORMAT
	    " (%s), uses since %s\n", e.key, e.exposed, str_of(ver, "state"),
	    e.since ? e.since : "the start");
	fflush(stdout);

	/* 1. A new primary, so wraps go on under a version not exposed. */
	t = mono_s();
	if (rotate) {
		if ((r = cli_http_path(admin, "/v1/keys/", e.key, "/rotate",
		    &path)) != CLI_OK)
			goto out;
		if ((r = cli_http_call(admin, "POST", path, NULL, &after)) != CLI_OK)
			goto out;
		step_done(&e, ++step, total, "rotate", t, "version %" JSON_INTEGER_FORMAT
		    " is primary; version %" JSON_INTEGER_FORMAT " is active",
		    json_integer_value(json_object_get(after, "primary_version")),
		    e.exposed);
	} else {
		step_done(&e, ++step, total, "rotate", t, "not needed: version %"
		    JSON_INTEGER_FORMAT " is not primary", e.exposed);
	}
	if (e.rewrap_first && e.rewrap &&
	    (r = em_rewrap(&e, ++step, total, &exit_code)) != CLI_OK)
		goto out;
	if ((r = em_revoke(&e, admin, ver, ++step, total)) != CLI_OK)
		goto out;
	if ((r = em_report(&e, ++step, total)) != CLI_OK)
		goto out;
	if (!e.rewrap_first && e.rewrap &&
	    (r = em_rewrap(&e, ++step, total, &exit_code)) != CLI_OK)
		goto out;
	printf("done in %.2f s%s\n", mono_s() - e.t0, e.failed ?
	    " (some steps were skipped or refused)" : "");
	r = e.failed ? CLI_FAIL : exit_code;
out:
	fflush(stdout);
	free(path);
	json_decref(key);
	json_decref(after);
	cli_http_free(admin);
	rw_opts_free(&e.rw);
	return r;
}

/* ---- key inventory ---- */

static const char usage_inventory[] =
    "Usage: kmsctl key inventory [--json] [--auditor-token-file F]\n"
    "                            [--window DURATION] [--token-file F]\n"
    "\n"
    "Every key the token may see: type, purpose, versions and their states,\n"
    "age (AGE), time to the next rotation (ROTATES) and to expiry (EXPIRES),\n"
    "and the use of versions other than the primary: the last use of any of\n"
    "them (OLD_LAST_USED, kmsd's use counters) and, with an auditor token,\n"
    "OLD_USES: the unwraps, rewraps from and verifies under them since the\n"
    "primary was made, within the last DURATION (default 24h), counted from\n"
    "the audit log in one pass over the records of the window.\n";

/* "12d", "5h", "40m", "3s"; negative as "-12d". */
static void
ago(int64_t seconds, char *out, size_t len)
{
	int64_t a = seconds < 0 ? -seconds : seconds;
	const char *sign = seconds < 0 ? "-" : "";

	if (a >= 86400)
		snprintf(out, len, "%s%lldd", sign, (long long)(a / 86400));
	else if (a >= 3600)
		snprintf(out, len, "%s%lldh", sign, (long long)(a / 3600));
	else if (a >= 60)
		snprintf(out, len, "%s%lldm", sign, (long long)(a / 60));
	else
		snprintf(out, len, "%s%llds", sign, (long long)a);
}

static int64_t
secs_from_now(const char *ts, int64_t now_us, int *ok)
{
	int64_t us;

	*ok = ts != NULL && km_time_parse(ts, &us) == KM_OK;
	return *ok ? (us - now_us) / 1000000 : 0;
}

/* 1 when `item` (a record or a batch item) of record `rec` used an old
 * version of a key: an unwrap, a rewrap from, or a verify under a version
 * other than the primary, at or after the primary was made. Wraps,
 * datakeys and signs always use the primary of their time. */
static int
old_use(const json_t *rec, const json_t *item, json_int_t primary,
    int64_t primary_at)
{
	const char *op = str_of(rec, "op"), *ts = str_of(rec, "ts");
	int64_t us;

	if (op == NULL || (strcmp(op, "unwrap") != 0 &&
	    strcmp(op, "rewrap") != 0 && strcmp(op, "verify") != 0))
		return 0;
	if (!str_is(item, "outcome", "ok") ||
	    !json_is_integer(json_object_get(item, "version")) ||
	    int_is(item, "version", primary))
		return 0;
	/* created_at has whole seconds: a use in the rotation's second
	 * counts. */
	return ts != NULL && km_time_parse(ts, &us) == KM_OK &&
	    us / 1000000 >= primary_at / 1000000;
}

/* Counts per key the old-version uses (old_use) in the audit records
 * since `since`, in one pass over them. */
static int
old_uses(struct cli_http *h, const json_t *keys, const char *since,
    json_t *counts)
{
	json_t *ans = NULL, *recs, *rec, *next;
	char path[256];
	long long from = 0;
	size_t i, j, k;
	int r;

	for (;;) {
		snprintf(path, sizeof(path), "/v1/audit/records?limit=" REPORT_PAGE
		    "&from=%lld", from);
		query_time(path, sizeof(path), "since", since);
		if ((r = cli_http_call(h, "GET", path, NULL, &ans)) != CLI_OK)
			return r;
		recs = json_object_get(ans, "records");
		json_array_foreach(recs, i, rec) {
			const char *name = str_of(rec, "key");
			const json_t *items = json_object_get(rec, "items"), *it, *kk;
			json_int_t primary = -1, n = 0;
			int64_t primary_at = 0;

			if (name == NULL)
				continue;
			json_array_foreach(keys, k, kk) {
				if (!str_is(kk, "name", name))
					continue;
				primary = json_integer_value(json_object_get(kk,
				    "primary_version"));
				json_array_foreach(json_object_get(kk, "versions"), j,
				    it)
					if (int_is(it, "version", primary) &&
					    km_time_parse(str_of(it, "created_at") ?
					    str_of(it, "created_at") : "", &primary_at) !=
					    KM_OK)
						primary_at = 0;
				break;
			}
			if (primary < 0)
				continue;
			if (json_is_array(items)) {
				json_array_foreach(items, j, it)
					n += old_use(rec, it, primary, primary_at);
			} else {
				n = old_use(rec, rec, primary, primary_at);
			}
			if (n > 0)
				json_object_set_new(counts, name, json_integer(
				    json_integer_value(json_object_get(counts, name)) + n));
		}
		next = json_object_get(ans, "next");
		if (!json_is_integer(next))
			break;
		from = (long long)json_integer_value(next);
		json_decref(ans);
		ans = NULL;
	}
	json_decref(ans);
	return CLI_OK;
}

int
cli_inventory_main(int argc, char **argv, const char *token_file)
{
	enum { IO_JSON = RO_NEXT, IO_AUDITOR, IO_WINDOW };
	static const struct option opts[] = {
		{ "json", no_argument, NULL, IO_JSON },
		{ "auditor-token-file", required_argument, NULL, IO_AUDITOR },
		{ "window", required_argument, NULL, IO_WINDOW },
		{ "token-file", required_argument, NULL, RO_TOKEN },
		{ "help", no_argument, NULL, RO_HELP },
		{ NULL, 0, NULL, 0 },
	};
	const char *auditor_tf = NULL, *next;
	struct cli_http *h = NULL, *aud = NULL;
	json_t *all = NULL, *page = NULL, *counts = NULL, *out = NULL, *kk;
	char *path = NULL, since[40];
	int64_t window = 86400, now = km_now_us();
	size_t i, j;
	int ch, json = 0, r = CLI_USAGE;

	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		switch (ch) {
		case RO_HELP:
			fputs(usage_inventory, stdout);
			return CLI_OK;
		case IO_JSON: json = 1; break;
		case IO_AUDITOR: auditor_tf = optarg; break;
		case RO_TOKEN: token_file = optarg; break;
		case IO_WINDOW:
			if (km_duration_parse(optarg, &window) != KM_OK) {
				fprintf(stderr, "kmsctl: --window is a duration "
				    "like 24h or 7d\n");
				return CLI_USAGE;
			}
			break;
		default:
			return cli_usage_hint("key inventory ");
		}
	}
	if (optind != argc) {
		fprintf(stderr, "kmsctl: unexpected argument '%s'\n", argv[optind]);
		return CLI_USAGE;
	}
	if ((all = json_array()) == NULL || (counts = json_object()) == NULL)
		goto out;
	if ((r = cli_http_new(token_file, &h)) != CLI_OK)
		goto out;
	if ((path = strdup("/v1/keys?limit=1000")) == NULL) {
		r = CLI_USAGE;
		goto out;
	}
	for (;;) {
		if ((r = cli_http_call(h, "GET", path, NULL, &page)) != CLI_OK)
			goto out;
		if (json_array_extend(all, json_object_get(page, "keys")) != 0) {
			r = CLI_UNREACHABLE;
			goto out;
		}
		if ((next = str_of(page, "next")) == NULL)
			break;
		free(path);
		if ((r = cli_http_path(h, "/v1/keys?limit=1000&after=", next, NULL,
		    &path)) != CLI_OK)
			goto out;
		json_decref(page);
		page = NULL;
	}
	km_time_format(now - window * 1000000, 0, since, sizeof(since));
	if (auditor_tf != NULL) {
		if ((r = cli_http_new(auditor_tf, &aud)) != CLI_OK ||
		    (r = old_uses(aud, all, since, counts)) != CLI_OK)
			goto out;
	}
	if ((out = json_array()) == NULL) {
		r = CLI_USAGE;
		goto out;
	}
	if (!json)
		printf("%-24s %-10s %-7s %-4s %-28s %-5s %-8s %-8s %-9s %s\n",
		    "NAME", "TYPE", "PURPOSE", "VERS", "STATES", "AGE", "ROTATES",
		    "EXPIRES", "OLD_USES", "OLD_LAST_USED");
	json_array_foreach(all, i, kk) {
		const json_t *vs = json_object_get(kk, "versions"), *v;
		json_int_t primary = json_integer_value(json_object_get(kk,
		    "primary_version"));
		const char *last_old = NULL, *nm = str_of(kk, "name");
		char states[256] = "", age_s[32], rot[32], exp[32], uses[32];
		json_t *st = json_object(), *row;
		size_t used = 0;
		int ok;
		int64_t age = -secs_from_now(str_of(kk, "created_at"), now, &ok);

		json_array_foreach(vs, j, v) {
			const char *s = str_of(v, "state"), *lu = str_of(v,
			    "last_used_at");

			if (s != NULL)
				json_object_set_new(st, s, json_integer(
				    json_integer_value(json_object_get(st, s)) + 1));
			if (used < sizeof(states))
				used += (size_t)snprintf(states + used,
				    sizeof(states) - used, "%s%lld:%s", j ? " " : "",
				    (long long)json_integer_value(json_object_get(v,
				    "version")), s ? s : "?");
			if (!int_is(v, "version", primary) && lu != NULL &&
			    (last_old == NULL || strcmp(lu, last_old) > 0))
				last_old = lu;
		}
		ago(age, age_s, sizeof(age_s));
		ago(secs_from_now(str_of(kk, "next_rotation_at"), now, &ok), rot,
		    sizeof(rot));
		if (!ok)
			snprintf(rot, sizeof(rot), "-");
		ago(secs_from_now(str_of(kk, "expires_at"), now, &ok), exp,
		    sizeof(exp));
		if (!ok)
			snprintf(exp, sizeof(exp), "-");
		if (aud != NULL)
			snprintf(uses, sizeof(uses), "%" JSON_INTEGER_FORMAT,
			    json_integer_value(json_object_get(counts, nm ? nm : "")));
		else
			snprintf(uses, sizeof(uses), "-");
		row = json_pack("{s:s?, s:s?, s:s?, s:I, s:o, s:O, s:s?, s:I, s:O,"
		    " s:O, s:O, s:o, s:s?}",
		    "name", nm, "type", str_of(kk, "type"),
		    "purpose", str_of(kk, "purpose"),
		    "versions", (json_int_t)json_array_size(vs), "states", st,
		    "primary_version", json_object_get(kk, "primary_version"),
		    "created_at", str_of(kk, "created_at"),
		    "age_seconds", (json_int_t)age,
		    "rotation_period", json_object_get(kk, "rotation_period"),
		    "next_rotation_at", json_object_get(kk, "next_rotation_at"),
		    "expires_at", json_object_get(kk, "expires_at"),
		    "non_primary_uses", aud != NULL ? json_integer(
		    json_integer_value(json_object_get(counts, nm ? nm : ""))) :
		    json_null(),
		    "non_primary_last_used_at", last_old);
		if (row == NULL || json_array_append_new(out, row) != 0) {
			r = CLI_USAGE;
			goto out;
		}
		if (!json)
			printf("%-24s %-10s %-7s %-4zu %-28s %-5s %-8s %-8s %-9s %s\n",
			    nm ? nm : "?", str_of(kk, "type") ? str_of(kk, "type") :
			    "?", str_of(kk, "purpose") ? str_of(kk, "purpose") : "?",
			    json_array_size(vs), states, age_s, rot, exp, uses,
			    last_old ? last_old : "-");
	}
	if (json) {
		char now_s[40];
		json_t *doc;

		km_time_format(now, 0, now_s, sizeof(now_s));
		doc = json_pack("{s:s, s:s, s:I, s:b, s:O}", "generated_at",
		    now_s, "window_start", since, "window_seconds",
		    (json_int_t)window, "uses_from_audit", aud != NULL, "keys", out);
		if (doc == NULL || json_dumpf(doc, stdout, JSON_INDENT(2)) != 0 ||
		    fputc('\n', stdout) == EOF) {
			json_decref(doc);
			r = CLI_USAGE;
			goto out;
		}
		json_decref(doc);
	}
	r = fflush(stdout) == 0 ? CLI_OK : CLI_USAGE;
out:
	free(path);
	json_decref(all);
	json_decref(page);
	json_decref(counts);
	json_decref(out);
	cli_http_free(h);
	cli_http_free(aud);
	return r;
}
