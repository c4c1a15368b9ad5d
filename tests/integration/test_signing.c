/* Integration tests of signing keys: sign through the API and verify with
 * the openssl command line, against the PEM of /public and against a key
 * rebuilt from the JWKS entry; JWS across rotations; revocation leaves the
 * JWKS at once; ETag and 304; bad input; roles; the audit record. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "itest.h"
#include "officers.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int
suite_init(void)
{
	return it_ready();
}

static const char *
sget(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "";
}

/* ---- files and the openssl command line ------------------------------- */

static const char *
files_dir(void)
{
	static char dir[512];

	snprintf(dir, sizeof(dir), "%s/signing-files", ith_data_dir());
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		ith_fail("mkdir %s: %s", dir, strerror(errno));
	return dir;
}

/* Writes `n` bytes to <files>/<name>; `path` receives the path. */
static int
put_file(const char *name, const void *p, size_t n, char path[600])
{
	FILE *f;
	int ok;

	snprintf(path, 600, "%s/%s", files_dir(), name);
	if ((f = fopen(path, "wb")) == NULL) {
		ith_fail("cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	ok = fwrite(p, 1, n, f) == n;
	ok = fclose(f) == 0 && ok;
	if (!ok)
		ith_fail("writing %s failed", path);
	return ok ? 0 : -1;
}

/* Runs argv (openssl ...) with output discarded; its exit status, or -1. */
static int
run(const char *const argv[])
{
	pid_t pid;
	int st, fd;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		if ((fd = open("/dev/null", O_WRONLY)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* `openssl` verifies `sig_path` (DER for ES256) over `msg_path` with the
 * public key in `pem_path`: 0 when it says the signature is good. */
static int
openssl_verify(const char *alg, const char *pem_path, const char *msg_path,
    const char *sig_path)
{
	if (strcmp(alg, "EdDSA") == 0) {
		const char *argv[] = { "openssl", "pkeyutl", "-verify", "-pubin",
		    "-inkey", pem_path, "-rawin", "-in", msg_path, "-sigfile",
		    sig_path, NULL };

		return run(argv);
	}
	if (strcmp(alg, "PS256") == 0) {
		const char *argv[] = { "openssl", "dgst", "-sha256", "-verify",
		    pem_path, "-sigopt", "rsa_padding_mode:pss", "-sigopt",
		    "rsa_pss_saltlen:32", "-signature", sig_path, msg_path, NULL };

		return run(argv);
	}
	{
		const char *argv[] = { "openssl", "dgst", "-sha256", "-verify",
		    pem_path, "-signature", sig_path, msg_path, NULL };

		return run(argv);
	}
}

/* ---- base64url and keys rebuilt from JWKs (OpenSSL only) -------------- */

static unsigned char *
unb64url(const char *s, size_t *n)
{
	size_t len = strlen(s), i;
	char *std = malloc(len + 4);
	unsigned char *out = NULL;

	*n = 0;
	for (i = 0; i < len; i++)
		std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	while (i % 4 != 0)
		std[i++] = '=';
	std[i] = '\0';
	if (ith_unb64(std, &out, n) != 0)
		out = NULL;
	free(std);
	return out;
}

/* PEM of the public key that JWK `jwk` describes, built with
 * EVP_PKEY_fromdata from the JWK members alone: no kmsd code. */
static char *
pem_from_jwk(json_t *jwk)
{
	const char *kty = sget(jwk, "kty");
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	unsigned char *a = NULL, *b = NULL, pub[65];
	size_t al = 0, bl = 0;
	BIGNUM *bn = NULL, *be = NULL;
	BIO *bio = NULL;
	char *pem = NULL, *data;
	long n;

	if (strcmp(kty, "EC") == 0) {
		a = unb64url(sget(jwk, "x"), &al);
		b = unb64url(sget(jwk, "y"), &bl);
		if (a == NULL || b == NULL || al != 32 || bl != 32 ||
		    strcmp(sget(jwk, "crv"), "P-256") != 0)
			goto out;
		pub[0] = 0x04;
		memcpy(pub + 1, a, 32);
		memcpy(pub + 33, b, 32);
		OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
		    "P-256", 0);
		OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
		    sizeof(pub));
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	} else if (strcmp(kty, "RSA") == 0) {
		a = unb64url(sget(jwk, "n"), &al);
		b = unb64url(sget(jwk, "e"), &bl);
		if (a == NULL || b == NULL)
			goto out;
		bn = BN_bin2bn(a, (int)al, NULL);
		be = BN_bin2bn(b, (int)bl, NULL);
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn);
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be);
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else if (strcmp(kty, "OKP") == 0 &&
	    strcmp(sget(jwk, "crv"), "Ed25519") == 0) {
		a = unb64url(sget(jwk, "x"), &al);
		if (a == NULL || al != 32)
			goto out;
		OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, a,
		    al);
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "ED25519", NULL);
	} else
		goto out;
	if (ctx == NULL || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PUBKEY(bio, pkey) ||
	    (n = BIO_get_mem_data(bio, &data)) <= 0)
		goto out;
	pem = strndup(data, (size_t)n);
out:
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	free(a);
	free(b);
	return pem;
}

/* Raw r || s to DER, with OpenSSL, for `openssl dgst`. */
static unsigned char *
ecdsa_der(const unsigned char *raw, size_t *len)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	unsigned char *der = NULL;
	int n;

	ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
	n = i2d_ECDSA_SIG(es, &der);
	ECDSA_SIG_free(es);
	*len = n > 0 ? (size_t)n : 0;
	return n > 0 ? der : NULL;
}

/* ---- the JWKS over plain libcurl (headers included) -------------------- */

struct fetch {
	char *body;
	size_t len;
	char etag[128];
	char cache_control[128];
	char content_type[128];
	char request_id[64];
};

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct fetch *f = arg;
	char *grown = realloc(f->body, f->len + size * n + 1);

	if (grown == NULL)
		return 0;
	f->body = grown;
	memcpy(f->body + f->len, p, size * n);
	f->len += size * n;
	f->body[f->len] = '\0';
	return size * n;
}

