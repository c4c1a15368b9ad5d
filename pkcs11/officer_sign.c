/* An officer's own PKCS#11 token through p11-kit, for kmsctl: key pair
 * generation, the public key, and ECDSA P-256 signatures over a digest. */
#include "officer_sign.h"

#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "hsm.h"
#include "log.h"

/* DER of the P-256 curve OID 1.2.840.10045.3.1.7 (CKA_EC_PARAMS). */
static const unsigned char p256_oid[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
};

#define MAX_TEMPLATE 16

struct osess {
	CK_FUNCTION_LIST **modules;
	CK_FUNCTION_LIST *fn;
	int initialized;
	CK_SESSION_HANDLE s;
	int open;
	P11KitUri *uri;
};

static int
rv_err(CK_RV rv, const char *what)
{
	log_error("officer token: %s failed: %s (0x%lx)", what,
	    p11_kit_strerror(rv), (unsigned long)rv);
	return hsm_rv_error(rv);
}

static void
sess_close(struct osess *o)
{
	if (o->open) {
		(void)o->fn->C_Logout(o->s);	/* not logged in: harmless */
		(void)o->fn->C_CloseSession(o->s);
	}
	if (o->fn != NULL && o->initialized)
		(void)p11_kit_module_finalize(o->fn);
	if (o->modules != NULL)
		p11_kit_modules_release(o->modules);
	else if (o->fn != NULL)
		p11_kit_module_release(o->fn);
	if (o->uri != NULL)
		p11_kit_uri_free(o->uri);
	memset(o, 0, sizeof(*o));
}

static int
module_load(struct osess *o, const char *module)
{
	if (strchr(module, '/') != NULL) {
		if ((o->fn = p11_kit_module_load(module, 0)) == NULL) {
			log_error("officer token: cannot load PKCS#11 module %s: %s",
			    module, p11_kit_message() ? p11_kit_message() : "unknown");
			return KM_ERR_HSM;
		}
		return KM_OK;
	}
	if ((o->modules = p11_kit_modules_load(NULL, 0)) == NULL ||
	    (o->fn = p11_kit_module_for_name(o->modules, module)) == NULL) {
		log_error("officer token: no p11-kit module named '%s' (see p11-kit "
		    "list-modules)", module);
		return KM_ERR_HSM;
	}
	return KM_OK;
}

