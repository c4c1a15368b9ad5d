/* PKCS#11 through p11-kit: the only file in kmsd that calls C_* functions. */
#include "hsm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "log.h"

/* SoftHSM 2.6.1 leaks an ASN1 object on every CKM_EDDSA signature (its
 * OSSL::byteString2oid never frees what d2i_ASN1_OBJECT made). Under
 * LeakSanitizer that leak is the token's, not kmsd's: what the token
 * allocates during that one call is not reported, and nothing else. */
#if defined(__SANITIZE_ADDRESS__)
#define HSM_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HSM_LSAN 1
#endif
#endif
#ifdef HSM_LSAN
#include <sanitizer/lsan_interface.h>
#define TOKEN_LEAKS_IGNORED(cond) do { if (cond) __lsan_disable(); } while (0)
#define TOKEN_LEAKS_REPORTED(cond) do { if (cond) __lsan_enable(); } while (0)
#else
#define TOKEN_LEAKS_IGNORED(cond) do { } while (0)
#define TOKEN_LEAKS_REPORTED(cond) do { } while (0)
#endif

#define MEK_LABEL_FMT "kms-mek-v%u"
#define MAX_MEK_CACHE 64

/* DER of the P-256 curve OID 1.2.840.10045.3.1.7, the CKA_EC_PARAMS value. */
static const unsigned char p256_params[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
};

/* DER of the Ed25519 OID 1.3.101.112 (RFC 8410), the CKA_EC_PARAMS value
 * of PKCS#11 3.0 for CKK_EC_EDWARDS. */
static const unsigned char ed25519_params[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };

/* DER DigestInfo prefix of SHA-256 (RFC 8017 section 9.2 note 1): the
 * RS256 input of CKM_RSA_PKCS is this followed by the 32-byte digest. */
static const unsigned char sha256_digest_info[] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
	0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
};

struct cache_entry {
	char *id;
	CK_OBJECT_HANDLE handle;
	int borrowed;		/* a token object: never destroyed by the cache */
	int evicted;		/* out of the cache; destroyed at refs 0 */
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
	unsigned no_wrap;	/* 1 << type: the token refused to wrap it */

	pthread_mutex_t import_lock;	/* one import key creation at a time */
	unsigned oaep_known, oaep_ok;	/* 1 << hash: probed, supported */

	pthread_mutex_t cache_lock;
	struct cache_entry **buckets;
	size_t n_buckets;
	size_t cache_count;
	size_t cache_cap;
	struct cache_entry *lru_head, *lru_tail;
};

int
hsm_rv_error(unsigned long rv)
{
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

static int
rv_err(CK_RV rv, const char *what, const char *detail)
{
	log_error("PKCS#11 %s failed%s%s: %s (0x%lx)", what,
	    detail ? " for " : "", detail ? detail : "",
	    p11_kit_strerror(rv), (unsigned long)rv);
	return hsm_rv_error(rv);
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
	pthread_mutex_init(&h->import_lock, NULL);
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
		if (!e->borrowed)
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
	pthread_mutex_destroy(&h->import_lock);
	free(h);
}

/* A session can outlive the token's object store: SoftHSM keeps sessions
 * in memory while its token directory is gone, and only object access
 * fails. Reading an attribute of the newest MEK in use proves the objects
 * are reachable. Called with a session from the pool. */
static int
ping_object(struct hsm *h, CK_SESSION_HANDLE s)
{
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	CK_BBOOL wrap = CK_FALSE;
	CK_ATTRIBUTE a = { CKA_WRAP, &wrap, sizeof(wrap) };
	CK_RV rv;

	pthread_mutex_lock(&h->mek_lock);
	if (h->n_meks > 0)
		obj = h->meks[h->n_meks - 1].handle;
	pthread_mutex_unlock(&h->mek_lock);
	if (obj == CK_INVALID_HANDLE)
		return KM_OK;
	if ((rv = h->fn->C_GetAttributeValue(s, obj, &a, 1)) != CKR_OK)
		return rv_err(rv, "C_GetAttributeValue (readiness)", "the MEK");
	return KM_OK;
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
	} else {
		r = ping_object(h, s);
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

/* C_WrapKey under `mek` with CKM_AES_KEY_WRAP_PAD. The token's own return
 * value is kept in *rvp, so a caller can tell CKR_KEY_NOT_WRAPPABLE apart;
 * only other failures are logged. */
static int
wrap_key_rv(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mek,
    CK_OBJECT_HANDLE key, unsigned char **wrapped, size_t *wrapped_len,
    CK_RV *rvp)
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_ULONG len = 0;
	unsigned char *buf;
	CK_RV rv;

	*rvp = CKR_OK;
	if ((rv = h->fn->C_WrapKey(s, &mech, mek, key, NULL, &len)) != CKR_OK) {
		*rvp = rv;
		if (rv == CKR_KEY_NOT_WRAPPABLE)
			return KM_ERR_UNSUPPORTED_KEY_TYPE;
		return rv_err(rv, "C_WrapKey (length)", NULL);
	}
	if ((buf = malloc(len)) == NULL)
		return KM_ERR_NOMEM;
	if ((rv = h->fn->C_WrapKey(s, &mech, mek, key, buf, &len)) != CKR_OK) {
		free(buf);
		*rvp = rv;
		if (rv == CKR_KEY_NOT_WRAPPABLE)
			return KM_ERR_UNSUPPORTED_KEY_TYPE;
		return rv_err(rv, "C_WrapKey", NULL);
	}
	*wrapped = buf;
	*wrapped_len = len;
	return KM_OK;
}

static int
wrap_key(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mek,
    CK_OBJECT_HANDLE key, unsigned char **wrapped, size_t *wrapped_len)
{
	CK_RV rv;
	int r;

	r = wrap_key_rv(h, s, mek, key, wrapped, wrapped_len, &rv);
	if (rv == CKR_KEY_NOT_WRAPPABLE)
		(void)rv_err(rv, "C_WrapKey", NULL);
	return r;
}

int
hsm_key_type_parse(const char *name, enum hsm_key_type *out)
{
	static const struct {
		const char *name;
		enum hsm_key_type type;
	} types[] = {
		{ "aes256-gcm", HSM_KEY_AES256 },
		{ "ec-p256", HSM_KEY_EC_P256 },
		{ "rsa-2048", HSM_KEY_RSA2048 },
		{ "rsa-3072", HSM_KEY_RSA3072 },
		{ "ed25519", HSM_KEY_ED25519 },
	};
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (strcmp(name, types[i].name) == 0) {
			*out = types[i].type;
			return KM_OK;
		}
	}
	return KM_ERR_UNSUPPORTED_KEY_TYPE;
}