static void
header_value(const char *line, size_t len, const char *name, char *out,
    size_t outlen)
{
	size_t nl = strlen(name), vl;
	const char *v;

	if (len <= nl || strncasecmp(line, name, nl) != 0)
		return;
	v = line + nl;
	vl = len - nl;
	while (vl > 0 && (*v == ' '))
		v++, vl--;
	while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
		vl--;
	snprintf(out, outlen, "%.*s", (int)vl, v);
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct fetch *f = arg;

	header_value(p, size * n, "ETag:", f->etag, sizeof(f->etag));
	header_value(p, size * n, "Cache-Control:", f->cache_control,
	    sizeof(f->cache_control));
	header_value(p, size * n, "Content-Type:", f->content_type,
	    sizeof(f->content_type));
	header_value(p, size * n, "X-Request-Id:", f->request_id,
	    sizeof(f->request_id));
	return size * n;
}

/* GET /.well-known/jwks.json without a token, optionally with
 * If-None-Match. Returns the status (0: no answer); *keys (may be NULL)
 * gets the parsed "keys" array of a 200 (caller decrefs the document via
 * json_decref on *doc). */
static long
jwks_get(const char *if_none_match, struct fetch *f, json_t **doc)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[512], hdr[300];
	long st = 0;

	memset(f, 0, sizeof(*f));
	if (doc != NULL)
		*doc = NULL;
	snprintf(url, sizeof(url), "%s/.well-known/jwks.json", ith_base_url());
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
	if (if_none_match != NULL) {
		snprintf(hdr, sizeof(hdr), "If-None-Match: %s", if_none_match);
		hl = curl_slist_append(hl, hdr);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	}
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	if (st == 0)
		ith_fail("GET /.well-known/jwks.json: no answer");
	else if (f->request_id[0] != '\0')
		ith_check(ith_record_request_id(f->request_id),
		    "JWKS X-Request-Id %s seen before", f->request_id);
	if (st == 200 && doc != NULL)
		*doc = json_loads(f->body ? f->body : "", 0, NULL);
	return st;
}

/* The JWKS entry with `kid` and `alg` (borrowed from doc), or NULL. */
static json_t *
jwks_entry(json_t *doc, const char *kid, const char *alg)
{
	json_t *e;
	size_t i;

	json_array_foreach(json_object_get(doc, "keys"), i, e)
		if (strcmp(sget(e, "kid"), kid) == 0 &&
		    (alg == NULL || strcmp(sget(e, "alg"), alg) == 0))
			return e;
	return NULL;
}

static size_t
jwks_count_kid(json_t *doc, const char *kid)
{
	json_t *e;
	size_t i, n = 0;

	json_array_foreach(json_object_get(doc, "keys"), i, e)
		if (strcmp(sget(e, "kid"), kid) == 0)
			n++;
	return n;
}

/* ---- API helpers ------------------------------------------------------ */

static const char *
new_sign_key(const char *prefix, const char *type)
{
	return it_new_key(prefix, json_pack("{s:s}", "type", type));
}

/* The kid of version `v` of `key` from GET /v1/keys/{key}; "" if none. */
static void
version_kid(const char *key, long v, char kid[64])
{
	json_t *a = ith_call("GET", it_kpath(key, NULL), T.admin, NULL, 200, NULL);
	json_t *e;
	size_t i;

	kid[0] = '\0';
	json_array_foreach(json_object_get(a, "versions"), i, e)
		if (json_integer_value(json_object_get(e, "version")) == v)
			snprintf(kid, 64, "%s", sget(e, "kid"));
	json_decref(a);
}

/* Signs; returns the answer (caller decrefs) or NULL after a failure. */
static json_t *
sign(const char *key, json_t *body)
{
	json_t *a = ith_call("POST", it_kpath(key, "sign"), T.app, body, 200, NULL);

	if (a != NULL)
		ith_check(json_is_string(json_object_get(a, "signature")) &&
		    json_is_integer(json_object_get(a, "key_version")) &&
		    strlen(sget(a, "kid")) == 43, "sign %s: answer lacks "
		    "signature, key_version or a 43-character kid", key);
	return a;
}

static json_t *
verify(const char *key, json_t *body)
{
	return ith_call("POST", it_kpath(key, "verify"), T.app, body, 200, NULL);
}

static int
is_valid(json_t *a)
{
	return json_is_true(json_object_get(a, "valid"));
}

/* ---- tests -------------------------------------------------------------- */

static const struct {
	const char *type;
	const char *alg;
} algs[] = {
	{ "ec-p256", "ES256" },
	{ "rsa-2048", "RS256" },
	{ "rsa-2048", "PS256" },
	{ "rsa-3072", "RS256" },
	{ "rsa-3072", "PS256" },
	{ "ed25519", "EdDSA" },
};

/* For each algorithm: a raw signature and a JWS made through the API
 * verify with `openssl` against the PEM of /public and against the key
 * rebuilt from the JWKS entry; a changed message does not. */