/* The first initialised token the URI matches. */
static int
find_slot(struct osess *o, CK_SLOT_ID *slot, CK_TOKEN_INFO *info)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	CK_RV rv;
	int r = KM_ERR_NOT_FOUND;

	if ((rv = o->fn->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK)
		return rv_err(rv, "C_GetSlotList");
	if (n > 0 && (slots = calloc(n, sizeof(*slots))) == NULL)
		return KM_ERR_NOMEM;
	if (n > 0 && (rv = o->fn->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		r = rv_err(rv, "C_GetSlotList");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (o->fn->C_GetTokenInfo(slots[i], info) != CKR_OK ||
		    !(info->flags & CKF_TOKEN_INITIALIZED))
			continue;
		if (p11_kit_uri_match_token_info(o->uri, info)) {
			*slot = slots[i];
			r = KM_OK;
			break;
		}
	}
	if (r != KM_OK)
		log_error("officer token: no token matches the URI");
out:
	free(slots);
	return r;
}

static int
sess_open(const struct osign_key *k, int rw, struct osess *o)
{
	CK_TOKEN_INFO info;
	CK_SLOT_ID slot = 0;
	const char *pin, *module;
	CK_RV rv;
	int r;

	memset(o, 0, sizeof(*o));
	if (k->uri == NULL)
		return KM_ERR_INVALID_REQUEST;
	if ((o->uri = p11_kit_uri_new()) == NULL)
		return KM_ERR_NOMEM;
	if (p11_kit_uri_parse(k->uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN_AND_MODULE,
	    o->uri) != P11_KIT_URI_OK) {
		log_error("officer token: '%s' is not a PKCS#11 URI", k->uri);
		return KM_ERR_INVALID_REQUEST;
	}
	/* The module: given, else the URI's module-path or module-name. */
	if ((module = k->module) == NULL &&
	    (module = p11_kit_uri_get_module_path(o->uri)) == NULL &&
	    (module = p11_kit_uri_get_module_name(o->uri)) == NULL) {
		log_error("officer token: no PKCS#11 module: give --module, or "
		    "module-name= or module-path= in the URI");
		return KM_ERR_INVALID_REQUEST;
	}
	if ((r = module_load(o, module)) != KM_OK)
		return r;
	if ((rv = p11_kit_module_initialize(o->fn)) != CKR_OK)
		return rv_err(rv, "C_Initialize");
	o->initialized = 1;
	if ((r = find_slot(o, &slot, &info)) != KM_OK)
		return r;
	if ((rv = o->fn->C_OpenSession(slot, CKF_SERIAL_SESSION |
	    (rw ? CKF_RW_SESSION : 0), NULL, NULL, &o->s)) != CKR_OK)
		return rv_err(rv, "C_OpenSession");
	o->open = 1;
	pin = p11_kit_uri_get_pin_value(o->uri);
	if (pin == NULL)
		pin = k->pin;
	if (pin == NULL) {
		if (info.flags & CKF_LOGIN_REQUIRED) {
			log_error("officer token: a PIN is required");
			return KM_ERR_HSM_AUTH;
		}
		return KM_OK;
	}
	rv = o->fn->C_Login(o->s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		return rv_err(rv, "C_Login");
	return KM_OK;
}

/* The objects of `cls` matching the URI's attributes: *n of at most 2. */
static int
find(struct osess *o, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE out[2],
    CK_ULONG *n)
{
	CK_ATTRIBUTE tmpl[MAX_TEMPLATE], *ua;
	CK_ULONG nu = 0, i, nt = 0;
	CK_RV rv;

	*n = 0;
	ua = p11_kit_uri_get_attributes(o->uri, &nu);
	for (i = 0; i < nu && nt < MAX_TEMPLATE - 1; i++)
		if (ua[i].type != CKA_CLASS)
			tmpl[nt++] = ua[i];
	tmpl[nt].type = CKA_CLASS;
	tmpl[nt].pValue = &cls;
	tmpl[nt].ulValueLen = sizeof(cls);
	nt++;
	if ((rv = o->fn->C_FindObjectsInit(o->s, tmpl, nt)) != CKR_OK)
		return rv_err(rv, "C_FindObjectsInit");
	rv = o->fn->C_FindObjects(o->s, out, 2, n);
	(void)o->fn->C_FindObjectsFinal(o->s);
	if (rv != CKR_OK)
		return rv_err(rv, "C_FindObjects");
	return KM_OK;
}

static int
find_one(struct osess *o, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h)
{
	CK_OBJECT_HANDLE hs[2];
	CK_ULONG n;
	int r;

	if ((r = find(o, cls, hs, &n)) != KM_OK)
		return r;
	if (n != 1) {
		log_error("officer token: %s %s key matches the URI",
		    n == 0 ? "no" : "more than one",
		    cls == CKO_PRIVATE_KEY ? "private" : "public");
		return KM_ERR_NOT_FOUND;
	}
	*h = hs[0];
	return KM_OK;
}

int
osign_sign(const struct osign_key *k, const unsigned char digest[32],
    unsigned char sig[64])
{
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	CK_OBJECT_HANDLE priv;
	CK_ULONG len = 64;
	struct osess o;
	CK_RV rv;
	int r;

	if ((r = sess_open(k, 0, &o)) != KM_OK ||
	    (r = find_one(&o, CKO_PRIVATE_KEY, &priv)) != KM_OK)
		goto out;
	if ((rv = o.fn->C_SignInit(o.s, &mech, priv)) != CKR_OK) {
		r = rv_err(rv, "C_SignInit");
		goto out;
	}
	if ((rv = o.fn->C_Sign(o.s, (CK_BYTE_PTR)digest, 32, sig, &len)) != CKR_OK) {
		r = rv_err(rv, "C_Sign");
		goto out;
	}
	if (len != 64) {
		log_error("officer token: the signature is %lu bytes, not an ECDSA "
		    "P-256 r || s", (unsigned long)len);
		r = KM_ERR_HSM;
		goto out;
	}
	r = KM_OK;
out:
	sess_close(&o);
	return r;
}

/* An uncompressed P-256 point (65 bytes) from CKA_EC_POINT, which tokens
 * give as a DER OCTET STRING (PKCS#11 2.40) or, some, raw. */
static int
point_of(const unsigned char *p, size_t n, const unsigned char **pt)
{
	if (n == 65 && p[0] == 0x04) {
		*pt = p;
		return 0;
	}
	if (n == 67 && p[0] == 0x04 && p[1] == 0x41 && p[2] == 0x04) {
		*pt = p + 2;
		return 0;
	}
	return -1;
}

int
osign_public(const struct osign_key *k, unsigned char **spki,
    size_t *spki_len)
{
	CK_ATTRIBUTE a = { CKA_EC_POINT, NULL, 0 };
	CK_OBJECT_HANDLE pub;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	EVP_PKEY *pk = NULL;
	unsigned char *buf = NULL, *der = NULL;
	const unsigned char *pt;
	struct osess o;
	CK_RV rv;
	int n, r;

	*spki = NULL;
	*spki_len = 0;
	if ((r = sess_open(k, 0, &o)) != KM_OK ||
	    (r = find_one(&o, CKO_PUBLIC_KEY, &pub)) != KM_OK)
		goto out;
	if ((rv = o.fn->C_GetAttributeValue(o.s, pub, &a, 1)) != CKR_OK ||
	    a.ulValueLen == 0 || a.ulValueLen > 256) {
		r = rv != CKR_OK ? rv_err(rv, "C_GetAttributeValue(CKA_EC_POINT)") :
		    KM_ERR_HSM;
		goto out;
	}
	if ((buf = malloc(a.ulValueLen)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	a.pValue = buf;
	if ((rv = o.fn->C_GetAttributeValue(o.s, pub, &a, 1)) != CKR_OK) {
		r = rv_err(rv, "C_GetAttributeValue(CKA_EC_POINT)");
		goto out;
	}
	if (point_of(buf, a.ulValueLen, &pt) != 0) {
		log_error("officer token: the key is not an ECDSA P-256 key");
		r = KM_ERR_UNSUPPORTED_KEY_TYPE;
		goto out;
	}
	r = KM_ERR_NOMEM;
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
	    "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 65) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL)
		goto out;
	if (EVP_PKEY_fromdata_init(pctx) != 1 ||
	    EVP_PKEY_fromdata(pctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		log_error("officer token: the public point is not on P-256");
		r = KM_ERR_UNSUPPORTED_KEY_TYPE;
		goto out;
	}
	if ((n = i2d_PUBKEY(pk, &der)) <= 0 || (*spki = malloc((size_t)n)) == NULL)
		goto out;
	memcpy(*spki, der, (size_t)n);
	*spki_len = (size_t)n;
	r = KM_OK;
out:
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(pctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	free(buf);
	sess_close(&o);
	return r;
}

int
osign_keygen(const struct osign_key *k)
{
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_HANDLE hs[2], pub, priv;
	CK_ATTRIBUTE *label;
	CK_ULONG n;
	unsigned char id[16];
	struct osess o;
	CK_RV rv;
	int r;

	if ((r = sess_open(k, 1, &o)) != KM_OK)
		goto out;
	label = p11_kit_uri_get_attribute(o.uri, CKA_LABEL);
	if (label == NULL || label->ulValueLen == 0) {
		log_error("officer token: the URI must name the key (object=...)");
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = find(&o, CKO_PRIVATE_KEY, hs, &n)) != KM_OK)
		goto out;
	if (n > 0) {
		r = KM_ERR_KEY_EXISTS;
		goto out;
	}
	if ((r = km_random(id, sizeof(id))) != KM_OK)
		goto out;
	{
		CK_ATTRIBUTE pub_t[] = {
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_VERIFY, &yes, sizeof(yes) },
			{ CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid) },
			{ CKA_LABEL, label->pValue, label->ulValueLen },
			{ CKA_ID, id, sizeof(id) },
		};
		CK_ATTRIBUTE priv_t[] = {
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &yes, sizeof(yes) },
			{ CKA_SENSITIVE, &yes, sizeof(yes) },
			{ CKA_EXTRACTABLE, &no, sizeof(no) },
			{ CKA_SIGN, &yes, sizeof(yes) },
			{ CKA_DECRYPT, &no, sizeof(no) },
			{ CKA_LABEL, label->pValue, label->ulValueLen },
			{ CKA_ID, id, sizeof(id) },
		};

		rv = o.fn->C_GenerateKeyPair(o.s, &mech, pub_t,
		    sizeof(pub_t) / sizeof(pub_t[0]), priv_t,
		    sizeof(priv_t) / sizeof(priv_t[0]), &pub, &priv);
	}
	if (rv != CKR_OK) {
		r = rv_err(rv, "C_GenerateKeyPair");
		goto out;
	}
	r = KM_OK;
out:
	OPENSSL_cleanse(id, sizeof(id));
	sess_close(&o);
	return r;
}