int
hsm_key_type_is_pair(enum hsm_key_type type)
{
	return type == HSM_KEY_EC_P256 || type == HSM_KEY_RSA2048 ||
	    type == HSM_KEY_RSA3072 || type == HSM_KEY_ED25519;
}

int
hsm_key_type_supported(struct hsm *h, enum hsm_key_type type)
{
	struct need {
		CK_MECHANISM_TYPE mech;
		CK_FLAGS need;
		const char *name;
	};
	static const struct need aes[] = {
		{ CKM_AES_KEY_GEN, CKF_GENERATE, "CKM_AES_KEY_GEN" },
		{ CKM_AES_GCM, CKF_ENCRYPT, "CKM_AES_GCM" },
		{ 0, 0, NULL },
	}, ec[] = {
		{ CKM_EC_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, "CKM_EC_KEY_PAIR_GEN" },
		{ CKM_ECDSA, CKF_SIGN, "CKM_ECDSA" },
		{ 0, 0, NULL },
	}, rsa[] = {
		{ CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR,
		    "CKM_RSA_PKCS_KEY_PAIR_GEN" },
		{ CKM_RSA_PKCS, CKF_SIGN, "CKM_RSA_PKCS" },
		{ CKM_RSA_PKCS_PSS, CKF_SIGN, "CKM_RSA_PKCS_PSS" },
		{ 0, 0, NULL },
	}, ed[] = {
		{ CKM_EC_EDWARDS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR,
		    "CKM_EC_EDWARDS_KEY_PAIR_GEN" },
		{ CKM_EDDSA, CKF_SIGN, "CKM_EDDSA" },
		{ 0, 0, NULL },
	};
	/* Not in the static declaration above: a static cursor would be
	 * shared by every HTTP thread creating keys at the same time. */
	const struct need *m;
	CK_MECHANISM_INFO info;
	CK_RV rv;

	switch (type) {
	case HSM_KEY_AES256: m = aes; break;
	case HSM_KEY_EC_P256: m = ec; break;
	case HSM_KEY_RSA2048:
	case HSM_KEY_RSA3072: m = rsa; break;
	case HSM_KEY_ED25519: m = ed; break;
	default: return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	for (; m->name != NULL; m++) {
		rv = h->fn->C_GetMechanismInfo(h->slot, m->mech, &info);
		if (rv == CKR_MECHANISM_INVALID ||
		    (rv == CKR_OK && (info.flags & m->need) != m->need)) {
			log_warn("the token has no %s", m->name);
			return KM_ERR_UNSUPPORTED_KEY_TYPE;
		}
		if (rv != CKR_OK)
			return rv_err(rv, "C_GetMechanismInfo", m->name);
	}
	return KM_OK;
}

void
hsm_version_label(const char *key, uint32_t version, char *out, size_t outlen)
{
	snprintf(out, outlen, "kms-%s-v%u", key, version);
}

void
hsm_new_key_clear(struct hsm_new_key *k)
{
	if (k == NULL)
		return;
	free(k->wrapped);
	free(k->public_key);
	memset(k, 0, sizeof(*k));
}

static int
aes_generate(struct hsm *h, uint32_t mek_version, unsigned char **wrapped,
    size_t *wrapped_len)
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

/* Generates a key pair of `type`. The public half is always a session
 * object (kmsd keeps the public key in the store). The private half is
 * either a temporary extractable session object, made to be wrapped and
 * destroyed, or (on_token) a token object labelled `label` that is never
 * extractable. Both are sensitive and may only sign. */
static int
pair_generate(struct hsm *h, CK_SESSION_HANDLE s, enum hsm_key_type type,
    int on_token, const char *label, CK_OBJECT_HANDLE *pub,
    CK_OBJECT_HANDLE *priv)
{
	static const CK_BYTE e65537[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = 0;
	CK_ATTRIBUTE pubt[4], privt[10];
	CK_ULONG np = 0, nv = 0;
	CK_RV rv;

	*pub = *priv = CK_INVALID_HANDLE;
	pubt[np++] = (CK_ATTRIBUTE){ CKA_TOKEN, &no, sizeof(no) };
	pubt[np++] = (CK_ATTRIBUTE){ CKA_VERIFY, &yes, sizeof(yes) };
	switch (type) {
	case HSM_KEY_EC_P256:
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		pubt[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)p256_params,
		    sizeof(p256_params) };
		break;
	case HSM_KEY_RSA2048:
	case HSM_KEY_RSA3072:
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		bits = type == HSM_KEY_RSA2048 ? 2048 : 3072;
		pubt[np++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) };
		pubt[np++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, (void *)e65537,
		    sizeof(e65537) };
		break;
	case HSM_KEY_ED25519:
		mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
		pubt[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)ed25519_params,
		    sizeof(ed25519_params) };
		break;
	default:
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	privt[nv++] = (CK_ATTRIBUTE){ CKA_TOKEN, on_token ? &yes : &no,
	    sizeof(CK_BBOOL) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &yes, sizeof(yes) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &yes, sizeof(yes) };
	/* Extractable only as the temporary copy that C_WrapKey needs. */
	privt[nv++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, on_token ? &no : &yes,
	    sizeof(CK_BBOOL) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_SIGN, &yes, sizeof(yes) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_DECRYPT, &no, sizeof(no) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_UNWRAP, &no, sizeof(no) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_DERIVE, &no, sizeof(no) };
	if (on_token)
		privt[nv++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label,
		    strlen(label) };
	rv = h->fn->C_GenerateKeyPair(s, &mech, pubt, np, privt, nv, pub, priv);
	if (rv != CKR_OK) {
		*pub = *priv = CK_INVALID_HANDLE;
		return rv_err(rv, "C_GenerateKeyPair", on_token ? label :
		    "signing key");
	}
	return KM_OK;
}