static void
test_openssl_verifies_each_alg(void)
{
	char key_of_type[4][160] = { "", "", "", "" };
	static const char *const types[] = { "ec-p256", "rsa-2048", "rsa-3072",
	    "ed25519" };
	unsigned char msg[300];
	size_t i, t;

	ith_random(msg, sizeof(msg));
	for (t = 0; t < N_OF(types); t++)
		snprintf(key_of_type[t], sizeof(key_of_type[t]), "%s",
		    new_sign_key("sigalg", types[t]));
	for (i = 0; i < N_OF(algs); i++) {
		const char *key = NULL, *kid;
		char pem_path[600], jpem_path[600], msg_path[600], sig_path[600],
		    bad_path[600], si_path[600], jsig_path[600], name[64];
		json_t *a = NULL, *pub = NULL, *doc = NULL, *ent, *v0, *j = NULL;
		struct fetch f;
		unsigned char *sig = NULL, *jsig = NULL, *der = NULL;
		size_t sig_len = 0, jsig_len = 0, der_len = 0;
		char *b64 = ith_b64(msg, sizeof(msg)), *jpem = NULL, *dot;
		const char *jws;

		for (t = 0; t < N_OF(types); t++)
			if (strcmp(types[t], algs[i].type) == 0)
				key = key_of_type[t];
		/* raw */
		a = sign(key, json_pack("{s:s, s:s}", "input", b64, "alg",
		    algs[i].alg));
		if (a == NULL)
			goto next;
		ith_check(strcmp(sget(a, "alg"), algs[i].alg) == 0,
		    "sign %s: alg %s, expected %s", key, sget(a, "alg"), algs[i].alg);
		kid = sget(a, "kid");
		if (ith_unb64(sget(a, "signature"), &sig, &sig_len) != 0) {
			ith_fail("sign %s: signature is not base64", key);
			goto next;
		}
		pub = ith_call("GET", it_kpath(key, "public"), T.app, NULL, 200,
		    NULL);
		v0 = json_array_get(json_object_get(pub, "versions"), 0);
		ith_check(strcmp(sget(v0, "kid"), kid) == 0, "/public kid %s is "
		    "not the signing kid %s", sget(v0, "kid"), kid);
		snprintf(name, sizeof(name), "alg%zu.pem", i);
		if (put_file(name, sget(v0, "pem"), strlen(sget(v0, "pem")),
		    pem_path) != 0)
			goto next;
		snprintf(name, sizeof(name), "alg%zu.msg", i);
		(void)put_file(name, msg, sizeof(msg), msg_path);
		snprintf(name, sizeof(name), "alg%zu.sig", i);
		(void)put_file(name, sig, sig_len, sig_path);
		msg[0] ^= 1;
		snprintf(name, sizeof(name), "alg%zu.bad", i);
		(void)put_file(name, msg, sizeof(msg), bad_path);
		msg[0] ^= 1;
		ith_check(openssl_verify(algs[i].alg, pem_path, msg_path,
		    sig_path) == 0, "openssl does not verify the %s signature of "
		    "%s with the PEM of /public", algs[i].alg, key);
		ith_check(openssl_verify(algs[i].alg, pem_path, bad_path,
		    sig_path) == 1, "openssl verifies a %s signature of %s over a "
		    "changed message", algs[i].alg, key);

		/* the same against the key rebuilt from the JWKS entry */
		if (jwks_get(NULL, &f, &doc) != 200) {
			ith_fail("JWKS: not 200");
			goto next;
		}
		free(f.body);
		if ((ent = jwks_entry(doc, kid, algs[i].alg)) == NULL) {
			ith_fail("JWKS has no entry kid %s alg %s", kid, algs[i].alg);
			goto next;
		}
		ith_check(strcmp(sget(ent, "use"), "sig") == 0,
		    "JWKS entry %s: use is not sig", kid);
		if ((jpem = pem_from_jwk(ent)) == NULL) {
			ith_fail("JWKS entry %s does not make a public key", kid);
			goto next;
		}
		ith_check(strcmp(jpem, sget(v0, "pem")) == 0, "the key rebuilt "
		    "from the JWKS is not the key of /public (%s)", kid);
		snprintf(name, sizeof(name), "alg%zu.jwk.pem", i);
		(void)put_file(name, jpem, strlen(jpem), jpem_path);
		ith_check(openssl_verify(algs[i].alg, jpem_path, msg_path,
		    sig_path) == 0, "openssl does not verify the %s signature of "
		    "%s with the key from the JWKS", algs[i].alg, key);

		/* a JWS: openssl checks its signature over the signing input */
		j = sign(key, json_pack("{s:s, s:s, s:s}", "input", b64, "format",
		    "jws", "alg", algs[i].alg));
		jws = sget(j, "signature");
		if ((dot = strrchr(jws, '.')) == NULL) {
			ith_fail("JWS of %s has no signature segment", key);
			goto next;
		}
		snprintf(name, sizeof(name), "alg%zu.si", i);
		(void)put_file(name, jws, (size_t)(dot - jws), si_path);
		if ((jsig = unb64url(dot + 1, &jsig_len)) == NULL) {
			ith_fail("JWS signature of %s is not base64url", key);
			goto next;
		}
		if (strcmp(algs[i].alg, "ES256") == 0) {
			ith_check(jsig_len == 64, "ES256 JWS signature is %zu bytes, "
			    "not 64 (r || s)", jsig_len);
			der = ecdsa_der(jsig, &der_len);
		}
		snprintf(name, sizeof(name), "alg%zu.jsig", i);
		(void)put_file(name, der ? der : jsig, der ? der_len : jsig_len,
		    jsig_path);
		ith_check(openssl_verify(algs[i].alg, jpem_path, si_path,
		    jsig_path) == 0, "openssl does not verify the %s JWS of %s",
		    algs[i].alg, key);
		json_decref(verify(key, json_pack("{s:s}", "jws", jws)));
next:
		free(b64);
		free(sig);
		free(jsig);
		OPENSSL_free(der);
		free(jpem);
		json_decref(a);
		json_decref(j);
		json_decref(pub);
		json_decref(doc);
	}
}

/* /verify of raw signatures: both ECDSA forms, prehashed digests, the
 * version found without being named, and refusals of what does not fit. */
