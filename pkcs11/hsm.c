/* PKCS#11 through p11-kit: the only file in kmsd that calls C_* functions. */
#include "hsm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "log.h"

#define MEK_LABEL_FMT "kms-mek-v%u"
#define MAX_MEK_CACHE 64

/* DER of the P-256 curve OID 1.2.840.10045.3.1.7, the CKA_EC_PARAMS value. */
static const unsigned char p256_params[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
};

struct cache_entry {
	char *id;
	CK_OBJECT_HANDLE handle;
	unsigned refs;
	struct cache_entry *hnext;		/* hash chain */
	struct cache_entry *prev, *next;	/* LRU list, most recent first */
};

struct hsm_key {
	struct cache_entry e;
};

struct mek_slot {
	uint32_t version;
	CK_OBJECT_HANDLE handle;
};

struct hsm {
	CK_FUNCTION_LIST **modules;	/* p11_kit_modules_load result, or NULL */
	CK_FUNCTION_LIST *fn;
	int initialized;
	CK_SLOT_ID slot;

	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond;
	CK_SESSION_HANDLE *sessions;
	size_t n_sessions;
	size_t *free_stack;
	size_t n_free;

	pthread_mutex_t mek_lock;
	struct mek_slot meks[MAX_MEK_CACHE];
	size_t n_meks;

	pthread_mutex_t cache_lock;
	struct cache_entry **buckets;
	size_t n_buckets;
	size_t cache_count;
	size_t cache_cap;
	struct cache_entry *lru_head, *lru_tail;
};

static int
rv_err(CK_RV rv, const char *what, const char *detail)
{
	log_error("PKCS#11 %s failed%s%s: %s (0x%lx)", what,
	    detail ? " for " : "", detail ? detail : "",
	    p11_kit_strerror(rv), (unsigned long)rv);
	switch (rv) {
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
		return KM_ERR_HSM_AUTH;
	case CKR_HOST_MEMORY:
		return KM_ERR_NOMEM;
	default:
		return KM_ERR_HSM;
	}
}

/* Loads `module` by p11-kit name, or by path when it contains a '/'. */
static int
module_load(struct hsm *h, const char *module)
{
	if (strchr(module, '/') != NULL) {
		h->fn = p11_kit_module_load(module, 0);
		if (h->fn == NULL) {
			log_error("cannot load PKCS#11 module %s: %s", module,
			    p11_kit_message() ? p11_kit_message() : "unknown error");
			return KM_ERR_HSM;
		}
		return KM_OK;
	}
	h->modules = p11_kit_modules_load(NULL, 0);
	if (h->modules == NULL ||
	    (h->fn = p11_kit_module_for_name(h->modules, module)) == NULL) {
		log_error("no p11-kit module named '%s' (see p11-kit list-modules)",
		    module);
		return KM_ERR_HSM;
	}
	return KM_OK;
}

static int
module_open(struct hsm *h, const char *module)
{
	CK_RV rv;
	int r;

	if ((r = module_load(h, module)) != KM_OK)
		return r;
	if ((rv = p11_kit_module_initialize(h->fn)) != CKR_OK)
		return rv_err(rv, "C_Initialize", module);
	h->initialized = 1;
	return KM_OK;
}

static void
module_close(struct hsm *h)
{
	if (h->fn != NULL && h->initialized)
		p11_kit_module_finalize(h->fn);
	if (h->modules != NULL)
		p11_kit_modules_release(h->modules);
	else if (h->fn != NULL)
		p11_kit_module_release(h->fn);
	h->fn = NULL;
	h->modules = NULL;
	h->initialized = 0;
}

/* Slot ids of slots with a token. *slots is owned by the caller. */
static int
list_slots(struct hsm *h, CK_SLOT_ID **slots, CK_ULONG *n)
{
	CK_ULONG count = 0;
	CK_RV rv;

	*slots = NULL;
	*n = 0;
	if ((rv = h->fn->C_GetSlotList(CK_TRUE, NULL, &count)) != CKR_OK)
		return rv_err(rv, "C_GetSlotList", NULL);
	if (count == 0)
		return KM_OK;
	if ((*slots = calloc(count, sizeof(**slots))) == NULL)
		return KM_ERR_NOMEM;
	if ((rv = h->fn->C_GetSlotList(CK_TRUE, *slots, &count)) != CKR_OK) {
		free(*slots);
		*slots = NULL;
		return rv_err(rv, "C_GetSlotList", NULL);
	}
	*n = count;
	return KM_OK;
}

