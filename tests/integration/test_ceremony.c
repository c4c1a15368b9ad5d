/* Ceremonies against a live kmsd of their own (DESIGN.md section 7,
 * docs/CEREMONIES.md): the quorum rules over HTTP, stale and repeated
 * executions, the signed emergency revoke, approvals made with the openssl
 * command line and with kmsctl on an officer's PKCS#11 token, officer and
 * quorum changes, the audit-signing key rotation, key.import (BYOK) with
 * keys wrapped by OpenSSL's API and its command line, and an MEK rotation over
 * 10,000 key versions killed twice with kill -9; then `kmsctl audit verify`
 * on an exported bundle shows every execution with its quorum. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include "blob.h"
#include "harness.h"
#include "officers.h"

#define MEK_KEYS	100
#define MEK_VERSIONS	100	/* MEK_KEYS x MEK_VERSIONS = 10,000 */
#define MAX_EXEC	64

static char *app, *officer, *auditor;
static const char *admin;
/* Executed ceremonies, for the audit verification at the end. */
static char executed[MAX_EXEC][17];
static size_t n_executed;

static int
suite_ready(void)
{
	return app != NULL && officer != NULL && auditor != NULL ? 0 : -1;
}

static const char *
jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "";
}

static long long
jint(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

/* Runs argv (stdout and stderr to `log`) with KMS_ADDR and KMS_TOKEN
 * set; returns its exit status or -1. */
static int
run(char *const argv[], const char *token, const char *log)
{
	pid_t pid;
	int status, fd;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		if ((fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if ((fd = open("/dev/null", O_RDONLY)) >= 0)
			dup2(fd, 0);
		setenv("KMS_ADDR", ith_base_url(), 1);
		if (token != NULL)
			setenv("KMS_TOKEN", token, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *
read_log(const char *log)
{
	unsigned char *b = ith_read_file(log, NULL);

	return b != NULL ? (char *)b : strdup("");
}

/* ---- ceremony helpers ---- */

static json_t *
create_at(const char *file, int line, const char *token, json_t *body,
    long expect, const char *code)
{
	return ith_call_at(file, line, "POST", "/v1/ceremonies", token, body,
	    expect, code);
}
#define create(...) create_at(__FILE__, __LINE__, __VA_ARGS__)

static const char *
cpath(const char *id, const char *suffix)
{
	static char ring[8][128];
	static unsigned slot;
	char *p = ring[slot++ % 8];

	snprintf(p, sizeof(ring[0]), "/v1/ceremonies/%s%s", id, suffix ? suffix :
	    "");
	return p;
}

static json_t *
decide_at(const char *file, int line, const char *id, const char *digest,
    const char *who, const char *decision, long expect, const char *code)
{
	return ith_call_at(file, line, "POST", cpath(id, "/approvals"), officer,
	    ito_decision(who, digest, decision), expect, code);
}
#define decide(...) decide_at(__FILE__, __LINE__, __VA_ARGS__)

static json_t *
execute_at(const char *file, int line, const char *id, long expect,
    const char *code)
{
	json_t *a = ith_call_at(file, line, "POST", cpath(id, "/execute"), admin,
	    NULL, expect, code);

	if (a != NULL && expect == 200 && n_executed < MAX_EXEC)
		snprintf(executed[n_executed++], sizeof(executed[0]), "%s", id);
	return a;
}
#define execute(...) execute_at(__FILE__, __LINE__, __VA_ARGS__)

/* The id and digest of ceremony `c` as created. */
static void
ids_of(const json_t *c, char id[17], char dg[65])
{
	snprintf(id, 17, "%s", jstr(c, "id"));
	snprintf(dg, 65, "%s", jstr(c, "digest"));
}

static json_t *
get_ceremony(const char *id)
{
	return ith_call("GET", cpath(id, NULL), auditor, NULL, 200, NULL);
}

/* A ceremony body for `op` with params of "k", "v" string pairs. */
static json_t *
body_of(const char *op, const char *k1, const char *v1, const char *k2,
    const char *v2)
{
	json_t *p = json_object();

	if (k1 != NULL)
		json_object_set_new(p, k1, json_string(v1));
	if (k2 != NULL)
		json_object_set_new(p, k2, json_string(v2));
	return json_pack("{s:s, s:o}", "operation", op, "params", p);
}

/* A key whose version 1 is archived (for key.restore). */
static const char *
archived_key(void)
{
	static char name[8][64];
	static unsigned slot;
	char *n = name[slot++ % 8];
	char path[200];

	snprintf(n, sizeof(name[0]), "%s", ith_name("cer"));
	if (ith_key_create(n, NULL) != 0)
		return n;
	snprintf(path, sizeof(path), "/v1/keys/%s/rotate", n);
	json_decref(ith_call("POST", path, admin, NULL, 200, NULL));
	snprintf(path, sizeof(path), "/v1/keys/%s/versions/1/state", n);
	json_decref(ith_call("POST", path, admin, json_pack("{s:s, s:b}", "state",
	    "retired", "force", 1), 200, NULL));
	json_decref(ith_call("POST", path, admin, json_pack("{s:s}", "state",
	    "archived"), 200, NULL));
	return n;
}

static const char *
version_state(const char *key, long v)
{
	static char out[8][32];
	static unsigned slot;
	char *o = out[slot++ % 8], path[200];
	json_t *a, *x;
	size_t i;

	snprintf(o, sizeof(out[0]), "(none)");
	snprintf(path, sizeof(path), "/v1/keys/%s", key);
	if ((a = ith_call("GET", path, admin, NULL, 200, NULL)) == NULL)
		return o;
	json_array_foreach(json_object_get(a, "versions"), i, x)
		if (jint(x, "version") == v)
			snprintf(o, sizeof(out[0]), "%s", jstr(x, "state"));
	json_decref(a);
	return o;
}

/* ---- key.import (BYOK) ---- */

struct import_key {
	unsigned char *spki;
	size_t spki_len;
	char pem[1024];
	char hash[8];		/* the OAEP hash to wrap with */
	const EVP_MD *md;
};

/* GET /v1/import-key: SHA-256 when the token takes it, else SHA-1 (the
 * only one SoftHSM 2.6 takes); a token that takes neither fails. */
static int
import_key_get(struct import_key *ik)
{
	json_t *a, *h;
	size_t i;
	int has256 = 0, has1 = 0;

	memset(ik, 0, sizeof(*ik));
	if ((a = ith_call("GET", "/v1/import-key", officer, NULL, 200, NULL)) ==
	    NULL)
		return -1;
	json_array_foreach(json_object_get(a, "oaep_hashes"), i, h) {
		has256 |= strcmp(json_string_value(h), "sha256") == 0;
		has1 |= strcmp(json_string_value(h), "sha1") == 0;
	}
	snprintf(ik->pem, sizeof(ik->pem), "%s", jstr(a, "public_key"));
	snprintf(ik->hash, sizeof(ik->hash), "%s", has256 ? "sha256" : "sha1");
	ik->md = has256 ? EVP_sha256() : EVP_sha1();
	if (!ith_check(strcmp(jstr(a, "label"), "kms-import-v1") == 0 &&
	    strcmp(jstr(a, "algorithm"), "RSA-3072") == 0 && (has256 || has1) &&
	    ith_unb64(jstr(a, "spki"), &ik->spki, &ik->spki_len) == 0 &&
	    strncmp(ik->pem, "-----BEGIN PUBLIC KEY-----", 26) == 0,
	    "GET /v1/import-key: label, RSA-3072, an OAEP hash, SPKI and PEM")) {
		json_decref(a);
		return -1;
	}
	json_decref(a);
	return 0;
}

/* RSAES-OAEP under the import key with OpenSSL's API (hash and MGF1 the
 * same, no label), as an importer's tool does it. */
static int
oaep_wrap(const struct import_key *ik, const unsigned char *in, size_t inlen,
    unsigned char out[512], size_t *outlen)
{
	const unsigned char *p = ik->spki;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)ik->spki_len);
	EVP_PKEY_CTX *ctx = pk != NULL ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
	int ok;

	*outlen = 512;
	ok = ctx != NULL && EVP_PKEY_encrypt_init(ctx) > 0 &&
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
	    EVP_PKEY_CTX_set_rsa_oaep_md(ctx, ik->md) > 0 &&
	    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, ik->md) > 0 &&
	    EVP_PKEY_encrypt(ctx, out, outlen, in, inlen) > 0;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return ith_check(ok, "RSA-OAEP encryption under the import key") ? 0 : -1;
}

static json_t *
import_body(const char *key, const char *hash, const unsigned char *w,
    size_t wlen)
{
	char *b64 = ith_b64(w, wlen);
	json_t *b = json_pack("{s:s, s:{s:s, s:s}, s:s}", "operation",
	    "key.import", "params", "key", key, "oaep_hash", hash, "wrapped",
	    b64 != NULL ? b64 : "");

	free(b64);
	return b;
}

/* Approves ceremony `id` by alice and bob (quorum 2). */
static void
approve2(const char *id, const char *digest)
{
	json_decref(decide(id, digest, "alice", "approve", 200, NULL));
	json_decref(decide(id, digest, "bob", "approve", 200, NULL));
}

/* Approves ceremony `id` by alice and bob and executes it; the answer of
 * the execution (expected 200), or NULL. */
static json_t *
quorum_execute(const char *id, const char *digest)
{
	approve2(id, digest);
	return execute(id, 200, NULL);
}

/* AES-256-GCM of the blob format with a key held here. */
static int
local_gcm(int enc, const unsigned char key[32], const unsigned char *nonce,
    const unsigned char *aad, size_t aadlen, const unsigned char *in,
    size_t inlen, unsigned char *out, unsigned char tag[16])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, m = 0, ok;

	ok = c != NULL && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key,
	    nonce, enc) == 1 &&
	    EVP_CipherUpdate(c, NULL, &n, aad, (int)aadlen) == 1 &&
	    EVP_CipherUpdate(c, out, &n, in, (int)inlen) == 1 &&
	    (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1) &&
	    EVP_CipherFinal_ex(c, out + n, &m) == 1 &&
	    (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1);
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

/* The imported key is the one: a blob kmsd wraps under `key` v`version`
 * opens here with `aes`, and a blob sealed here opens in kmsd. */
static void
same_key(const char *key, long version, const unsigned char aes[32])
{
	struct blob_context none = { .n = 0 };
	struct km_buf aad = KM_BUF_INIT(BLOB_MAX_AAD);
	unsigned char pt[40], back[40], nonce[12], sealed[40 + 16], *raw = NULL;
	size_t raw_len = 0;
	uint32_t v = 0;
	char *ct, *blob = NULL;
	long got = 0;

	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(key, app, pt, sizeof(pt), NULL, &got)) == NULL)
		return;
	ith_check(got == version, "wrap under '%s' used v%ld, expected v%ld", key,
	    got, version);
	if (!ith_check(blob_parse(ct, strlen(ct), &v, &raw, &raw_len) == KM_OK &&
	    v == (uint32_t)version && raw_len == 12 + sizeof(pt) + 16 &&
	    blob_aad(key, v, &none, &aad) == KM_OK, "kmsd's blob parses"))
		goto out;
	ith_check(local_gcm(0, aes, raw, aad.data, aad.len, raw + 12, sizeof(pt),
	    back, raw + 12 + sizeof(pt)) == 0 && memcmp(back, pt, sizeof(pt)) ==
	    0, "kmsd's blob of %s v%ld opens with the imported AES key", key,
	    version);
	ith_random(nonce, sizeof(nonce));
	ith_random(pt, sizeof(pt));
	if (!ith_check(local_gcm(1, aes, nonce, aad.data, aad.len, pt, sizeof(pt),
	    sealed, sealed + sizeof(pt)) == 0 && blob_format(v, nonce, sealed,
	    sizeof(sealed), &blob) == KM_OK, "sealing a blob locally"))
		goto out;
	ith_unwrap_expect(key, app, blob, NULL, pt, sizeof(pt), NULL, NULL);