/* Reads an attribute of unknown length; *out (free()) holds *len bytes. */
static int
get_attr(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, const char *what, unsigned char **out, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*out = NULL;
	*len = 0;
	if ((rv = h->fn->C_GetAttributeValue(s, obj, &a, 1)) != CKR_OK)
		return rv_err(rv, "C_GetAttributeValue", what);
	if (a.ulValueLen == 0 || a.ulValueLen > 4096)
		return KM_ERR_HSM;
	if ((a.pValue = malloc(a.ulValueLen)) == NULL)
		return KM_ERR_NOMEM;
	if ((rv = h->fn->C_GetAttributeValue(s, obj, &a, 1)) != CKR_OK) {
		free(a.pValue);
		return rv_err(rv, "C_GetAttributeValue", what);
	}
	*out = a.pValue;
	*len = a.ulValueLen;
	return KM_OK;
}

static int
spki_of(EVP_PKEY *pkey, unsigned char **der, size_t *der_len)
{
	unsigned char *p = NULL;
	int n;

	if ((n = i2d_PUBKEY(pkey, &p)) <= 0)
		return KM_ERR_INTERNAL;
	if ((*der = malloc((size_t)n)) == NULL) {
		OPENSSL_free(p);
		return KM_ERR_NOMEM;
	}
	memcpy(*der, p, (size_t)n);
	*der_len = (size_t)n;
	OPENSSL_free(p);
	return KM_OK;
}

static int
rsa_spki(const unsigned char *n, size_t nlen, const unsigned char *e,
    size_t elen, unsigned char **der, size_t *der_len)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	BIGNUM *bn = NULL, *be = NULL;
	int r = KM_ERR_INTERNAL;

	if ((bn = BN_bin2bn(n, (int)nlen, NULL)) == NULL ||
	    (be = BN_bin2bn(e, (int)elen, NULL)) == NULL ||
	    (bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
		log_error("the token's RSA modulus/exponent is not a public key");
		goto out;
	}
	r = spki_of(pkey, der, der_len);
out:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return r;
}

static int ec_point_unwrap(const unsigned char *p, size_t n,
    const unsigned char **pt, size_t *ptlen);
static int spki_from_point(const unsigned char *pt, size_t ptlen,
    unsigned char **der, size_t *der_len);

/* The DER SubjectPublicKeyInfo of public key object `pub`. */
static int
public_spki(struct hsm *h, CK_SESSION_HANDLE s, enum hsm_key_type type,
    CK_OBJECT_HANDLE pub, unsigned char **der, size_t *der_len)
{
	unsigned char *a = NULL, *b = NULL;
	const unsigned char *pt;
	size_t alen = 0, blen = 0, ptlen;
	EVP_PKEY *pkey = NULL;
	int r;

	*der = NULL;
	*der_len = 0;
	switch (type) {
	case HSM_KEY_EC_P256:
		if ((r = get_attr(h, s, pub, CKA_EC_POINT, "CKA_EC_POINT", &a,
		    &alen)) != KM_OK)
			break;
		if ((r = ec_point_unwrap(a, alen, &pt, &ptlen)) != KM_OK) {
			log_error("CKA_EC_POINT is not an uncompressed P-256 point");
			break;
		}
		r = spki_from_point(pt, ptlen, der, der_len);
		break;
	case HSM_KEY_ED25519:
		if ((r = get_attr(h, s, pub, CKA_EC_POINT, "CKA_EC_POINT", &a,
		    &alen)) != KM_OK)
			break;
		/* A DER OCTET STRING around the 32-byte key, or the bare key. */
		if (alen == 34 && a[0] == 0x04 && a[1] == 32)
			pt = a + 2;
		else if (alen == 32)
			pt = a;
		else {
			log_error("CKA_EC_POINT is not an Ed25519 public key");
			r = KM_ERR_HSM;
			break;
		}
		if ((pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
		    pt, 32)) == NULL) {
			r = KM_ERR_INTERNAL;
			break;
		}
		r = spki_of(pkey, der, der_len);
		break;
	case HSM_KEY_RSA2048:
	case HSM_KEY_RSA3072:
		if ((r = get_attr(h, s, pub, CKA_MODULUS, "CKA_MODULUS", &a,
		    &alen)) != KM_OK ||
		    (r = get_attr(h, s, pub, CKA_PUBLIC_EXPONENT,
		    "CKA_PUBLIC_EXPONENT", &b, &blen)) != KM_OK)
			break;
		r = rsa_spki(a, alen, b, blen, der, der_len);
		break;
	default:
		r = KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	EVP_PKEY_free(pkey);
	free(a);
	free(b);
	return r;
}

static void
destroy_quietly(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    const char *what)
{
	CK_RV rv;

	if (obj != CK_INVALID_HANDLE &&
	    (rv = h->fn->C_DestroyObject(s, obj)) != CKR_OK)
		(void)rv_err(rv, "C_DestroyObject", what);
}

/* A signing key pair whose private half leaves the token only wrapped.
 * KM_ERR_UNSUPPORTED_KEY_TYPE (nothing logged as an error) when the token
 * refuses to wrap that private key type. */