static void
test_verify_raw(void)
{
	const char *ec = new_sign_key("sigraw", "ec-p256");
	char eck[160];
	unsigned char msg[64], digest[32];
	char *b64, *d64;
	json_t *a, *r;
	const char *sig;

	snprintf(eck, sizeof(eck), "%s", ec);
	ith_random(msg, sizeof(msg));
	SHA256(msg, sizeof(msg), digest);
	b64 = ith_b64(msg, sizeof(msg));
	d64 = ith_b64(digest, sizeof(digest));

	/* DER (default) */
	a = sign(eck, json_pack("{s:s}", "input", b64));
	sig = sget(a, "signature");
	r = verify(eck, json_pack("{s:s, s:s}", "input", b64, "signature", sig));
	ith_check(is_valid(r) && json_integer_value(json_object_get(r,
	    "key_version")) == 1, "verify of a DER ES256 signature: not valid "
	    "under version 1");
	json_decref(r);
	/* the same signature read as r || s is not one */
	r = verify(eck, json_pack("{s:s, s:s, s:s}", "input", b64, "signature",
	    sig, "marshaling", "jws"));
	ith_check(!is_valid(r), "a DER signature verified as marshaling jws");
	json_decref(r);
	json_decref(a);

	/* r || s */
	a = sign(eck, json_pack("{s:s, s:s}", "input", b64, "marshaling", "jws"));
	{
		unsigned char *raw = NULL;
		size_t rl = 0;

		ith_check(ith_unb64(sget(a, "signature"), &raw, &rl) == 0 &&
		    rl == 64, "marshaling jws: signature is %zu bytes, not 64", rl);
		free(raw);
	}
	r = verify(eck, json_pack("{s:s, s:s, s:s}", "input", b64, "signature",
	    sget(a, "signature"), "marshaling", "jws"));
	ith_check(is_valid(r), "verify of an r || s signature: not valid");
	json_decref(r);
	r = verify(eck, json_pack("{s:s, s:s}", "input", b64, "signature",
	    sget(a, "signature")));
	ith_check(!is_valid(r) && json_is_string(json_object_get(r, "reason")),
	    "an r || s signature verified as DER, or no reason given");
	json_decref(r);
	json_decref(a);

	/* prehashed: the digest signed, the message verifies, and back */
	a = sign(eck, json_pack("{s:s, s:b}", "input", d64, "prehashed", 1));
	r = verify(eck, json_pack("{s:s, s:s}", "input", b64, "signature",
	    sget(a, "signature")));
	ith_check(is_valid(r), "a prehashed ES256 signature does not verify "
	    "over the message");
	json_decref(r);
	r = verify(eck, json_pack("{s:s, s:s, s:b, s:i}", "input", d64,
	    "signature", sget(a, "signature"), "prehashed", 1, "key_version", 1));
	ith_check(is_valid(r), "a prehashed ES256 signature does not verify "
	    "prehashed");
	json_decref(r);
	/* a wrong message: valid false with a reason, not an error */
	r = verify(eck, json_pack("{s:s, s:s}", "input", d64, "signature",
	    sget(a, "signature")));
	ith_check(!is_valid(r) && json_is_null(json_object_get(r, "key_version"))
	    && json_is_string(json_object_get(r, "reason")),
	    "a signature over another message: expected valid false, "
	    "key_version null and a reason");
	json_decref(r);
	(void)ith_expect_error("POST", it_kpath(eck, "verify"), T.app,
	    json_pack("{s:s, s:s, s:i}", "input", b64, "signature",
	    sget(a, "signature"), "key_version", 9), 404, "version_not_found");
	json_decref(a);

	/* RSA prehashed, both algorithms */
	{
		const char *rk = new_sign_key("sigraw", "rsa-2048");
		static const char *const ra[] = { "RS256", "PS256" };
		size_t i;

		for (i = 0; i < 2; i++) {
			a = sign(rk, json_pack("{s:s, s:b, s:s}", "input", d64,
			    "prehashed", 1, "alg", ra[i]));
			r = verify(rk, json_pack("{s:s, s:s, s:s}", "input", b64,
			    "signature", sget(a, "signature"), "alg", ra[i]));
			ith_check(is_valid(r), "prehashed %s does not verify", ra[i]);
			json_decref(r);
			/* RS256 is not PS256 */
			r = verify(rk, json_pack("{s:s, s:s, s:s}", "input", b64,
			    "signature", sget(a, "signature"), "alg", ra[1 - i]));
			ith_check(!is_valid(r), "a %s signature verified as %s",
			    ra[i], ra[1 - i]);
			json_decref(r);
			json_decref(a);
		}
	}
	free(b64);
	free(d64);
}

/* A JWS made under version 1 still verifies after two rotations, through
 * /verify (the kid picks the version) and through the JWKS, which keeps
 * every published version; archived versions keep verifying. */
static void
test_rotation_keeps_jws_valid(void)
{
	static const char *const types[] = { "ec-p256", "rsa-2048", "ed25519" };
	size_t t;

	for (t = 0; t < N_OF(types); t++) {
		char key[160], kid1[64], kid3[64], *b64;
		unsigned char msg[40];
		json_t *a, *r, *doc = NULL;
		struct fetch f;
		char jws1[4096];
		long v;

		snprintf(key, sizeof(key), "%s", new_sign_key("sigrot", types[t]));
		ith_random(msg, sizeof(msg));
		b64 = ith_b64(msg, sizeof(msg));
		a = sign(key, json_pack("{s:s, s:s, s:{s:s}}", "input", b64,
		    "format", "jws", "header", "typ", "JWT"));
		snprintf(jws1, sizeof(jws1), "%s", sget(a, "signature"));
		snprintf(kid1, sizeof(kid1), "%s", sget(a, "kid"));
		json_decref(a);
		for (v = 0; v < 2; v++)
			json_decref(ith_call("POST", it_kpath(key, "rotate"), T.admin,
			    NULL, 200, NULL));
		version_kid(key, 3, kid3);
		ith_check(kid3[0] != '\0' && strcmp(kid1, kid3) != 0,
		    "%s: version 3 has no kid of its own", key);
		r = verify(key, json_pack("{s:s}", "jws", jws1));
		ith_check(is_valid(r) && json_integer_value(json_object_get(r,
		    "key_version")) == 1 && strcmp(sget(r, "kid"), kid1) == 0,
		    "%s: a version 1 JWS is not valid under version 1 after two "
		    "rotations", key);
		json_decref(r);
		/* new signatures come from version 3 */
		a = sign(key, json_pack("{s:s, s:s}", "input", b64, "format", "jws"));
		ith_check(json_integer_value(json_object_get(a, "key_version")) == 3
		    && strcmp(sget(a, "kid"), kid3) == 0, "%s: signing after two "
		    "rotations does not use version 3", key);
		json_decref(a);
		if (jwks_get(NULL, &f, &doc) == 200) {
			char kid2[64];

			version_kid(key, 2, kid2);
			ith_check(jwks_count_kid(doc, kid1) >= 1 &&
			    jwks_count_kid(doc, kid2) >= 1 &&
			    jwks_count_kid(doc, kid3) >= 1, "%s: the JWKS lacks one "
			    "of versions 1..3", key);
		}
		free(f.body);
		json_decref(doc);
		/* retired, then archived: still verifies (DESIGN.md section 3) */
		json_decref(ith_call("POST", it_kpath(key, "versions/1/state"),
		    T.admin, json_pack("{s:s, s:b}", "state", "retired", "force", 1),
		    200, NULL));
		json_decref(ith_call("POST", it_kpath(key, "versions/1/state"),
		    T.admin, json_pack("{s:s}", "state", "archived"), 200, NULL));
		r = verify(key, json_pack("{s:s}", "jws", jws1));
		ith_check(is_valid(r), "%s: an archived version no longer verifies",
		    key);
		json_decref(r);
		free(b64);
	}
}