out:
	km_buf_free(&aad);
	if (raw != NULL)
		km_secure_free(raw, raw_len);
	free(blob);
	free(ct);
}

static double
cache_entries(void)
{
	const char *series = "\nkmsd_hsm_key_cache_entries ", *p;
	char *raw = NULL;
	long st = 0;
	double n = -1;

	ith_request_raw("GET", "/metrics", admin, NULL, 0, NULL, &st, &raw, NULL,
	    NULL, NULL);
	if (st == 200 && raw != NULL && (p = strstr(raw, series)) != NULL)
		n = strtod(p + strlen(series), NULL);
	free(raw);
	ith_check(n >= 0, "GET /metrics has kmsd_hsm_key_cache_entries");
	return n;
}

static void
test_import(void)
{
	struct import_key ik;
	unsigned char aes[32], w[512];
	const char *key = ith_name("byok");
	char id[17], dg[65], line[128];
	json_t *c, *a, *r;
	size_t wlen;

	if (import_key_get(&ik) != 0)
		return;
	ith_expect_error("GET", "/v1/import-key", auditor, NULL, 403, NULL);
	ith_expect_error("GET", "/v1/import-key", app, NULL, 403, NULL);
	ith_random(aes, sizeof(aes));
	if (oaep_wrap(&ik, aes, sizeof(aes), w, &wlen) != 0 ||
	    (c = create(admin, import_body(key, ik.hash, w, wlen), 201, NULL)) ==
	    NULL)
		goto out;
	ids_of(c, id, dg);
	/* What the officers sign names the bytes, the version, the key. */
	{
		unsigned char md[32];
		char hex[65];

		SHA256(w, wlen, md);
		ith_hex(md, sizeof(md), hex, 0);
		snprintf(line, sizeof(line), "param.wrapped_sha256: %s\n", hex);
	}
	ith_check(strstr(jstr(c, "request_text"), line) != NULL &&
	    strstr(jstr(c, "request_text"), "param.version: 1\n") != NULL &&
	    strstr(jstr(c, "request_text"), "param.import_key: kms-import-v1\n")
	    != NULL && strstr(jstr(c, "request_text"), "param.type: aes256-gcm\n")
	    != NULL, "the request text carries wrapped_sha256, version, import "
	    "key and type:\n%s", jstr(c, "request_text"));
	json_decref(c);
	json_decref(decide(id, dg, "alice", "approve", 200, NULL));
	json_decref(execute(id, 409, "quorum_not_met"));	/* M - 1 */
	snprintf(line, sizeof(line), "/v1/keys/%s", key);
	ith_expect_error("GET", line, admin, NULL, 404, NULL);
	json_decref(decide(id, dg, "bob", "approve", 200, NULL));
	if ((a = execute(id, 200, NULL)) == NULL)
		goto out;
	r = json_object_get(a, "result");
	ith_check(strcmp(jstr(r, "key"), key) == 0 && jint(r, "version") == 1 &&
	    json_is_true(json_object_get(r, "created")) &&
	    json_array_size(json_object_get(r, "approvers")) == 2,
	    "key.import executed: %s v1 created, two approvers", key);
	json_decref(a);
	ith_check(strcmp(version_state(key, 1), "primary") == 0,
	    "the imported version is primary");
	same_key(key, 1, aes);
	/* Executed once: the uploaded bytes are gone with the ceremony. */
	json_decref(execute(id, 409, "ceremony_closed"));
out:
	free(ik.spki);
}

/* The format interop proof: `openssl pkeyutl` wraps, kmsctl asks for the
 * ceremony with --wrapped; it becomes a new primary version. Then the
 * signed revoke of the old version takes it out of the key cache at once. */