static int
find_token(struct hsm *h, P11KitUri *uri, const char *uri_text)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n, i;
	int r;

	if ((r = list_slots(h, &slots, &n)) != KM_OK)
		return r;
	r = KM_ERR_HSM;
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO info;

		if (h->fn->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue;
		if (!(info.flags & CKF_TOKEN_INITIALIZED))
			continue;
		if (p11_kit_uri_match_token_info(uri, &info)) {
			h->slot = slots[i];
			r = KM_OK;
			break;
		}
	}
	if (r != KM_OK)
		log_error("no initialised token matches %s", uri_text);
	free(slots);
	return r;
}

static void
pad_label(const char *label, unsigned char out[32])
{
	size_t n = strlen(label);

	memset(out, ' ', 32);
	memcpy(out, label, n > 32 ? 32 : n);
}

static int
label_slot(struct hsm *h, const char *label, CK_SLOT_ID *slot, int *found)
{
	unsigned char want[32];
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n, i;
	int r;

	*found = 0;
	pad_label(label, want);
	if ((r = list_slots(h, &slots, &n)) != KM_OK)
		return r;
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO info;

		if (h->fn->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue;
		if ((info.flags & CKF_TOKEN_INITIALIZED) &&
		    memcmp(info.label, want, 32) == 0) {
			*slot = slots[i];
			*found = 1;
			break;
		}
	}
	free(slots);
	return KM_OK;
}

static int
free_slot(struct hsm *h, CK_SLOT_ID *slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n, i;
	int r;

	if ((r = list_slots(h, &slots, &n)) != KM_OK)
		return r;
	r = KM_ERR_HSM;
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO info;

		if (h->fn->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
		    !(info.flags & CKF_TOKEN_INITIALIZED)) {
			*slot = slots[i];
			r = KM_OK;
			break;
		}
	}
	if (r != KM_OK)
		log_error("no uninitialised slot left in the PKCS#11 module");
	free(slots);
	return r;
}

int
hsm_token_init(const char *module, const char *label, const char *so_pin,
    const char *user_pin)
{
	struct hsm h = { 0 };
	unsigned char padded[32];
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_SLOT_ID slot;
	CK_RV rv;
	int r, found, logged_in = 0;

	if ((r = module_open(&h, module)) != KM_OK)
		goto out;
	if ((r = label_slot(&h, label, &slot, &found)) != KM_OK)
		goto out;
	if (found) {
		r = KM_ERR_KEY_EXISTS;
		goto out;
	}
	if ((r = free_slot(&h, &slot)) != KM_OK)
		goto out;
	pad_label(label, padded);
	if ((rv = h.fn->C_InitToken(slot, (CK_UTF8CHAR *)so_pin,
	    strlen(so_pin), padded)) != CKR_OK) {
		r = rv_err(rv, "C_InitToken", label);
		goto out;
	}
	/* SoftHSM gives an initialised token a new slot id: look it up again. */
	if ((r = label_slot(&h, label, &slot, &found)) != KM_OK)
		goto out;
	if (!found) {
		log_error("token %s vanished after C_InitToken", label);
		r = KM_ERR_HSM;
		goto out;
	}
	if ((rv = h.fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &s)) != CKR_OK) {
		r = rv_err(rv, "C_OpenSession", label);
		goto out;
	}
	if ((rv = h.fn->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin,
	    strlen(so_pin))) != CKR_OK) {
		r = rv_err(rv, "C_Login(SO)", label);
		goto out;
	}
	logged_in = 1;
	if ((rv = h.fn->C_InitPIN(s, (CK_UTF8CHAR *)user_pin,
	    strlen(user_pin))) != CKR_OK) {
		r = rv_err(rv, "C_InitPIN", label);
		goto out;
	}
	r = KM_OK;
out:
	if (logged_in)
		(void)h.fn->C_Logout(s);
	if (s != CK_INVALID_HANDLE)
		(void)h.fn->C_CloseSession(s);
	module_close(&h);
	return r;
}

int
hsm_uri_token_label(const char *uri_text, char label[33])
{
	P11KitUri *uri;
	CK_TOKEN_INFO *ti;
	size_t n = 32;
	int r = KM_ERR_CONFIG;

	label[0] = '\0';
	if ((uri = p11_kit_uri_new()) == NULL)
		return KM_ERR_NOMEM;
	if (p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_TOKEN, uri) ==
	    P11_KIT_URI_OK && (ti = p11_kit_uri_get_token_info(uri)) != NULL) {
		while (n > 0 && (ti->label[n - 1] == ' ' || ti->label[n - 1] == '\0'))
			n--;
		memcpy(label, ti->label, n);
		label[n] = '\0';
		r = n > 0 ? KM_OK : KM_ERR_CONFIG;
	}
	p11_kit_uri_free(uri);
	if (r != KM_OK)
		log_error("PKCS#11 URI '%s' names no token label", uri_text);
	return r;
}

