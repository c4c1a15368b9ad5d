/* The token's ceiling for tests/bench/run: how many AES-256-GCM encrypts
 * (32 bytes, with an AAD the size of kmsd's for a two-pair context) or
 * ECDSA P-256 signatures (CKM_ECDSA over a SHA-256 digest) the PKCS#11
 * module does per second with nothing else in the way. The module is
 * loaded the way kmsd loads it (a p11-kit module name, or a path); the key
 * is a session object, as kmsd's named keys are; each thread has its own
 * session. Not a test.
 *
 *   p11_ceiling aes|ecdsa THREADS SECONDS PIN_FILE [MODULE [TOKEN_LABEL]]
 *
 * MODULE defaults to "softhsm2", TOKEN_LABEL to "kmsd" (kmsd's defaults);
 * SOFTHSM2_CONF names the token directory. Prints one line:
 *   BENCH ops=<n> seconds=<s> ops_per_s=<r> */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/p11-kit.h>

#define MAX_THREADS 64
/* kmsd's AAD for key "bench-1", a version and {"tenant":"t-0001",
 * "doc":"d-000001"} (docs/FORMATS.md): 10 + 11 + 4 + 4 + 20 + 19 bytes. */
#define AAD_LEN 68

static CK_FUNCTION_LIST *fn;
static CK_OBJECT_HANDLE key;
static int use_aes;
static double until;