static void
test_import_openssl_cli(void)
{
	struct import_key ik;
	unsigned char aes[32];
	const char *key = ith_name("byok");
	char pem[300], kf[300], wf[300], log[300], md[40], mgf[40], *out = NULL;
	char id[17], dg[65];
	json_t *c = NULL, *a;
	double before, after;
	FILE *f;
	int st;

	if (import_key_get(&ik) != 0 || ith_key_create(key, NULL) != 0)
		goto out;
	snprintf(pem, sizeof(pem), "%s/import.pem", ith_data_dir());
	snprintf(kf, sizeof(kf), "%s/import-aes.bin", ith_data_dir());
	snprintf(wf, sizeof(wf), "%s/import-wrapped.bin", ith_data_dir());
	snprintf(log, sizeof(log), "%s/import-cli.log", ith_data_dir());
	snprintf(md, sizeof(md), "rsa_oaep_md:%s", ik.hash);
	snprintf(mgf, sizeof(mgf), "rsa_mgf1_md:%s", ik.hash);
	ith_random(aes, sizeof(aes));
	if (!ith_check((f = fopen(kf, "w")) != NULL &&
	    fwrite(aes, 1, sizeof(aes), f) == sizeof(aes) && fclose(f) == 0,
	    "writing the AES key"))
		goto out;
	{
		char *argv[] = { getenv("KMSCTL_BIN"), "ceremony", "import-key",
			"--out", pem, NULL };
		unsigned char *got;

		st = run(argv, officer, log);
		got = ith_read_file(pem, NULL);
		ith_check(st == 0 && got != NULL && strcmp((char *)got, ik.pem) ==
		    0, "kmsctl ceremony import-key --out writes the PEM: exit %d\n%s",
		    st, out = read_log(log));
		free(got);
		free(out);
		out = NULL;
	}
	{
		char *argv[] = { "openssl", "pkeyutl", "-encrypt", "-pubin",
			"-inkey", pem, "-in", kf, "-out", wf, "-pkeyopt",
			"rsa_padding_mode:oaep", "-pkeyopt", md, "-pkeyopt", mgf,
			NULL };

		st = run(argv, NULL, log);
		out = read_log(log);
		if (!ith_check(st == 0, "openssl pkeyutl -encrypt: exit %d\n%s",
		    st, out))
			goto out;
		free(out);
		out = NULL;
	}
	{
		char kp[200], hp[40];
		char *argv[] = { getenv("KMSCTL_BIN"), "ceremony", "create",
			"key.import", "--param", kp, "--param", hp, "--wrapped", wf,
			"--json", NULL };

		snprintf(kp, sizeof(kp), "key=%s", key);
		snprintf(hp, sizeof(hp), "oaep_hash=%s", ik.hash);
		st = run(argv, admin, log);
		out = read_log(log);
		if (!ith_check(st == 0 && (c = json_loads(out, 0, NULL)) != NULL,
		    "kmsctl ceremony create key.import --wrapped: exit %d\n%s", st,
		    out))
			goto out;
	}
	ids_of(c, id, dg);
	ith_check(strstr(jstr(c, "request_text"), "param.version: 2\n") != NULL,
	    "an import into an existing key makes its next version");
	if ((a = quorum_execute(id, dg)) == NULL)
		goto out;
	ith_check(json_is_false(json_object_get(json_object_get(a, "result"),
	    "created")), "the key existed: created false");
	json_decref(a);
	ith_check(strcmp(version_state(key, 2), "primary") == 0 &&
	    strcmp(version_state(key, 1), "active") == 0,
	    "the imported version is primary, the old primary active");
	same_key(key, 2, aes);

	/* Eviction: v2 is cached (same_key used it); the revoke of v2 after
	 * a rotation takes it out at once. */
	{
		char path[200];

		snprintf(path, sizeof(path), "/v1/keys/%s/rotate", key);
		json_decref(ith_call("POST", path, admin, NULL, 200, NULL));
	}
	before = cache_entries();
	json_decref(ito_revoke(key, 2, "alice", officer, 200, NULL));
	after = cache_entries();
	ith_check(after == before - 1, "the revoked version left the key cache "
	    "(%g entries before, %g after)", before, after);
out:
	json_decref(c);
	free(out);
	free(ik.spki);
}

/* What runs is what was signed; bad bytes import nothing. */
static void
test_import_refused(void)
{
	struct import_key ik;
	unsigned char aes[32], w[512], junk[384];
	const char *key = ith_name("byok");
	char id[17], dg[65], path[200], db[300];
	json_t *b, *c, *e;
	sqlite3 *h = NULL;
	size_t wlen;

	if (import_key_get(&ik) != 0)
		return;
	ith_random(aes, sizeof(aes));
	if (oaep_wrap(&ik, aes, sizeof(aes), w, &wlen) != 0)
		goto out;
	snprintf(path, sizeof(path), "/v1/keys/%s", key);

	/* A wrapped_sha256 that is not the upload's: refused at once. */
	b = import_body(key, ik.hash, w, wlen);
	json_object_set_new(json_object_get(b, "params"), "wrapped_sha256",
	    json_string("00000000000000000000000000000000"
	    "00000000000000000000000000000000"));
	json_decref(create(admin, b, 400, "invalid_request"));
	/* No upload, or an upload to an operation that takes none. */
	b = import_body(key, ik.hash, w, wlen);
	json_object_del(b, "wrapped");
	json_decref(create(admin, b, 400, "invalid_request"));
	b = body_of("quorum.set", "quorum", "1", NULL, NULL);
	json_object_set_new(b, "wrapped", json_string("AAAA"));
	json_decref(create(admin, b, 400, "invalid_request"));

	/* Garbage bytes: the quorum is met, execution fails with a 4xx and
	 * nothing is created. */
	ith_random(junk, sizeof(junk));
	if ((c = create(admin, import_body(key, ik.hash, junk, sizeof(junk)),
	    201, NULL)) == NULL)
		goto out;
	ids_of(c, id, dg);
	json_decref(c);
	approve2(id, dg);
	json_decref(execute(id, 400, "invalid_ciphertext"));
	ith_expect_error("GET", path, admin, NULL, 404, NULL);
	json_decref(ith_call("POST", cpath(id, "/cancel"), admin, NULL, 200,
	    NULL));

	/* The stored bytes changed after the officers signed: refused. */
	if ((c = create(admin, import_body(key, ik.hash, w, wlen), 201, NULL)) ==
	    NULL)
		goto out;
	ids_of(c, id, dg);
	json_decref(c);
	approve2(id, dg);
	snprintf(db, sizeof(db), "%s/kmsd.db", ith_data_dir());
	w[10] ^= 1;
	if (!ith_check(sqlite3_open(db, &h) == SQLITE_OK &&
	    sqlite3_busy_timeout(h, 5000) == SQLITE_OK, "opening %s", db))
		goto out;
	{
		sqlite3_stmt *s = NULL;

		ith_check(sqlite3_prepare_v2(h, "UPDATE ceremony_uploads SET data ="
		    " ?2 WHERE ceremony_id = ?1", -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC) == SQLITE_OK &&
		    sqlite3_bind_blob(s, 2, w, (int)wlen, SQLITE_STATIC) ==
		    SQLITE_OK && sqlite3_step(s) == SQLITE_DONE &&
		    sqlite3_changes(h) == 1, "replacing the stored wrapped key: %s",
		    sqlite3_errmsg(h));
		sqlite3_finalize(s);
	}
	e = execute(id, 409, "state_changed");
	ith_check(e != NULL && strstr(json_string_value(json_object_get(
	    json_object_get(e, "error"), "message")), "wrapped_sha256") != NULL,
	    "the refusal names wrapped_sha256");
	json_decref(e);
	ith_expect_error("GET", path, admin, NULL, 404, NULL);
out:
	if (h != NULL)
		sqlite3_close(h);
	free(ik.spki);
}

/* ---- setup ---- */

static void
test_start(void)
{
	if (!ith_check(ith_setup("mek_rewrap_batch = 250\n"
	    "mek_rewrap_pause_ms = 15\nceremony_min_ttl = 1\n") == 0,
	    "could not start kmsd"))
		return;
	admin = ith_admin_token();
	app = ith_token_create("app", "*", NULL, NULL);
	officer = ith_token_create("officer", NULL, NULL, NULL);
	auditor = ith_token_create("auditor", NULL, NULL, NULL);
}

/* ---- the quorum rules ---- */

/* M-1 approvals are not executable; the same officer twice counts once;
 * then the M-th approval executes it, exactly once. */
