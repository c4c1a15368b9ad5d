/* Unit tests of service/cfg.c: defaults, the key = value file, KMS_*
 * environment overrides, derived paths and reading the PIN. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "cfg.h"
#include "km.h"
#include "log.h"
#include "unit.h"

extern char **environ;

static char dir[256];

/* Removes every KMS_* variable, so the developer's shell or the harness
 * cannot leak into a test. */
static void
clear_kms_env(void)
{
	char name[256];
	size_t i;

again:
	for (i = 0; environ[i] != NULL; i++) {
		if (strncmp(environ[i], "KMS_", 4) == 0) {
			size_t n = strcspn(environ[i], "=");

			if (n >= sizeof(name))
				n = sizeof(name) - 1;
			memcpy(name, environ[i], n);
			name[n] = '\0';
			unsetenv(name);
			goto again;	/* environ changed under us */
		}
	}
}

static int
suite_init(void)
{
	clear_kms_env();
	/* The error paths under test log on purpose; keep them short. */
	log_set_level(LOG_ERROR);
	return ut_mkdtemp("cfg", dir, sizeof(dir));
}

static int
suite_clean(void)
{
	clear_kms_env();
	ut_rmtree(dir);
	return 0;
}

/* Writes `text` to a new file in the scratch dir; returns its path in a
 * static buffer. */
static const char *
conf(const char *text)
{
	static char path[300];
	static int n;

	snprintf(path, sizeof(path), "%s/c%d.conf", dir, ++n);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(path, "w", text, strlen(text)), 0);
	return path;
}

static void
test_defaults(void)
{
	struct cfg *c = NULL;
	long cores = sysconf(_SC_NPROCESSORS_ONLN), want;

	clear_kms_env();
	CU_ASSERT_EQUAL_FATAL(cfg_load(NULL, &c), KM_OK);
	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_STRING_EQUAL(c->data_dir, "./var");
	CU_ASSERT_STRING_EQUAL(c->listen, "127.0.0.1:8420");
	CU_ASSERT_STRING_EQUAL(c->pkcs11_module, "softhsm2");
	CU_ASSERT_STRING_EQUAL(c->pkcs11_token, "pkcs11:token=kmsd");
	CU_ASSERT_STRING_EQUAL(c->pin_file, "./var/token.pin");
	CU_ASSERT_STRING_EQUAL(c->db_path, "./var/kmsd.db");
	CU_ASSERT_STRING_EQUAL(c->audit_dir, "./var/audit");
	CU_ASSERT_PTR_NULL(c->port_file);
	CU_ASSERT_STRING_EQUAL(c->log_level, "info");
	want = CFG_THREADS_PER_CORE * (cores > 0 ? cores : 2);
	CU_ASSERT_EQUAL(c->http_threads, want > 256 ? 256 : want);
	CU_ASSERT_EQUAL(c->hsm_sessions, c->http_threads + 2);
	CU_ASSERT_EQUAL(c->key_cache_size, 4096);
	CU_ASSERT_EQUAL(c->max_body, 1048576);
	CU_ASSERT_EQUAL(c->max_connections, 1024);
	CU_ASSERT_EQUAL(c->connection_timeout, 30);
	CU_ASSERT_EQUAL(c->usage_flush_seconds, 5);
	CU_ASSERT_EQUAL(c->retire_idle_seconds, 86400);
	CU_ASSERT_STRING_EQUAL(c->audit_origin, "kmsd");
	CU_ASSERT_STRING_EQUAL(c->audit_key_label, "kms-audit-v1");
	CU_ASSERT_EQUAL(c->audit_checkpoint_records, 1000);
	CU_ASSERT_EQUAL(c->audit_checkpoint_seconds, 60);
	CU_ASSERT_EQUAL(c->audit_segment_bytes, 64L << 20);
	cfg_free(c);
	cfg_free(NULL);
}