/* Revocation: the version leaves the JWKS at once, /verify answers valid
 * false with the reason; the ETag changes exactly when the set changes;
 * If-None-Match gives 304. */
static void
test_revoke_jwks_etag(void)
{
	char key[160], kid1[64], jws1[4096], e0[128], e1[128], e2[128], e3[128];
	unsigned char msg[20];
	char *b64;
	json_t *a, *r, *doc = NULL, *k;
	struct fetch f;
	size_t i;
	long st;

	snprintf(key, sizeof(key), "%s", new_sign_key("sigrev", "ec-p256"));
	ith_random(msg, sizeof(msg));
	b64 = ith_b64(msg, sizeof(msg));
	a = sign(key, json_pack("{s:s, s:s}", "input", b64, "format", "jws"));
	snprintf(jws1, sizeof(jws1), "%s", sget(a, "signature"));
	snprintf(kid1, sizeof(kid1), "%s", sget(a, "kid"));
	json_decref(a);

	/* headers of a 200 */
	st = jwks_get(NULL, &f, &doc);
	ith_check(st == 200 && strlen(f.etag) == 66 && f.etag[0] == '"' &&
	    f.etag[65] == '"', "JWKS: status %ld, ETag '%s' is not a quoted "
	    "SHA-256", st, f.etag);
	ith_check(strcmp(f.cache_control, "public, max-age=300") == 0,
	    "JWKS Cache-Control is '%s'", f.cache_control);
	ith_check(strncmp(f.content_type, "application/json", 16) == 0,
	    "JWKS Content-Type is '%s'", f.content_type);
	{
		unsigned char d[32];
		char hex[67];

		SHA256((unsigned char *)(f.body ? f.body : ""), f.len, d);
		hex[0] = '"';
		for (i = 0; i < 32; i++)
			snprintf(hex + 1 + 2 * i, 3, "%02x", d[i]);
		hex[65] = '"';
		hex[66] = '\0';
		ith_check(strcmp(hex, f.etag) == 0, "JWKS ETag %s is not the "
		    "SHA-256 of the body (%s)", f.etag, hex);
	}
	ith_check(jwks_count_kid(doc, kid1) == 1, "JWKS lacks kid %s", kid1);
	json_array_foreach(json_object_get(doc, "keys"), i, k)
		if (json_object_get(k, "d") != NULL || json_object_get(k, "p") !=
		    NULL)
			ith_fail("a JWKS entry has private members");
	snprintf(e0, sizeof(e0), "%s", f.etag);
	free(f.body);
	json_decref(doc);
	doc = NULL;

	/* 304 on a match (also in a list, also weak), 200 otherwise */
	st = jwks_get(e0, &f, NULL);
	ith_check(st == 304 && f.len == 0 && strcmp(f.etag, e0) == 0 &&
	    f.cache_control[0] != '\0', "If-None-Match with the current ETag: "
	    "status %ld, %zu body bytes, ETag '%s'", st, f.len, f.etag);
	free(f.body);
	{
		char list[300];

		snprintf(list, sizeof(list), "\"x\", W/%s", e0);
		st = jwks_get(list, &f, NULL);
		ith_check(st == 304, "If-None-Match list with a weak match: %ld", st);
		free(f.body);
		st = jwks_get("*", &f, NULL);
		ith_check(st == 304, "If-None-Match *: %ld", st);
		free(f.body);
		st = jwks_get("\"0000\"", &f, NULL);
		ith_check(st == 200 && f.len > 0, "If-None-Match of another ETag: "
		    "%ld", st);
		free(f.body);
	}

	/* things that do not change the set leave the ETag alone: a sign, an
	 * encryption key, active -> retired of a published version */
	json_decref(sign(key, json_pack("{s:s}", "input", b64)));
	(void)it_new_key("sigrev-aes", NULL);
	st = jwks_get(e0, &f, NULL);
	ith_check(st == 304, "a sign or a new AES key changed the JWKS (%ld)", st);
	free(f.body);
	json_decref(ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200,
	    NULL));
	st = jwks_get(NULL, &f, NULL);
	snprintf(e1, sizeof(e1), "%s", f.etag);
	free(f.body);
	ith_check(strcmp(e0, e1) != 0, "a rotation did not change the JWKS ETag");
	json_decref(ith_call("POST", it_kpath(key, "versions/1/state"), T.admin,
	    json_pack("{s:s, s:b}", "state", "retired", "force", 1), 200, NULL));
	st = jwks_get(NULL, &f, NULL);
	ith_check(strcmp(f.etag, e1) == 0, "retiring a version (still "
	    "published) changed the JWKS ETag");
	free(f.body);
	st = jwks_get(e1, &f, NULL);
	ith_check(st == 304, "If-None-Match after an unchanged set: %ld", st);
	free(f.body);

	/* revoke: gone from the JWKS at once */
	/* a revoke is signed by an officer (docs/CEREMONIES.md) */
	json_decref(ito_revoke(key, 1, "alice", T.officer, 200, NULL));
	st = jwks_get(e1, &f, &doc);
	ith_check(st == 200, "If-None-Match with the ETag from before a revoke: "
	    "%ld, expected 200", st);
	snprintf(e2, sizeof(e2), "%s", f.etag);
	ith_check(strcmp(e2, e1) != 0, "a revoke did not change the JWKS ETag");
	ith_check(jwks_count_kid(doc, kid1) == 0, "revoked kid %s is still in "
	    "the JWKS", kid1);
	free(f.body);
	json_decref(doc);
	doc = NULL;
	st = jwks_get(NULL, &f, NULL);
	snprintf(e3, sizeof(e3), "%s", f.etag);
	free(f.body);
	ith_check(strcmp(e2, e3) == 0, "the JWKS ETag changed with no change");

	r = verify(key, json_pack("{s:s}", "jws", jws1));
	ith_check(r != NULL && !is_valid(r) &&
	    strstr(sget(r, "reason"), "revoked") != NULL &&
	    json_integer_value(json_object_get(r, "key_version")) == 1,
	    "verify of a JWS under a revoked version: expected valid false, "
	    "key_version 1, a reason naming revoked; got %s", r ?
	    sget(r, "reason") : "nothing");
	json_decref(r);
	/* /public lists only published versions */
	a = ith_call("GET", it_kpath(key, "public"), T.auditor, NULL, 200, NULL);
	ith_check(json_array_size(json_object_get(a, "versions")) == 1,
	    "/public of %s lists %zu versions, expected 1 (version 1 is "
	    "revoked)", key, json_array_size(json_object_get(a, "versions")));
	json_decref(a);
	free(b64);
}