static void
test_quorum_and_once(void)
{
	const char *key = archived_key();
	json_t *c, *a;
	char id[17], dg[65];

	if ((c = create(admin, body_of("key.restore", "key", key, "version", "1"),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	ith_check(strcmp(jstr(c, "state"), "open") == 0 && jint(c, "required") == 2 &&
	    strncmp(jstr(c, "request_text"), "kms-ceremony/v1\n", 16) == 0,
	    "a new ceremony: open, quorum 2, canonical text");
	json_decref(c);
	json_decref(execute(id, 409, "quorum_not_met"));
	json_decref(decide(id, dg, "alice", "approve", 200, NULL));
	json_decref(execute(id, 409, "quorum_not_met"));	/* M - 1 */
	/* alice again: recorded once, still M - 1 */
	a = decide(id, dg, "alice", "approve", 200, NULL);
	ith_check(a != NULL && jint(a, "approved") == 1 &&
	    json_array_size(json_object_get(a, "approvals")) == 1,
	    "the same officer twice counts once (approved %lld)",
	    a ? jint(a, "approved") : -1);
	json_decref(a);
	json_decref(execute(id, 409, "quorum_not_met"));
	ith_check(strcmp(version_state(key, 1), "archived") == 0,
	    "nothing ran before the quorum");
	json_decref(decide(id, dg, "bob", "approve", 200, NULL));
	a = execute(id, 200, NULL);
	ith_check(a != NULL && strcmp(jstr(a, "state"), "executed") == 0,
	    "executed with 2 of 2");
	json_decref(a);
	ith_check(strcmp(version_state(key, 1), "active") == 0,
	    "key.restore: v1 is %s, expected active", version_state(key, 1));
	/* a second execute fails; so do late decisions */
	json_decref(execute(id, 409, "ceremony_closed"));
	json_decref(decide(id, dg, "carol", "approve", 409, "ceremony_closed"));
}

/* The requester's own approval does not count: an officer who asked for a
 * ceremony (a signed request) cannot approve it. */
static void
test_requester(void)
{
	const char *key = archived_key();
	char msg[512], ts[40], *sig, id[17], dg[65];
	time_t t = time(NULL);
	struct tm tm;
	json_t *b, *c, *a;

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(msg, sizeof(msg), "kms-ceremony-request/v1\nofficer: carol\n"
	    "operation: key.restore\nparam.key: %s\nparam.version: 1\nts: %s\n",
	    key, ts);
	if ((sig = ito_sign("carol", msg)) == NULL)
		return;
	/* signed by another officer's key: refused */
	b = body_of("key.restore", "key", key, "version", "1");
	json_object_set_new(b, "officer", json_string("alice"));
	json_object_set_new(b, "ts", json_string(ts));
	json_object_set_new(b, "signature", json_string(sig));
	json_decref(create(officer, b, 403, "invalid_signature"));
	b = body_of("key.restore", "key", key, "version", "1");
	json_object_set_new(b, "officer", json_string("carol"));
	json_object_set_new(b, "ts", json_string(ts));
	json_object_set_new(b, "signature", json_string(sig));
	free(sig);
	if ((c = create(officer, b, 201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	ith_check(strcmp(jstr(c, "requester"), "carol") == 0 &&
	    strstr(jstr(c, "request_text"), "\nrequester: carol\n") != NULL,
	    "a signed request names its officer as the requester");
	json_decref(c);
	json_decref(decide(id, dg, "carol", "approve", 403, "forbidden"));
	json_decref(decide(id, dg, "alice", "approve", 200, NULL));
	a = get_ceremony(id);
	ith_check(a && jint(a, "approved") == 1 && jint(a, "required") == 2,
	    "the requester's approval did not count");
	json_decref(a);
	json_decref(execute(id, 409, "quorum_not_met"));
	json_decref(decide(id, dg, "bob", "approve", 200, NULL));
	json_decref(execute(id, 200, NULL));
}

/* Approvals over another digest, by an unregistered key or name, with a
 * malformed signature, or after expiry, are refused. */
static void
test_bad_approvals(void)
{
	const char *key = archived_key();
	char id[17], dg[65], other[65], path[4300], msg[256], *sig;
	unsigned char rnd[32];
	EVP_PKEY *stranger;
	json_t *c, *a;
	FILE *f;

	if ((c = create(admin, body_of("key.restore", "key", key, "version", "1"),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	/* over another digest */
	ith_random(rnd, sizeof(rnd));
	ith_hex(rnd, sizeof(rnd), other, 0);
	json_decref(ith_call("POST", cpath(id, "/approvals"), officer,
	    ito_decision("alice", other, "approve"), 403, "invalid_signature"));
	/* by a key that is not registered, under a registered name */
	snprintf(path, sizeof(path), "%s/stranger.pem", ith_data_dir());
	stranger = EVP_EC_gen("P-256");
	if ((f = fopen(path, "w")) != NULL) {
		PEM_write_PrivateKey(f, stranger, NULL, NULL, 0, NULL, NULL);
		fclose(f);
	}
	EVP_PKEY_free(stranger);
	snprintf(msg, sizeof(msg), "kms-approval/v1\n%s\nalice\napprove\n", dg);
	if ((sig = ito_sign_with(path, msg)) != NULL)
		json_decref(ith_call("POST", cpath(id, "/approvals"), officer,
		    json_pack("{s:s, s:s, s:s}", "officer", "alice", "decision",
		    "approve", "signature", sig), 403, "invalid_signature"));
	free(sig);
	/* an unregistered name */
	snprintf(msg, sizeof(msg), "kms-approval/v1\n%s\nmallory\napprove\n", dg);
	if ((sig = ito_sign_with(path, msg)) != NULL)
		json_decref(ith_call("POST", cpath(id, "/approvals"), officer,
		    json_pack("{s:s, s:s, s:s}", "officer", "mallory", "decision",
		    "approve", "signature", sig), 403, "invalid_signature"));
	free(sig);
	/* malformed */
	json_decref(ith_call("POST", cpath(id, "/approvals"), officer,
	    json_pack("{s:s, s:s, s:s}", "officer", "alice", "decision", "approve",
	    "signature", "AAAA"), 403, "invalid_signature"));
	json_decref(ith_call("POST", cpath(id, "/approvals"), officer,
	    json_pack("{s:s, s:s, s:s}", "officer", "alice", "decision", "maybe",
	    "signature", "AAAA"), 400, "invalid_request"));
	/* an app token cannot even carry one */
	json_decref(ith_call("POST", cpath(id, "/approvals"), app,
	    ito_decision("alice", dg, "approve"), 403, "forbidden"));
	a = get_ceremony(id);
	ith_check(a && jint(a, "approved") == 0 &&
	    json_array_size(json_object_get(a, "approvals")) == 0,
	    "no refused approval was recorded");
	json_decref(a);
	/* a reject is final: a replayed approval cannot undo it */
	json_decref(decide(id, dg, "alice", "approve", 200, NULL));
	json_decref(decide(id, dg, "alice", "reject", 200, NULL));
	json_decref(decide(id, dg, "alice", "approve", 409, "decision_final"));
	json_decref(decide(id, dg, "bob", "approve", 200, NULL));
	json_decref(execute(id, 409, "quorum_not_met"));
	/* carol's reject leaves only bob: quorum 2 is out of reach */
	a = decide(id, dg, "carol", "reject", 200, NULL);
	ith_check(a && strcmp(jstr(a, "state"), "rejected") == 0,
	    "rejects that make the quorum impossible end the ceremony (%s)",
	    a ? jstr(a, "state") : "-");
	json_decref(a);
	json_decref(execute(id, 409, "ceremony_closed"));

	/* after expiry */
	c = body_of("key.restore", "key", key, "version", "1");
	json_object_set_new(c, "expires_in", json_string("2s"));
	if ((c = create(admin, c, 201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	json_decref(decide(id, dg, "alice", "approve", 200, NULL));
	ith_sleep_ms(3100);
	json_decref(decide(id, dg, "bob", "approve", 409, "ceremony_closed"));
	json_decref(execute(id, 409, "ceremony_closed"));
	a = get_ceremony(id);
	ith_check(a && strcmp(jstr(a, "state"), "expired") == 0 &&
	    jint(a, "approved") == 1, "an expired ceremony shows as expired");
	json_decref(a);
	ith_check(strcmp(version_state(key, 1), "archived") == 0,
	    "nothing ran: v1 is %s", version_state(key, 1));
}

/* A change of the target state after the approvals makes the execution
 * fail, and spends the ceremony. */
static void
test_stale(void)
{
	const char *key = ith_name("stale");
	char id[17], dg[65], path[200];
	json_t *c, *a;

	if (ith_key_create(key, NULL) != 0)
		return;
	snprintf(path, sizeof(path), "/v1/keys/%s/rotate", key);
	json_decref(ith_call("POST", path, admin, NULL, 200, NULL));
	if ((c = create(admin, body_of("key.destroy", "key", key, "version", "1"),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	approve2(id, dg);
	/* the admin retires v1 after the approvals */
	snprintf(path, sizeof(path), "/v1/keys/%s/versions/1/state", key);
	json_decref(ith_call("POST", path, admin, json_pack("{s:s, s:b}", "state",
	    "retired", "force", 1), 200, NULL));
	json_decref(execute(id, 409, "state_changed"));
	a = get_ceremony(id);
	ith_check(a && strcmp(jstr(a, "state"), "stale") == 0,
	    "a ceremony whose target changed is stale (%s)", a ? jstr(a, "state") :
	    "-");
	json_decref(a);
	json_decref(execute(id, 409, "ceremony_closed"));
	ith_check(strcmp(version_state(key, 1), "retired") == 0,
	    "nothing was destroyed: v1 is %s", version_state(key, 1));
}

/* key.destroy erases the material: nothing unwraps under it any more. */
static void
test_destroy(void)
{
	const char *key = ith_name("dst");
	unsigned char pt[32];
	char id[17], dg[65], path[200], *ct;
	json_t *c;

	if (ith_key_create(key, NULL) != 0)
		return;
	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(key, app, pt, sizeof(pt), NULL, NULL)) == NULL)
		return;
	snprintf(path, sizeof(path), "/v1/keys/%s/rotate", key);
	json_decref(ith_call("POST", path, admin, NULL, 200, NULL));
	/* the primary cannot be destroyed: rotate first (done) */
	if ((c = create(admin, body_of("key.destroy", "key", key, "version", "1"),
	    201, NULL)) != NULL) {
		ids_of(c, id, dg);
		json_decref(c);
		json_decref(decide(id, dg, "bob", "approve", 200, NULL));
		json_decref(decide(id, dg, "carol", "approve", 200, NULL));
		json_decref(execute(id, 200, NULL));
		ith_check(strcmp(version_state(key, 1), "destroyed") == 0,
		    "key.destroy: v1 is %s", version_state(key, 1));
		snprintf(path, sizeof(path), "/v1/keys/%s/unwrap", key);
		json_decref(ith_call("POST", path, app, json_pack("{s:s}",
		    "ciphertext", ct), 409, "version_state"));
	}
	json_decref(create(admin, body_of("key.destroy", "key", key, "version",
	    "2"), 409, "invalid_transition"));
	json_decref(create(admin, body_of("key.destroy", "key", key, "version",
	    "1"), 409, "invalid_transition"));
	json_decref(create(admin, body_of("key.destroy", "key", "no-such-key",
	    "version", "1"), 404, "key_not_found"));
	json_decref(create(admin, body_of("key.destroy", "key", key, "colour",
	    "1"), 400, "invalid_request"));
	json_decref(create(admin, json_pack("{s:s}", "operation", "key.frobnicate"),
	    400, "invalid_request"));
	json_decref(create(app, body_of("key.destroy", "key", key, "version", "1"),
	    403, "forbidden"));
	free(ct);
}

/* The emergency revoke: one officer's signature, effective at once. */
static void
test_revoke(void)
{
	const char *key = ith_name("rvk");
	unsigned char pt[32];
	char path[200], *ct;
	json_t *b, *a;

	if (ith_key_create(key, NULL) != 0)
		return;
	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(key, app, pt, sizeof(pt), NULL, NULL)) == NULL)
		return;
	(void)ith_unwrap_expect(key, app, ct, NULL, pt, sizeof(pt), NULL, NULL);
	snprintf(path, sizeof(path), "/v1/keys/%s/versions/1/revoke", key);
	/* a stale ts, another version's signature, an app token: refused */
	json_decref(ith_call("POST", path, officer, ito_revoke_body("carol", key,
	    1, -600), 403, "invalid_signature"));
	b = ito_revoke_body("carol", key, 2, 0);
	json_decref(ith_call("POST", path, officer, b, 403, "invalid_signature"));
	json_decref(ith_call("POST", path, app, ito_revoke_body("carol", key, 1,
	    0), 403, "forbidden"));
	/* unsigned, through the state route: refused for every token */
	snprintf(path, sizeof(path), "/v1/keys/%s/versions/1/state", key);
	json_decref(ith_call("POST", path, officer, json_pack("{s:s}", "state",
	    "revoked"), 403, "forbidden"));
	json_decref(ith_call("POST", path, admin, json_pack("{s:s}", "state",
	    "revoked"), 403, "forbidden"));
	(void)ith_unwrap_expect(key, app, ct, NULL, pt, sizeof(pt), NULL, NULL);
	/* carol's signed revoke: the very next unwrap and wrap are refused */
	snprintf(path, sizeof(path), "/v1/keys/%s/versions/1/revoke", key);
	b = ito_revoke_body("carol", key, 1, 0);
	a = ith_call("POST", path, officer, json_incref(b), 200, NULL);
	json_decref(a);
	snprintf(path, sizeof(path), "/v1/keys/%s/unwrap", key);
	json_decref(ith_call("POST", path, app, json_pack("{s:s}", "ciphertext",
	    ct), 409, "version_state"));
	snprintf(path, sizeof(path), "/v1/keys/%s/wrap", key);
	json_decref(ith_call("POST", path, app, json_pack("{s:s}", "plaintext",
	    "AAECAw=="), 409, "no_primary_version"));
	/* the same signed body again: revoked is final */
	snprintf(path, sizeof(path), "/v1/keys/%s/versions/1/revoke", key);
	json_decref(ith_call("POST", path, officer, b, 409, "invalid_transition"));
	free(ct);
}

/* An approval made with the openssl command line over the documented
 * message (docs/CEREMONIES.md) is accepted: the format is interoperable. */
static void
test_openssl_interop(void)
{
	const char *key = archived_key();
	char id[17], dg[65], cmd[8600], sig[256] = "";
	const char *who[] = { "alice", "carol" };
	json_t *c, *a;
	size_t i;
	FILE *p;

	if ((c = create(admin, body_of("key.restore", "key", key, "version", "1"),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	for (i = 0; i < 2; i++) {
		snprintf(cmd, sizeof(cmd), "printf 'kms-approval/v1\\n%%s\\n%%s\\n"
		    "%%s\\n' %s %s approve | openssl dgst -sha256 -sign "
		    "'%s/officers/%s.pem' | base64 -w0", dg, who[i], ith_data_dir(),
		    who[i]);
		if ((p = popen(cmd, "r")) == NULL) {
			ith_fail("cannot run openssl");
			return;
		}
		if (fgets(sig, sizeof(sig), p) == NULL)
			sig[0] = '\0';
		pclose(p);
		sig[strcspn(sig, "\r\n")] = '\0';
		if (!ith_check(sig[0] != '\0', "openssl made no signature"))
			return;
		a = ith_call("POST", cpath(id, "/approvals"), officer,
		    json_pack("{s:s, s:s, s:s}", "officer", who[i], "decision",
		    "approve", "signature", sig), 200, NULL);
		json_decref(a);
	}
	json_decref(execute(id, 200, NULL));
	ith_check(strcmp(version_state(key, 1), "active") == 0,
	    "restored with openssl-made approvals: v1 is %s", version_state(key, 1));
}

/* officer.add of a key on an officer's own PKCS#11 token (a SoftHSM token
 * standing in for a smartcard), made and used through kmsctl; then the
 * quorum and the registry change by ceremony. */
static void
test_officers_and_smartcard(void)
{
	const char *kmsctl = getenv("KMSCTL_BIN");
	char dir[4200], pinf[4300], pub[4300], log[4300], uri[] =
	    "pkcs11:token=erin-card;object=erin", id[17], dg[65], *out;
	unsigned char *pem;
	json_t *c, *a;
	const char *key;
	int rc;

	if (!ith_check(kmsctl != NULL, "KMSCTL_BIN is not set"))
		return;
	snprintf(dir, sizeof(dir), "%s/officers", ith_data_dir());
	snprintf(pinf, sizeof(pinf), "%s/erin.pin", ith_data_dir());
	snprintf(pub, sizeof(pub), "%s/erin.pub.pem", dir);
	snprintf(log, sizeof(log), "%s/erin.log", ith_data_dir());
	{
		char *argv[] = { "softhsm2-util", "--init-token", "--free",
		    "--label", "erin-card", "--so-pin", "11111111", "--pin",
		    "22222222", NULL };
		FILE *f = fopen(pinf, "w");

		if (f != NULL) {
			fputs("22222222\n", f);
			fclose(f);
		}
		rc = run(argv, NULL, log);
		if (!ith_check(rc == 0, "softhsm2-util --init-token failed (%d)", rc))
			return;
	}
	{
		char *argv[] = { (char *)kmsctl, "officer", "keygen", "erin",
		    "--pkcs11-uri", uri, "--module", "softhsm2", "--pin-file", pinf,
		    "--dir", dir, NULL };

		rc = run(argv, NULL, log);
		out = read_log(log);
		ith_check(rc == 0 && access(pub, R_OK) == 0, "kmsctl officer keygen "
		    "on the token: exit %d: %s", rc, out);
		free(out);
	}
	if ((pem = ith_read_file(pub, NULL)) == NULL)
		return;
	/* the PEM as it is (the server keeps the DER and its SHA-256) */
	c = create(admin, body_of("officer.add", "name", "erin", "public_key",
	    (const char *)pem), 201, NULL);
	free(pem);
	if (c == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	json_decref(quorum_execute(id, dg));
	json_decref(create(admin, body_of("officer.add", "name", "erin",
	    "public_key", "MFkw"), 400, "invalid_request"));

	/* erin approves with kmsctl and her token */
	key = archived_key();
	if ((c = create(admin, body_of("key.restore", "key", key, "version", "1"),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	{
		char *argv[] = { (char *)kmsctl, "ceremony", "approve", id,
		    "--officer", "erin", "--pkcs11-uri", uri, "--module", "softhsm2",
		    "--pin-file", pinf, "--yes", NULL };

		rc = run(argv, officer, log);
		out = read_log(log);
		ith_check(rc == 0, "kmsctl ceremony approve --pkcs11-uri: exit %d: "
		    "%s", rc, out);
		free(out);
	}
	{
		char keyf[4300];
		char *argv[] = { (char *)kmsctl, "ceremony", "approve", id,
		    "--officer", "carol", "--key", keyf, "--yes", NULL };

		snprintf(keyf, sizeof(keyf), "%s/carol.pem", dir);
		rc = run(argv, officer, log);
		out = read_log(log);
		ith_check(rc == 0, "kmsctl ceremony approve --key: exit %d: %s", rc,
		    out);
		free(out);
	}
	{
		char *argv[] = { (char *)kmsctl, "ceremony", "execute", id, NULL };

		rc = run(argv, admin, log);
		out = read_log(log);
		ith_check(rc == 0 && strstr(out, "state executed") != NULL,
		    "kmsctl ceremony execute: exit %d: %s", rc, out);
		free(out);
		if (rc == 0 && n_executed < MAX_EXEC)
			snprintf(executed[n_executed++], sizeof(executed[0]), "%s", id);
	}
	ith_check(strcmp(version_state(key, 1), "active") == 0,
	    "approved on a token: v1 is %s", version_state(key, 1));

	/* quorum 3; then carol leaves (4 -> 3 active); then back to 2 */
	if ((c = create(admin, body_of("quorum.set", "quorum", "3", NULL, NULL),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	json_decref(quorum_execute(id, dg));
	json_decref(create(admin, body_of("quorum.set", "quorum", "5", NULL, NULL),
	    400, "invalid_request"));
	if ((c = create(admin, body_of("officer.remove", "name", "carol", NULL,
	    NULL), 201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	ith_check(jint(c, "quorum") == 3, "new ceremonies need the new quorum");
	json_decref(c);
	approve2(id, dg);
	json_decref(execute(id, 409, "quorum_not_met"));	/* 2 of 3 */
	json_decref(decide(id, dg, "carol", "approve", 200, NULL));
	json_decref(execute(id, 200, NULL));
	a = ith_call("GET", "/v1/officers", auditor, NULL, 200, NULL);
	ith_check(a && jint(a, "quorum") == 3 && jint(a, "active") == 3,
	    "registry: quorum %lld, %lld active", a ? jint(a, "quorum") : -1,
	    a ? jint(a, "active") : -1);
	json_decref(a);
	/* carol's signatures no longer count; quorum back to 2 needs all 3 */
	json_decref(ith_call("POST", "/v1/keys/no-such/versions/1/revoke", officer,
	    ito_revoke_body("carol", "no-such", 1, 0), 403, "invalid_signature"));
	if ((c = create(admin, body_of("quorum.set", "quorum", "2", NULL, NULL),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	approve2(id, dg);
	{
		char *argv[] = { (char *)kmsctl, "ceremony", "approve", id,
		    "--officer", "erin", "--pkcs11-uri", uri, "--module", "softhsm2",
		    "--pin-file", pinf, "--yes", NULL };

		rc = run(argv, officer, log);
		ith_check(rc == 0, "erin's approval of quorum.set: exit %d", rc);
	}
	json_decref(execute(id, 200, NULL));
}

/* audit_key.rotate: a new kms-audit-v2 signs checkpoints, and both keys
 * are published (also after a restart). */
static void
test_audit_key(void)
{
	char id[17], dg[65], kid[64] = "";
	json_t *c, *a, *keys;

	if ((c = create(officer, json_pack("{s:s}", "operation",
	    "audit_key.rotate"), 201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	ith_check(strstr(jstr(c, "request_text"), "param.label: kms-audit-v2\n") !=
	    NULL, "the new key's label is in the signed text");
	json_decref(c);
	if ((a = quorum_execute(id, dg)) != NULL)
		snprintf(kid, sizeof(kid), "%s", jstr(json_object_get(a, "result"),
		    "kid"));
	json_decref(a);
	a = ith_call("GET", "/v1/audit/keys", auditor, NULL, 200, NULL);
	keys = json_object_get(a, "keys");
	ith_check(json_array_size(keys) == 2 && strcmp(jstr(json_array_get(keys,
	    1), "label"), "kms-audit-v2") == 0 && strcmp(jstr(json_array_get(keys,
	    1), "kid"), kid) == 0, "both audit keys are published");
	json_decref(a);
	a = ith_call("GET", "/v1/audit/head", auditor, NULL, 200, NULL);
	ith_check(a && strcmp(jstr(json_object_get(a, "checkpoint"), "kid"), kid) ==
	    0, "the checkpoint after the execution is signed by the new key");
	json_decref(a);
	if (!ith_check(ith_restart() == 0, "restart"))
		return;
	a = ith_call("GET", "/v1/audit/keys", auditor, NULL, 200, NULL);
	ith_check(json_array_size(json_object_get(a, "keys")) == 2,
	    "both keys are published after a restart");
	json_decref(a);
	a = ith_call("GET", "/v1/audit/head", auditor, NULL, 200, NULL);
	ith_check(a && strcmp(jstr(json_object_get(a, "checkpoint"), "kid"), kid) ==
	    0, "after a restart checkpoints are still signed by the new key");
	json_decref(a);
}

/* ---- MEK rotation at scale ---- */

struct blob_ref {
	char key[32];
	long version;
	char pt[48];
	char ct[128];
};

static struct blob_ref *blobs;
static size_t n_blobs;

static int
load_blobs(const char *path)
{
	char line[512];
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return -1;
	blobs = calloc(MEK_KEYS * MEK_VERSIONS, sizeof(*blobs));
	while (blobs != NULL && n_blobs < MEK_KEYS * MEK_VERSIONS &&
	    fgets(line, sizeof(line), f) != NULL) {
		struct blob_ref *b = &blobs[n_blobs];

		if (sscanf(line, "%31s %ld %47s %127s", b->key, &b->version, b->pt,
		    b->ct) == 4)
			n_blobs++;
	}
	fclose(f);
	return blobs != NULL ? 0 : -1;
}

/* Unwraps blobs [from, to) (one batch per key) and checks each plaintext.
 * Returns the number that did not come back right. */
static size_t
unwrap_range(size_t from, size_t to)
{
	size_t i = from, bad = 0;

	while (i < to) {
		size_t j = i, k;
		json_t *batch = json_array(), *a, *res;
		char path[200];

		while (j < to && strcmp(blobs[j].key, blobs[i].key) == 0 && j - i < 1000)
			json_array_append_new(batch, json_pack("{s:s}", "ciphertext",
			    blobs[j++].ct));
		snprintf(path, sizeof(path), "/v1/keys/%s/unwrap", blobs[i].key);
		a = ith_call("POST", path, app, json_pack("{s:o}", "batch", batch),
		    200, NULL);
		res = json_object_get(a, "results");
		for (k = i; k < j; k++) {
			const json_t *r = json_array_get(res, k - i);

			if (strcmp(jstr(r, "plaintext"), blobs[k].pt) != 0)
				bad++;
		}
		json_decref(a);
		i = j;
	}
	return bad;
}

/* Signing keys are wrapped under the MEK too (ec-p256, rsa-2048): made
 * before the rotation, they must sign and verify after it. */
static const char *const sig_types[] = { "ec-p256", "rsa-2048" };
static char sig_keys[2][64];

static void
signing_keys_make(void)
{
	size_t i;

	for (i = 0; i < 2; i++) {
		snprintf(sig_keys[i], sizeof(sig_keys[i]), "%s", ith_name("mek-sig"));
		if (ith_key_create(sig_keys[i], json_pack("{s:s}", "type",
		    sig_types[i])) != 0)
			sig_keys[i][0] = '\0';
	}
}

static void
signing_keys_check(void)
{
	char path[200];
	json_t *s, *v;
	size_t i;

	for (i = 0; i < 2; i++) {
		if (sig_keys[i][0] == '\0')
			continue;
		snprintf(path, sizeof(path), "/v1/keys/%s/sign", sig_keys[i]);
		s = ith_call("POST", path, app, json_pack("{s:s}", "input",
		    "aGVsbG8="), 200, NULL);
		if (s == NULL)
			continue;
		snprintf(path, sizeof(path), "/v1/keys/%s/verify", sig_keys[i]);
		v = ith_call("POST", path, app, json_pack("{s:s, s:s}", "input",
		    "aGVsbG8=", "signature", jstr(s, "signature")), 200, NULL);
		ith_check(v != NULL && json_is_true(json_object_get(v, "valid")),
		    "a %s key made before the MEK rotation signs after it",
		    sig_types[i]);
		json_decref(v);
		json_decref(s);
	}
}

static json_t *
mek_status(void)
{
	return ith_call("GET", "/v1/mek", auditor, NULL, 200, NULL);
}

/* Waits until the rotation has done at least `target` versions; unwraps a
 * few random blobs meanwhile. Returns `done`, or -1 when it finished or
 * stopped first. */
static long long
wait_done(long long target, size_t *unwrapped, size_t *bad)
{
	long long deadline = ith_now_ms() + 120000, done = -1;
	json_t *m, *rot;

	while (ith_now_ms() < deadline) {
		size_t pick = (size_t)rand() % n_blobs;

		m = mek_status();
		rot = json_object_get(m, "rotation");
		done = jint(rot, "done");
		if (strcmp(jstr(rot, "state"), "running") != 0) {
			json_decref(m);
			return -1;
		}
		json_decref(m);
		if (done >= target)
			return done;
		/* wrap/unwrap keep working while the rotation runs */
		*bad += unwrap_range(pick, pick + 1);
		(*unwrapped)++;
		ith_sleep_ms(3);
	}
	return -1;
}

static void
test_mek_rotation(void)
{
	const char *fixture = getenv("MEK_FIXTURE_BIN");
	char conf[4200], list[4200], log[4200], id[17], dg[65];
	char n_keys[16], n_versions[16], *out;
	long long t0, t_fixture, t_rot0, t_rot, total, d1, d2, target;
	size_t unwrapped = 0, bad = 0;
	json_t *c, *m, *rot, *v;
	int rc;

	if (!ith_check(fixture != NULL, "MEK_FIXTURE_BIN is not set"))
		return;
	srand((unsigned)time(NULL));
	snprintf(conf, sizeof(conf), "%s/kmsd.conf", ith_data_dir());
	snprintf(list, sizeof(list), "%s/mek-blobs.txt", ith_data_dir());
	snprintf(log, sizeof(log), "%s/mek-fixture.log", ith_data_dir());
	snprintf(n_keys, sizeof(n_keys), "%d", MEK_KEYS);
	snprintf(n_versions, sizeof(n_versions), "%d", MEK_VERSIONS);
	/* 10,000 versions written straight into the store and token */
	if (!ith_check(ith_stop(NULL, 0) == 0, "stop before the fixture"))
		return;
	t0 = ith_now_ms();
	{
		char *argv[] = { (char *)fixture, conf, "scale", n_keys, n_versions,
		    list, NULL };

		rc = run(argv, NULL, log);
	}
	t_fixture = ith_now_ms() - t0;
	out = read_log(log);
	ith_check(rc == 0, "mek_fixture: exit %d: %s", rc, out);
	free(out);
	if (rc != 0 || !ith_check(ith_start() == 0, "start after the fixture") ||
	    !ith_check(load_blobs(list) == 0 &&
	    n_blobs == MEK_KEYS * MEK_VERSIONS, "the fixture listed %zu blobs",
	    n_blobs))
		return;
	fprintf(stderr, "mek rotation: %zu key versions and blobs made in %lld ms\n",
	    n_blobs, t_fixture);
	/* every blob unwraps before the rotation (a sample: all are checked
	 * after it) */
	ith_check(unwrap_range(0, 500) == 0, "blobs unwrap before the rotation");
	signing_keys_make();

	if ((c = create(admin, json_pack("{s:s}", "operation", "mek.rotate"), 201,
	    NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	approve2(id, dg);
	t_rot0 = ith_now_ms();
	if ((c = execute(id, 200, NULL)) == NULL)
		return;
	total = jint(json_object_get(c, "result"), "total");
	json_decref(c);
	ith_check(total >= MEK_KEYS * MEK_VERSIONS, "the rotation has %lld "
	    "versions to rewrap", total);
	json_decref(create(admin, json_pack("{s:s}", "operation", "mek.rotate"),
	    409, "rotation_in_progress"));

	/* kill -9 at a random point in the first half ... */
	target = total / 10 + rand() % (total * 3 / 10);
	d1 = wait_done(target, &unwrapped, &bad);
	if (!ith_check(d1 >= 0, "the rotation ended before the first kill"))
		return;
	ith_check(ith_kill9() == 0, "kill -9");
	if (!ith_check(ith_start() == 0, "restart after the first kill"))
		return;
	m = mek_status();
	rot = json_object_get(m, "rotation");
	ith_check(jint(rot, "done") >= d1 - 250 && strcmp(jstr(rot, "state"),
	    "running") == 0, "after kill -9 the rotation resumes from its last "
	    "batch (done %lld, seen %lld before the kill)", jint(rot, "done"), d1);
	json_decref(m);
	/* ... and again in the second half */
	target = total / 2 + rand() % (total * 4 / 10);
	d2 = wait_done(target, &unwrapped, &bad);
	if (!ith_check(d2 >= 0, "the rotation ended before the second kill"))
		return;
	ith_check(ith_kill9() == 0, "kill -9");
	if (!ith_check(ith_start() == 0, "restart after the second kill"))
		return;
	fprintf(stderr, "mek rotation: killed at %lld and %lld of %lld\n", d1, d2,
	    total);
	/* resume through kmsctl too, and follow it to the end */
	{
		const char *kmsctl = getenv("KMSCTL_BIN");
		char *argv[] = { (char *)kmsctl, "mek", "rotate", "--resume", NULL };
		char klog[4300];

		snprintf(klog, sizeof(klog), "%s/mek-resume.log", ith_data_dir());
		rc = run(argv, admin, klog);
		out = read_log(klog);
		ith_check(rc == 0 && strstr(out, "verified") != NULL,
		    "kmsctl mek rotate --resume: exit %d: %s", rc, out);
		free(out);
	}
	t_rot = ith_now_ms() - t_rot0;
	m = mek_status();
	rot = json_object_get(m, "rotation");
	ith_check(strcmp(jstr(rot, "state"), "verified") == 0 &&
	    jint(rot, "remaining") == 0, "the rotation is verified with 0 left "
	    "(%s, %lld left)", jstr(rot, "state"), jint(rot, "remaining"));
	v = json_array_get(json_object_get(m, "versions"), 0);
	ith_check(jint(v, "version") == 1 && jint(v, "key_versions") == 0 &&
	    strcmp(jstr(v, "state"), "retired") == 0,
	    "0 key versions under MEK v1 (%lld)", jint(v, "key_versions"));
	v = json_array_get(json_object_get(m, "versions"), 1);
	ith_check(jint(v, "version") == 2 && jint(v, "key_versions") >= total,
	    "every version is under MEK v2 (%lld)", jint(v, "key_versions"));
	json_decref(m);
	fprintf(stderr, "mek rotation: %lld versions rotated in %lld ms with two "
	    "kill -9 and restarts; %zu unwraps during it\n", total, t_rot,
	    unwrapped);
	ith_check(bad == 0, "%zu unwraps failed during the rotation", bad);
	/* every blob wrapped before the rotation still unwraps */
	t0 = ith_now_ms();
	bad = unwrap_range(0, n_blobs);
	ith_check(bad == 0, "%zu of %zu blobs do not unwrap after the rotation",
	    bad, n_blobs);
	fprintf(stderr, "mek rotation: %zu blobs unwrapped after it in %lld ms\n",
	    n_blobs, ith_now_ms() - t0);
	signing_keys_check();

	/* only now may v1 be disabled, by its own ceremony */
	if ((c = create(admin, body_of("mek.disable", "version", "2", NULL, NULL),
	    409, "invalid_transition")) != NULL)
		json_decref(c);
	if ((c = create(admin, body_of("mek.disable", "version", "1", NULL, NULL),
	    201, NULL)) == NULL)
		return;
	ids_of(c, id, dg);
	json_decref(c);
	json_decref(decide(id, dg, "bob", "approve", 200, NULL));
	json_decref(decide(id, dg, "alice", "approve", 200, NULL));
	json_decref(execute(id, 200, NULL));
	m = mek_status();
	v = json_array_get(json_object_get(m, "versions"), 0);
	ith_check(strcmp(jstr(v, "state"), "disabled") == 0, "MEK v1 is %s",
	    jstr(v, "state"));
	json_decref(m);
	/* a restart empties the key cache: everything unwraps under v2 */
	if (!ith_check(ith_restart() == 0, "restart after mek.disable"))
		return;
	ith_check(unwrap_range(0, 300) == 0 &&
	    unwrap_range(n_blobs - 300, n_blobs) == 0,
	    "blobs unwrap after MEK v1 is disabled");
	signing_keys_check();
	ith_check(ith_key_create(ith_name("after-mek"), NULL) == 0,
	    "new keys are made under MEK v2");
}

/* `kmsctl audit verify` on an exported bundle: valid, and lists every
 * executed ceremony with its quorum. */
static void
test_audit_verify(void)
{
	const char *kmsctl = getenv("KMSCTL_BIN");
	char dir[4200], log[4200], *out, want[64];
	size_t i;
	int rc;

	if (!ith_check(kmsctl != NULL, "KMSCTL_BIN is not set"))
		return;
	snprintf(dir, sizeof(dir), "%s/bundle", ith_data_dir());
	snprintf(log, sizeof(log), "%s/verify.log", ith_data_dir());
	{
		char *argv[] = { (char *)kmsctl, "audit", "export", dir, NULL };

		rc = run(argv, auditor, log);
		out = read_log(log);
		if (!ith_check(rc == 0, "kmsctl audit export: exit %d: %s", rc, out)) {
			free(out);
			return;
		}
		free(out);
	}
	{
		char *argv[] = { (char *)kmsctl, "audit", "verify", dir, NULL };

		rc = run(argv, NULL, log);
	}
	out = read_log(log);
	ith_check(rc == 0 && strstr(out, "valid: ") != NULL,
	    "kmsctl audit verify: exit %d: %.2000s", rc, out);
	for (i = 0; i < n_executed; i++) {
		snprintf(want, sizeof(want), "ceremony %s (", executed[i]);
		ith_check(strstr(out, want) != NULL && strstr(strstr(out, want),
		    "executed with quorum ") != NULL,
		    "audit verify does not show execution %s", executed[i]);
	}
	fprintf(stderr, "audit verify: %zu executions listed\n", n_executed);
	free(out);
}

int
main(void)
{
	CU_pSuite s;
	unsigned failed;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	if ((s = CU_add_suite("ceremony setup", NULL, NULL)) == NULL ||
	    !CU_add_test(s, "start kmsd with three officers, quorum 2", test_start) ||
	    (s = CU_add_suite("ceremonies", suite_ready, NULL)) == NULL ||
	    !CU_add_test(s, "M-1 approvals wait; duplicates count once; at most "
	    "once", test_quorum_and_once) ||
	    !CU_add_test(s, "the requester's approval does not count",
	    test_requester) ||
	    !CU_add_test(s, "other digest, unknown key, expiry, final rejects",
	    test_bad_approvals) ||
	    !CU_add_test(s, "a changed target state fails execution", test_stale) ||
	    !CU_add_test(s, "key.destroy erases the material", test_destroy) ||
	    !CU_add_test(s, "one officer's signed revoke stops use at once",
	    test_revoke) ||
	    !CU_add_test(s, "approvals made with the openssl command line",
	    test_openssl_interop) ||
	    !CU_add_test(s, "officers on a PKCS#11 token, quorum and registry "
	    "changes", test_officers_and_smartcard) ||
	    !CU_add_test(s, "audit_key.rotate", test_audit_key) ||
	    !CU_add_test(s, "key.import: OpenSSL-wrapped key, M-1 waits, "
	    "M imports", test_import) ||
	    !CU_add_test(s, "key.import: openssl pkeyutl and kmsctl --wrapped; "
	    "revoke evicts", test_import_openssl_cli) ||
	    !CU_add_test(s, "key.import: signed hash, garbage bytes, no upload",
	    test_import_refused) ||
	    (s = CU_add_suite("mek rotation", suite_ready, NULL)) == NULL ||
	    !CU_add_test(s, "10,000 versions, kill -9 twice, resume, disable v1",
	    test_mek_rotation) ||
	    (s = CU_add_suite("audit", suite_ready, NULL)) == NULL ||
	    !CU_add_test(s, "kmsctl audit verify shows each execution's quorum",
	    test_audit_verify)) {
		fprintf(stderr, "registering the suites failed: %s\n",
		    CU_get_error_msg());
		CU_cleanup_registry();
		return 2;
	}
	failed = ith_cu_run();
	if (failed != 0)
		ith_print_log_tail(60);
	CU_cleanup_registry();
	free(blobs);
	free(app);
	free(officer);
	free(auditor);
	ith_teardown();
	return failed != 0 ? 1 : 0;
}