static int
pair_create_wrapped(struct hsm *h, enum hsm_key_type type, CK_OBJECT_HANDLE mek,
    struct hsm_new_key *out)
{
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s = session_get(h);
	CK_RV rv;
	int r;

	if ((r = pair_generate(h, s, type, 0, NULL, &pub, &priv)) != KM_OK ||
	    (r = public_spki(h, s, type, pub, &out->public_key,
	    &out->public_key_len)) != KM_OK)
		goto out;
	r = wrap_key_rv(h, s, mek, priv, &out->wrapped, &out->wrapped_len, &rv);
	if (rv == CKR_KEY_NOT_WRAPPABLE) {
		pthread_mutex_lock(&h->mek_lock);
		h->no_wrap |= 1u << type;
		pthread_mutex_unlock(&h->mek_lock);
		log_info("the token does not wrap this private key type "
		    "(CKR_KEY_NOT_WRAPPABLE); its versions are kept as token "
		    "objects");
	}
out:
	/* The extractable copy must not outlive this call. */
	destroy_quietly(h, s, priv, "generated private key");
	destroy_quietly(h, s, pub, "generated public key");
	session_put(h, s);
	if (r != KM_OK)
		hsm_new_key_clear(out);
	return r;
}

/* A signing key pair whose private half stays on the token as `label`. */
static int
pair_create_token(struct hsm *h, enum hsm_key_type type, const char *label,
    struct hsm_new_key *out)
{
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s = session_get(h);
	unsigned char id[SHA256_DIGEST_LENGTH];
	CK_ATTRIBUTE a = { CKA_ID, id, sizeof(id) };
	CK_RV rv;
	int r;

	if ((r = pair_generate(h, s, type, 1, label, &pub, &priv)) != KM_OK ||
	    (r = public_spki(h, s, type, pub, &out->public_key,
	    &out->public_key_len)) != KM_OK)
		goto out;
	/* CKA_ID ties the object to the public key kmsd stores, so a second
	 * object under the same label (a failed attempt, a racing rotate)
	 * can never be taken for this one. */
	SHA256(out->public_key, out->public_key_len, id);
	if ((rv = h->fn->C_SetAttributeValue(s, priv, &a, 1)) != CKR_OK) {
		r = rv_err(rv, "C_SetAttributeValue(CKA_ID)", label);
		goto out;
	}
	out->on_token = 1;
	priv = CK_INVALID_HANDLE;	/* kept */
	log_info("created token key %s", label);
out:
	destroy_quietly(h, s, priv, label);
	destroy_quietly(h, s, pub, "generated public key");
	session_put(h, s);
	if (r != KM_OK)
		hsm_new_key_clear(out);
	return r;
}

