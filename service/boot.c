/* First-run setup for kmsctl init: token, MEK v1, audit-signing key, store,
 * first admin token. */
#include "boot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "api.h"
#include "audit.h"
#include "cer_run.h"
#include "hsm.h"
#include "jwk.h"
#include "log.h"
#include "store.h"

struct boot {
	const struct cfg *cfg;
	struct hsm *hsm;
	struct store *store;
	struct audit *audit;
	char request_id[33];
};

static int
write_secret_file(const char *path, const char *text)
{
	size_t n = strlen(text);
	int fd, r = KM_OK;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("cannot create %s: %s", path, strerror(errno));
		return KM_ERR_IO;
	}
	if (write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1 ||
	    fsync(fd) != 0) {
		log_error("cannot write %s: %s", path, strerror(errno));
		r = KM_ERR_IO;
	}
	if (close(fd) != 0 && r == KM_OK)
		r = KM_ERR_IO;
	if (r != KM_OK)
		unlink(path);
	return r;
}

static int
random_pin(char out[33])
{
	unsigned char b[16];

	if (km_random(b, sizeof(b)) != KM_OK)
		return KM_ERR_INTERNAL;
	km_hex(b, sizeof(b), out);
	OPENSSL_cleanse(b, sizeof(b));
	return KM_OK;
}

static int
init_token(const struct cfg *c)
{
	char label[33], user[33], so[33], so_path[4096];
	int r;

	if ((r = hsm_uri_token_label(c->pkcs11_token, label)) != KM_OK)
		return r;
	if ((r = random_pin(user)) != KM_OK || (r = random_pin(so)) != KM_OK)
		goto out;
	r = hsm_token_init(c->pkcs11_module, label, so, user);
	if (r == KM_ERR_KEY_EXISTS) {
		printf("token '%s': exists, reused\n", label);
		r = KM_OK;
		goto out;
	}
	if (r != KM_OK)
		goto out;
	snprintf(so_path, sizeof(so_path), "%s/token.so-pin", c->data_dir);
	if ((r = write_secret_file(c->pin_file, user)) != KM_OK ||
	    (r = write_secret_file(so_path, so)) != KM_OK)
		goto out;
	printf("token '%s': initialised; user PIN in %s, SO PIN in %s\n", label,
	    c->pin_file, so_path);
out:
	OPENSSL_cleanse(user, sizeof(user));
	OPENSSL_cleanse(so, sizeof(so));
	return r;
}

static int
boot_audit(struct boot *b, const char *op, json_t *fields)
{
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:n, s:n}",
	    "request_id", b->request_id, "actor", "kmsctl-init", "op", op,
	    "outcome", "ok", "status", 0, "key", "version");
	int r;

	if (rec == NULL)
		return KM_ERR_NOMEM;
	if (fields != NULL)
		json_object_update(rec, fields);
	r = audit_append(b->audit, rec, NULL);
	json_decref(rec);
	return r;
}

static int
mek_hook(void *arg)
{
	struct boot *b = arg;
	json_t *f = json_pack("{s:i}", "mek_version", 1);
	int r = boot_audit(b, "mek.create", f);

	json_decref(f);
	return r;
}

static int
ensure_mek(struct boot *b)
{
	uint32_t current;
	int r;

	if ((r = store_mek_current(b->store, &current)) == KM_OK) {
		if ((r = hsm_mek_find(b->hsm, current)) != KM_OK) {
			log_error("MEK version %u is recorded but not in the token",
			    current);
			return KM_ERR_HSM;
		}
		printf("MEK: version %u exists, reused\n", current);
		return KM_OK;
	}
	if (r != KM_ERR_NOT_FOUND)
		return r;
	r = hsm_mek_create(b->hsm, 1);
	if (r != KM_OK && r != KM_ERR_KEY_EXISTS)
		return r;
	if ((r = store_mek_add(b->store, 1, km_now_us(), mek_hook, b)) != KM_OK)
		return r;
	printf("MEK: version 1 created in the token (kms-mek-v1)\n");
	return KM_OK;
}