static int
pool_open(struct hsm *h, size_t n)
{
	size_t i;
	CK_RV rv;

	if ((h->sessions = calloc(n, sizeof(*h->sessions))) == NULL ||
	    (h->free_stack = calloc(n, sizeof(*h->free_stack))) == NULL)
		return KM_ERR_NOMEM;
	for (i = 0; i < n; i++) {
		rv = h->fn->C_OpenSession(h->slot,
		    CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
		    &h->sessions[i]);
		if (rv != CKR_OK)
			return rv_err(rv, "C_OpenSession", NULL);
		h->n_sessions++;
		h->free_stack[h->n_free++] = i;
	}
	return KM_OK;
}

static CK_SESSION_HANDLE
session_get(struct hsm *h)
{
	CK_SESSION_HANDLE s;

	pthread_mutex_lock(&h->pool_lock);
	while (h->n_free == 0)
		pthread_cond_wait(&h->pool_cond, &h->pool_lock);
	s = h->sessions[h->free_stack[--h->n_free]];
	pthread_mutex_unlock(&h->pool_lock);
	return s;
}

static void
session_put(struct hsm *h, CK_SESSION_HANDLE s)
{
	size_t i;

	pthread_mutex_lock(&h->pool_lock);
	for (i = 0; i < h->n_sessions; i++) {
		if (h->sessions[i] == s) {
			h->free_stack[h->n_free++] = i;
			break;
		}
	}
	pthread_cond_signal(&h->pool_cond);
	pthread_mutex_unlock(&h->pool_lock);
}

static int
login(struct hsm *h, const char *pin, size_t pin_len)
{
	CK_RV rv;

	/* One login covers every session of the application (PKCS#11 v2.40
	 * section 5.6); the pool is opened first so all share it. */
	rv = h->fn->C_Login(h->sessions[0], CKU_USER, (CK_UTF8CHAR *)pin,
	    pin_len);
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		return rv_err(rv, "C_Login", NULL);
	return KM_OK;
}

int
hsm_open(const struct hsm_config *cfg, struct hsm **out)
{
	P11KitUri *uri = NULL;
	struct hsm *h;
	int r = KM_ERR_NOMEM;

	*out = NULL;
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return KM_ERR_NOMEM;
	pthread_mutex_init(&h->pool_lock, NULL);
	pthread_cond_init(&h->pool_cond, NULL);
	pthread_mutex_init(&h->mek_lock, NULL);
	pthread_mutex_init(&h->cache_lock, NULL);
	h->cache_cap = cfg->key_cache > 0 ? cfg->key_cache : 1;
	h->n_buckets = 64;
	while (h->n_buckets < h->cache_cap * 2 && h->n_buckets < (1u << 22))
		h->n_buckets *= 2;
	if ((h->buckets = calloc(h->n_buckets, sizeof(*h->buckets))) == NULL)
		goto out;
	if ((uri = p11_kit_uri_new()) == NULL)
		goto out;
	if (p11_kit_uri_parse(cfg->token_uri, P11_KIT_URI_FOR_TOKEN, uri) !=
	    P11_KIT_URI_OK) {
		log_error("cannot parse PKCS#11 token URI '%s'", cfg->token_uri);
		r = KM_ERR_CONFIG;
		goto out;
	}
	if ((r = module_open(h, cfg->module)) != KM_OK)
		goto out;
	if ((r = find_token(h, uri, cfg->token_uri)) != KM_OK)
		goto out;
	if ((r = pool_open(h, cfg->sessions > 0 ? cfg->sessions : 1)) != KM_OK)
		goto out;
	if ((r = login(h, cfg->pin, cfg->pin_len)) != KM_OK)
		goto out;
	*out = h;
	h = NULL;
	r = KM_OK;
out:
	if (uri != NULL)
		p11_kit_uri_free(uri);
	hsm_free(h);
	return r;
}

static void
cache_destroy_all(struct hsm *h)
{
	struct cache_entry *e, *next;
	CK_SESSION_HANDLE s;

	if (h->n_sessions == 0)
		return;
	s = h->sessions[0];
	for (e = h->lru_head; e != NULL; e = next) {
		next = e->next;
		(void)h->fn->C_DestroyObject(s, e->handle);
		free(e->id);
		free(e);
	}
	h->lru_head = h->lru_tail = NULL;
	h->cache_count = 0;
}