int
hsm_key_create(struct hsm *h, enum hsm_key_type type, uint32_t mek_version,
    const char *token_label, struct hsm_new_key *out)
{
	CK_OBJECT_HANDLE mek;
	unsigned no_wrap;
	int r;

	memset(out, 0, sizeof(*out));
	if (type == HSM_KEY_AES256)
		return aes_generate(h, mek_version, &out->wrapped,
		    &out->wrapped_len);
	if (!hsm_key_type_is_pair(type))
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	pthread_mutex_lock(&h->mek_lock);
	no_wrap = h->no_wrap;
	pthread_mutex_unlock(&h->mek_lock);
	if (!(no_wrap & (1u << type))) {
		if ((r = mek_lookup(h, mek_version, &mek)) != KM_OK) {
			log_error("MEK version %u is not in the token", mek_version);
			return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
		}
		r = pair_create_wrapped(h, type, mek, out);
		if (r != KM_ERR_UNSUPPORTED_KEY_TYPE)
			return r;
	}
	if (token_label == NULL || token_label[0] == '\0') {
		log_error("the token does not wrap this key type and no token "
		    "label was given");
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	return pair_create_token(h, type, token_label, out);
}

int
hsm_key_generate(struct hsm *h, enum hsm_key_type type, uint32_t mek_version,
    unsigned char **wrapped, size_t *wrapped_len)
{
	struct hsm_new_key k;
	int r;

	*wrapped = NULL;
	*wrapped_len = 0;
	if ((r = hsm_key_create(h, type, mek_version, NULL, &k)) != KM_OK)
		return r;
	*wrapped = k.wrapped;
	*wrapped_len = k.wrapped_len;
	k.wrapped = NULL;
	hsm_new_key_clear(&k);
	return KM_OK;
}

/* The attributes of an unwrapped named key of `type`: for use (sensitive,
 * not extractable, only its one operation) or as the temporary copy of a
 * rewrap (extractable so C_WrapKey takes it, no operation at all). The
 * array points into *t, which must stay where it is while it is used. */
struct key_tmpl {
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE kt;
	CK_BBOOL yes, no;
	CK_ATTRIBUTE a[12];
	CK_ULONG n;
};

static int
key_template(enum hsm_key_type type, int for_use, struct key_tmpl *t)
{
	int secret = type == HSM_KEY_AES256;

	t->yes = CK_TRUE;
	t->no = CK_FALSE;
	t->n = 0;
	switch (type) {
	case HSM_KEY_AES256: t->kt = CKK_AES; break;
	case HSM_KEY_EC_P256: t->kt = CKK_EC; break;
	case HSM_KEY_RSA2048:
	case HSM_KEY_RSA3072: t->kt = CKK_RSA; break;
	default: return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	t->cls = secret ? CKO_SECRET_KEY : CKO_PRIVATE_KEY;
#define ADD(type_, ptr_) \
	(t->a[t->n++] = (CK_ATTRIBUTE){ (type_), (ptr_), sizeof(*(ptr_)) })
	ADD(CKA_CLASS, &t->cls);
	ADD(CKA_KEY_TYPE, &t->kt);
	ADD(CKA_TOKEN, &t->no);
	ADD(CKA_PRIVATE, &t->yes);
	ADD(CKA_SENSITIVE, &t->yes);
	ADD(CKA_EXTRACTABLE, for_use ? &t->no : &t->yes);
	if (secret) {
		ADD(CKA_ENCRYPT, for_use ? &t->yes : &t->no);
		ADD(CKA_DECRYPT, for_use ? &t->yes : &t->no);
		if (for_use) {
			ADD(CKA_WRAP, &t->no);
			ADD(CKA_UNWRAP, &t->no);
		}
	} else {
		ADD(CKA_SIGN, for_use ? &t->yes : &t->no);
		ADD(CKA_DECRYPT, &t->no);
		ADD(CKA_UNWRAP, &t->no);
		ADD(CKA_DERIVE, &t->no);
	}
#undef ADD
	return KM_OK;
}

static int
unwrap_for_use(struct hsm *h, enum hsm_key_type type, uint32_t mek_version,
    const unsigned char *wrapped, size_t wrapped_len, CK_OBJECT_HANDLE *out)
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	struct key_tmpl t;
	CK_OBJECT_HANDLE mek;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	if ((r = key_template(type, 1, &t)) != KM_OK)
		return r;
	if ((r = mek_lookup(h, mek_version, &mek)) != KM_OK) {
		log_error("MEK version %u is not in the token", mek_version);
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	s = session_get(h);
	rv = h->fn->C_UnwrapKey(s, &mech, mek, (CK_BYTE_PTR)wrapped,
	    wrapped_len, t.a, t.n, out);
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
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	/* Extractable, or C_WrapKey refuses it; it lives only for this call. */
	struct key_tmpl t;
	CK_OBJECT_HANDLE from, to, tmp = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	*out = NULL;
	*out_len = 0;
	if ((r = key_template(type, 0, &t)) != KM_OK)
		return r;
	if ((r = mek_lookup(h, old_mek, &from)) != KM_OK ||
	    (r = mek_lookup(h, new_mek, &to)) != KM_OK) {
		log_error("MEK version %u or %u is not in the token", old_mek,
		    new_mek);
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	s = session_get(h);
	rv = h->fn->C_UnwrapKey(s, &mech, from, (CK_BYTE_PTR)wrapped, wrapped_len,
	    t.a, t.n, &tmp);
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
		if (!v->borrowed &&
		    (rv = h->fn->C_DestroyObject(s, v->handle)) != CKR_OK)
			(void)rv_err(rv, "C_DestroyObject", v->id);
		free(v->id);
		free(v);
	}
	session_put(h, s);
}

/* Puts `obj` into the cache as `cache_id` (or finds that a racing thread
 * did first) and returns a reference. `obj` is consumed: a duplicate copy
 * is destroyed unless it is `borrowed` (a token object). */
static int
cache_insert(struct hsm *h, const char *cache_id, CK_OBJECT_HANDLE obj,
    int borrowed, struct hsm_key **out)
{
	struct cache_entry *e, *fresh = NULL, *victims;
	size_t b;
	int r = KM_OK;

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
		e->borrowed = borrowed;
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
	if (obj != CK_INVALID_HANDLE && !borrowed) {
		CK_SESSION_HANDLE s = session_get(h);
		CK_RV rv = h->fn->C_DestroyObject(s, obj);

		session_put(h, s);
		if (rv != CKR_OK)
			(void)rv_err(rv, "C_DestroyObject", "duplicate key copy");
	}
	destroy_victims(h, victims);
	return r;
}

/* A cached entry for `cache_id`, referenced, or NULL. */
static struct hsm_key *
cache_get(struct hsm *h, const char *cache_id)
{
	struct cache_entry *e;

	pthread_mutex_lock(&h->cache_lock);
	if ((e = cache_find(h, cache_id)) != NULL) {
		e->refs++;
		lru_unlink(h, e);
		lru_push_front(h, e);
	}
	pthread_mutex_unlock(&h->cache_lock);
	return (struct hsm_key *)e;
}

int
hsm_key_acquire(struct hsm *h, const char *cache_id, enum hsm_key_type type,
    uint32_t mek_version, const unsigned char *wrapped, size_t wrapped_len,
    struct hsm_key **out)
{
	CK_OBJECT_HANDLE obj;
	int r;

	*out = NULL;
	if (type != HSM_KEY_AES256 && type != HSM_KEY_EC_P256 &&
	    type != HSM_KEY_RSA2048 && type != HSM_KEY_RSA3072)
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	if ((*out = cache_get(h, cache_id)) != NULL)
		return KM_OK;
	/* Unwrap without holding the cache lock; a racing thread may insert
	 * the same id meanwhile, in which case our copy is destroyed. */
	if ((r = unwrap_for_use(h, type, mek_version, wrapped, wrapped_len,
	    &obj)) != KM_OK)
		return r;
	return cache_insert(h, cache_id, obj, 0, out);
}

/* The private token key whose CKA_ID is SHA-256(public key): one object
 * per key pair, whatever its label says. */
static int
find_token_key(struct hsm *h, CK_SESSION_HANDLE s, const unsigned char *spki,
    size_t spki_len, CK_OBJECT_HANDLE *obj)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_BBOOL yes = CK_TRUE;
	unsigned char id[SHA256_DIGEST_LENGTH];
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_ID, id, sizeof(id) },
	};

	SHA256(spki, spki_len, id);
	return find_one(h, s, tmpl, 3, obj, "token key");
}

/* Gives `obj` the label `label` unless it has it already. */
static int
ensure_label(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    const char *label)
{
	unsigned char have[HSM_LABEL_MAX];
	CK_ATTRIBUTE a = { CKA_LABEL, have, sizeof(have) };
	size_t n = strlen(label);
	CK_RV rv;

	rv = h->fn->C_GetAttributeValue(s, obj, &a, 1);
	if (rv == CKR_OK && a.ulValueLen == n && memcmp(have, label, n) == 0)
		return KM_OK;
	a.pValue = (void *)label;
	a.ulValueLen = n;
	if ((rv = h->fn->C_SetAttributeValue(s, obj, &a, 1)) != CKR_OK)
		return rv_err(rv, "C_SetAttributeValue(CKA_LABEL)", label);
	log_info("token key labelled %s", label);
	return KM_OK;
}

