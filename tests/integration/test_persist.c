/* Integration tests of what reaches the disk (no DEK or bearer token in the
 * data dir) and of a restart on the same data dir. */
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "itest.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

struct it_secret it_secrets[IT_MAX_SECRETS];
size_t it_n_secrets;
/* base64 payloads of blobs kmsd handed out: kmsd never stores them */
static char *blobs[IT_MAX_SECRETS];
static size_t n_blobs;

static void
add_blob(const char *ct)
{
	const char *p = ct ? strchr(ct + 4, ':') : NULL;

	if (p != NULL && strlen(p + 1) >= 40 && n_blobs < IT_MAX_SECRETS)
		blobs[n_blobs++] = strndup(p + 1, 40);
}

static int
suite_init(void)
{
	return it_ready();
}

static void
add_secret(const unsigned char *b, size_t len)
{
	if (it_n_secrets < IT_MAX_SECRETS && len <= sizeof(it_secrets[0].b)) {
		memcpy(it_secrets[it_n_secrets].b, b, len);
		it_secrets[it_n_secrets].len = len;
		it_n_secrets++;
	}
}

/* --- scanning the data dir --------------------------------------------- */

struct pattern {
	unsigned char *p;
	size_t n;
	char what[96];
};

static struct {
	struct pattern *pats;
	size_t n_pats;
	const char *skip_leaf;	/* a file name not to scan, or NULL */
	const char *file;
	int line;
	const char *when;
	int quiet;
	size_t hits, files;
} scan;

static void
pat_add(struct pattern **pats, size_t *n, const void *p, size_t len,
    const char *what)
{
	struct pattern *np = realloc(*pats, (*n + 1) * sizeof(**pats));

	if (np == NULL)
		abort();
	*pats = np;
	np[*n].p = malloc(len);
	memcpy(np[*n].p, p, len);
	np[*n].n = len;
	snprintf(np[*n].what, sizeof(np[*n].what), "%s", what);
	(*n)++;
}

static void
pats_free(struct pattern *pats, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(pats[i].p);
	free(pats);
}

static int
scan_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	unsigned char *data;
	size_t len, i;
	const char *leaf = path + ftw->base;

	(void)sb;
	if (flag != FTW_F)
		return 0;
	if (scan.skip_leaf != NULL && strcmp(leaf, scan.skip_leaf) == 0)
		return 0;
	if ((data = ith_read_file(path, &len)) == NULL)
		return 0;
	scan.files++;
	for (i = 0; i < scan.n_pats; i++)
		if (len >= scan.pats[i].n &&
		    memmem(data, len, scan.pats[i].p, scan.pats[i].n) != NULL) {
			scan.hits++;
			if (!scan.quiet)
				ith_fail_at(scan.file, scan.line, "%s: %s found in %s",
			    scan.when, scan.pats[i].what,
			    path + strlen(ith_data_dir()) + 1);
		}
	free(data);
	return 0;
}

static size_t
scan_dir(const char *file, int line, const char *when, struct pattern *pats,
    size_t n, const char *skip_leaf)
{
	scan.quiet = 0;
	scan.pats = pats;
	scan.n_pats = n;
	scan.skip_leaf = skip_leaf;
	scan.file = file;
	scan.line = line;
	scan.when = when;
	scan.hits = scan.files = 0;
	if (nftw(ith_data_dir(), scan_one, 16, FTW_PHYS) != 0)
		ith_fail_at(file, line, "%s: cannot walk %s", when, ith_data_dir());
	ith_check_at(scan.files >= 3, file, line, "%s: only %zu files under %s",
	    when, scan.files, ith_data_dir());
	return scan.hits;
}

