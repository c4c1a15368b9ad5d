/* Configuration: defaults, key = value file, KMS_* environment overrides. */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "log.h"

enum cfg_kind { CFG_STR, CFG_LONG };

struct cfg_item {
	const char *name;
	enum cfg_kind kind;
	size_t offset;
	const char *def;	/* NULL: derived after loading */
	long min, max;
	const char *help;
};

#define S(f) CFG_STR, offsetof(struct cfg, f)
#define L(f) CFG_LONG, offsetof(struct cfg, f)

static const struct cfg_item cfg_items[] = {
	{ "data_dir", S(data_dir), "./var", 0, 0, "data directory (database, audit log, token)" },
	{ "listen", S(listen), "127.0.0.1:8420", 0, 0, "address:port to listen on ([::1]:port for IPv6)" },
	{ "pkcs11_module", S(pkcs11_module), "softhsm2", 0, 0, "p11-kit module name, or path of a PKCS#11 module" },
	{ "pkcs11_token", S(pkcs11_token), "pkcs11:token=kmsd", 0, 0, "PKCS#11 URI of the token" },
	{ "pin_file", S(pin_file), NULL, 0, 0, "file with the token user PIN (default <data_dir>/token.pin); KMS_PIN overrides" },
	{ "db_path", S(db_path), NULL, 0, 0, "SQLite metadata store (default <data_dir>/kmsd.db)" },
	{ "audit_dir", S(audit_dir), NULL, 0, 0, "audit log directory (default <data_dir>/audit)" },
	{ "port_file", S(port_file), NULL, 0, 0, "if set, kmsd writes the bound port here once listening (for listen = host:0)" },
	{ "audit_origin", S(audit_origin), "kmsd", 0, 0, "name of this log in signed checkpoints" },
	{ "audit_key_label", S(audit_key_label), "kms-audit-v1", 0, 0, "token label of the checkpoint-signing key (ECDSA P-256)" },
	{ "tls_cert_file", S(tls_cert_file), NULL, 0, 0, "PEM certificate chain: turns TLS on (1.2 and 1.3 only)" },
	{ "tls_key_file", S(tls_key_file), NULL, 0, 0, "PEM private key of tls_cert_file" },
	{ "tls_client_ca_file", S(tls_client_ca_file), NULL, 0, 0, "PEM CA(s) for client certificates: turns mutual TLS on" },
	{ "tls_priorities", S(tls_priorities), "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", 0, 0, "GnuTLS priority string" },
	{ "mtls_subjects_file", S(mtls_subjects_file), NULL, 0, 0, "lines '<token id> <RFC 2253 subject>': a verified client certificate with that subject acts as that token" },
	{ "log_level", S(log_level), "info", 0, 0, "error, warn, info or debug" },
	{ "http_threads", L(http_threads), "0", 0, 256, "HTTP worker threads (0: 16 per core, at most 256); each holds its request while the audit record is fsynced" },
	{ "hsm_sessions", L(hsm_sessions), "0", 0, 1024, "PKCS#11 sessions in the pool (0: http_threads + 2)" },
	{ "key_cache_size", L(key_cache_size), "4096", 1, 10000000, "unwrapped key versions cached as token session objects" },
	{ "max_body", L(max_body), "1048576", 1024, 64 << 20, "largest request body in bytes (larger: 413)" },
	{ "max_connections", L(max_connections), "1024", 1, 65536, "concurrent HTTP connections" },
	{ "connection_timeout", L(connection_timeout), "30", 1, 3600, "seconds an idle connection is kept" },
	{ "usage_flush_seconds", L(usage_flush_seconds), "5", 1, 3600, "how often per-version use counters reach the store" },
	{ "audit_checkpoint_records", L(audit_checkpoint_records), "1000", 1, 100000000, "a signed checkpoint at least every this many records" },
	{ "audit_checkpoint_seconds", L(audit_checkpoint_seconds), "60", 1, 86400, "and at least this often while records arrive" },
	{ "audit_segment_bytes", L(audit_segment_bytes), "67108864", 4096, 1073741824, "a new audit segment file once one reaches this size" },
	{ "rate_limit", L(rate_limit), "0", 0, 1000000, "requests per second per token (0: no limit); more get 429" },
	{ "rate_limit_burst", L(rate_limit_burst), "0", 0, 10000000, "requests a token may send at once (0: twice rate_limit)" },
	{ "max_connections_per_ip", L(max_connections_per_ip), "0", 0, 65536, "concurrent connections from one address (0: no limit)" },
	{ "max_json_depth", L(max_json_depth), "32", 2, 1000, "deepest nesting of objects and arrays in a request body" },
	{ "retire_idle_seconds", L(retire_idle_seconds), "86400", 0, 31622400, "a version used more recently cannot be retired without force" },
	{ "jwks_max_age", L(jwks_max_age), "300", 0, 86400, "Cache-Control max-age (seconds) of GET /.well-known/jwks.json" },
	{ "mek_rewrap_batch", L(mek_rewrap_batch), "500", 1, 10000, "MEK rotation: key versions rewrapped per checkpointed batch" },
	{ "mek_rewrap_pause_ms", L(mek_rewrap_pause_ms), "0", 0, 60000, "MEK rotation: pause between batches (limits the load on the token)" },
	{ "ceremony_min_ttl", L(ceremony_min_ttl), "300", 1, 86400, "shortest expires_in a ceremony may ask for, in seconds" },
	{ "metrics_public", L(metrics_public), "true", 0, 1, "GET /metrics without a token (false: any valid token is required)" },
	{ "metrics_key_series", L(metrics_key_series), "1000", 0, 1000000, "per-key metric series per family at most (soonest rotations/expiries first)" },
	{ "scheduler", L(scheduler), "true", 0, 1, "rotate keys whose rotation_period is due and raise expiry alerts" },
	{ "rotation_jitter_seconds", L(rotation_jitter_seconds), "300", 0, 86400, "a due rotation waits up to this long (per-key, at most a tenth of its period)" },
	{ "scheduler_max_rotations", L(scheduler_max_rotations), "10", 1, 10000, "scheduled rotations per second at most" },
	{ "expiry_check_seconds", L(expiry_check_seconds), "60", 1, 86400, "how often the scheduler looks for keys near expiry" },
	{ "rotation_retry_seconds", L(rotation_retry_seconds), "60", 1, 3600, "first retry after a failed scheduled rotation (doubles, at most 1 h)" },
	{ "idempotency_ttl_seconds", L(idempotency_ttl_seconds), "86400", 1, 2592000, "how long the answer of a request with an Idempotency-Key is kept for a repeat" },
};