int
hsm_key_acquire_token(struct hsm *h, const char *cache_id, const char *label,
    const unsigned char *public_key, size_t public_key_len,
    struct hsm_key **out)
{
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s;
	int r;

	*out = NULL;
	if (public_key == NULL || public_key_len == 0)
		return KM_ERR_INVALID_REQUEST;
	if ((*out = cache_get(h, cache_id)) != NULL)
		return KM_OK;
	s = session_get(h);
	r = find_token_key(h, s, public_key, public_key_len, &obj);
	/* A label that is not yet kms-<key>-v<N> (the version was made with a
	 * provisional one, or kmsd stopped before relabelling): fix it now.
	 * Only a name for people; the object is found by its CKA_ID. */
	if (r == KM_OK && ensure_label(h, s, obj, label) != KM_OK)
		log_warn("token key %s keeps its old label", label);
	session_put(h, s);
	if (r == KM_ERR_NOT_FOUND)
		log_error("token key %s is not in the token", label);
	if (r != KM_OK)
		return r;
	return cache_insert(h, cache_id, obj, 1, out);
}

int
hsm_token_key_label(struct hsm *h, const char *label,
    const unsigned char *public_key, size_t public_key_len)
{
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s;
	int r;

	if (public_key == NULL || public_key_len == 0)
		return KM_ERR_INVALID_REQUEST;
	s = session_get(h);
	if ((r = find_token_key(h, s, public_key, public_key_len, &obj)) == KM_OK)
		r = ensure_label(h, s, obj, label);
	session_put(h, s);
	return r;
}

int
hsm_token_key_destroy(struct hsm *h, const unsigned char *public_key,
    size_t public_key_len)
{
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	if (public_key == NULL || public_key_len == 0)
		return KM_ERR_INVALID_REQUEST;
	s = session_get(h);
	if ((r = find_token_key(h, s, public_key, public_key_len,
	    &obj)) == KM_OK) {
		if ((rv = h->fn->C_DestroyObject(s, obj)) != CKR_OK)
			r = rv_err(rv, "C_DestroyObject", "token key");
		else
			log_info("destroyed a token key");
	}
	session_put(h, s);
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
	if (k->e.evicted && k->e.refs == 0) {
		k->e.hnext = victims;
		victims = &k->e;
	}
	pthread_mutex_unlock(&h->cache_lock);
	destroy_victims(h, victims);
}

void
hsm_cache_id(int64_t key_id, uint32_t version, char *out, size_t outlen)
{
	snprintf(out, outlen, "%lld:%u", (long long)key_id, version);
}