size_t
it_scan_data_dir(const char *file, int line, const char *when)
{
	struct pattern *pats = NULL;
	size_t n = 0, i, hits;
	char what[96], hex[2 * 32 + 1];

	for (i = 0; i < it_n_secrets; i++) {
		const struct it_secret *s = &it_secrets[i];
		char *b64 = ith_b64(s->b, s->len), *url = ith_b64url(s->b, s->len);
		size_t l = strlen(b64);

		snprintf(what, sizeof(what), "DEK #%zu (raw %zu bytes)", i, s->len);
		pat_add(&pats, &n, s->b, s->len, what);
		snprintf(what, sizeof(what), "DEK #%zu (base64)", i);
		while (l > 0 && b64[l - 1] == '=')
			l--;	/* unpadded prefix also catches the padded form */
		pat_add(&pats, &n, b64, l, what);
		snprintf(what, sizeof(what), "DEK #%zu (base64url)", i);
		pat_add(&pats, &n, url, strlen(url), what);
		ith_hex(s->b, s->len, hex, 0);
		snprintf(what, sizeof(what), "DEK #%zu (hex)", i);
		pat_add(&pats, &n, hex, strlen(hex), what);
		ith_hex(s->b, s->len, hex, 1);
		snprintf(what, sizeof(what), "DEK #%zu (HEX)", i);
		pat_add(&pats, &n, hex, strlen(hex), what);
		free(b64);
		free(url);
	}
	for (i = 0; i < n_blobs; i++) {
		snprintf(what, sizeof(what), "ciphertext #%zu (%.12s...)", i, blobs[i]);
		pat_add(&pats, &n, blobs[i], strlen(blobs[i]), what);
	}
	hits = scan_dir(file, line, when, pats, n, NULL);
	pats_free(pats, n);
	return hits;
}

/* --- tests ------------------------------------------------------------- */

