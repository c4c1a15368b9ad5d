/* kmsd configuration: defaults, then a `key = value` file, then KMS_<KEY>
 * environment variables, in that order of precedence (last wins). */
#ifndef CFG_H
#define CFG_H

#include <stdint.h>

#include "km.h"

/* Default HTTP workers per core (http_threads = 0). */
#define CFG_THREADS_PER_CORE 16

struct cfg {
	char *data_dir;		/* data_dir, KMS_DATA_DIR; default ./var */
	char *listen;		/* listen, KMS_LISTEN; host:port, default 127.0.0.1:8420 */
	char *pkcs11_module;	/* p11-kit module name or a module path */
	char *pkcs11_token;	/* PKCS#11 URI selecting the token */
	char *pin_file;		/* file holding the user PIN; KMS_PIN overrides */
	char *db_path;		/* SQLite metadata; default <data_dir>/kmsd.db */
	char *audit_dir;	/* default <data_dir>/audit */
	char *port_file;	/* written with the bound port once listening; may be NULL */
	char *audit_origin;	/* origin line of checkpoints */
	char *audit_key_label;	/* token label of the checkpoint key */
	char *tls_cert_file;	/* TLS on when set */
	char *tls_key_file;
	char *tls_client_ca_file; /* mutual TLS on when set */
	char *tls_priorities;
	char *mtls_subjects_file;
	char *log_level;	/* error|warn|info|debug */
	long http_threads;	/* libmicrohttpd thread pool; default: 16 per core */
	long hsm_sessions;	/* PKCS#11 session pool; default http_threads + 2 */
	long key_cache_size;	/* unwrapped named-key versions kept in the token */
	long max_body;		/* bytes; default 1 MiB */
	long max_connections;
	long connection_timeout; /* seconds of inactivity before a close */
	long usage_flush_seconds;
	long audit_checkpoint_records;
	long audit_checkpoint_seconds;
	long audit_segment_bytes;
	long rate_limit;		/* requests/s per token; 0 = off */
	long rate_limit_burst;
	long max_connections_per_ip;
	long max_json_depth;
	long retire_idle_seconds; /* a version used this recently cannot be retired */
	long jwks_max_age;	/* Cache-Control max-age of the JWKS, seconds */
	long mek_rewrap_batch;	/* MEK rotation: versions per checkpointed batch */
	long mek_rewrap_pause_ms; /* MEK rotation: pause between batches */
	long ceremony_min_ttl; /* shortest expires_in of a ceremony, seconds */
	long metrics_public;	/* 1: GET /metrics needs no token */
	long metrics_key_series; /* per-key series per family at most */
	long scheduler;		/* 1: rotate due keys, raise expiry alerts */
	long rotation_jitter_seconds;
	long scheduler_max_rotations; /* per tick (about a second) */
	long expiry_check_seconds;
	long rotation_retry_seconds;
	long idempotency_ttl_seconds; /* how long an Idempotency-Key answer is kept */
};

/* Loads defaults, then `path` (may be NULL), then the environment.
 * Unknown keys and malformed values are errors naming the key. */
int cfg_load(const char *path, struct cfg **out) KM_WUR;
void cfg_free(struct cfg *c);
/* Reads the PIN: KMS_PIN if set, else the first line of pin_file.
 * *pin is owned by the caller and must be freed with km_secure_free. */
int cfg_read_pin(const struct cfg *c, char **pin, size_t *pin_len) KM_WUR;
/* Prints every setting with its environment name and default. */
void cfg_print_help(void);

#endif