int
hsm_key_evict(struct hsm *h, const char *cache_id)
{
	struct cache_entry *e, *victim = NULL;
	int found;

	pthread_mutex_lock(&h->cache_lock);
	if ((found = (e = cache_find(h, cache_id)) != NULL)) {
		bucket_remove(h, e);
		lru_unlink(h, e);
		h->cache_count--;
		e->evicted = 1;
		e->hnext = NULL;
		/* A request in flight keeps its reference; the last release
		 * destroys the object (hsm_key_release). */
		if (e->refs == 0)
			victim = e;
	}
	pthread_mutex_unlock(&h->cache_lock);
	destroy_victims(h, victim);
	if (found)
		log_info("key cache: %s evicted", cache_id);
	return found;
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

/* For /metrics (service/metrics.c, issue 7): sessions held now and pool size. */
void
hsm_pool_stats(struct hsm *h, size_t *in_use, size_t *size)
{
	pthread_mutex_lock(&h->pool_lock);
	*size = h->n_sessions;
	*in_use = h->n_sessions - h->n_free;
	pthread_mutex_unlock(&h->pool_lock);
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

/* Generates the token key pair `label` from the templates, unless a
 * private key with that label exists (KM_ERR_KEY_EXISTS); `what` names
 * the generation in errors. */
static int
pair_create(struct hsm *h, CK_SESSION_HANDLE s, CK_MECHANISM *mech,
    CK_ATTRIBUTE *pub, CK_ULONG npub, CK_ATTRIBUTE *priv, CK_ULONG npriv,
    const char *what, const char *label)
{
	CK_OBJECT_HANDLE hpub, hpriv;
	CK_RV rv;
	int r;

	if ((r = find_labelled(h, s, CKO_PRIVATE_KEY, label, &hpriv)) == KM_OK)
		return KM_ERR_KEY_EXISTS;
	if (r != KM_ERR_NOT_FOUND)
		return r;
	rv = h->fn->C_GenerateKeyPair(s, mech, pub, npub, priv, npriv, &hpub,
	    &hpriv);
	return rv == CKR_OK ? KM_OK : rv_err(rv, what, label);
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
	CK_SESSION_HANDLE s = session_get(h);
	int r;

	r = pair_create(h, s, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
	    sizeof(priv) / sizeof(priv[0]), "C_GenerateKeyPair(P-256)", label);
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

int
hsm_sign(struct hsm *h, struct hsm_key *k, enum hsm_sig_alg alg,
    const unsigned char *in, size_t inlen, unsigned char sig[HSM_SIG_MAX],
    size_t *siglen)
{
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM mech = { 0, NULL, 0 };
	unsigned char info[sizeof(sha256_digest_info) + 32];
	const unsigned char *data = in;
	const char *what = "C_SignInit";
	CK_ULONG len = HSM_SIG_MAX, dlen = inlen;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r = KM_OK;

	*siglen = 0;
	switch (alg) {
	case HSM_SIG_ES256:
		mech.mechanism = CKM_ECDSA;
		break;
	case HSM_SIG_RS256:
		/* CKM_RSA_PKCS pads what it is given: the DigestInfo is ours. */
		mech.mechanism = CKM_RSA_PKCS;
		if (inlen == 32) {
			memcpy(info, sha256_digest_info, sizeof(sha256_digest_info));
			memcpy(info + sizeof(sha256_digest_info), in, 32);
			data = info;
			dlen = sizeof(info);
		}
		break;
	case HSM_SIG_PS256:
		/* The salt is as long as the hash, as RFC 7518 section 3.5 asks. */
		mech.mechanism = CKM_RSA_PKCS_PSS;
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
		break;
	case HSM_SIG_EDDSA:
		mech.mechanism = CKM_EDDSA;
		break;
	default:
		return KM_ERR_INVALID_REQUEST;
	}
	if (alg != HSM_SIG_EDDSA && inlen != 32)
		return KM_ERR_INVALID_REQUEST;
	if (alg == HSM_SIG_EDDSA && inlen == 0)
		return KM_ERR_INVALID_REQUEST;
	s = session_get(h);
	TOKEN_LEAKS_IGNORED(alg == HSM_SIG_EDDSA);
	if ((rv = h->fn->C_SignInit(s, &mech, k->e.handle)) == CKR_OK) {
		what = "C_Sign";
		rv = h->fn->C_Sign(s, (CK_BYTE_PTR)data, dlen, sig, &len);
	}
	TOKEN_LEAKS_REPORTED(alg == HSM_SIG_EDDSA);
	if (rv != CKR_OK)
		r = rv_err(rv, what, k->e.id);
	else if (len == 0 || len > HSM_SIG_MAX ||
	    (alg == HSM_SIG_ES256 && len != 64) ||
	    (alg == HSM_SIG_EDDSA && len != 64)) {
		log_error("PKCS#11 C_Sign returned %lu bytes", (unsigned long)len);
		r = KM_ERR_HSM;
	} else
		*siglen = len;
	session_put(h, s);
	OPENSSL_cleanse(info, sizeof(info));
	return r;
}

/* ---- BYOK: the import key and key.import ---- */

int
hsm_import_key_create(struct hsm *h, const char *label)
{
	static const CK_BYTE e65537[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = 3072;
	CK_ATTRIBUTE pub[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_MODULUS_BITS, &bits, sizeof(bits) },
		{ CKA_PUBLIC_EXPONENT, (void *)e65537, sizeof(e65537) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_WRAP, &yes, sizeof(yes) },
		{ CKA_VERIFY, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)label, strlen(label) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_UNWRAP, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_SIGN, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)label, strlen(label) },
	};
	CK_SESSION_HANDLE s;
	int r;

	pthread_mutex_lock(&h->import_lock);
	s = session_get(h);
	r = pair_create(h, s, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
	    sizeof(priv) / sizeof(priv[0]), "C_GenerateKeyPair(RSA-3072)", label);
	if (r == KM_OK)
		log_info("created import key %s in the token", label);
	session_put(h, s);
	pthread_mutex_unlock(&h->import_lock);
	return r;
}

int
hsm_import_key_public(struct hsm *h, const char *label, unsigned char **der,
    size_t *der_len)
{
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s = session_get(h);
	int r;

	*der = NULL;
	*der_len = 0;
	if ((r = find_labelled(h, s, CKO_PUBLIC_KEY, label, &obj)) != KM_OK)
		goto out;
	r = public_spki(h, s, HSM_KEY_RSA3072, obj, der, der_len);
out:
	session_put(h, s);
	return r;
}

int
hsm_oaep_hash_parse(const char *name, enum hsm_oaep_hash *out)
{
	if (name != NULL && strcmp(name, "sha256") == 0)
		*out = HSM_OAEP_SHA256;
	else if (name != NULL && strcmp(name, "sha1") == 0)
		*out = HSM_OAEP_SHA1;
	else
		return KM_ERR_INVALID_REQUEST;
	return KM_OK;
}

const char *
hsm_oaep_hash_name(enum hsm_oaep_hash hash)
{
	return hash == HSM_OAEP_SHA1 ? "sha1" : "sha256";
}

static void
oaep_params(enum hsm_oaep_hash hash, CK_RSA_PKCS_OAEP_PARAMS *p)
{
	memset(p, 0, sizeof(*p));
	p->hashAlg = hash == HSM_OAEP_SHA1 ? CKM_SHA_1 : CKM_SHA256;
	p->mgf = hash == HSM_OAEP_SHA1 ? CKG_MGF1_SHA1 : CKG_MGF1_SHA256;
	p->source = CKZ_DATA_SPECIFIED;	/* with no data: the empty label */
}

/* The token's answers to OAEP parameters it does not take. */
static int
oaep_refused(CK_RV rv)
{
	return rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID ||
	    rv == CKR_MECHANISM_INVALID;
}

/* Answers that say the token or the session failed, not the bytes. */
static int
token_fault(CK_RV rv)
{
	return rv == CKR_DEVICE_ERROR || rv == CKR_DEVICE_MEMORY ||
	    rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT ||
	    rv == CKR_SESSION_CLOSED || rv == CKR_SESSION_HANDLE_INVALID ||
	    rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_CRYPTOKI_NOT_INITIALIZED;
}

/* C_UnwrapKey of `wrapped` under import key `label` into a temporary
 * extractable AES session object; *rvp keeps the token's answer. */
static int
import_unwrap(struct hsm *h, CK_SESSION_HANDLE s, const char *label,
    enum hsm_oaep_hash hash, const unsigned char *wrapped, size_t wrapped_len,
    CK_OBJECT_HANDLE *out, CK_RV *rvp)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_RSA_PKCS_OAEP_PARAMS op;
	CK_MECHANISM mech = { CKM_RSA_PKCS_OAEP, &op, sizeof(op) };
	/* Extractable only so that C_WrapKey takes it; it lives for one call. */
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
	CK_OBJECT_HANDLE key;
	int r;

	*out = CK_INVALID_HANDLE;
	*rvp = CKR_OK;
	if ((r = find_labelled(h, s, CKO_PRIVATE_KEY, label, &key)) != KM_OK) {
		if (r == KM_ERR_NOT_FOUND)
			log_error("import key %s is not in the token", label);
		return r;
	}
	oaep_params(hash, &op);
	*rvp = h->fn->C_UnwrapKey(s, &mech, key, (CK_BYTE_PTR)wrapped,
	    wrapped_len, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), out);
	if (*rvp != CKR_OK) {
		*out = CK_INVALID_HANDLE;
		return KM_ERR_INVALID_CIPHERTEXT;
	}
	return KM_OK;
}