struct worker {
	pthread_t tid;
	CK_SLOT_ID slot;
	unsigned long ops;
	CK_RV rv;
	const char *what;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static CK_RV
one_encrypt(CK_SESSION_HANDLE s, unsigned long n)
{
	unsigned char iv[12] = { 0 }, aad[AAD_LEN], in[32], out[48];
	CK_GCM_PARAMS gp = {
		.pIv = iv, .ulIvLen = sizeof(iv), .ulIvBits = sizeof(iv) * 8,
		.pAAD = aad, .ulAADLen = sizeof(aad), .ulTagBits = 128,
	};
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	CK_ULONG outlen = sizeof(out);
	CK_RV rv;

	/* a fresh nonce for every encryption, as kmsd does */
	memcpy(iv, &n, sizeof(n));
	memset(aad, 'a', sizeof(aad));
	memset(in, 'p', sizeof(in));
	if ((rv = fn->C_EncryptInit(s, &mech, key)) != CKR_OK)
		return rv;
	return fn->C_Encrypt(s, in, sizeof(in), out, &outlen);
}

static CK_RV
one_sign(CK_SESSION_HANDLE s, unsigned long n)
{
	unsigned char digest[32], sig[64];
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	CK_ULONG siglen = sizeof(sig);
	CK_RV rv;

	memset(digest, 'd', sizeof(digest));
	memcpy(digest, &n, sizeof(n));
	if ((rv = fn->C_SignInit(s, &mech, key)) != CKR_OK)
		return rv;
	return fn->C_Sign(s, digest, sizeof(digest), sig, &siglen);
}

static void *
run_worker(void *arg)
{
	struct worker *w = arg;
	CK_SESSION_HANDLE s;
	unsigned long n = 0;

	w->what = "C_OpenSession";
	if ((w->rv = fn->C_OpenSession(w->slot, CKF_SERIAL_SESSION, NULL, NULL,
	    &s)) != CKR_OK)
		return NULL;
	w->what = use_aes ? "C_Encrypt(AES-GCM)" : "C_Sign(ECDSA)";
	while (now_s() < until) {
		w->rv = use_aes ? one_encrypt(s, n) : one_sign(s, n);
		if (w->rv != CKR_OK)
			break;
		n++;
	}
	w->ops = n;
	if (w->rv == CKR_OK && (w->rv = fn->C_CloseSession(s)) != CKR_OK)
		w->what = "C_CloseSession";
	return NULL;
}

static CK_RV
make_key(CK_SESSION_HANDLE s)
{
	static CK_BYTE p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
		0x03, 0x01, 0x07 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG len = 32;
	CK_OBJECT_HANDLE pub;
	CK_MECHANISM gen = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_MECHANISM ecgen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE aes[] = {
		{ CKA_VALUE_LEN, &len, sizeof(len) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
	};
	CK_ATTRIBUTE ecpub[] = {
		{ CKA_EC_PARAMS, p256, sizeof(p256) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
	};
	CK_ATTRIBUTE ecpriv[] = {
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
	};

	if (use_aes)
		return fn->C_GenerateKey(s, &gen, aes, 5, &key);
	return fn->C_GenerateKeyPair(s, &ecgen, ecpub, 3, ecpriv, 4, &pub, &key);
}

/* The slot whose token has `label` (blank-padded to 32 in the token info). */
static int
find_slot(const char *label, CK_SLOT_ID *slot)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	char want[32];
	size_t len = strlen(label);

	if (len > sizeof(want))
		return -1;
	memset(want, ' ', sizeof(want));
	memcpy(want, label, len);
	if (fn->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return -1;
	for (i = 0; i < n; i++)
		if (fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, want, sizeof(want)) == 0) {
			*slot = slots[i];
			return 0;
		}
	return -1;
}

static int
read_pin(const char *path, char *pin, size_t pinlen)
{
	FILE *f = fopen(path, "r");
	int ok;

	if (f == NULL)
		return -1;
	ok = fgets(pin, (int)pinlen, f) != NULL;
	fclose(f);
	pin[strcspn(pin, "\r\n")] = '\0';
	return ok && pin[0] != '\0' ? 0 : -1;
}

/* Runs `n` workers until `seconds` have passed; prints the BENCH line. */
static int
measure(CK_SLOT_ID slot, int n, double seconds)
{
	struct worker w[MAX_THREADS];
	unsigned long ops = 0;
	double t0;
	int i, rc = 0;

	memset(w, 0, sizeof(w));
	t0 = now_s();
	until = t0 + seconds;
	for (i = 0; i < n; i++) {
		w[i].slot = slot;
		if (pthread_create(&w[i].tid, NULL, run_worker, &w[i]) != 0) {
			fprintf(stderr, "p11_ceiling: cannot start thread %d\n", i);
			until = 0;
			n = i;
			rc = -1;
		}
	}
	for (i = 0; i < n; i++) {
		pthread_join(w[i].tid, NULL);
		ops += w[i].ops;
		if (w[i].rv != CKR_OK) {
			fprintf(stderr, "p11_ceiling: thread %d: %s: %s\n", i,
			    w[i].what, p11_kit_strerror(w[i].rv));
			rc = -1;
		}
	}
	seconds = now_s() - t0;
	if (rc == 0)
		printf("BENCH ops=%lu seconds=%.3f ops_per_s=%.1f\n", ops,
		    seconds, (double)ops / seconds);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *module = argc > 5 ? argv[5] : "softhsm2";
	const char *label = argc > 6 ? argv[6] : "kmsd";
	CK_FUNCTION_LIST **modules = NULL;
	CK_SESSION_HANDLE s;
	CK_SLOT_ID slot;
	char pin[256];
	int threads, rc = 1, inited = 0;
	CK_RV rv;

	if (argc < 5 || (strcmp(argv[1], "aes") != 0 &&
	    strcmp(argv[1], "ecdsa") != 0) || (threads = atoi(argv[2])) < 1 ||
	    threads > MAX_THREADS || atof(argv[3]) <= 0) {
		fprintf(stderr, "usage: p11_ceiling aes|ecdsa THREADS(1..%d) "
		    "SECONDS PIN_FILE [MODULE [TOKEN_LABEL]]\n", MAX_THREADS);
		return 2;
	}
	use_aes = strcmp(argv[1], "aes") == 0;
	if (read_pin(argv[4], pin, sizeof(pin)) != 0) {
		fprintf(stderr, "p11_ceiling: cannot read a PIN from %s\n", argv[4]);
		return 1;
	}
	/* as pkcs11/hsm.c: a path, or a p11-kit module name */
	if (strchr(module, '/') != NULL)
		fn = p11_kit_module_load(module, 0);
	else if ((modules = p11_kit_modules_load(NULL, 0)) != NULL)
		fn = p11_kit_module_for_name(modules, module);
	if (fn == NULL) {
		fprintf(stderr, "p11_ceiling: cannot load PKCS#11 module %s\n",
		    module);
		goto out;
	}
	if ((rv = p11_kit_module_initialize(fn)) != CKR_OK) {
		fprintf(stderr, "p11_ceiling: C_Initialize(%s): %s\n", module,
		    p11_kit_strerror(rv));
		goto out;
	}
	inited = 1;
	if (find_slot(label, &slot) != 0) {
		fprintf(stderr, "p11_ceiling: no token labelled %s\n", label);
		goto out;
	}
	if ((rv = fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &s)) != CKR_OK ||
	    (rv = fn->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin))) !=
	    CKR_OK || (rv = make_key(s)) != CKR_OK) {
		fprintf(stderr, "p11_ceiling: session, login or key generation on "
		    "token %s: %s\n", label, p11_kit_strerror(rv));
		goto out;
	}
	if (measure(slot, threads, atof(argv[3])) == 0)
		rc = 0;
out:
	explicit_bzero(pin, sizeof(pin));
	if (inited)
		p11_kit_module_finalize(fn);
	if (modules != NULL)
		p11_kit_modules_release(modules);
	else if (fn != NULL)
		p11_kit_module_release(fn);
	return rc;
}
