/* kmsd: the key service daemon. Wires config, token, store, audit log and
 * HTTP server together, and stops cleanly on SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/sha.h>

#include "api.h"
#include "audit.h"
#include "cer_run.h"
#include "cfg.h"
#include "hsm.h"
#include "idem.h"
#include "jwk.h"
#include "kmsd_version.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "scheduler.h"
#include "server.h"
#include "store.h"
#include "usage.h"

static void
usage_text(void)
{
	printf("Usage: kmsd [--config FILE]\n"
	    "\n"
	    "Key service beside a PKCS#11 token: wraps and unwraps data keys\n"
	    "over HTTP, keeps every operation in a hash-chained audit log.\n"
	    "\n"
	    "Options:\n"
	    "  -c, --config FILE   key = value settings (also KMS_CONFIG)\n"
	    "  -h, --help          this text\n"
	    "  -V, --version       print the version\n"
	    "\n"
	    "Run `kmsctl init` once before the first start.\n"
	    "SIGTERM or SIGINT: finish running requests, flush, exit 0.\n"
	    "Exit codes: 0 clean stop, 1 start-up failed, 2 usage.\n\n");
	cfg_print_help();
}

/* jansson's allocations may hold plaintext DEKs: wipe them on free. */
static void
json_wipe_free(void *p)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, malloc_usable_size(p));
	free(p);
}

static void
harden_process(void)
{
	struct rlimit no_core = { 0, 0 };

	umask(077);
	/* Core dumps would hold unwrapped DEKs and the PIN. */
	if (setrlimit(RLIMIT_CORE, &no_core) != 0)
		log_warn("cannot disable core dumps: %s", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		log_warn("cannot clear the dumpable flag: %s", strerror(errno));
}

static int
write_port_file(const char *path, uint16_t port)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return KM_ERR_CONFIG;
	if ((f = fopen(tmp, "w")) == NULL)
		return KM_ERR_IO;
	fprintf(f, "%u\n", port);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return KM_ERR_IO;
	return KM_OK;
}

static int
audit_lifecycle(struct audit *a, const char *op)
{
	unsigned char rid[16];
	char rid_hex[33];
	json_t *rec;
	int r;

	if (km_random(rid, sizeof(rid)) != KM_OK)
		return KM_ERR_INTERNAL;
	km_hex(rid, sizeof(rid), rid_hex);
	rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:n, s:n, s:s}",
	    "request_id", rid_hex, "actor", "kmsd", "op", op, "outcome", "ok",
	    "status", 0, "key", "version", "kmsd_version", KMSD_VERSION);
	if (rec == NULL)
		return KM_ERR_NOMEM;
	r = audit_append(a, rec, NULL);
	json_decref(rec);
	return r;
}

static int
open_hsm(const struct cfg *c, struct hsm **out)
{
	struct hsm_config hc = { 0 };
	char *pin = NULL;
	size_t pin_len = 0;
	int r;

	if ((r = cfg_read_pin(c, &pin, &pin_len)) != KM_OK)
		return r;
	hc.module = c->pkcs11_module;
	hc.token_uri = c->pkcs11_token;
	hc.pin = pin;
	hc.pin_len = pin_len;
	hc.sessions = (size_t)c->hsm_sessions;
	hc.key_cache = (size_t)c->key_cache_size;
	r = hsm_open(&hc, out);
	km_secure_free(pin, pin_len);
	return r;
}

static int
check_mek(struct store *st, struct hsm *h)
{
	uint32_t v;
	int r;

	if ((r = store_mek_current(st, &v)) != KM_OK) {
		log_error("no MEK version is recorded in the store; run "
		    "`kmsctl init` first");
		return KM_ERR_CONFIG;
	}
	if ((r = hsm_mek_find(h, v)) != KM_OK) {
		log_error("MEK version %u (kms-mek-v%u) is not in the token", v, v);
		return KM_ERR_HSM;
	}
	return KM_OK;
}

struct signer {
	struct hsm *hsm;
	const char *label;
};

/* Checkpoint signatures: ECDSA P-256 in the token over SHA-256(msg),
 * returned as DER so `openssl dgst -verify` takes them as they are. */
static int
sign_checkpoint(void *arg, const unsigned char *msg, size_t len,
    unsigned char **sig, size_t *sig_len)
{
	struct signer *s = arg;
	unsigned char digest[SHA256_DIGEST_LENGTH], raw[64], *der = NULL;
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *ss = NULL;
	int n, rc;

	*sig = NULL;
	*sig_len = 0;
	SHA256(msg, len, digest);
	if ((rc = hsm_ec_sign(s->hsm, s->label, digest, raw)) != KM_OK)
		return rc;
	if ((es = ECDSA_SIG_new()) == NULL ||
	    (r = BN_bin2bn(raw, 32, NULL)) == NULL ||
	    (ss = BN_bin2bn(raw + 32, 32, NULL)) == NULL ||
	    !ECDSA_SIG_set0(es, r, ss)) {
		BN_free(r);
		BN_free(ss);
		ECDSA_SIG_free(es);
		return KM_ERR_NOMEM;
	}
	n = i2d_ECDSA_SIG(es, &der);
	ECDSA_SIG_free(es);
	if (n <= 0)
		return KM_ERR_INTERNAL;
	if ((*sig = malloc((size_t)n)) == NULL) {
		OPENSSL_free(der);
		return KM_ERR_NOMEM;
	}
	memcpy(*sig, der, (size_t)n);
	*sig_len = (size_t)n;
	OPENSSL_free(der);
	return KM_OK;
}