void
hsm_free(struct hsm *h)
{
	size_t i;

	if (h == NULL)
		return;
	if (h->fn != NULL) {
		cache_destroy_all(h);
		if (h->n_sessions > 0)
			(void)h->fn->C_Logout(h->sessions[0]);
		for (i = 0; i < h->n_sessions; i++)
			(void)h->fn->C_CloseSession(h->sessions[i]);
	}
	module_close(h);
	free(h->buckets);
	free(h->sessions);
	free(h->free_stack);
	pthread_mutex_destroy(&h->pool_lock);
	pthread_cond_destroy(&h->pool_cond);
	pthread_mutex_destroy(&h->mek_lock);
	pthread_mutex_destroy(&h->cache_lock);
	free(h);
}

int
hsm_ping(struct hsm *h)
{
	CK_SESSION_INFO info;
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;
	int r = KM_OK;

	rv = h->fn->C_GetSessionInfo(s, &info);
	if (rv != CKR_OK)
		r = rv_err(rv, "C_GetSessionInfo", NULL);
	else if (info.state != CKS_RW_USER_FUNCTIONS &&
	    info.state != CKS_RO_USER_FUNCTIONS) {
		log_error("PKCS#11 session is not logged in (state %lu)",
		    (unsigned long)info.state);
		r = KM_ERR_HSM_AUTH;
	}
	session_put(h, s);
	return r;
}

static int
find_one(struct hsm *h, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
    CK_OBJECT_HANDLE *obj, const char *what)
{
	CK_ULONG found = 0;
	CK_RV rv;

	*obj = CK_INVALID_HANDLE;
	if ((rv = h->fn->C_FindObjectsInit(s, tmpl, n)) != CKR_OK)
		return rv_err(rv, "C_FindObjectsInit", what);
	rv = h->fn->C_FindObjects(s, obj, 1, &found);
	(void)h->fn->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_FindObjects", what);
	return found == 1 ? KM_OK : KM_ERR_NOT_FOUND;
}

static int
mek_lookup(struct hsm *h, uint32_t version, CK_OBJECT_HANDLE *obj)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL yes = CK_TRUE;
	char label[32];
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_LABEL, label, 0 },
	};
	CK_SESSION_HANDLE s;
	size_t i;
	int r;

	pthread_mutex_lock(&h->mek_lock);
	for (i = 0; i < h->n_meks; i++) {
		if (h->meks[i].version == version) {
			*obj = h->meks[i].handle;
			pthread_mutex_unlock(&h->mek_lock);
			return KM_OK;
		}
	}
	pthread_mutex_unlock(&h->mek_lock);
	snprintf(label, sizeof(label), MEK_LABEL_FMT, version);
	tmpl[2].ulValueLen = strlen(label);
	s = session_get(h);
	r = find_one(h, s, tmpl, 3, obj, label);
	session_put(h, s);
	if (r != KM_OK)
		return r;
	pthread_mutex_lock(&h->mek_lock);
	if (h->n_meks < MAX_MEK_CACHE) {
		h->meks[h->n_meks].version = version;
		h->meks[h->n_meks].handle = *obj;
		h->n_meks++;
	}
	pthread_mutex_unlock(&h->mek_lock);
	return KM_OK;
}

int
hsm_mek_find(struct hsm *h, uint32_t version)
{
	CK_OBJECT_HANDLE obj;

	return mek_lookup(h, version, &obj);
}

int
hsm_mek_create(struct hsm *h, uint32_t version)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_OBJECT_HANDLE obj;
	char label[32];
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_VALUE_LEN, &len, sizeof(len) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_WRAP, &yes, sizeof(yes) },
		{ CKA_UNWRAP, &yes, sizeof(yes) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_SIGN, &no, sizeof(no) },
		{ CKA_VERIFY, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_LABEL, label, 0 },
		{ CKA_ID, label, 0 },
	};
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	if ((r = mek_lookup(h, version, &obj)) == KM_OK)
		return KM_ERR_KEY_EXISTS;
	if (r != KM_ERR_NOT_FOUND)
		return r;
	snprintf(label, sizeof(label), MEK_LABEL_FMT, version);
	tmpl[14].ulValueLen = tmpl[15].ulValueLen = strlen(label);
	s = session_get(h);
	rv = h->fn->C_GenerateKey(s, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
	    &obj);
	session_put(h, s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_GenerateKey", label);
	log_info("created MEK %s in the token", label);
	return KM_OK;
}