#define N_ITEMS (sizeof(cfg_items) / sizeof(cfg_items[0]))

static int
cfg_set(struct cfg *c, const struct cfg_item *it, const char *value,
    const char *origin)
{
	char *end;
	long v;

	if (it->kind == CFG_STR) {
		char **slot = (char **)((char *)c + it->offset);
		char *dup;

		if (value[0] == '\0') {
			log_error("config %s: %s must not be empty", origin, it->name);
			return KM_ERR_CONFIG;
		}
		if ((dup = strdup(value)) == NULL)
			return KM_ERR_NOMEM;
		free(*slot);
		*slot = dup;
		return KM_OK;
	}
	/* 0..1 settings are switches: true/false, yes/no, on/off too. */
	if (it->min == 0 && it->max == 1) {
		if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 ||
		    strcmp(value, "on") == 0)
			value = "1";
		else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 ||
		    strcmp(value, "off") == 0)
			value = "0";
	}
	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < it->min ||
	    v > it->max) {
		log_error("config %s: %s = '%s' is not a number in %ld..%ld",
		    origin, it->name, value, it->min, it->max);
		return KM_ERR_CONFIG;
	}
	*(long *)((char *)c + it->offset) = v;
	return KM_OK;
}

static const struct cfg_item *
cfg_find(const char *name)
{
	size_t i;

	for (i = 0; i < N_ITEMS; i++)
		if (strcmp(cfg_items[i].name, name) == 0)
			return &cfg_items[i];
	return NULL;
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int
cfg_load_file(struct cfg *c, const char *path)
{
	char line[4096], origin[4200];
	FILE *f;
	int lineno = 0, r = KM_OK;

	if ((f = fopen(path, "r")) == NULL) {
		log_error("config: cannot open %s: %s", path, strerror(errno));
		return KM_ERR_CONFIG;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		const struct cfg_item *it;
		char *eq, *key, *val;

		lineno++;
		snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
		key = trim(line);
		if (*key == '\0' || *key == '#')
			continue;
		if ((eq = strchr(key, '=')) == NULL) {
			log_error("config %s: expected 'key = value'", origin);
			r = KM_ERR_CONFIG;
			break;
		}
		*eq = '\0';
		key = trim(key);
		val = trim(eq + 1);
		if ((it = cfg_find(key)) == NULL) {
			log_error("config %s: unknown setting '%s'", origin, key);
			r = KM_ERR_CONFIG;
			break;
		}
		if ((r = cfg_set(c, it, val, origin)) != KM_OK)
			break;
	}
	if (r == KM_OK && ferror(f)) {
		log_error("config: reading %s failed", path);
		r = KM_ERR_CONFIG;
	}
	fclose(f);
	return r;
}

static void
env_name(const char *name, char *out, size_t outlen)
{
	size_t i;

	snprintf(out, outlen, "KMS_%s", name);
	for (i = 4; out[i] != '\0'; i++)
		out[i] = (char)toupper((unsigned char)out[i]);
}

static int
derive_path(char **slot, const char *dir, const char *leaf)
{
	size_t n;

	if (*slot != NULL)
		return KM_OK;
	n = strlen(dir) + strlen(leaf) + 2;
	if ((*slot = malloc(n)) == NULL)
		return KM_ERR_NOMEM;
	snprintf(*slot, n, "%s/%s", dir, leaf);
	return KM_OK;
}

int
cfg_load(const char *path, struct cfg **out)
{
	struct cfg *c;
	size_t i;
	int r = KM_ERR_NOMEM;
	long cores;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return KM_ERR_NOMEM;
	for (i = 0; i < N_ITEMS; i++)
		if (cfg_items[i].def != NULL &&
		    (r = cfg_set(c, &cfg_items[i], cfg_items[i].def, "default")) != KM_OK)
			goto out;
	if (path != NULL && (r = cfg_load_file(c, path)) != KM_OK)
		goto out;
	for (i = 0; i < N_ITEMS; i++) {
		char name[64];
		const char *v;

		env_name(cfg_items[i].name, name, sizeof(name));
		if ((v = getenv(name)) != NULL &&
		    (r = cfg_set(c, &cfg_items[i], v, name)) != KM_OK)
			goto out;
	}
	if ((r = derive_path(&c->pin_file, c->data_dir, "token.pin")) != KM_OK ||
	    (r = derive_path(&c->db_path, c->data_dir, "kmsd.db")) != KM_OK ||
	    (r = derive_path(&c->audit_dir, c->data_dir, "audit")) != KM_OK)
		goto out;
	if (log_level_parse(c->log_level) < 0) {
		log_error("config: log_level '%s' is not error|warn|info|debug",
		    c->log_level);
		r = KM_ERR_CONFIG;
		goto out;
	}
	cores = sysconf(_SC_NPROCESSORS_ONLN);
	/* A worker holds its request until the audit fsync covering it is
	 * done, so the pool bounds how many records share one fsync
	 * (docs/PERFORMANCE.md): several workers per core, not one. */
	if (c->http_threads == 0)
		c->http_threads = CFG_THREADS_PER_CORE * (cores > 0 ? cores : 2);
	if (c->http_threads > 256)
		c->http_threads = 256;
	if (c->hsm_sessions == 0)
		c->hsm_sessions = c->http_threads + 2;
	*out = c;
	c = NULL;
	r = KM_OK;
out:
	cfg_free(c);
	return r;
}

void
cfg_free(struct cfg *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < N_ITEMS; i++)
		if (cfg_items[i].kind == CFG_STR)
			free(*(char **)((char *)c + cfg_items[i].offset));
	free(c);
}