/* Loads the checkpoint key's public half, publishes it in ctx and turns on
 * signed checkpoints. */
static int
setup_checkpoints(const struct cfg *c, struct api_ctx *ctx, struct signer *sg)
{
	unsigned char *der = NULL;
	size_t der_len = 0;
	char kid[44], *pem = NULL;
	json_t *jwk = NULL;
	int r;

	if ((r = hsm_ec_public(ctx->hsm, c->audit_key_label, &der, &der_len)) != KM_OK) {
		log_error("audit-signing key %s is not in the token; run `kmsctl "
		    "init`", c->audit_key_label);
		goto out;
	}
	if ((r = jwk_from_spki(der, der_len, &jwk, kid)) != KM_OK ||
	    (r = jwk_spki_pem(der, der_len, &pem)) != KM_OK)
		goto out;
	ctx->audit_origin = c->audit_origin;
	ctx->audit_keys = json_pack("[{s:s, s:s, s:s, s:O}]", "label",
	    c->audit_key_label, "kid", kid, "pem", pem, "jwk", jwk);
	if (ctx->audit_keys == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	sg->hsm = ctx->hsm;
	sg->label = c->audit_key_label;
	audit_set_segment_bytes(ctx->audit, (uint64_t)c->audit_segment_bytes);
	r = audit_set_signer(ctx->audit, sign_checkpoint, sg, kid, c->audit_origin,
	    (uint64_t)c->audit_checkpoint_records, c->audit_checkpoint_seconds);
out:
	json_decref(jwk);
	free(pem);
	free(der);
	return r;
}

/* The request counters of /metrics, by every route's op and the ops the
 * dispatcher gives requests that match no route (issue 7). */
static int
metrics_setup(struct api_ctx *ctx)
{
	static const char *const extra[] = { "unrouted", "oversized", "unknown" };
	const char *ops[128];
	const struct api_route *rt;
	size_t n = 0, i;

	for (rt = api_routes; rt->pattern != NULL && n < 120; rt++)
		ops[n++] = rt->op;
	for (i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		ops[n++] = extra[i];
	return metrics_new(ops, n, &ctx->metrics);
}

/* kmsd_ceremonies_pending: open ceremonies that have not expired, as the
 * ceremony module lists them (at most 1000, its list limit). */
static int
ceremonies_pending(void *arg, uint64_t *n)
{
	struct api_ctx *ctx = arg;
	json_t *j = NULL;
	int r;

	*n = 0;
	if (ctx->cer == NULL)
		return KM_OK;
	if ((r = cer_list_json(ctx->cer, "open", 0, 1000, &j)) != KM_OK)
		return r;
	*n = json_array_size(json_object_get(j, "ceremonies"));
	json_decref(j);
	return KM_OK;
}

/* The rotation scheduler of service/scheduler.c, unless scheduler = false. */
static int
sched_setup(const struct cfg *c, struct api_ctx *ctx, struct sched **out)
{
	struct sched_config sc = {
		.jitter_seconds = c->rotation_jitter_seconds,
		.max_rotations_per_tick = (size_t)c->scheduler_max_rotations,
		.expiry_check_seconds = c->expiry_check_seconds,
		.retry_seconds = c->rotation_retry_seconds,
	};

	*out = NULL;
	if (!c->scheduler) {
		log_info("scheduler off: no scheduled rotations or expiry alerts");
		return KM_OK;
	}
	return sched_new(ctx, &sc, NULL, out);
}

/* Waits for SIGTERM/SIGINT, flushing use counters and running the
 * scheduler on the way. */
static void
run_until_signal(const struct cfg *c, struct api_ctx *ctx, struct sched *sched)
{
	struct timespec tick = { 1, 0 };
	sigset_t set;
	int64_t last_flush = km_now_us();
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	for (;;) {
		sig = sigtimedwait(&set, NULL, &tick);
		if (sig == SIGTERM || sig == SIGINT) {
			log_info("signal %d: stopping", sig);
			return;
		}
		audit_tick(ctx->audit);
		if (sched != NULL && sched_tick(sched, NULL) != KM_OK)
			log_debug("scheduler: store unreadable, next tick retries");
		if (km_now_us() - last_flush >= c->usage_flush_seconds * 1000000) {
			if (usage_flush(ctx->usage, ctx->store) != KM_OK)
				log_debug("use counters kept for the next flush");
			last_flush = km_now_us();
		}
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = getenv("KMS_CONFIG");
	struct api_ctx ctx = { 0 };
	struct signer sg = { 0 };
	struct server *srv = NULL;
	struct sched *sched = NULL;
	struct cfg *c = NULL;
	sigset_t set;
	uint16_t port;
	int ch, r, status = 1;

	while ((ch = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': config = optarg; break;
		case 'h': usage_text(); return 0;
		case 'V': printf("kmsd %s\n", KMSD_VERSION); return 0;
		default: usage_text(); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "kmsd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	harden_process();
	json_set_alloc_funcs(malloc, json_wipe_free);
	/* Block the stop signals in every thread; main waits for them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit must fail the write (EFBIG), not kill the daemon:
	 * the audit log then fails closed and recovers. */
	signal(SIGXFSZ, SIG_IGN);

	if (cfg_load(config, &c) != KM_OK)
		goto out;
	log_set_level((enum log_level)log_level_parse(c->log_level));
	if (mkdir(c->data_dir, 0700) != 0 && errno != EEXIST) {
		log_error("cannot create data directory %s: %s", c->data_dir,
		    strerror(errno));
		goto out;
	}
	ctx.cfg = c;
	ctx.max_json_depth = c->max_json_depth;
	if (c->rate_limit > 0 && rl_new((double)c->rate_limit,
	    (double)(c->rate_limit_burst ? c->rate_limit_burst :
	    2 * c->rate_limit), &ctx.rl) != KM_OK) {
		log_error("cannot set up rate limits");
		goto out;
	}
	if ((r = open_hsm(c, &ctx.hsm)) != KM_OK) {
		log_error("cannot use the token: %s", km_strerror(r));
		goto out;
	}
	if ((r = store_open(c->db_path, &ctx.store)) != KM_OK ||
	    (r = check_mek(ctx.store, ctx.hsm)) != KM_OK ||
	    /* A request of an earlier run still marked running never ends. */
	    (r = idem_clear_running(ctx.store)) != KM_OK ||
	    (r = audit_open(c->audit_dir, &ctx.audit)) != KM_OK ||
	    (r = usage_new(&ctx.usage)) != KM_OK) {
		log_error("start-up failed: %s", km_strerror(r));
		goto out;
	}
	if ((r = metrics_setup(&ctx)) != KM_OK ||
	    (r = sched_setup(c, &ctx, &sched)) != KM_OK) {
		log_error("cannot set up metrics and the scheduler: %s",
		    km_strerror(r));
		goto out;
	}
	if ((r = setup_checkpoints(c, &ctx, &sg)) != KM_OK) {
		log_error("cannot set up signed checkpoints: %s", km_strerror(r));
		goto out;
	}
	if ((r = audit_lifecycle(ctx.audit, "start")) != KM_OK) {
		log_error("cannot write the start record: %s", km_strerror(r));
		goto out;
	}
	/* Ceremonies: signs with the newest audit key a ceremony made and
	 * resumes an unfinished MEK rotation (ceremony/cer_run.h). */
	if ((r = cer_new(&ctx, &ctx.cer)) != KM_OK) {
		log_error("cannot start the ceremonies: %s", km_strerror(r));
		goto out;
	}
	metrics_set_ceremonies_source(ctx.metrics, ceremonies_pending, &ctx);
	if ((r = server_start(c, &ctx, &srv, &port)) != KM_OK)
		goto out;
	if (c->port_file != NULL && write_port_file(c->port_file, port) != KM_OK) {
		log_error("cannot write port file %s", c->port_file);
		goto out;
	}
	log_info("kmsd %s listening on %s (port %u), %ld threads", KMSD_VERSION,
	    c->listen, port, c->http_threads);
	run_until_signal(c, &ctx, sched);
	server_stop(srv);
	srv = NULL;
	cer_stop(ctx.cer);
	if (usage_flush(ctx.usage, ctx.store) != KM_OK)
		log_warn("use counters were not flushed at stop");
	if (audit_lifecycle(ctx.audit, "stop") != KM_OK)
		log_error("cannot write the stop record");
	else if (audit_checkpoint(ctx.audit) != KM_OK)
		log_error("cannot write the shutdown checkpoint");
	status = 0;
out:
	server_stop(srv);
	sched_free(sched);
	metrics_free(ctx.metrics);
	usage_free(ctx.usage);
	rl_free(ctx.rl);
	cer_stop(ctx.cer);
	audit_free(ctx.audit);
	/* After the log: the checkpoint signer may be one cer owns. */
	cer_free(ctx.cer);
	json_decref(ctx.audit_keys);
	store_free(ctx.store);
	hsm_free(ctx.hsm);
	cfg_free(c);
	return status;
}