static int
wrap_key(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mek,
    CK_OBJECT_HANDLE key, unsigned char **wrapped, size_t *wrapped_len)
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_ULONG len = 0;
	unsigned char *buf;
	CK_RV rv;

	if ((rv = h->fn->C_WrapKey(s, &mech, mek, key, NULL, &len)) != CKR_OK)
		return rv_err(rv, "C_WrapKey (length)", NULL);
	if ((buf = malloc(len)) == NULL)
		return KM_ERR_NOMEM;
	if ((rv = h->fn->C_WrapKey(s, &mech, mek, key, buf, &len)) != CKR_OK) {
		free(buf);
		return rv_err(rv, "C_WrapKey", NULL);
	}
	*wrapped = buf;
	*wrapped_len = len;
	return KM_OK;
}

int
hsm_key_generate(struct hsm *h, enum hsm_key_type type, uint32_t mek_version,
    unsigned char **wrapped, size_t *wrapped_len)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
	/* A session object that exists only long enough to be wrapped: it
	 * must be extractable for C_WrapKey, and is destroyed right after.
	 * The copies used for crypto are unwrapped non-extractable. */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_VALUE_LEN, &len, sizeof(len) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },
	};
	CK_OBJECT_HANDLE mek, key = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	*wrapped = NULL;
	*wrapped_len = 0;
	if (type != HSM_KEY_AES256)
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	if ((r = mek_lookup(h, mek_version, &mek)) != KM_OK) {
		log_error("MEK version %u is not in the token", mek_version);
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	s = session_get(h);
	rv = h->fn->C_GenerateKey(s, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
	    &key);
	if (rv != CKR_OK) {
		r = rv_err(rv, "C_GenerateKey", "named key");
		goto out;
	}
	r = wrap_key(h, s, mek, key, wrapped, wrapped_len);
out:
	if (key != CK_INVALID_HANDLE &&
	    (rv = h->fn->C_DestroyObject(s, key)) != CKR_OK)
		(void)rv_err(rv, "C_DestroyObject", "generated key");
	session_put(h, s);
	return r;
}

static int
unwrap_for_use(struct hsm *h, uint32_t mek_version,
    const unsigned char *wrapped, size_t wrapped_len, CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE mek;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	if ((r = mek_lookup(h, mek_version, &mek)) != KM_OK) {
		log_error("MEK version %u is not in the token", mek_version);
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	s = session_get(h);
	rv = h->fn->C_UnwrapKey(s, &mech, mek, (CK_BYTE_PTR)wrapped,
	    wrapped_len, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), out);
	session_put(h, s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_UnwrapKey", NULL);
	return KM_OK;
}

int
hsm_key_rewrap(struct hsm *h, enum hsm_key_type type, uint32_t old_mek,
    uint32_t new_mek, const unsigned char *wrapped, size_t wrapped_len,
    unsigned char **out, size_t *out_len)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	/* Extractable, or C_WrapKey refuses it; it lives only for this call. */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_DECRYPT, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE from, to, tmp = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	*out = NULL;
	*out_len = 0;
	if (type != HSM_KEY_AES256)
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	if ((r = mek_lookup(h, old_mek, &from)) != KM_OK ||
	    (r = mek_lookup(h, new_mek, &to)) != KM_OK) {
		log_error("MEK version %u or %u is not in the token", old_mek,
		    new_mek);
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	s = session_get(h);
	rv = h->fn->C_UnwrapKey(s, &mech, from, (CK_BYTE_PTR)wrapped, wrapped_len,
	    tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &tmp);
	if (rv != CKR_OK) {
		r = rv_err(rv, "C_UnwrapKey (rewrap)", NULL);
		goto out;
	}
	r = wrap_key(h, s, to, tmp, out, out_len);
out:
	if (tmp != CK_INVALID_HANDLE &&
	    (rv = h->fn->C_DestroyObject(s, tmp)) != CKR_OK)
		(void)rv_err(rv, "C_DestroyObject", "rewrap copy");
	session_put(h, s);
	return r;
}

int
hsm_mek_disable(struct hsm *h, uint32_t version)
{
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
	};
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	if ((r = mek_lookup(h, version, &obj)) != KM_OK)
		return r;
	s = session_get(h);
	rv = h->fn->C_SetAttributeValue(s, obj, tmpl, 2);
	session_put(h, s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_SetAttributeValue(MEK disable)", NULL);
	log_info("MEK version %u disabled (no wrap, no unwrap)", version);
	return KM_OK;
}

static uint64_t
hash_id(const char *s)
{
	uint64_t hv = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++)
		hv = (hv ^ (unsigned char)*s) * 1099511628211ULL;
	return hv;
}