/* Every bad input answers 4xx JSON with the documented code. */
static void
test_bad_input(void)
{
	char ec[160], ed[160], rsa[160], aes[160], jws[4096], bad[8192], kid[64];
	char *hdr64, *big, *b64;
	unsigned char msg[16], hbytes[200];
	const char *dot1, *dot2;
	json_t *a;
	size_t n;

	snprintf(ec, sizeof(ec), "%s", new_sign_key("sigbad", "ec-p256"));
	snprintf(ed, sizeof(ed), "%s", new_sign_key("sigbad", "ed25519"));
	snprintf(rsa, sizeof(rsa), "%s", new_sign_key("sigbad", "rsa-2048"));
	snprintf(aes, sizeof(aes), "%s", it_new_key("sigbad-aes", NULL));
	ith_random(msg, sizeof(msg));
	b64 = ith_b64(msg, sizeof(msg));
	a = sign(ec, json_pack("{s:s, s:s}", "input", b64, "format", "jws"));
	snprintf(jws, sizeof(jws), "%s", sget(a, "signature"));
	snprintf(kid, sizeof(kid), "%s", sget(a, "kid"));
	json_decref(a);
	dot1 = strchr(jws, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL) {
		ith_fail("JWS %s is not three segments", jws);
		goto out;
	}

#define VERIFY_JWS_ERR(text, status, code) \
	(void)ith_expect_error("POST", it_kpath(ec, "verify"), T.app, \
	    json_pack("{s:s}", "jws", (text)), (status), (code))

	/* unknown kid */
	n = (size_t)snprintf((char *)hbytes, sizeof(hbytes),
	    "{\"alg\":\"ES256\",\"kid\":\"nope\"}");
	hdr64 = ith_b64url(hbytes, n);
	snprintf(bad, sizeof(bad), "%s%s", hdr64, dot1);
	free(hdr64);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	/* wrong alg in the header: another family, none, HS256 */
	{
		static const char *const wrong[] = { "RS256", "none", "HS256",
		    "es256" };
		size_t i;

		for (i = 0; i < N_OF(wrong); i++) {
			n = (size_t)snprintf((char *)hbytes, sizeof(hbytes),
			    "{\"alg\":\"%s\",\"kid\":\"%s\"}", wrong[i], kid);
			hdr64 = ith_b64url(hbytes, n);
			snprintf(bad, sizeof(bad), "%s%s", hdr64, dot1);
			free(hdr64);
			VERIFY_JWS_ERR(bad, 400, "invalid_request");
		}
	}
	/* truncated: no signature segment, only a header */
	snprintf(bad, sizeof(bad), "%.*s", (int)(dot2 - jws), jws);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	snprintf(bad, sizeof(bad), "%.*s", (int)(dot1 - jws), jws);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	VERIFY_JWS_ERR("", 400, "invalid_request");
	/* non-base64url segments */
	snprintf(bad, sizeof(bad), "%s=", jws);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	snprintf(bad, sizeof(bad), "%.*s+%s", (int)(dot2 - jws) - 1, jws, dot2);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	snprintf(bad, sizeof(bad), "%s.x", jws);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	/* a changed signature, or a shorter one, is a signature that does
	 * not verify (valid false), not bad input */
	snprintf(bad, sizeof(bad), "%.*sAAAA", (int)strlen(jws) - 4, jws);
	a = verify(ec, json_pack("{s:s}", "jws", bad));
	ith_check(!is_valid(a), "a JWS with a changed signature verified");
	json_decref(a);
	snprintf(bad, sizeof(bad), "%.*s", (int)(dot2 - jws) + 1 + 40, jws);
	a = verify(ec, json_pack("{s:s}", "jws", bad));
	ith_check(!is_valid(a), "a JWS with a 30-byte signature verified");
	json_decref(a);
	/* a segment of 4n+1 characters is no base64url at all */
	snprintf(bad, sizeof(bad), "%.*s", (int)(dot2 - jws) + 1 + 41, jws);
	VERIFY_JWS_ERR(bad, 400, "invalid_request");
	/* oversized JWS and input: 413 */
	n = 100 * 1024;
	big = malloc(n + 1);
	memset(big, 'A', n);
	memcpy(big, jws, (size_t)(dot1 - jws) + 1);
	big[n - 10] = '.';
	big[n] = '\0';
	VERIFY_JWS_ERR(big, 413, "payload_too_large");
	free(big);
	{
		unsigned char *m = malloc(64 * 1024 + 1);
		char *m64;

		ith_random(m, 64 * 1024 + 1);
		m64 = ith_b64(m, 64 * 1024 + 1);
		(void)ith_expect_error("POST", it_kpath(ec, "sign"), T.app,
		    json_pack("{s:s}", "input", m64), 413, "payload_too_large");
		free(m64);
		/* exactly 64 KiB signs */
		m64 = ith_b64(m, 64 * 1024);
		json_decref(sign(ed, json_pack("{s:s}", "input", m64)));
		free(m64);
		free(m);
	}
	/* JWS with other members */
	(void)ith_expect_error("POST", it_kpath(ec, "verify"), T.app,
	    json_pack("{s:s, s:s}", "jws", jws, "alg", "ES256"), 400,
	    "invalid_request");

#define SIGN_ERR(key, body, status, code) \
	(void)ith_expect_error("POST", it_kpath((key), "sign"), T.app, (body), \
	    (status), (code))

	SIGN_ERR(ec, json_pack("{s:s, s:s}", "input", b64, "format", "cms"), 400,
	    "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s}", "input", b64, "alg", "RS256"), 400,
	    "invalid_request");
	SIGN_ERR(rsa, json_pack("{s:s, s:s}", "input", b64, "alg", "RS512"), 400,
	    "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s}", "input", "not base64!"), 400,
	    "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s}", "input", ""), 400, "invalid_request");
	SIGN_ERR(ec, json_pack("{}"), 400, "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s}", "input", b64, "inptu", b64), 400,
	    "invalid_request");
	/* prehashed: 32 bytes, not for EdDSA, not for JWS */
	SIGN_ERR(ec, json_pack("{s:s, s:b}", "input", b64, "prehashed", 1), 400,
	    "invalid_request");
	{
		unsigned char d[32] = { 0 };
		char *d64 = ith_b64(d, 32);

		SIGN_ERR(ed, json_pack("{s:s, s:b}", "input", d64, "prehashed", 1),
		    400, "invalid_request");
		SIGN_ERR(ec, json_pack("{s:s, s:b, s:s}", "input", d64, "prehashed",
		    1, "format", "jws"), 400, "invalid_request");
		free(d64);
	}
	/* marshaling only for raw ES256 */
	SIGN_ERR(rsa, json_pack("{s:s, s:s}", "input", b64, "marshaling", "der"),
	    400, "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s}", "input", b64, "marshaling", "p1363"),
	    400, "invalid_request");
	/* header: only with jws, an object, and never alg, kid, crit, jku */
	SIGN_ERR(ec, json_pack("{s:s, s:{s:s}}", "input", b64, "header", "typ",
	    "JWT"), 400, "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s, s:{s:s}}", "input", b64, "format",
	    "jws", "header", "alg", "none"), 400, "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s, s:{s:s}}", "input", b64, "format",
	    "jws", "header", "kid", "mine"), 400, "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s, s:{s:[s]}}", "input", b64, "format",
	    "jws", "header", "crit", "exp"), 400, "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s, s:{s:s}}", "input", b64, "format",
	    "jws", "header", "jku", "https://evil.example/jwks"), 400,
	    "invalid_request");
	SIGN_ERR(ec, json_pack("{s:s, s:s, s:s}", "input", b64, "format", "jws",
	    "header", "JWT"), 400, "invalid_request");
	/* extra members land in the protected header after alg and kid */
	a = sign(ec, json_pack("{s:s, s:s, s:{s:s, s:i}}", "input", b64, "format",
	    "jws", "header", "typ", "JWT", "x-n", 7));
	{
		const char *s = sget(a, "signature"), *d = strchr(s, '.');
		char *h64 = d ? strndup(s, (size_t)(d - s)) : NULL;
		unsigned char *h = h64 ? unb64url(h64, &n) : NULL;
		char want[256];

		free(h64);

		snprintf(want, sizeof(want), "{\"alg\":\"ES256\",\"kid\":\"%s\","
		    "\"typ\":\"JWT\",\"x-n\":7}", kid);
		ith_check(h != NULL && n == strlen(want) && memcmp(h, want, n) == 0,
		    "the protected header is not %s", want);
		free(h);
	}
	json_decref(a);

	/* purposes do not mix */
	(void)ith_expect_error("POST", it_kpath(ec, "wrap"), T.app,
	    json_pack("{s:s}", "plaintext", "AAECAw=="), 400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(ec, "datakey"), T.app,
	    json_pack("{s:i}", "bits", 256), 400, "invalid_request");
	SIGN_ERR(aes, json_pack("{s:s}", "input", b64), 400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(aes, "verify"), T.app,
	    json_pack("{s:s}", "jws", jws), 400, "invalid_request");
	(void)ith_expect_error("GET", it_kpath(aes, "public"), T.app, NULL, 400,
	    "invalid_request");
	SIGN_ERR("sigbad-nosuchkey", json_pack("{s:s}", "input", b64), 404,
	    "key_not_found");
	/* unknown key types */
	(void)ith_expect_error("POST", "/v1/keys", T.admin, json_pack("{s:s, s:s}",
	    "name", "sigbad-p384", "type", "ec-p384"), 400, "invalid_request");