static void
test_file(void)
{
	struct cfg *c = NULL;
	const char *p = conf(
	    "# kmsd test configuration\n"
	    "\n"
	    "   # an indented comment = with an equals sign\n"
	    "data_dir = /srv/kms\n"
	    "listen=0.0.0.0:9443\n"
	    "\tlog_level\t=\tdebug\t\n"
	    "   http_threads   =   7   \n"
	    "max_body = 2048\r\n"
	    "pkcs11_token = pkcs11:token=a%20b;serial=1=2\n"
	    "port_file = /run/kms/port\n"
	    "   \t  \n"
	    "retire_idle_seconds = 0\n"
	    "# a last comment without newline");

	CU_ASSERT_EQUAL_FATAL(cfg_load(p, &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->data_dir, "/srv/kms");
	CU_ASSERT_STRING_EQUAL(c->listen, "0.0.0.0:9443");
	CU_ASSERT_STRING_EQUAL(c->log_level, "debug");
	CU_ASSERT_EQUAL(c->http_threads, 7);
	CU_ASSERT_EQUAL(c->hsm_sessions, 9);
	CU_ASSERT_EQUAL(c->max_body, 2048);
	/* Only the first '=' separates key and value. */
	CU_ASSERT_STRING_EQUAL(c->pkcs11_token, "pkcs11:token=a%20b;serial=1=2");
	CU_ASSERT_PTR_NOT_NULL_FATAL(c->port_file);
	CU_ASSERT_STRING_EQUAL(c->port_file, "/run/kms/port");
	CU_ASSERT_EQUAL(c->retire_idle_seconds, 0);
	/* Untouched settings keep their defaults. */
	CU_ASSERT_STRING_EQUAL(c->pkcs11_module, "softhsm2");
	CU_ASSERT_EQUAL(c->key_cache_size, 4096);
	cfg_free(c);

	/* Later lines win over earlier ones; an empty file is all defaults. */
	CU_ASSERT_EQUAL_FATAL(cfg_load(conf("listen = a:1\nlisten = b:2\n"),
	    &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->listen, "b:2");
	cfg_free(c);
	CU_ASSERT_EQUAL_FATAL(cfg_load(conf(""), &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->listen, "127.0.0.1:8420");
	cfg_free(c);
}

static void
test_file_errors(void)
{
	static const char *const bad[] = {
		/* unknown keys, including near misses */
		"no_such_setting = 1\n", "Listen = 1.2.3.4:5\n",
		"data-dir = /x\n", "listen.x = 1\n", "KMS_LISTEN = a:1\n",
		/* not a key = value line */
		"listen 127.0.0.1:1\n", "just words\n", "= value\n",
		/* numbers: garbage, trailing text, range, overflow */
		"max_body = lots\n", "max_body = 2048k\n", "max_body = 0x800\n",
		"max_body = 2048.0\n", "max_body =\n", "max_body = 1023\n",
		"max_body = 67108865\n", "http_threads = -1\n",
		"http_threads = 257\n", "key_cache_size = 0\n",
		"connection_timeout = 99999999999999999999999\n",
		"usage_flush_seconds = 1 2\n", "audit_segment_bytes = 4095\n",
		"audit_checkpoint_records = 0\n",
		/* strings must not be empty; log_level must be a level */
		"listen =\n", "data_dir = \n", "log_level = verbose\n",
		NULL,
	};
	struct cfg *c;
	size_t i;

	for (i = 0; bad[i] != NULL; i++) {
		c = (struct cfg *)1;
		if (cfg_load(conf(bad[i]), &c) != KM_ERR_CONFIG) {
			fprintf(stderr, "\ncfg_load did not refuse \"%s\"\n", bad[i]);
			CU_FAIL("cfg_load accepted a bad config file");
			if (c != (struct cfg *)1)
				cfg_free(c);
			continue;
		}
		CU_ASSERT_PTR_NULL(c);
	}
	/* A bad line after good ones still fails the whole load. */
	c = (struct cfg *)1;
	CU_ASSERT_EQUAL(cfg_load(conf("listen = a:1\nbogus = 2\n"), &c),
	    KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(c);
	/* A file that does not exist. */
	CU_ASSERT_EQUAL(cfg_load("/nonexistent/kmsd.conf", &c), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(c);
}

static void
test_env(void)
{
	struct cfg *c = NULL;
	const char *p = conf("listen = 10.0.0.1:1000\nlog_level = warn\n"
	    "max_connections = 10\n");

	/* The environment beats the file, key by key. */
	clear_kms_env();
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_LISTEN", "127.0.0.1:0", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_MAX_CONNECTIONS", "77", 1), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_load(p, &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->listen, "127.0.0.1:0");
	CU_ASSERT_EQUAL(c->max_connections, 77);
	CU_ASSERT_STRING_EQUAL(c->log_level, "warn");
	cfg_free(c);

	/* Without a file, too. */
	CU_ASSERT_EQUAL_FATAL(cfg_load(NULL, &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->listen, "127.0.0.1:0");
	cfg_free(c);

	/* A malformed environment value is an error, like in the file. */
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_MAX_CONNECTIONS", "many", 1), 0);
	c = (struct cfg *)1;
	CU_ASSERT_EQUAL(cfg_load(p, &c), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_MAX_CONNECTIONS", "", 1), 0);
	CU_ASSERT_EQUAL(cfg_load(p, &c), KM_ERR_CONFIG);
	CU_ASSERT_EQUAL_FATAL(unsetenv("KMS_MAX_CONNECTIONS"), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_LISTEN", "", 1), 0);
	CU_ASSERT_EQUAL(cfg_load(p, &c), KM_ERR_CONFIG);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_LOG_LEVEL", "loud", 1), 0);
	CU_ASSERT_EQUAL_FATAL(unsetenv("KMS_LISTEN"), 0);
	CU_ASSERT_EQUAL(cfg_load(p, &c), KM_ERR_CONFIG);
	clear_kms_env();

	/* Every setting has its KMS_<UPPER> override. */
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_PKCS11_MODULE", "/usr/lib/x.so", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_PKCS11_TOKEN", "pkcs11:token=t", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_PORT_FILE", "/tmp/port", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_HTTP_THREADS", "3", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_HSM_SESSIONS", "11", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_KEY_CACHE_SIZE", "12", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_MAX_BODY", "4096", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_CONNECTION_TIMEOUT", "9", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_USAGE_FLUSH_SECONDS", "2", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_RETIRE_IDLE_SECONDS", "60", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_LOG_LEVEL", "error", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_AUDIT_ORIGIN", "kms-eu-1", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_AUDIT_SEGMENT_BYTES", "8192", 1), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_load(NULL, &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->audit_origin, "kms-eu-1");
	CU_ASSERT_EQUAL(c->audit_segment_bytes, 8192);
	CU_ASSERT_STRING_EQUAL(c->pkcs11_module, "/usr/lib/x.so");
	CU_ASSERT_STRING_EQUAL(c->pkcs11_token, "pkcs11:token=t");
	CU_ASSERT_STRING_EQUAL(c->port_file, "/tmp/port");
	CU_ASSERT_EQUAL(c->http_threads, 3);
	CU_ASSERT_EQUAL(c->hsm_sessions, 11);
	CU_ASSERT_EQUAL(c->key_cache_size, 12);
	CU_ASSERT_EQUAL(c->max_body, 4096);
	CU_ASSERT_EQUAL(c->connection_timeout, 9);
	CU_ASSERT_EQUAL(c->usage_flush_seconds, 2);
	CU_ASSERT_EQUAL(c->retire_idle_seconds, 60);
	CU_ASSERT_STRING_EQUAL(c->log_level, "error");
	cfg_free(c);
	clear_kms_env();
}

static void
test_derived_paths(void)
{
	struct cfg *c = NULL;

	clear_kms_env();
	CU_ASSERT_EQUAL_FATAL(cfg_load(conf("data_dir = /data/kms\n"), &c),
	    KM_OK);
	CU_ASSERT_STRING_EQUAL(c->db_path, "/data/kms/kmsd.db");
	CU_ASSERT_STRING_EQUAL(c->audit_dir, "/data/kms/audit");
	CU_ASSERT_STRING_EQUAL(c->pin_file, "/data/kms/token.pin");
	cfg_free(c);

	/* Explicit paths are kept; the others still follow data_dir. */
	CU_ASSERT_EQUAL_FATAL(cfg_load(conf("data_dir = /data/kms\n"
	    "db_path = /fast/meta.db\n"), &c), KM_OK);
	CU_ASSERT_STRING_EQUAL(c->db_path, "/fast/meta.db");
	CU_ASSERT_STRING_EQUAL(c->audit_dir, "/data/kms/audit");
	cfg_free(c);

	/* KMS_DATA_DIR moves the derived paths with it. */
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_DATA_DIR", "/env/dir", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_AUDIT_DIR", "/worm/audit", 1), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_load(conf("data_dir = /data/kms\n"), &c),
	    KM_OK);
	CU_ASSERT_STRING_EQUAL(c->data_dir, "/env/dir");
	CU_ASSERT_STRING_EQUAL(c->db_path, "/env/dir/kmsd.db");
	CU_ASSERT_STRING_EQUAL(c->pin_file, "/env/dir/token.pin");
	CU_ASSERT_STRING_EQUAL(c->audit_dir, "/worm/audit");
	cfg_free(c);
	clear_kms_env();
}

static void
test_read_pin(void)
{
	struct cfg *c = NULL;
	char path[300], *pin;
	size_t len;

	clear_kms_env();
	snprintf(path, sizeof(path), "data_dir = %s\n", dir);
	CU_ASSERT_EQUAL_FATAL(cfg_load(conf(path), &c), KM_OK);
	snprintf(path, sizeof(path), "%s/token.pin", dir);
	CU_ASSERT_STRING_EQUAL_FATAL(c->pin_file, path);

	/* The first line of the file, without its line end. */
	CU_ASSERT_EQUAL_FATAL(ut_write_file(path, "w", "1234-user\nsecond\n",
	    17), 0);
	pin = (char *)"sentinel";
	CU_ASSERT_EQUAL_FATAL(cfg_read_pin(c, &pin, &len), KM_OK);
	CU_ASSERT_STRING_EQUAL(pin, "1234-user");
	CU_ASSERT_EQUAL(len, 9);
	km_secure_free(pin, len);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(path, "w", "p w\r\n", 5), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_read_pin(c, &pin, &len), KM_OK);
	CU_ASSERT_STRING_EQUAL(pin, "p w");
	CU_ASSERT_EQUAL(len, 3);
	km_secure_free(pin, len);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(path, "w", "nonl", 4), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_read_pin(c, &pin, &len), KM_OK);
	CU_ASSERT_STRING_EQUAL(pin, "nonl");
	km_secure_free(pin, len);

	/* KMS_PIN wins over the file. */
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_PIN", "from-env", 1), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_read_pin(c, &pin, &len), KM_OK);
	CU_ASSERT_STRING_EQUAL(pin, "from-env");
	CU_ASSERT_EQUAL(len, 8);
	km_secure_free(pin, len);
	/* Even when the file is gone. */
	CU_ASSERT_EQUAL_FATAL(unlink(path), 0);
	CU_ASSERT_EQUAL_FATAL(cfg_read_pin(c, &pin, &len), KM_OK);
	CU_ASSERT_STRING_EQUAL(pin, "from-env");
	km_secure_free(pin, len);
	/* An empty KMS_PIN is an error, not an empty PIN. */
	CU_ASSERT_EQUAL_FATAL(setenv("KMS_PIN", "", 1), 0);
	CU_ASSERT_EQUAL(cfg_read_pin(c, &pin, &len), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(pin);
	CU_ASSERT_EQUAL(len, 0);
	CU_ASSERT_EQUAL_FATAL(unsetenv("KMS_PIN"), 0);

	/* Missing file, empty file, empty first line. */
	CU_ASSERT_EQUAL(cfg_read_pin(c, &pin, &len), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(pin);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(path, "w", "", 0), 0);
	CU_ASSERT_EQUAL(cfg_read_pin(c, &pin, &len), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(pin);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(path, "w", "\nlater\n", 7), 0);
	CU_ASSERT_EQUAL(cfg_read_pin(c, &pin, &len), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(pin);
	cfg_free(c);
	clear_kms_env();
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "defaults", test_defaults },
		{ "file with comments and whitespace", test_file },
		{ "file errors", test_file_errors },
		{ "environment overrides", test_env },
		{ "paths derived from data_dir", test_derived_paths },
		{ "read PIN from file and KMS_PIN", test_read_pin },
		{ NULL, NULL },
	};

	return ut_main("cfg", suite_init, suite_clean, tests);
}