int
hsm_import_oaep_supported(struct hsm *h, const char *label,
    enum hsm_oaep_hash hash)
{
	unsigned char dummy[384];
	unsigned bit = 1u << hash;
	CK_OBJECT_HANDLE obj;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r, ok;

	pthread_mutex_lock(&h->import_lock);
	if (h->oaep_known & bit) {
		ok = (h->oaep_ok & bit) != 0;
		goto out;
	}
	/* Zero is no OAEP encoding: a token that takes the parameters fails
	 * to decode it; one that does not take them refuses them first. */
	memset(dummy, 0, sizeof(dummy));
	s = session_get(h);
	r = import_unwrap(h, s, label, hash, dummy, sizeof(dummy), &obj, &rv);
	destroy_quietly(h, s, obj, "import probe");
	session_put(h, s);
	ok = (r == KM_OK || r == KM_ERR_INVALID_CIPHERTEXT) && !oaep_refused(rv) &&
	    !token_fault(rv);
	if ((r == KM_OK || r == KM_ERR_INVALID_CIPHERTEXT) && !token_fault(rv)) {
		h->oaep_known |= bit;
		if (ok)
			h->oaep_ok |= bit;
		log_info("the token %s RSA-OAEP with %s for imports", ok ?
		    "takes" : "does not take", hsm_oaep_hash_name(hash));
	}
out:
	pthread_mutex_unlock(&h->import_lock);
	return ok;
}

/* The length of secret key `key` for a token that leaves CKA_VALUE_LEN 0
 * on an unwrapped key (SoftHSM 2.6; it refuses the attribute in the
 * unwrap template as read-only): CKM_AES_KEY_WRAP (RFC 3394, no padding)
 * wraps n bytes, n a multiple of 8, to n + 8. Other lengths: *len = 0. */
static int
kw_length(struct hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE mek,
    CK_OBJECT_HANDLE key, CK_ULONG *len)
{
	CK_MECHANISM mech = { CKM_AES_KEY_WRAP, NULL, 0 };
	unsigned char buf[80];
	CK_ULONG n = sizeof(buf);
	CK_RV rv;

	*len = 0;
	rv = h->fn->C_WrapKey(s, &mech, mek, key, buf, &n);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (rv == CKR_KEY_SIZE_RANGE || rv == CKR_BUFFER_TOO_SMALL)
		return KM_OK;
	if (rv != CKR_OK)
		return rv_err(rv, "C_WrapKey(CKM_AES_KEY_WRAP)", "imported key");
	*len = n >= 24 ? n - 8 : 0;
	return KM_OK;
}

int
hsm_key_import(struct hsm *h, enum hsm_key_type type, const char *import_label,
    enum hsm_oaep_hash hash, const unsigned char *wrapped, size_t wrapped_len,
    uint32_t mek_version, unsigned char **out, size_t *out_len)
{
	CK_ULONG vlen = 0;
	CK_ATTRIBUTE a = { CKA_VALUE_LEN, &vlen, sizeof(vlen) };
	CK_OBJECT_HANDLE mek, tmp = CK_INVALID_HANDLE;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	int r;

	*out = NULL;
	*out_len = 0;
	if (type != HSM_KEY_AES256)
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	if (wrapped == NULL || wrapped_len == 0)
		return KM_ERR_INVALID_CIPHERTEXT;
	if ((r = mek_lookup(h, mek_version, &mek)) != KM_OK) {
		log_error("MEK version %u is not in the token", mek_version);
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	s = session_get(h);
	r = import_unwrap(h, s, import_label, hash, wrapped, wrapped_len, &tmp,
	    &rv);
	if (r == KM_ERR_INVALID_CIPHERTEXT) {
		log_warn("PKCS#11 C_UnwrapKey (import, OAEP %s) under %s refused "
		    "%zu bytes: %s (0x%lx)", hsm_oaep_hash_name(hash), import_label,
		    wrapped_len, p11_kit_strerror(rv), (unsigned long)rv);
		if (oaep_refused(rv))
			r = KM_ERR_INVALID_REQUEST;
		else if (rv == CKR_HOST_MEMORY)
			r = KM_ERR_NOMEM;
		else if (token_fault(rv))
			r = KM_ERR_HSM;
	}
	if (r != KM_OK)
		goto out;
	if ((rv = h->fn->C_GetAttributeValue(s, tmp, &a, 1)) != CKR_OK) {
		r = rv_err(rv, "C_GetAttributeValue(CKA_VALUE_LEN)", "imported key");
		goto out;
	}
	if (vlen == 0 && (r = kw_length(h, s, mek, tmp, &vlen)) != KM_OK)
		goto out;
	if (vlen != 32) {
		log_warn("an imported key has %lu bytes, not 32", (unsigned long)vlen);
		r = KM_ERR_INVALID_CIPHERTEXT;
		goto out;
	}
	r = wrap_key(h, s, mek, tmp, out, out_len);
out:
	destroy_quietly(h, s, tmp, "imported key copy");
	session_put(h, s);
	return r;
}