out:
	free(b64);
#undef SIGN_ERR
#undef VERIFY_JWS_ERR
}

/* Roles: sign and verify for app tokens matching the key; public for any
 * authenticated role (app tokens only for their keys); JWKS for anyone. */
static void
test_roles(void)
{
	char key[160], *other_tok;
	json_t *a;

	snprintf(key, sizeof(key), "%s", new_sign_key("sigrole", "ec-p256"));
	(void)ith_expect_error("POST", it_kpath(key, "sign"), T.admin,
	    json_pack("{s:s}", "input", "AAECAw=="), 403, "forbidden");
	(void)ith_expect_error("POST", it_kpath(key, "sign"), T.auditor,
	    json_pack("{s:s}", "input", "AAECAw=="), 403, "forbidden");
	(void)ith_expect_error("POST", it_kpath(key, "sign"), NULL,
	    json_pack("{s:s}", "input", "AAECAw=="), 401, "unauthenticated");
	(void)ith_expect_error("POST", it_kpath(key, "sign"), T.matter,
	    json_pack("{s:s}", "input", "AAECAw=="), 403, "forbidden");
	(void)ith_expect_error("POST", it_kpath(key, "verify"), T.matter,
	    json_pack("{s:s}", "jws", "a.b.c"), 403, "forbidden");
	(void)ith_expect_error("GET", it_kpath(key, "public"), T.matter, NULL,
	    403, "forbidden");
	(void)ith_expect_error("GET", it_kpath(key, "public"), NULL, NULL, 401,
	    "unauthenticated");
	json_decref(ith_call("GET", it_kpath(key, "public"), T.admin, NULL, 200,
	    NULL));
	json_decref(ith_call("GET", it_kpath(key, "public"), T.officer, NULL, 200,
	    NULL));
	json_decref(ith_call("GET", it_kpath(key, "public"), T.auditor, NULL, 200,
	    NULL));
	if ((other_tok = ith_token_create("app", "sigrole-*", NULL, NULL)) != NULL) {
		a = ith_call("POST", it_kpath(key, "sign"), other_tok,
		    json_pack("{s:s}", "input", "AAECAw=="), 200, NULL);
		json_decref(a);
		free(other_tok);
	}
	/* the JWKS needs no token; a token does no harm */
	json_decref(ith_call("GET", "/.well-known/jwks.json", NULL, NULL, 200,
	    NULL));
	json_decref(ith_call("GET", "/.well-known/jwks.json", T.app, NULL, 200,
	    NULL));
	(void)ith_expect_error("POST", "/.well-known/jwks.json", NULL, NULL, 405,
	    "method_not_allowed");
}