static int
ensure_audit_key(struct boot *b)
{
	unsigned char *der = NULL;
	size_t der_len = 0;
	char kid[44];
	json_t *jwk = NULL, *f;
	int r;

	r = hsm_ec_create(b->hsm, b->cfg->audit_key_label);
	if (r == KM_ERR_KEY_EXISTS) {
		printf("audit-signing key: %s exists, reused\n",
		    b->cfg->audit_key_label);
		return KM_OK;
	}
	if (r != KM_OK)
		return r;
	if ((r = hsm_ec_public(b->hsm, b->cfg->audit_key_label, &der,
	    &der_len)) != KM_OK ||
	    (r = jwk_from_spki(der, der_len, &jwk, kid)) != KM_OK)
		goto out;
	f = json_pack("{s:s, s:s}", "label", b->cfg->audit_key_label, "kid", kid);
	r = boot_audit(b, "audit_key.create", f);
	json_decref(f);
	if (r != KM_OK)
		goto out;
	printf("audit-signing key: %s created in the token (kid %s)\n",
	    b->cfg->audit_key_label, kid);
out:
	json_decref(jwk);
	free(der);
	return r;
}

static int
token_hook(void *arg)
{
	struct boot *b = arg;

	return boot_audit(b, "token.create", NULL);
}

static int
ensure_admin(struct boot *b, const char *path)
{
	struct store_token t;
	char token[96];
	int r;

	if (access(path, F_OK) == 0) {
		printf("admin token: %s exists, reused\n", path);
		return KM_OK;
	}
	memset(&t, 0, sizeof(t));
	if ((r = api_token_mint(&t, token)) != KM_OK)
		goto out;
	snprintf(t.role, sizeof(t.role), "admin");
	t.description = (char *)"initial admin (kmsctl init)";
	t.created_at = km_now_us();
	if ((r = store_token_create(b->store, &t, token_hook, b)) != KM_OK)
		goto out;
	if ((r = write_secret_file(path, token)) != KM_OK)
		goto out;
	printf("admin token: written to %s (id %s)\n", path, t.id);
out:
	OPENSSL_cleanse(token, sizeof(token));
	return r;
}

static int
make_dir(const char *dir)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		log_error("cannot create %s: %s", dir, strerror(errno));
		return KM_ERR_IO;
	}
	return KM_OK;
}

int
boot_init(const struct cfg *c, const struct boot_options *opt)
{
	struct boot b = { .cfg = c };
	struct hsm_config hc = { 0 };
	char *pin = NULL, admin_path[4096];
	size_t pin_len = 0;
	unsigned char rid[16];
	int r;

	if ((r = make_dir(c->data_dir)) != KM_OK)
		goto out;
	if (opt->init_token && (r = init_token(c)) != KM_OK)
		goto out;
	if ((r = cfg_read_pin(c, &pin, &pin_len)) != KM_OK)
		goto out;
	hc.module = c->pkcs11_module;
	hc.token_uri = c->pkcs11_token;
	hc.pin = pin;
	hc.pin_len = pin_len;
	hc.sessions = 2;
	hc.key_cache = 16;
	if ((r = hsm_open(&hc, &b.hsm)) != KM_OK)
		goto out;
	if ((r = store_open(c->db_path, &b.store)) != KM_OK ||
	    (r = audit_open(c->audit_dir, &b.audit)) != KM_OK)
		goto out;
	if ((r = km_random(rid, sizeof(rid))) != KM_OK)
		goto out;
	km_hex(rid, sizeof(rid), b.request_id);
	if ((r = ensure_mek(&b)) != KM_OK || (r = ensure_audit_key(&b)) != KM_OK)
		goto out;
	if (opt->admin_token_path != NULL)
		snprintf(admin_path, sizeof(admin_path), "%s", opt->admin_token_path);
	else
		snprintf(admin_path, sizeof(admin_path), "%s/admin.token",
		    c->data_dir);
	if ((r = ensure_admin(&b, admin_path)) != KM_OK)
		goto out;
	/* The first officers and M: the bootstrap exception to "officer
	 * changes are ceremonies" (docs/CEREMONIES.md). */
	if (opt->officers_dir != NULL &&
	    (r = cer_bootstrap(b.store, b.audit, b.request_id, opt->officers_dir,
	    opt->quorum)) != KM_OK)
		goto out;
	r = KM_OK;
out:
	if (r != KM_OK)
		log_error("init failed: %s", km_strerror(r));
	km_secure_free(pin, pin_len);
	audit_free(b.audit);
	store_free(b.store);
	hsm_free(b.hsm);
	return r;
}