int
cfg_read_pin(const struct cfg *c, char **pin, size_t *pin_len)
{
	const char *env = getenv("KMS_PIN");
	char buf[256];
	FILE *f;
	size_t n;

	*pin = NULL;
	*pin_len = 0;
	if (env != NULL) {
		n = strlen(env);
		if (n == 0 || (*pin = strdup(env)) == NULL)
			return n == 0 ? KM_ERR_CONFIG : KM_ERR_NOMEM;
		*pin_len = n;
		return KM_OK;
	}
	if ((f = fopen(c->pin_file, "r")) == NULL) {
		log_error("cannot open PIN file %s: %s", c->pin_file,
		    strerror(errno));
		return KM_ERR_CONFIG;
	}
	if (fgets(buf, sizeof(buf), f) == NULL)
		buf[0] = '\0';
	fclose(f);
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	if (n == 0) {
		log_error("PIN file %s is empty", c->pin_file);
		return KM_ERR_CONFIG;
	}
	*pin = strdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (*pin == NULL)
		return KM_ERR_NOMEM;
	*pin_len = n;
	return KM_OK;
}

void
cfg_print_help(void)
{
	size_t i;
	char name[64];

	printf("Settings (config file key, environment variable, default):\n");
	for (i = 0; i < N_ITEMS; i++) {
		env_name(cfg_items[i].name, name, sizeof(name));
		printf("  %-20s %-26s %-16s %s\n", cfg_items[i].name, name,
		    cfg_items[i].def ? cfg_items[i].def : "(derived)",
		    cfg_items[i].help);
	}
	printf("  %-20s %-26s %-16s %s\n", "", "KMS_PIN", "", "token user PIN (overrides pin_file)");
}