/* The key object of a signing key: purpose sign, a kid per version, and
 * Ed25519 versions kept on the token. The audit record of a sign names
 * key, version, kid and format and never holds the input. */
static void
test_key_object_and_audit(void)
{
	char ed[160], ec[160], path[400], *b64;
	unsigned char msg[48];
	json_t *a, *v, *recs, *rec;
	size_t i;
	int found = 0;

	snprintf(ed, sizeof(ed), "%s", new_sign_key("sigobj", "ed25519"));
	snprintf(ec, sizeof(ec), "%s", new_sign_key("sigobj", "ec-p256"));
	a = ith_call("GET", it_kpath(ed, NULL), T.admin, NULL, 200, NULL);
	v = json_array_get(json_object_get(a, "versions"), 0);
	ith_check(strcmp(sget(a, "purpose"), "sign") == 0 &&
	    strcmp(sget(v, "storage"), "token") == 0 &&
	    json_is_null(json_object_get(v, "mek_version")) &&
	    strlen(sget(v, "kid")) == 43, "ed25519 key object: expected purpose "
	    "sign, storage token, mek_version null and a kid");
	json_decref(a);
	a = ith_call("GET", it_kpath(ec, NULL), T.admin, NULL, 200, NULL);
	v = json_array_get(json_object_get(a, "versions"), 0);
	ith_check(strcmp(sget(v, "storage"), "wrapped") == 0 &&
	    json_integer_value(json_object_get(v, "mek_version")) >= 1,
	    "ec-p256 key object: expected storage wrapped under an MEK");
	json_decref(a);

	ith_random(msg, sizeof(msg));
	b64 = ith_b64(msg, sizeof(msg));
	json_decref(sign(ed, json_pack("{s:s, s:s}", "input", b64, "format",
	    "jws")));
	snprintf(path, sizeof(path), "/v1/audit/records?key=%s&op=sign", ed);
	{
		char *raw = NULL;
		long st;

		if (ith_request_raw("GET", path, T.auditor, NULL, 0, NULL, &st, &raw,
		    NULL, &a, NULL) == 0) {
			char *p64 = ith_b64url(msg, sizeof(msg));

			recs = json_object_get(a, "records");
			json_array_foreach(recs, i, rec)
				if (strcmp(sget(rec, "outcome"), "ok") == 0 &&
				    json_integer_value(json_object_get(rec,
				    "version")) == 1 &&
				    strlen(sget(rec, "kid")) == 43 &&
				    strcmp(sget(rec, "format"), "jws") == 0 &&
				    strcmp(sget(rec, "alg"), "EdDSA") == 0)
					found++;
			ith_check(st == 200 && found == 1, "audit: %d sign records of "
			    "%s with version, kid, format and alg", found, ed);
			ith_check(raw != NULL && strstr(raw, b64) == NULL &&
			    strstr(raw, p64) == NULL, "the audit record of a sign "
			    "holds the input");
			free(p64);
			json_decref(a);
			free(raw);
		}
	}
	free(b64);
}

int
it_register_signing(void)
{
	CU_pSuite s;

	if ((s = CU_add_suite("signing", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "openssl verifies each algorithm (PEM and JWKS)",
	    test_openssl_verifies_each_alg) ||
	    !CU_add_test(s, "verify raw signatures", test_verify_raw) ||
	    !CU_add_test(s, "JWS valid after two rotations",
	    test_rotation_keeps_jws_valid) ||
	    !CU_add_test(s, "revoke leaves the JWKS; ETag and 304",
	    test_revoke_jwks_etag) ||
	    !CU_add_test(s, "bad input answers 4xx", test_bad_input) ||
	    !CU_add_test(s, "roles", test_roles) ||
	    !CU_add_test(s, "key object and audit record",
	    test_key_object_and_audit))
		return -1;
	return 0;
}