static void
test_no_dek_on_disk(void)
{
	const char *key = it_new_key("km", NULL);
	json_t *ctx = json_pack("{s:s}", "matter", "km"), *items, *a, *res;
	unsigned char dek[32];
	size_t i, first = it_n_secrets;

	/* single wraps, each unwrapped and some rewrapped */
	for (i = 0; i < 32; i++) {
		char *ct;

		ith_random(dek, sizeof(dek));
		add_secret(dek, sizeof(dek));
		if ((ct = ith_wrap(key, T.app, dek, 32, ctx, NULL)) == NULL)
			continue;
		add_blob(ct);
		(void)ith_unwrap_expect(key, T.app, ct, ctx, dek, 32, NULL, NULL);
		if (i % 4 == 0)
			json_decref(ith_call("POST", it_kpath(key, "rewrap"), T.app,
			    json_pack("{s:s, s:O}", "ciphertext", ct, "context", ctx),
			    200, NULL));
		free(ct);
	}
	/* a batch */
	items = json_array();
	for (i = 0; i < 32; i++) {
		char *b64;

		ith_random(dek, sizeof(dek));
		add_secret(dek, sizeof(dek));
		b64 = ith_b64(dek, 32);
		json_array_append_new(items, json_pack("{s:s, s:O}", "plaintext", b64,
		    "context", ctx));
		free(b64);
	}
	a = ith_call("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	res = json_object_get(a, "results");
	ith_check(json_array_size(res) == 32, "batch wrap: expected 32 results");
	items = json_array();
	for (i = 0; i < json_array_size(res); i++) {
		const char *c = json_string_value(json_object_get(json_array_get(res,
		    i), "ciphertext"));

		if (c != NULL) {
			add_blob(c);
			json_array_append_new(items, json_pack("{s:s, s:O}",
			    "ciphertext", c, "context", ctx));
		}
	}
	json_decref(a);
	json_decref(ith_call("POST", it_kpath(key, "unwrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL));
	/* datakeys, returned and not */
	for (i = 0; i < 24; i++) {
		int bits = i % 2 ? 128 : 256, ret = i < 16;
		const char *p, *c;
		unsigned char *pt = NULL;
		size_t plen = 0;
		json_t *u;

		a = ith_call("POST", it_kpath(key, "datakey"), T.app, json_pack(
		    "{s:i, s:O, s:b}", "bits", bits, "context", ctx,
		    "return_plaintext", ret), 200, NULL);
		c = json_string_value(json_object_get(a, "ciphertext"));
		if (c == NULL) {
			json_decref(a);
			continue;
		}
		add_blob(c);
		u = ith_call("POST", it_kpath(key, "unwrap"), T.app, json_pack(
		    "{s:s, s:O}", "ciphertext", c, "context", ctx), 200, NULL);
		p = json_string_value(json_object_get(ret ? a : u, "plaintext"));
		if (p != NULL && ith_unb64(p, &pt, &plen) == 0)
			add_secret(pt, plen);
		free(pt);
		json_decref(u);
		json_decref(a);
	}
	ith_check(it_n_secrets - first == 32 + 32 + 24,
	    "collected %zu data keys, expected 88", it_n_secrets - first);
	(void)it_scan_data_dir(__FILE__, __LINE__, "while kmsd runs");
	json_decref(ctx);
}


/* The scanner itself finds what is there and only that. */
static void
test_scanner_self_check(void)
{
	struct pattern *pats = NULL;
	size_t n = 0, hits;
	unsigned char x[32], y[32], z[32];
	char hex[65], path[4200], *b64;
	FILE *f;

	ith_random(x, sizeof(x));
	ith_random(y, sizeof(y));
	ith_random(z, sizeof(z));
	snprintf(path, sizeof(path), "%s/audit/zz-planted.bin", ith_data_dir());
	if (!ith_check((f = fopen(path, "wb")) != NULL, "cannot write %s", path))
		return;
	ith_hex(y, sizeof(y), hex, 0);
	b64 = ith_b64(z, sizeof(z));
	fwrite("head", 1, 4, f);
	fwrite(x, 1, sizeof(x), f);
	fprintf(f, "..%s..%s..", hex, b64);
	fclose(f);
	pat_add(&pats, &n, x, sizeof(x), "x raw");
	pat_add(&pats, &n, hex, strlen(hex), "y hex");
	pat_add(&pats, &n, b64, strlen(b64) - 1, "z base64");
	ith_hex(x, sizeof(x), hex, 1);
	pat_add(&pats, &n, hex, strlen(hex), "x HEX (not planted)");
	scan.quiet = 1;
	scan.pats = pats;
	scan.n_pats = n;
	scan.hits = scan.files = 0;
	(void)nftw(ith_data_dir(), scan_one, 16, FTW_PHYS);
	hits = scan.hits;
	scan.quiet = 0;
	ith_check(hits == 3, "scanner self check: %zu hits on a planted file, "
	    "expected 3", hits);
	unlink(path);
	free(b64);
	pats_free(pats, n);
}

static int
is_segment(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return strncmp(d->d_name, "audit-", 6) == 0 && n > 6 &&
	    strcmp(d->d_name + n - 6, ".jsonl") == 0;
}

static void
sha256_hex(const char *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	if (EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) != 1 || len != 32)
		memset(md, 0, sizeof(md));
	ith_hex(md, 32, out, 0);
}

struct want {
	const char *what;
	char id[128];
	long status;
	const char *outcome;	/* NULL: anything but "ok" */
	int found;
};

/* Every operation, allowed or refused, leaves a record with the answer's
 * request id; records chain by SHA-256 (DESIGN.md section 5). */
static void
test_audit_records(void)
{
	const char *key = it_new_key("aud", NULL);
	struct want w[6] = {
		{ "wrap (200)", "", 200, "ok", 0 },
		{ "wrap by an auditor (403)", "", 403, "denied", 0 },
		{ "wrap by a matter-* app token (403)", "", 403, "denied", 0 },
		{ "wrap without a token (401)", "", 401, "denied", 0 },
		{ "unwrap of garbage (400)", "", 400, NULL, 0 },
		{ "state move refused (409)", "", 409, NULL, 0 },
	};
	struct ith_headers h;
	struct dirent **ents = NULL;
	char dir[4200], path[4600], prevhash[65], fmt[32];
	const char *body = "{\"plaintext\":\"AAECAw==\"}";
	long st, expect_seq = 0;
	int n, i, chain_ok = 1, fields_ok = 1, lines = 0;
	size_t k;

	(void)ith_request("POST", it_kpath(key, "wrap"), T.app, body, &st, NULL, &h);
	snprintf(w[0].id, sizeof(w[0].id), "%s", h.request_id);
	(void)ith_request("POST", it_kpath(key, "wrap"), T.auditor, body, &st, NULL, &h);
	snprintf(w[1].id, sizeof(w[1].id), "%s", h.request_id);
	(void)ith_request("POST", it_kpath(key, "wrap"), T.matter, body, &st, NULL, &h);
	snprintf(w[2].id, sizeof(w[2].id), "%s", h.request_id);
	(void)ith_request("POST", it_kpath(key, "wrap"), NULL, body, &st, NULL, &h);
	snprintf(w[3].id, sizeof(w[3].id), "%s", h.request_id);
	(void)ith_request("POST", it_kpath(key, "unwrap"), T.app,
	    "{\"ciphertext\":\"kms:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
	    &st, NULL, &h);
	snprintf(w[4].id, sizeof(w[4].id), "%s", h.request_id);
	(void)ith_request("POST", it_kpath(key, "versions/1/state"), T.admin,
	    "{\"state\":\"active\"}", &st, NULL, &h);
	snprintf(w[5].id, sizeof(w[5].id), "%s", h.request_id);

	snprintf(dir, sizeof(dir), "%s/audit", ith_data_dir());
	n = scandir(dir, &ents, is_segment, alphasort);
	if (!ith_check(n > 0, "no audit-*.jsonl segment in %s", dir)) {
		free(ents);
		return;
	}
	memset(prevhash, '0', 64);
	prevhash[64] = '\0';
	for (i = 0; i < n; i++) {
		unsigned char *data;
		size_t len;
		char *line, *nl;

		snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
		snprintf(fmt, sizeof(fmt), "audit-%012ld.jsonl", expect_seq);
		ith_check(strcmp(ents[i]->d_name, fmt) == 0, "audit segment %s: "
		    "expected the name %s (first seq, 12 digits)", ents[i]->d_name, fmt);
		free(ents[i]);
		if ((data = ith_read_file(path, &len)) == NULL)
			continue;
		for (line = (char *)data; line < (char *)data + len; line = nl + 1) {
			json_t *j, *rid;
			const char *prev, *oc;

			if ((nl = memchr(line, '\n', (size_t)((char *)data + len - line))) == NULL)
				break;	/* an unterminated tail */
			*nl = '\0';
			lines++;
			j = json_loads(line, 0, NULL);
			prev = json_string_value(json_object_get(j, "prev"));
			if (chain_ok && (j == NULL ||
			    json_integer_value(json_object_get(j, "seq")) != expect_seq ||
			    prev == NULL || strcmp(prev, prevhash) != 0)) {
				chain_ok = 0;
				ith_fail("audit %s: record %ld breaks the chain (seq or prev): %.200s",
				    path, expect_seq, line);
			}
			expect_seq++;
			sha256_hex(line, strlen(line), prevhash);
			oc = json_string_value(json_object_get(j, "outcome"));
			if (fields_ok && (!json_is_string(json_object_get(j, "ts")) ||
			    !json_is_string(json_object_get(j, "request_id")) ||
			    !json_is_string(json_object_get(j, "actor")) ||
			    !json_is_string(json_object_get(j, "op")) ||
			    oc == NULL || (strcmp(oc, "ok") && strcmp(oc, "denied") &&
			    strcmp(oc, "error")) ||
			    !json_is_integer(json_object_get(j, "status")) ||
			    json_object_get(j, "key") == NULL ||
			    json_object_get(j, "version") == NULL)) {
				fields_ok = 0;
				ith_fail("audit record %ld lacks ts/request_id/actor/op/"
				    "outcome/status/key/version: %.200s", expect_seq - 1, line);
			}
			rid = json_object_get(j, "request_id");
			for (k = 0; k < 6; k++) {
				const char *kk;

				if (!json_is_string(rid) || w[k].id[0] == '\0' ||
				    strcmp(json_string_value(rid), w[k].id) != 0)
					continue;
				w[k].found++;
				kk = json_string_value(json_object_get(j, "key"));
				ith_check(json_integer_value(json_object_get(j, "status")) ==
				    w[k].status && oc != NULL && (w[k].outcome ?
				    strcmp(oc, w[k].outcome) == 0 : strcmp(oc, "ok") != 0) &&
				    (k == 3 || (kk && strcmp(kk, key) == 0)),
				    "audit record of %s: expected status %ld, outcome %s, key %s;"
				    " got %.300s", w[k].what, w[k].status,
				    w[k].outcome ? w[k].outcome : "not ok", key, line);
			}
			json_decref(j);
		}
		free(data);
	}
	free(ents);
	ith_check(lines > 0, "the audit log has no records");
	for (k = 0; k < 6; k++)
		ith_check(w[k].found == 1, "audit: %d records with the request id %s "
		    "of %s, expected 1", w[k].found, w[k].id, w[k].what);
}

static void
add_token_patterns(struct pattern **pats, size_t *n, const char *tok,
    const char *name)
{
	char what[96];
	const char *dot;

	if (tok == NULL)
		return;
	snprintf(what, sizeof(what), "the %s bearer token", name);
	pat_add(pats, n, tok, strlen(tok), what);
	if ((dot = strrchr(tok, '.')) != NULL && strlen(dot + 1) >= 16) {
		snprintf(what, sizeof(what), "the secret part of the %s token", name);
		pat_add(pats, n, dot + 1, strlen(dot + 1), what);
	}
}

static void
test_no_token_on_disk(void)
{
	struct pattern *pats = NULL;
	size_t n = 0;

	add_token_patterns(&pats, &n, T.admin, "admin");
	add_token_patterns(&pats, &n, T.app, "app");
	add_token_patterns(&pats, &n, T.matter, "matter-* app");
	add_token_patterns(&pats, &n, T.auditor, "auditor");
	add_token_patterns(&pats, &n, T.officer, "officer");
	/* admin.token holds the admin token by design */
	(void)scan_dir(__FILE__, __LINE__, "bearer tokens", pats, n, "admin.token");
	pats_free(pats, n);
}

/* The key object without the fields that may move with use. */
static json_t *
stable_view(json_t *key)
{
	json_t *c = json_deep_copy(key), *v;
	size_t i;

	json_array_foreach(json_object_get(c, "versions"), i, v) {
		json_object_del(v, "last_used_at");
		json_object_del(v, "use_count");
	}
	return c;
}

static void
test_restart(void)
{
	char ka[160], kb[160], kc[160], how[160], *revoked_tok = NULL, *rid = NULL;
	char *a1, *a2, *a3, *b1, *dump1, *dump2, path[128];
	json_t *ctx = json_pack("{s:s}", "matter", "rs"), *before[3], *after[3];
	json_t *list_before, *list_after;
	unsigned char pa1[32], pa2[32], pa3[32], pb1[100];
	const char *names[3];
	long v;
	int rr, i, stopped;

	snprintf(ka, sizeof(ka), "%s", it_new_key("rs", NULL));
	snprintf(kb, sizeof(kb), "%s", it_new_key("rs", NULL));
	snprintf(kc, sizeof(kc), "%s", it_new_key("rs", json_pack(
	    "{s:s, s:s, s:[s,s]}", "rotation_period", "30d", "expires_at",
	    "2031-01-01T00:00:00Z", "required_context", "matter", "client")));
	names[0] = ka;
	names[1] = kb;
	names[2] = kc;
	ith_random(pa1, 32);
	ith_random(pa2, 32);
	ith_random(pa3, 32);
	ith_random(pb1, sizeof(pb1));
	a1 = ith_wrap(ka, T.app, pa1, 32, ctx, NULL);
	json_decref(ith_call("POST", it_kpath(ka, "rotate"), T.admin, NULL, 200, NULL));
	a2 = ith_wrap(ka, T.app, pa2, 32, ctx, NULL);
	json_decref(ith_call("POST", it_kpath(ka, "rotate"), T.admin, NULL, 200, NULL));
	a3 = ith_wrap(ka, T.app, pa3, 32, ctx, NULL);
	json_decref(ith_call("POST", it_kpath(ka, "versions/1/state"), T.admin,
	    json_pack("{s:s, s:b}", "state", "retired", "force", 1), 200, NULL));
	b1 = ith_wrap(kb, T.app, pb1, sizeof(pb1), NULL, NULL);
	if (a1 == NULL || a2 == NULL || a3 == NULL || b1 == NULL)
		goto out_early;
	revoked_tok = ith_token_create("app", "rs-*", NULL, &rid);
	snprintf(path, sizeof(path), "/v1/tokens/%s", rid ? rid : "x");
	json_decref(ith_call("DELETE", path, T.admin, NULL, 200, NULL));

	for (i = 0; i < 3; i++)
		before[i] = ith_call("GET", it_kpath(names[i], NULL), T.admin, NULL,
		    200, NULL);
	list_before = ith_call("GET", "/v1/keys?limit=1000", T.admin, NULL, 200, NULL);

	stopped = ith_stop(how, sizeof(how));
	ith_check(stopped == 0, "SIGTERM: kmsd %s (expected a clean exit 0)", how);
	/* with the WAL checkpointed at shutdown, look at the files again */
	if (it_n_secrets > 0)
		(void)it_scan_data_dir(__FILE__, __LINE__, "after a clean stop");
	if (!ith_check(ith_start() == 0, "kmsd did not start again on %s "
	    "(see stderr)", ith_data_dir())) {
		for (i = 0; i < 3; i++)
			json_decref(before[i]);
		json_decref(list_before);
		free(revoked_tok);
		goto out_early;
	}

	for (i = 0; i < 3; i++) {
		json_t *x, *y;

		after[i] = ith_call("GET", it_kpath(names[i], NULL), T.admin, NULL,
		    200, NULL);
		x = stable_view(before[i]);
		y = stable_view(after[i]);
		dump1 = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
		dump2 = json_dumps(y, JSON_COMPACT | JSON_SORT_KEYS);
		ith_check(before[i] && after[i] && json_equal(x, y),
		    "key %s changed across the restart:\nbefore %.600s\nafter  %.600s",
		    names[i], dump1 ? dump1 : "-", dump2 ? dump2 : "-");
		free(dump1);
		free(dump2);
		json_decref(x);
		json_decref(y);
		json_decref(before[i]);
		json_decref(after[i]);
	}
	list_after = ith_call("GET", "/v1/keys?limit=1000", T.admin, NULL, 200, NULL);
	{
		json_t *kb4 = json_object_get(list_before, "keys");
		json_t *kaf = json_object_get(list_after, "keys");
		size_t j, same = json_array_size(kb4) == json_array_size(kaf);

		for (j = 0; same && j < json_array_size(kb4); j++) {
			const char *n1 = json_string_value(json_object_get(
			    json_array_get(kb4, j), "name"));
			const char *n2 = json_string_value(json_object_get(
			    json_array_get(kaf, j), "name"));

			same = n1 && n2 && strcmp(n1, n2) == 0;
		}
		ith_check(same, "the key list changed across the restart (%zu keys "
		    "before, %zu after)", json_array_size(kb4), json_array_size(kaf));
	}
	json_decref(list_before);
	json_decref(list_after);

	/* blobs made before unwrap to the same bytes (v1 is retired: rewrap) */
	if (ith_unwrap_expect(ka, T.app, a2, ctx, pa2, 32, &v, &rr) == 0)
		ith_check(v == 2 && rr == 1, "v2 blob after restart: key_version %ld "
		    "rewrap_recommended %d", v, rr);
	if (ith_unwrap_expect(ka, T.app, a3, ctx, pa3, 32, &v, &rr) == 0)
		ith_check(v == 3 && rr == 0, "v3 blob after restart: key_version %ld "
		    "rewrap_recommended %d", v, rr);
	(void)ith_unwrap_expect(kb, T.app, b1, NULL, pb1, sizeof(pb1), NULL, NULL);
	(void)ith_expect_error("POST", it_kpath(ka, "unwrap"), T.app, json_pack(
	    "{s:s, s:O}", "ciphertext", a1, "context", ctx), 409, "version_state");
	{
		json_t *r = ith_call("POST", it_kpath(ka, "rewrap"), T.app, json_pack(
		    "{s:s, s:O}", "ciphertext", a1, "context", ctx), 200, NULL);
		const char *c = json_string_value(json_object_get(r, "ciphertext"));

		if (ith_check(c && json_integer_value(json_object_get(r,
		    "key_version")) == 3, "rewrap of the retired v1 blob after "
		    "restart: expected key_version 3"))
			(void)ith_unwrap_expect(ka, T.app, c, ctx, pa1, 32, NULL, NULL);
		json_decref(r);
	}
	/* new wraps continue at the primary */
	{
		char *c = ith_wrap(ka, T.app, pa1, 32, ctx, &v);

		ith_check(c && v == 3, "wrap after restart: key_version %ld, expected 3", v);
		free(c);
	}
	/* tokens survive, revocation too */
	json_decref(ith_call("GET", "/v1/keys", T.matter, NULL, 200, NULL));
	json_decref(ith_call("GET", "/v1/keys", T.auditor, NULL, 200, NULL));
	if (revoked_tok != NULL)
		(void)ith_expect_error("GET", "/v1/keys", revoked_tok, NULL, 401,
		    "unauthenticated");
	free(revoked_tok);
out_early:
	free(rid);
	free(a1);
	free(a2);
	free(a3);
	free(b1);
	json_decref(ctx);
}

static void
test_after_restart_serving(void)
{
	json_decref(ith_call("GET", "/v1/health", NULL, NULL, 200, NULL));
	json_decref(ith_call("GET", "/v1/ready", NULL, NULL, 200, NULL));
}

int
it_register_persist(void)
{
	CU_pSuite s;

	if ((s = CU_add_suite("on disk", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "no DEK bytes, base64 or hex in the data dir",
	    test_no_dek_on_disk) ||
	    !CU_add_test(s, "no bearer token in the data dir", test_no_token_on_disk) ||
	    !CU_add_test(s, "the scanner finds planted bytes", test_scanner_self_check) ||
	    !CU_add_test(s, "audit records carry the request id, chained",
	    test_audit_records))
		return -1;
	if ((s = CU_add_suite("restart", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "keys, versions, blobs and tokens survive a restart",
	    test_restart) ||
	    !CU_add_test(s, "serving after the restart", test_after_restart_serving))
		return -1;
	return 0;
}