static struct cache_entry *
cache_find(struct hsm *h, const char *id)
{
	struct cache_entry *e;

	for (e = h->buckets[hash_id(id) & (h->n_buckets - 1)]; e; e = e->hnext)
		if (strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

static void
lru_unlink(struct hsm *h, struct cache_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		h->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		h->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void
lru_push_front(struct hsm *h, struct cache_entry *e)
{
	e->prev = NULL;
	e->next = h->lru_head;
	if (h->lru_head)
		h->lru_head->prev = e;
	h->lru_head = e;
	if (h->lru_tail == NULL)
		h->lru_tail = e;
}

static void
bucket_remove(struct hsm *h, struct cache_entry *e)
{
	struct cache_entry **pp = &h->buckets[hash_id(e->id) & (h->n_buckets - 1)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
}

/* Unlinks unreferenced least-recently-used entries while the cache is over
 * its bound; returns them as a list (via hnext) to destroy outside the lock. */
static struct cache_entry *
cache_evict_locked(struct hsm *h)
{
	struct cache_entry *e = h->lru_tail, *victims = NULL, *prev;

	while (h->cache_count > h->cache_cap && e != NULL) {
		prev = e->prev;
		if (e->refs == 0) {
			bucket_remove(h, e);
			lru_unlink(h, e);
			h->cache_count--;
			e->hnext = victims;
			victims = e;
		}
		e = prev;
	}
	return victims;
}

static void
destroy_victims(struct hsm *h, struct cache_entry *v)
{
	struct cache_entry *next;
	CK_SESSION_HANDLE s;
	CK_RV rv;

	if (v == NULL)
		return;
	s = session_get(h);
	for (; v != NULL; v = next) {
		next = v->hnext;
		if ((rv = h->fn->C_DestroyObject(s, v->handle)) != CKR_OK)
			(void)rv_err(rv, "C_DestroyObject", v->id);
		free(v->id);
		free(v);
	}
	session_put(h, s);
}

int
hsm_key_acquire(struct hsm *h, const char *cache_id, enum hsm_key_type type,
    uint32_t mek_version, const unsigned char *wrapped, size_t wrapped_len,
    struct hsm_key **out)
{
	struct cache_entry *e, *fresh = NULL, *victims;
	CK_OBJECT_HANDLE obj;
	size_t b;
	int r;

	*out = NULL;
	if (type != HSM_KEY_AES256)
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	pthread_mutex_lock(&h->cache_lock);
	if ((e = cache_find(h, cache_id)) != NULL) {
		e->refs++;
		lru_unlink(h, e);
		lru_push_front(h, e);
		pthread_mutex_unlock(&h->cache_lock);
		*out = (struct hsm_key *)e;
		return KM_OK;
	}
	pthread_mutex_unlock(&h->cache_lock);

	/* Unwrap without holding the cache lock; a racing thread may insert
	 * the same id meanwhile, in which case our copy is destroyed. */
	if ((r = unwrap_for_use(h, mek_version, wrapped, wrapped_len, &obj)) != KM_OK)
		return r;
	if ((fresh = calloc(1, sizeof(*fresh))) == NULL ||
	    (fresh->id = strdup(cache_id)) == NULL) {
		free(fresh);
		fresh = NULL;
		r = KM_ERR_NOMEM;
	}
	pthread_mutex_lock(&h->cache_lock);
	if (r == KM_OK && (e = cache_find(h, cache_id)) == NULL) {
		e = fresh;
		fresh = NULL;
		e->handle = obj;
		obj = CK_INVALID_HANDLE;
		b = hash_id(cache_id) & (h->n_buckets - 1);
		e->hnext = h->buckets[b];
		h->buckets[b] = e;
		h->cache_count++;
		lru_push_front(h, e);
	}
	if (r == KM_OK) {
		e->refs++;
		*out = (struct hsm_key *)e;
	}
	victims = cache_evict_locked(h);
	pthread_mutex_unlock(&h->cache_lock);

	if (fresh != NULL) {
		free(fresh->id);
		free(fresh);
	}
	if (obj != CK_INVALID_HANDLE) {
		CK_SESSION_HANDLE s = session_get(h);
		CK_RV rv = h->fn->C_DestroyObject(s, obj);

		session_put(h, s);
		if (rv != CKR_OK)
			(void)rv_err(rv, "C_DestroyObject", "duplicate key copy");
	}
	destroy_victims(h, victims);
	return r;
}

void
hsm_key_release(struct hsm *h, struct hsm_key *k)
{
	struct cache_entry *victims;

	if (k == NULL)
		return;
	pthread_mutex_lock(&h->cache_lock);
	k->e.refs--;
	victims = cache_evict_locked(h);
	pthread_mutex_unlock(&h->cache_lock);
	destroy_victims(h, victims);
}

size_t
hsm_key_cache_count(struct hsm *h)
{
	size_t n;

	pthread_mutex_lock(&h->cache_lock);
	n = h->cache_count;
	pthread_mutex_unlock(&h->cache_lock);
	return n;
}

static int
read_flags(struct hsm *h, CK_OBJECT_HANDLE obj, int *sensitive,
    int *extractable)
{
	CK_BBOOL sens = CK_FALSE, extr = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_SENSITIVE, &sens, sizeof(sens) },
		{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
	};
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;

	rv = h->fn->C_GetAttributeValue(s, obj, tmpl, 2);
	session_put(h, s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_GetAttributeValue", NULL);
	*sensitive = sens == CK_TRUE;
	*extractable = extr == CK_TRUE;
	return KM_OK;
}

int
hsm_key_flags(struct hsm *h, struct hsm_key *k, int *sensitive,
    int *extractable)
{
	return read_flags(h, k->e.handle, sensitive, extractable);
}

int
hsm_mek_flags(struct hsm *h, uint32_t version, int *sensitive,
    int *extractable)
{
	CK_OBJECT_HANDLE obj;
	int r;

	if ((r = mek_lookup(h, version, &obj)) != KM_OK)
		return r;
	return read_flags(h, obj, sensitive, extractable);
}

int
hsm_gcm_encrypt(struct hsm *h, struct hsm_key *k,
    const unsigned char iv[HSM_GCM_IV_LEN], const unsigned char *aad,
    size_t aadlen, const unsigned char *in, size_t inlen, unsigned char *out)
{
	CK_GCM_PARAMS gp = {
		.pIv = (CK_BYTE_PTR)iv, .ulIvLen = HSM_GCM_IV_LEN,
		.ulIvBits = HSM_GCM_IV_LEN * 8,
		.pAAD = (CK_BYTE_PTR)aad, .ulAADLen = aadlen,
		.ulTagBits = HSM_GCM_TAG_LEN * 8,
	};
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	CK_ULONG outlen = inlen + HSM_GCM_TAG_LEN;
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;
	int r = KM_OK;

	if ((rv = h->fn->C_EncryptInit(s, &mech, k->e.handle)) != CKR_OK)
		r = rv_err(rv, "C_EncryptInit(AES-GCM)", NULL);
	else if ((rv = h->fn->C_Encrypt(s, (CK_BYTE_PTR)in, inlen, out,
	    &outlen)) != CKR_OK)
		r = rv_err(rv, "C_Encrypt(AES-GCM)", NULL);
	else if (outlen != inlen + HSM_GCM_TAG_LEN) {
		log_error("PKCS#11 AES-GCM returned %lu bytes for %zu",
		    (unsigned long)outlen, inlen);
		r = KM_ERR_HSM;
	}
	session_put(h, s);
	return r;
}

int
hsm_gcm_decrypt(struct hsm *h, struct hsm_key *k,
    const unsigned char iv[HSM_GCM_IV_LEN], const unsigned char *aad,
    size_t aadlen, const unsigned char *in, size_t inlen, unsigned char *out,
    size_t *outlen)
{
	CK_GCM_PARAMS gp = {
		.pIv = (CK_BYTE_PTR)iv, .ulIvLen = HSM_GCM_IV_LEN,
		.ulIvBits = HSM_GCM_IV_LEN * 8,
		.pAAD = (CK_BYTE_PTR)aad, .ulAADLen = aadlen,
		.ulTagBits = HSM_GCM_TAG_LEN * 8,
	};
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	CK_ULONG len = inlen;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r = KM_OK;

	*outlen = 0;
	if (inlen <= HSM_GCM_TAG_LEN)
		return KM_ERR_INVALID_CIPHERTEXT;
	s = session_get(h);
	if ((rv = h->fn->C_DecryptInit(s, &mech, k->e.handle)) != CKR_OK) {
		r = rv_err(rv, "C_DecryptInit(AES-GCM)", NULL);
	} else if ((rv = h->fn->C_Decrypt(s, (CK_BYTE_PTR)in, inlen, out,
	    &len)) != CKR_OK) {
		/* A tag mismatch is the caller's bad blob, not a token fault.
		 * SoftHSM 2.6 reports it as CKR_ENCRYPTED_DATA_INVALID; other
		 * tokens use the length or generic codes. */
		if (rv == CKR_ENCRYPTED_DATA_INVALID ||
		    rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
		    rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED)
			r = KM_ERR_INVALID_CIPHERTEXT;
		else
			r = rv_err(rv, "C_Decrypt(AES-GCM)", NULL);
	} else {
		*outlen = len;
	}
	session_put(h, s);
	return r;
}

int
hsm_random(struct hsm *h, unsigned char *out, size_t len)
{
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;

	rv = h->fn->C_GenerateRandom(s, out, len);
	session_put(h, s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_GenerateRandom", NULL);
	return KM_OK;
}

static int
find_labelled(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
    const char *label, CK_OBJECT_HANDLE *obj)
{
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};

	return find_one(h, s, tmpl, 3, obj, label);
}

int
hsm_ec_create(struct hsm *h, const char *label)
{
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE pub[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_EC_PARAMS, (void *)p256_params, sizeof(p256_params) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)label, strlen(label) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;
	int r;

	r = find_labelled(h, s, CKO_PRIVATE_KEY, label, &hpriv);
	if (r == KM_OK) {
		r = KM_ERR_KEY_EXISTS;
		goto out;
	}
	if (r != KM_ERR_NOT_FOUND)
		goto out;
	rv = h->fn->C_GenerateKeyPair(s, &mech, pub, sizeof(pub) / sizeof(pub[0]),
	    priv, sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
	r = rv == CKR_OK ? KM_OK : rv_err(rv, "C_GenerateKeyPair(P-256)", label);
out:
	session_put(h, s);
	return r;
}

/* CKA_EC_POINT is a DER OCTET STRING around the uncompressed point. */
static int
ec_point_unwrap(const unsigned char *p, size_t n, const unsigned char **pt,
    size_t *ptlen)
{
	if (n == 65 && p[0] == 0x04) {	/* some tokens omit the wrapper */
		*pt = p;
		*ptlen = n;
		return KM_OK;
	}
	if (n != 67 || p[0] != 0x04 || p[1] != 65 || p[2] != 0x04)
		return KM_ERR_HSM;
	*pt = p + 2;
	*ptlen = 65;
	return KM_OK;
}

static int
spki_from_point(const unsigned char *pt, size_t ptlen, unsigned char **der,
    size_t *der_len)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	unsigned char *out = NULL;
	int n, r = KM_ERR_INTERNAL;

	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
	    "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt,
	    ptlen) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0 ||
	    (n = i2d_PUBKEY(pkey, &out)) <= 0) {
		log_error("the token's EC point is not a P-256 public key");
		goto out;
	}
	*der = out;
	*der_len = (size_t)n;
	r = KM_OK;
out:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return r;
}

int
hsm_ec_public(struct hsm *h, const char *label, unsigned char **der,
    size_t *der_len)
{
	unsigned char point[128];
	CK_ATTRIBUTE a = { CKA_EC_POINT, point, sizeof(point) };
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s = session_get(h);
	const unsigned char *pt;
	size_t ptlen;
	CK_RV rv;
	int r;

	*der = NULL;
	*der_len = 0;
	if ((r = find_labelled(h, s, CKO_PUBLIC_KEY, label, &obj)) != KM_OK)
		goto out;
	if ((rv = h->fn->C_GetAttributeValue(s, obj, &a, 1)) != CKR_OK) {
		r = rv_err(rv, "C_GetAttributeValue(CKA_EC_POINT)", label);
		goto out;
	}
	if ((r = ec_point_unwrap(point, a.ulValueLen, &pt, &ptlen)) != KM_OK) {
		log_error("CKA_EC_POINT of %s is not an uncompressed P-256 point",
		    label);
		goto out;
	}
	r = spki_from_point(pt, ptlen, der, der_len);
out:
	session_put(h, s);
	return r;
}

int
hsm_ec_sign(struct hsm *h, const char *label, const unsigned char digest[32],
    unsigned char sig[64])
{
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	CK_OBJECT_HANDLE obj;
	CK_ULONG len = 64;
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;
	int r;

	if ((r = find_labelled(h, s, CKO_PRIVATE_KEY, label, &obj)) != KM_OK)
		goto out;
	if ((rv = h->fn->C_SignInit(s, &mech, obj)) != CKR_OK) {
		r = rv_err(rv, "C_SignInit(ECDSA)", label);
		goto out;
	}
	if ((rv = h->fn->C_Sign(s, (CK_BYTE_PTR)digest, 32, sig, &len)) != CKR_OK) {
		r = rv_err(rv, "C_Sign(ECDSA)", label);
		goto out;
	}
	r = len == 64 ? KM_OK : KM_ERR_HSM;
out:
	session_put(h, s);
	return r;
}
