/* kmsctl officer|ceremony|mek and `key revoke`: officer keys (a PEM file or
 * the officer's own PKCS#11 token), ceremonies from request to execution,
 * the MEK rotation's progress, and the signed emergency revoke. */
#include "kmsctl_ceremony.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "cer.h"
#include "kmsctl_cli.h"
#include "kmsctl_http.h"
#include "officer_sign.h"

#define MAX_FILE	(64 * 1024)

enum {
	O_HELP_ = 'h',
	O_TOKEN_FILE_ = 300,
	O_JSON_,
	O_DIR,
	O_OFFICER,
	O_KEY,
	O_PASSPHRASE_FILE,
	O_PKCS11_URI,
	O_MODULE,
	O_PIN_FILE,
	O_YES,
	O_PARAM,
	O_EXPIRES_IN,
	O_AS,
	O_STATE,
	O_REASON,
	O_RESUME,
	O_WAIT,
	O_NO_WAIT,
	O_WRAPPED,
	O_OUT,
};

#define OPT(n, a, v) { n, a, NULL, v }
#define OPTS_COMMON OPT("help", no_argument, O_HELP_), \
	OPT("token-file", required_argument, O_TOKEN_FILE_), \
	OPT("json", no_argument, O_JSON_)
#define OPTS_SIGN OPT("officer", required_argument, O_OFFICER), \
	OPT("key", required_argument, O_KEY), \
	OPT("passphrase-file", required_argument, O_PASSPHRASE_FILE), \
	OPT("pkcs11-uri", required_argument, O_PKCS11_URI), \
	OPT("module", required_argument, O_MODULE), \
	OPT("pin-file", required_argument, O_PIN_FILE)
#define OPTS_END { NULL, 0, NULL, 0 }

#define EXITS \
	"Exit status: 0 ok; 1 the server refused (4xx) or the operation failed;\n" \
	"2 usage error or local I/O error; 3 kmsd unreachable, 5xx or a bad answer.\n"

#define SIGN_HELP \
	"Signing key (one of):\n" \
	"  --key FILE             the officer's PEM private key (kmsctl officer\n" \
	"                         keygen); --passphrase-file F if it is encrypted\n" \
	"  --pkcs11-uri URI       a key on the officer's own PKCS#11 token, e.g.\n" \
	"                         'pkcs11:token=alice-card;object=alice'; with\n" \
	"                         --module M (p11-kit name or path; or module-name=\n" \
	"                         in the URI) and --pin-file F (else KMS_OFFICER_PIN,\n" \
	"                         else asked on the terminal)\n"

static const char usage_officer[] =
    "Usage: kmsctl officer keygen|pubkey|list ...\n"
    "\n"
    "  officer keygen NAME [--dir DIR] [--passphrase-file F]\n"
    "      Makes an ECDSA P-256 key pair: DIR/NAME.pem (private, mode 0600,\n"
    "      encrypted with the passphrase in F if given) and DIR/NAME.pub.pem\n"
    "      (public; what kmsctl init --officers and officer.add register).\n"
    "      DIR defaults to the current directory.\n"
    "  officer keygen NAME --pkcs11-uri URI [--module M] [--pin-file F] [--dir DIR]\n"
    "      Makes the key pair on the officer's own token (object= of the URI\n"
    "      is its label) and writes only DIR/NAME.pub.pem.\n"
    "  officer pubkey (--key FILE | --pkcs11-uri URI ...)\n"
    "      Prints the public key (PEM) and its SHA-256 fingerprint.\n"
    "  officer list [--json]   the registered officers and the quorum\n"
    "\n" EXITS;

static const char usage_ceremony[] =
    "Usage: kmsctl ceremony create|list|show|approve|reject|execute|cancel|\n"
    "                       import-key ...\n"
    "\n"
    "  ceremony create OPERATION [--param NAME=VALUE]... [--expires-in D]\n"
    "                  [--wrapped FILE]\n"
    "                  [--as OFFICER (--key FILE | --pkcs11-uri URI ...)] [--json]\n"
    "      Asks for a ceremony (admin or officer token). OPERATION: mek.rotate,\n"
    "      mek.disable (version), key.destroy (key, version), key.restore (key,\n"
    "      version), key.import (key, [oaep_hash=sha256|sha1], --wrapped FILE),\n"
    "      officer.add (name, public_key=@FILE.pub.pem), officer.remove (name),\n"
    "      quorum.set (quorum), audit_key.rotate.\n"
    "      VALUE @FILE reads the file. --expires-in: 5m .. 7d (default 24h).\n"
    "      --wrapped FILE: the key wrapped under the import key (key.import);\n"
    "      its SHA-256 is sent as param wrapped_sha256, and so signed.\n"
    "      --as signs the request as that officer, who then cannot approve it.\n"
    "  ceremony import-key [--out FILE] [--json]\n"
    "      The RSA-3072 key to wrap imported keys under (made in the token on\n"
    "      the first call): label, SHA-256, the OAEP hashes the token takes,\n"
    "      and the PEM (written to FILE with --out).\n"
    "  ceremony list [--state open|executed|cancelled|rejected|stale|expired]\n"
    "  ceremony show ID [--json]\n"
    "  ceremony approve ID --officer NAME (--key FILE | --pkcs11-uri URI ...) [--yes]\n"
    "  ceremony reject ID --officer NAME (--key FILE | --pkcs11-uri URI ...) [--yes]\n"
    "      Fetches the request, checks its digest, prints the canonical text\n"
    "      and asks for 'yes' on the terminal (--yes: do not ask), then signs\n"
    "      kms-approval/v1 <digest> <officer> <decision> and sends it. A reject\n"
    "      is final.\n"
    "  ceremony execute ID     runs it once M approvals are in\n"
    "  ceremony cancel ID [--reason R]\n"
    "\n" SIGN_HELP "\n" EXITS;

static const char usage_mek[] =
    "Usage: kmsctl mek status|rotate ...\n"
    "\n"
    "  mek status [--json]      MEK versions, key versions under each, and the\n"
    "                           newest rotation with its progress\n"
    "  mek rotate               asks for a mek.rotate ceremony (then approve\n"
    "                           and execute it: docs/CEREMONIES.md)\n"
    "  mek rotate --wait        follows the running rotation to its end\n"
    "  mek rotate --resume      restarts a stopped rotation and follows it\n"
    "                           (--no-wait: return at once); kmsd also resumes\n"
    "                           an unfinished rotation when it starts\n"
    "\n" EXITS;

static const char usage_revoke[] =
    "Usage: kmsctl key revoke KEY VERSION --officer NAME (--key FILE |\n"
    "                         --pkcs11-uri URI ...) [--yes] [--json]\n"
    "\n"
    "The emergency revoke: one security officer's signature over\n"
    "kms-revoke/v1 (key, version, officer, a fresh ts and a random nonce);\n"
    "takes effect at once and is final. Prints the key.\n"
    "\n" SIGN_HELP "\n" EXITS;

/* ---- small helpers ---- */

static int
print_json(const json_t *j)
{
	if (json_dumpf(j, stdout, JSON_INDENT(2)) != 0 || fputc('\n', stdout) == EOF ||
	    fflush(stdout) == EOF)
		return CLI_USAGE;
	return CLI_OK;
}

static const char *
jstr(const json_t *o, const char *k, const char *def)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : def;
}

static long long
jint(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

/* Server text to a terminal: control bytes other than newline become '?'. */
static void
put_safe(const char *s)
{
	for (; *s != '\0'; s++)
		putchar(*s == '\n' || !iscntrl((unsigned char)*s) ? *s : '?');
}

/* Reads a small file whole, NUL-terminated. */
static int
read_file(const char *path, char **out, size_t *len)
{
	FILE *f;
	char *b;
	size_t n;

	*out = NULL;
	*len = 0;
	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "kmsctl: cannot open %s: %s\n", path, strerror(errno));
		return CLI_USAGE;
	}
	if ((b = malloc(MAX_FILE + 1)) == NULL) {
		fclose(f);
		return CLI_USAGE;
	}
	n = fread(b, 1, MAX_FILE + 1, f);
	fclose(f);
	if (n > MAX_FILE) {
		fprintf(stderr, "kmsctl: %s is larger than %d bytes\n", path,
		    MAX_FILE);
		km_secure_free(b, MAX_FILE + 1);
		return CLI_USAGE;
	}
	b[n] = '\0';
	*out = b;
	*len = n;
	return CLI_OK;
}

/* The first line of `path` (a PIN or a passphrase); wipe with
 * km_secure_free(s, strlen(s)). */
static int
read_secret_line(const char *path, char **out)
{
	size_t len;
	int r;

	if ((r = read_file(path, out, &len)) != CLI_OK)
		return r;
	(*out)[strcspn(*out, "\r\n")] = '\0';
	return CLI_OK;
}

/* Asks on the terminal without echo. */
static int
ask_secret(const char *prompt, char **out)
{
	struct termios old, quiet;
	char buf[256];
	FILE *tty;
	int echo_off = 0, r = CLI_USAGE;

	*out = NULL;
	if ((tty = fopen("/dev/tty", "r+")) == NULL) {
		fprintf(stderr, "kmsctl: no terminal to ask for the %s; use a file\n",
		    prompt);
		return CLI_USAGE;
	}
	fprintf(tty, "%s: ", prompt);
	fflush(tty);
	if (tcgetattr(fileno(tty), &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		echo_off = tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0;
	}
	if (fgets(buf, sizeof(buf), tty) != NULL) {
		buf[strcspn(buf, "\r\n")] = '\0';
		if ((*out = strdup(buf)) != NULL)
			r = CLI_OK;
	}
	if (echo_off)
		(void)tcsetattr(fileno(tty), TCSAFLUSH, &old);
	fputc('\n', tty);
	fclose(tty);
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}

/* "yes" typed on the terminal. */
static int
confirm(const char *question)
{
	char buf[16] = "";
	FILE *tty;

	if ((tty = fopen("/dev/tty", "r+")) == NULL) {
		fprintf(stderr, "kmsctl: no terminal to confirm on; read the text "
		    "and pass --yes\n");
		return 0;
	}
	fprintf(tty, "%s Type yes to sign: ", question);
	fflush(tty);
	if (fgets(buf, sizeof(buf), tty) == NULL)
		buf[0] = '\0';
	fclose(tty);
	buf[strcspn(buf, "\r\n")] = '\0';
	return strcmp(buf, "yes") == 0;
}

/* ---- signing ---- */

struct signopts {
	const char *officer;
	const char *key_file;
	const char *passphrase_file;
	const char *uri;
	const char *module;
	const char *pin_file;
};

static int
sign_opt(int ch, struct signopts *so)
{
	switch (ch) {
	case O_OFFICER: so->officer = optarg; return 1;
	case O_KEY: so->key_file = optarg; return 1;
	case O_PASSPHRASE_FILE: so->passphrase_file = optarg; return 1;
	case O_PKCS11_URI: so->uri = optarg; return 1;
	case O_MODULE: so->module = optarg; return 1;
	case O_PIN_FILE: so->pin_file = optarg; return 1;
	}
	return 0;
}

static int
sign_check(const char *cmd, const struct signopts *so, int need_officer)
{
	if (need_officer && (so->officer == NULL ||
	    !cer_officer_name_valid(so->officer)))
		return cli_usage_error(cmd, "--officer NAME is required (a-z 0-9 . _ -)");
	if ((so->key_file != NULL) == (so->uri != NULL))
		return cli_usage_error(cmd, "give exactly one of --key FILE and --pkcs11-uri URI");
	return CLI_OK;
}

static int
is_p256(EVP_PKEY *pk)
{
	char group[64];
	size_t glen = 0;

	return EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC &&
	    EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
	    sizeof(group), &glen) == 1 && strcmp(group, "prime256v1") == 0;
}

static int
load_private(const struct signopts *so, EVP_PKEY **out)
{
	char *pass = NULL;
	FILE *f;
	int r = CLI_USAGE;

	*out = NULL;
	if (so->passphrase_file != NULL &&
	    read_secret_line(so->passphrase_file, &pass) != CLI_OK)
		return CLI_USAGE;
	if ((f = fopen(so->key_file, "r")) == NULL) {
		fprintf(stderr, "kmsctl: cannot open %s: %s\n", so->key_file,
		    strerror(errno));
		goto out;
	}
	/* Without a passphrase file OpenSSL asks on the terminal when the
	 * key is encrypted. */
	*out = PEM_read_PrivateKey(f, NULL, NULL, pass);
	fclose(f);
	if (*out == NULL || !is_p256(*out)) {
		fprintf(stderr, "kmsctl: %s is not an ECDSA P-256 private key (or "
		    "the passphrase is wrong)\n", so->key_file);
		EVP_PKEY_free(*out);
		*out = NULL;
		goto out;
	}
	r = CLI_OK;
out:
	if (pass != NULL)
		km_secure_free(pass, strlen(pass));
	return r;
}

static int
pin_of(const struct signopts *so, char **pin)
{
	const char *env = getenv("KMS_OFFICER_PIN");

	*pin = NULL;
	if (so->pin_file != NULL)
		return read_secret_line(so->pin_file, pin);
	if (env != NULL && *env != '\0')
		return (*pin = strdup(env)) != NULL ? CLI_OK : CLI_USAGE;
	if (strstr(so->uri, "pin-value=") != NULL)
		return CLI_OK;
	return ask_secret("PIN of the officer token", pin);
}

int
cli_officer_sign_key(EVP_PKEY *pk, const char *msg, const char *what,
    char **sig_b64)
{
	EVP_MD_CTX *md = NULL;
	unsigned char *der = NULL;
	size_t der_len = 0;
	int r = CLI_USAGE;

	*sig_b64 = NULL;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestSign(md, NULL, &der_len, (const unsigned char *)msg,
	    strlen(msg)) != 1 || (der = malloc(der_len)) == NULL ||
	    EVP_DigestSign(md, der, &der_len, (const unsigned char *)msg,
	    strlen(msg)) != 1 || km_b64_encode(der, der_len, sig_b64) != KM_OK) {
		fprintf(stderr, "kmsctl: signing %s failed\n", what);
		goto out;
	}
	r = CLI_OK;
out:
	free(der);
	EVP_MD_CTX_free(md);
	return r;
}

/* Signs `msg` (ECDSA P-256, SHA-256) with the officer's key; *sig_b64 is
 * base64 DER. */
static int
sign_message(const struct signopts *so, const char *msg, char **sig_b64)
{
	unsigned char digest[SHA256_DIGEST_LENGTH], rs[64];
	struct osign_key k;
	EVP_PKEY *pk = NULL;
	char *pin = NULL;
	int r = CLI_USAGE, kr;

	*sig_b64 = NULL;
	if (so->key_file != NULL) {
		if ((r = load_private(so, &pk)) == CLI_OK)
			r = cli_officer_sign_key(pk, msg, "the message", sig_b64);
		goto out;
	}
	if ((r = pin_of(so, &pin)) != CLI_OK)
		goto out;
	r = CLI_FAIL;
	SHA256((const unsigned char *)msg, strlen(msg), digest);
	k.module = so->module;
	k.uri = so->uri;
	k.pin = pin;
	if ((kr = osign_sign(&k, digest, rs)) != KM_OK) {
		fprintf(stderr, "kmsctl: the officer token did not sign: %s\n",
		    km_strerror(kr));
		goto out;
	}
	if (cer_sig_from_raw(rs, sig_b64) != KM_OK)
		goto out;
	r = CLI_OK;
out:
	if (pin != NULL)
		km_secure_free(pin, strlen(pin));
	EVP_PKEY_free(pk);
	return r;
}

/* ---- officer ---- */

static int
write_file(const char *path, const char *text, mode_t mode)
{
	size_t n = strlen(text);
	int fd, r = CLI_OK;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0) {
		fprintf(stderr, "kmsctl: cannot create %s: %s\n", path,
		    strerror(errno));
		return CLI_USAGE;
	}
	if (write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path, strerror(errno));
		r = CLI_USAGE;
	}
	if (close(fd) != 0)
		r = CLI_USAGE;
	if (r != CLI_OK)
		unlink(path);
	return r;
}

/* PEM of a key's public half into a new string. */
static char *
bio_string(BIO *b)
{
	char *data, *s;
	long n = BIO_get_mem_data(b, &data);

	if (n <= 0 || (s = malloc((size_t)n + 1)) == NULL)
		return NULL;
	memcpy(s, data, (size_t)n);
	s[n] = '\0';
	return s;
}

static int
print_pub(const char *name, const unsigned char *spki, size_t len,
    const char *written)
{
	char fp[65], *pem = NULL;

	if (cer_pubkey_pem(spki, len, &pem) != KM_OK)
		return CLI_USAGE;
	cer_digest_hex(spki, len, fp);
	if (written != NULL)
		printf("officer %s: public key in %s\n", name, written);
	fputs(pem, stdout);
	printf("SHA-256 of the public key (DER): %s\n", fp);
	free(pem);
	return fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
}

static int
officer_keygen(int argc, char **argv)
{
	static const struct option opts[] = { OPT("help", no_argument, O_HELP_),
		OPT("dir", required_argument, O_DIR),
		OPT("passphrase-file", required_argument, O_PASSPHRASE_FILE),
		OPT("pkcs11-uri", required_argument, O_PKCS11_URI),
		OPT("module", required_argument, O_MODULE),
		OPT("pin-file", required_argument, O_PIN_FILE), OPTS_END };
	struct signopts so = { 0 };
	const char *dir = ".", *name;
	char priv_path[4096], pub_path[4096], *pass = NULL, *pin = NULL;
	char *priv_pem = NULL, *pub_pem = NULL;
	unsigned char *spki = NULL, *der = NULL;
	size_t spki_len = 0;
	struct osign_key k;
	EVP_PKEY *pk = NULL;
	BIO *b = NULL;
	int ch, n, kr, r = CLI_USAGE;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "officer keygen ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_officer);
		if (ch == O_DIR)
			dir = optarg;
		else if (!sign_opt(ch, &so))
			return CLI_USAGE;
	}
	if (argc - optind != 1 || !cer_officer_name_valid(argv[optind]))
		return cli_usage_error("officer keygen ", "expected one officer NAME (1..32 of "
		    "a-z 0-9 . _ -, first a letter or digit)");
	name = argv[optind];
	snprintf(priv_path, sizeof(priv_path), "%s/%s.pem", dir, name);
	snprintf(pub_path, sizeof(pub_path), "%s/%s.pub.pem", dir, name);
	if (so.uri != NULL) {
		if ((r = pin_of(&so, &pin)) != CLI_OK)
			goto out;
		k.module = so.module;
		k.uri = so.uri;
		k.pin = pin;
		r = CLI_FAIL;
		if ((kr = osign_keygen(&k)) != KM_OK) {
			fprintf(stderr, "kmsctl: no key pair made on the token: %s\n",
			    kr == KM_ERR_KEY_EXISTS ? "a key with that label exists" :
			    km_strerror(kr));
			goto out;
		}
		if ((kr = osign_public(&k, &spki, &spki_len)) != KM_OK ||
		    cer_pubkey_pem(spki, spki_len, &pub_pem) != KM_OK) {
			fprintf(stderr, "kmsctl: cannot read the new public key\n");
			goto out;
		}
		if ((r = write_file(pub_path, pub_pem, 0644)) != CLI_OK)
			goto out;
		r = print_pub(name, spki, spki_len, pub_path);
		goto out;
	}
	if (so.passphrase_file != NULL &&
	    read_secret_line(so.passphrase_file, &pass) != CLI_OK)
		goto out;
	if ((pk = EVP_EC_gen("P-256")) == NULL || (b = BIO_new(BIO_s_mem())) == NULL)
		goto nomem;
	if (PEM_write_bio_PKCS8PrivateKey(b, pk, pass ? EVP_aes_256_cbc() : NULL,
	    NULL, 0, NULL, pass) != 1 || (priv_pem = bio_string(b)) == NULL)
		goto nomem;
	BIO_free(b);
	if ((b = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_PUBKEY(b, pk) != 1 ||
	    (pub_pem = bio_string(b)) == NULL ||
	    (n = i2d_PUBKEY(pk, &der)) <= 0)
		goto nomem;
	if ((r = write_file(priv_path, priv_pem, 0600)) != CLI_OK)
		goto out;
	if ((r = write_file(pub_path, pub_pem, 0644)) != CLI_OK) {
		unlink(priv_path);
		goto out;
	}
	printf("officer %s: private key in %s (mode 0600%s); keep it offline\n",
	    name, priv_path, pass ? ", encrypted" : "");
	r = print_pub(name, der, (size_t)n, pub_path);
	goto out;
nomem:
	fprintf(stderr, "kmsctl: key generation failed\n");
	r = CLI_USAGE;
out:
	if (priv_pem != NULL)
		km_secure_free(priv_pem, strlen(priv_pem));
	if (pass != NULL)
		km_secure_free(pass, strlen(pass));
	if (pin != NULL)
		km_secure_free(pin, strlen(pin));
	free(pub_pem);
	free(spki);
	OPENSSL_free(der);
	BIO_free(b);
	EVP_PKEY_free(pk);
	return r;
}

static int
officer_pubkey(int argc, char **argv)
{
	static const struct option opts[] = { OPT("help", no_argument, O_HELP_),
		OPTS_SIGN, OPTS_END };
	struct signopts so = { 0 };
	unsigned char *spki = NULL, *der = NULL;
	size_t spki_len = 0;
	struct osign_key k;
	EVP_PKEY *pk = NULL;
	char *pin = NULL;
	int ch, n, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "officer pubkey ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_officer);
		if (!sign_opt(ch, &so))
			return CLI_USAGE;
	}
	if ((r = sign_check("officer pubkey ", &so, 0)) != CLI_OK)
		return r;
	if (so.key_file != NULL) {
		if ((r = load_private(&so, &pk)) != CLI_OK)
			goto out;
		if ((n = i2d_PUBKEY(pk, &der)) <= 0) {
			r = CLI_USAGE;
			goto out;
		}
		r = print_pub(so.key_file, der, (size_t)n, NULL);
		goto out;
	}
	if ((r = pin_of(&so, &pin)) != CLI_OK)
		goto out;
	k.module = so.module;
	k.uri = so.uri;
	k.pin = pin;
	if (osign_public(&k, &spki, &spki_len) != KM_OK) {
		fprintf(stderr, "kmsctl: cannot read the public key from the token\n");
		r = CLI_FAIL;
		goto out;
	}
	r = print_pub(so.uri, spki, spki_len, NULL);
out:
	if (pin != NULL)
		km_secure_free(pin, strlen(pin));
	free(spki);
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	return r;
}

/* --token-file of the command, else kmsctl's global one. */
static const char *g_token;

static int
call(const char *token_file, const char *method, const char *path,
    const json_t *body, json_t **ans)
{
	struct cli_http *h = NULL;
	int r;

	*ans = NULL;
	if ((r = cli_http_new(token_file != NULL ? token_file : g_token, &h)) !=
	    CLI_OK)
		return r;
	r = cli_http_call(h, method, path, body, ans);
	cli_http_free(h);
	return r;
}

/* prefix + percent-encoded segment + suffix. */
static int
path_of(const char *prefix, const char *seg, const char *suffix, char **out)
{
	struct cli_http *h = NULL;
	int r;

	*out = NULL;
	if ((r = cli_http_new(NULL, &h)) != CLI_OK)
		return r;
	r = cli_http_path(h, prefix, seg, suffix, out);
	cli_http_free(h);
	return r;
}

/* --token-file and --json, which every command that calls kmsd takes:
 * stores the one `ch` is and returns 1, else returns 0. */
static int
common_opt(int ch, const char **tf, int *json)
{
	if (ch == O_TOKEN_FILE_)
		*tf = optarg;
	else if (ch == O_JSON_)
		*json = 1;
	else
		return 0;
	return 1;
}

static int
officer_list(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON, OPTS_END };
	const char *tf = NULL;
	json_t *ans = NULL, *o;
	size_t i;
	int ch, json = 0, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "officer list ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_officer);
		if (common_opt(ch, &tf, &json))
			continue;
		return CLI_USAGE;
	}
	if ((r = call(tf, "GET", "/v1/officers", NULL, &ans)) != CLI_OK)
		return r;
	if (json) {
		r = print_json(ans);
		goto out;
	}
	printf("quorum %lld of %lld active officers\n\n%-32s  %-8s  %s\n",
	    jint(ans, "quorum"), jint(ans, "active"), "NAME", "STATE",
	    "PUBLIC KEY SHA-256");
	json_array_foreach(json_object_get(ans, "officers"), i, o) {
		printf("%-32.32s  %-8.8s  ", jstr(o, "name", "?"), jstr(o, "state",
		    "?"));
		put_safe(jstr(o, "public_key_sha256", "?"));
		putchar('\n');
	}
	r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
out:
	json_decref(ans);
	return r;
}

/* ---- ceremonies ---- */

/* The ceremony as fetched, checked: its digest is the SHA-256 of its
 * request_text, the text is canonical, and its id is `id`. */
static int
verified_text(const json_t *c, const char *id, struct cer_request *req)
{
	const char *text = jstr(c, "request_text", NULL), *dg = jstr(c, "digest",
	    NULL);
	char mine[65];

	if (text == NULL || dg == NULL) {
		fprintf(stderr, "kmsctl: the answer has no request_text or digest\n");
		return CLI_UNREACHABLE;
	}
	cer_digest_hex(text, strlen(text), mine);
	if (strcmp(mine, dg) != 0) {
		fprintf(stderr, "kmsctl: the digest kmsd sent is not the SHA-256 of "
		    "the request text; refusing\n");
		return CLI_FAIL;
	}
	if (cer_request_parse(text, strlen(text), req) != KM_OK ||
	    strcmp(req->id, id) != 0) {
		fprintf(stderr, "kmsctl: the request text is not a canonical "
		    "kms-ceremony/v1 text of ceremony %s; refusing\n", id);
		return CLI_FAIL;
	}
	return CLI_OK;
}

static void
print_ceremony(const json_t *c)
{
	const json_t *a;
	size_t i;

	printf("ceremony %s: %s, state %s, %lld of %lld approvals, %lld "
	    "rejects%s\n", jstr(c, "id", "?"), jstr(c, "operation", "?"),
	    jstr(c, "state", "?"), jint(c, "approved"), jint(c, "required"),
	    jint(c, "rejected"), json_is_true(json_object_get(c, "executable")) ?
	    ", ready to execute" : "");
	printf("digest %s\n\n", jstr(c, "digest", "?"));
	put_safe(jstr(c, "request_text", ""));
	json_array_foreach(json_object_get(c, "approvals"), i, a) {
		if (i == 0)
			printf("\n%-32s  %-8s  %-20s  %s\n", "OFFICER", "DECISION",
			    "AT", "COUNTED");
		printf("%-32.32s  %-8.8s  %-20.20s  ", jstr(a, "officer", "?"),
		    jstr(a, "decision", "?"), jstr(a, "at", "?"));
		put_safe(json_is_true(json_object_get(a, "counted")) ? "yes" :
		    jstr(a, "reason", "no"));
		putchar('\n');
	}
	if (json_object_get(c, "result") != NULL) {
		char *s = json_dumps(json_object_get(c, "result"), JSON_COMPACT);

		printf("\nresult: ");
		put_safe(s ? s : "?");
		putchar('\n');
		free(s);
	}
	fflush(stdout);
}

static int
ceremony_show(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON, OPTS_END };
	struct cer_request req;
	const char *tf = NULL;
	json_t *ans = NULL;
	char *path = NULL;
	int ch, json = 0, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "ceremony show ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_ceremony);
		if (common_opt(ch, &tf, &json))
			continue;
		return CLI_USAGE;
	}
	if (argc - optind != 1)
		return cli_usage_error("ceremony show ", "expected one ceremony ID");
	if ((r = path_of("/v1/ceremonies/", argv[optind], NULL, &path)) != CLI_OK ||
	    (r = call(tf, "GET", path, NULL, &ans)) != CLI_OK)
		goto out;
	if (json)
		r = print_json(ans);
	else if ((r = verified_text(ans, argv[optind], &req)) == CLI_OK)
		print_ceremony(ans);
out:
	free(path);
	json_decref(ans);
	return r;
}

static int
ceremony_list(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON,
		OPT("state", required_argument, O_STATE), OPTS_END };
	const char *tf = NULL, *state = NULL;
	json_t *ans = NULL, *c;
	char *path = NULL;
	size_t i;
	int ch, json = 0, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "ceremony list ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_ceremony);
		if (common_opt(ch, &tf, &json))
			continue;
		if (ch == O_STATE)
			state = optarg;
		else
			return CLI_USAGE;
	}
	if (optind != argc)
		return cli_usage_error("ceremony list ", "unexpected argument '%s'", argv[optind]);
	if (state != NULL)
		r = path_of("/v1/ceremonies?state=", state, NULL, &path);
	else
		r = (path = strdup("/v1/ceremonies")) != NULL ? CLI_OK : CLI_USAGE;
	if (r != CLI_OK || (r = call(tf, "GET", path, NULL, &ans)) != CLI_OK)
		goto out;
	if (json) {
		r = print_json(ans);
		goto out;
	}
	printf("%-16s  %-16s  %-9s  %-8s  %-20s  %s\n", "ID", "OPERATION", "STATE",
	    "APPROVED", "CREATED", "REQUESTER");
	json_array_foreach(json_object_get(ans, "ceremonies"), i, c) {
		printf("%-16.16s  %-16.16s  %-9.9s  %lld/%-6lld  %-20.20s  ",
		    jstr(c, "id", "?"), jstr(c, "operation", "?"), jstr(c, "state",
		    "?"), jint(c, "approved"), jint(c, "required"), jstr(c,
		    "created", "?"));
		put_safe(jstr(c, "requester", "?"));
		putchar('\n');
	}
	r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
out:
	free(path);
	json_decref(ans);
	return r;
}

/* --param NAME=VALUE into the object; @FILE reads the value, and a
 * public_key is sent as base64 DER (single line, so it can be signed). */
static int
add_param(json_t *params, const char *kv)
{
	const char *eq = strchr(kv, '=');
	unsigned char *spki = NULL;
	size_t spki_len = 0, len;
	char *name = NULL, *file = NULL, *b64 = NULL;
	const char *v;
	int r = CLI_USAGE;

	if (eq == NULL || eq == kv)
		return cli_usage_error("ceremony create ", "--param '%s' is not NAME=VALUE", kv);
	if ((name = strndup(kv, (size_t)(eq - kv))) == NULL)
		goto out;
	v = eq + 1;
	if (v[0] == '@') {
		if (read_file(v + 1, &file, &len) != CLI_OK)
			goto out;
		while (len > 0 && (file[len - 1] == '\n' || file[len - 1] == '\r'))
			file[--len] = '\0';
		v = file;
	}
	if (strcmp(name, "public_key") == 0) {
		if (cer_pubkey_parse(v, strlen(v), &spki, &spki_len) != KM_OK) {
			unsigned char *der = NULL;
			size_t dl = 0;

			if (km_b64_decode(v, strlen(v), &der, &dl) != KM_OK ||
			    cer_pubkey_parse(der, dl, &spki, &spki_len) != KM_OK) {
				free(der);
				r = cli_usage_error("ceremony create ", "public_key is not an ECDSA "
				    "P-256 public key (PEM or base64 DER)");
				goto out;
			}
			free(der);
		}
		if (km_b64_encode(spki, spki_len, &b64) != KM_OK)
			goto out;
		v = b64;
	}
	if (json_object_get(params, name) != NULL) {
		r = cli_usage_error("ceremony create ", "--param %s given twice", name);
		goto out;
	}
	if (json_object_set_new(params, name, json_string(v)) != 0) {
		r = cli_usage_error("ceremony create ", "--param %s is not valid UTF-8", name);
		goto out;
	}
	r = CLI_OK;
out:
	free(name);
	free(file);
	free(b64);
	free(spki);
	return r;
}

/* --wrapped FILE: the bytes as base64 into the body, their SHA-256 as
 * param wrapped_sha256 (unless given, then kmsd checks it). */
static int
add_wrapped(json_t *body, json_t *params, const char *path)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char *data = NULL, *b64 = NULL, hex[65];
	size_t len = 0;
	int r;

	if ((r = read_file(path, &data, &len)) != CLI_OK)
		return r;
	r = CLI_USAGE;
	if (len == 0) {
		fprintf(stderr, "kmsctl: %s is empty\n", path);
		goto out;
	}
	SHA256((const unsigned char *)data, len, md);
	km_hex(md, sizeof(md), hex);
	if (km_b64_encode((const unsigned char *)data, len, &b64) != KM_OK ||
	    json_object_set_new(body, "wrapped", json_string(b64)) != 0 ||
	    (json_object_get(params, "wrapped_sha256") == NULL &&
	    json_object_set_new(params, "wrapped_sha256", json_string(hex)) != 0))
		goto out;
	r = CLI_OK;
out:
	free(b64);
	km_secure_free(data, MAX_FILE + 1);
	return r;
}

static int
ceremony_import_key(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON,
		OPT("out", required_argument, O_OUT), OPTS_END };
	const char *tf = NULL, *out = NULL, *pem;
	json_t *ans = NULL, *h;
	FILE *f;
	size_t i;
	int ch, json = 0, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "ceremony import-key ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_ceremony);
		if (common_opt(ch, &tf, &json))
			continue;
		if (ch == O_OUT)
			out = optarg;
		else
			return CLI_USAGE;
	}
	if (argc - optind != 0)
		return cli_usage_error("ceremony import-key ", "takes no arguments");
	if ((r = call(tf, "GET", "/v1/import-key", NULL, &ans)) != CLI_OK)
		return r;
	pem = jstr(ans, "public_key", "");
	if (out != NULL) {
		if ((f = fopen(out, "w")) == NULL || fputs(pem, f) == EOF ||
		    fclose(f) != 0) {
			fprintf(stderr, "kmsctl: cannot write %s: %s\n", out,
			    strerror(errno));
			r = CLI_USAGE;
			goto out;
		}
	}
	if (json) {
		r = print_json(ans);
		goto out;
	}
	printf("label   ");
	put_safe(jstr(ans, "label", "?"));
	printf("\nsha256  ");
	put_safe(jstr(ans, "sha256", "?"));
	printf("\noaep    ");
	json_array_foreach(json_object_get(ans, "oaep_hashes"), i, h) {
		printf("%s", i ? " " : "");
		put_safe(json_is_string(h) ? json_string_value(h) : "?");
	}
	printf("\n");
	if (out == NULL) {
		printf("\n");
		put_safe(pem);
	} else
		printf("public key written to %s\n", out);
	r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
out:
	json_decref(ans);
	return r;
}

/* Signs the request as officer so->officer. */
static int
sign_request(const struct signopts *so, const char *op, json_t *params,
    json_t *body)
{
	struct cer_request cp;
	const char *name;
	json_t *v;
	char ts[40], *msg = NULL, *sig = NULL;
	int r = CLI_USAGE;

	memset(&cp, 0, sizeof(cp));
	snprintf(cp.operation, sizeof(cp.operation), "%s", op);
	json_object_foreach(params, name, v) {
		if (cer_param_set(&cp, name, json_string_value(v)) != KM_OK) {
			fprintf(stderr, "kmsctl: --param %s cannot be signed (printable "
			    "single-line values only)\n", name);
			goto out;
		}
	}
	km_time_format(km_now_us(), 0, ts, sizeof(ts));
	if (cer_request_message(&cp, so->officer, ts, &msg) != KM_OK) {
		fprintf(stderr, "kmsctl: the request cannot be signed\n");
		goto out;
	}
	if ((r = sign_message(so, msg, &sig)) != CLI_OK)
		goto out;
	if (json_object_set_new(body, "officer", json_string(so->officer)) != 0 ||
	    json_object_set_new(body, "ts", json_string(ts)) != 0 ||
	    json_object_set_new(body, "signature", json_string(sig)) != 0) {
		r = CLI_USAGE;
		goto out;
	}
	r = CLI_OK;
out:
	free(msg);
	free(sig);
	return r;
}

static int
ceremony_create(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON, OPTS_SIGN,
		OPT("param", required_argument, O_PARAM),
		OPT("expires-in", required_argument, O_EXPIRES_IN),
		OPT("as", required_argument, O_AS),
		OPT("wrapped", required_argument, O_WRAPPED), OPTS_END };
	struct signopts so = { 0 };
	const char *tf = NULL, *expires = NULL, *wrapped = NULL;
	json_t *params = json_object(), *body = json_object(), *ans = NULL;
	int ch, json = 0, r = CLI_USAGE;

	if (params == NULL || body == NULL)
		goto out;
	while ((ch = cli_next_opt_hint(argc, argv, opts, "ceremony create ")) != -1) {
		if (ch == O_HELP_) {
			r = cli_print_help(usage_ceremony);
			goto out;
		}
		if (common_opt(ch, &tf, &json))
			continue;
		if (ch == O_PARAM) {
			if ((r = add_param(params, optarg)) != CLI_OK)
				goto out;
		} else if (ch == O_EXPIRES_IN)
			expires = optarg;
		else if (ch == O_WRAPPED)
			wrapped = optarg;
		else if (ch == O_AS)
			so.officer = optarg;
		else if (!sign_opt(ch, &so))
			goto out;
	}
	if (argc - optind != 1) {
		r = cli_usage_error("ceremony create ", "expected one OPERATION");
		goto out;
	}
	if (wrapped != NULL && (r = add_wrapped(body, params, wrapped)) != CLI_OK)
		goto out;
	if (json_object_set_new(body, "operation", json_string(argv[optind])) != 0 ||
	    (expires != NULL && json_object_set_new(body, "expires_in",
	    json_string(expires)) != 0) ||
	    json_object_set(body, "params", params) != 0)
		goto out;
	if (so.officer != NULL) {
		if ((r = sign_check("ceremony create ", &so, 1)) != CLI_OK ||
		    (r = sign_request(&so, argv[optind], params, body)) != CLI_OK)
			goto out;
	}
	if ((r = call(tf, "POST", "/v1/ceremonies", body, &ans)) != CLI_OK)
		goto out;
	if (json)
		r = print_json(ans);
	else {
		print_ceremony(ans);
		printf("\nNext: %lld officers other than the requester run\n"
		    "  kmsctl ceremony approve %s --officer NAME --key NAME.pem\n"
		    "then anyone (admin or officer token) runs\n"
		    "  kmsctl ceremony execute %s\n", jint(ans, "required"),
		    jstr(ans, "id", "?"), jstr(ans, "id", "?"));
		r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
	}
out:
	json_decref(params);
	json_decref(body);
	json_decref(ans);
	return r;
}

static int
ceremony_decide(int argc, char **argv, const char *decision)
{
	static const struct option opts[] = { OPTS_COMMON, OPTS_SIGN,
		OPT("yes", no_argument, O_YES), OPTS_END };
	char cmd[32];
	struct signopts so = { 0 };
	struct cer_request req;
	const char *tf = NULL, *id;
	json_t *c = NULL, *body = NULL, *ans = NULL;
	char *path = NULL, *apath = NULL, *msg = NULL, *sig = NULL, q[160];
	int ch, json = 0, yes = 0, r;

	snprintf(cmd, sizeof(cmd), "ceremony %s ", decision);
	while ((ch = cli_next_opt_hint(argc, argv, opts, cmd)) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_ceremony);
		if (common_opt(ch, &tf, &json))
			continue;
		if (ch == O_YES)
			yes = 1;
		else if (!sign_opt(ch, &so))
			return CLI_USAGE;
	}
	if (argc - optind != 1)
		return cli_usage_error(cmd, "expected one ceremony ID");
	if ((r = sign_check(cmd, &so, 1)) != CLI_OK)
		return r;
	id = argv[optind];
	if ((r = path_of("/v1/ceremonies/", id, NULL, &path)) != CLI_OK ||
	    (r = path_of("/v1/ceremonies/", id, "/approvals", &apath)) != CLI_OK ||
	    (r = call(tf, "GET", path, NULL, &c)) != CLI_OK)
		goto out;
	/* What is signed is the digest of the text shown, computed here:
	 * kmsd cannot show one text and collect a signature for another. */
	if ((r = verified_text(c, id, &req)) != CLI_OK)
		goto out;
	print_ceremony(c);
	if (strcmp(jstr(c, "state", ""), "open") != 0)
		fprintf(stderr, "kmsctl: note: the ceremony is %s\n",
		    jstr(c, "state", "?"));
	snprintf(q, sizeof(q), "\n%s %s as officer %s?", decision, id, so.officer);
	if (!yes && !confirm(q)) {
		fprintf(stderr, "kmsctl: not signed\n");
		r = CLI_FAIL;
		goto out;
	}
	r = CLI_USAGE;
	if (cer_approval_message(jstr(c, "digest", ""), so.officer, decision,
	    &msg) != KM_OK)
		goto out;
	if ((r = sign_message(&so, msg, &sig)) != CLI_OK)
		goto out;
	if ((body = json_pack("{s:s, s:s, s:s}", "officer", so.officer,
	    "decision", decision, "signature", sig)) == NULL) {
		r = CLI_USAGE;
		goto out;
	}
	if ((r = call(tf, "POST", apath, body, &ans)) != CLI_OK)
		goto out;
	if (json)
		r = print_json(ans);
	else {
		printf("%s: %s recorded; %lld of %lld approvals, state %s\n", id,
		    decision, jint(ans, "approved"), jint(ans, "required"),
		    jstr(ans, "state", "?"));
		r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
	}
out:
	free(path);
	free(apath);
	free(msg);
	free(sig);
	json_decref(c);
	json_decref(body);
	json_decref(ans);
	return r;
}

/* execute and cancel: ID, POST, print. */
static int
ceremony_post(int argc, char **argv, const char *what)
{
	static const struct option opts[] = { OPTS_COMMON,
		OPT("reason", required_argument, O_REASON), OPTS_END };
	const char *tf = NULL, *reason = NULL;
	json_t *ans = NULL, *body = NULL;
	char cmd[32], suffix[16], *path = NULL;
	int ch, json = 0, r;

	snprintf(cmd, sizeof(cmd), "ceremony %s ", what);
	snprintf(suffix, sizeof(suffix), "/%s", what);
	while ((ch = cli_next_opt_hint(argc, argv, opts, cmd)) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_ceremony);
		if (common_opt(ch, &tf, &json))
			continue;
		if (ch == O_REASON && strcmp(what, "cancel") == 0)
			reason = optarg;
		else
			return cli_usage_error(cmd, "unknown option");
	}
	if (argc - optind != 1)
		return cli_usage_error(cmd, "expected one ceremony ID");
	if (reason != NULL && (body = json_pack("{s:s}", "reason", reason)) == NULL)
		return CLI_USAGE;
	if ((r = path_of("/v1/ceremonies/", argv[optind], suffix, &path)) != CLI_OK ||
	    (r = call(tf, "POST", path, body, &ans)) != CLI_OK)
		goto out;
	if (json)
		r = print_json(ans);
	else {
		print_ceremony(ans);
		r = CLI_OK;
	}
out:
	free(path);
	json_decref(body);
	json_decref(ans);
	return r;
}

/* ---- mek ---- */

static void
print_rotation(const json_t *rot)
{
	long long total = jint(rot, "total"), done = jint(rot, "done");
	long long left = jint(rot, "remaining");
	double rate = json_real_value(json_object_get(rot, "rate_per_s"));

	printf("rotation %lld: v%lld -> v%lld, %s (worker %s): %lld rewrapped of "
	    "%lld, %lld left under v%lld", jint(rot, "id"), jint(rot, "from"),
	    jint(rot, "to"), jstr(rot, "state", "?"), jstr(rot, "worker", "?"),
	    done, total, left, jint(rot, "from"));
	if (rate > 0 && left > 0)
		printf(", %.0f/s, ETA %.0f s", rate, (double)left / rate);
	putchar('\n');
	if (json_is_string(json_object_get(rot, "last_error"))) {
		printf("last error: ");
		put_safe(jstr(rot, "last_error", ""));
		putchar('\n');
	}
	fflush(stdout);
}

static int
mek_print(const json_t *m)
{
	const json_t *v, *rot = json_object_get(m, "rotation");
	size_t i;

	printf("current MEK version: %lld\n\n%-7s  %-8s  %-20s  %s\n",
	    jint(m, "current"), "VERSION", "STATE", "CREATED", "KEY VERSIONS");
	json_array_foreach(json_object_get(m, "versions"), i, v)
		printf("%-7lld  %-8.8s  %-20.20s  %lld\n", jint(v, "version"),
		    jstr(v, "state", "?"), jstr(v, "created_at", "?"),
		    jint(v, "key_versions"));
	putchar('\n');
	if (json_is_object(rot))
		print_rotation(rot);
	else
		printf("no rotation yet\n");
	return fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
}

/* Polls GET /v1/mek until the newest rotation is verified (CLI_OK) or its
 * worker stopped (CLI_FAIL). */
static int
mek_follow(const char *tf)
{
	struct timespec second = { 1, 0 };
	const json_t *rot;
	json_t *m = NULL;
	int r;

	for (;;) {
		json_decref(m);
		if ((r = call(tf, "GET", "/v1/mek", NULL, &m)) != CLI_OK)
			return r;
		rot = json_object_get(m, "rotation");
		if (!json_is_object(rot)) {
			printf("no rotation\n");
			json_decref(m);
			return CLI_FAIL;
		}
		print_rotation(rot);
		if (strcmp(jstr(rot, "state", ""), "verified") == 0) {
			printf("verified: 0 key versions left under v%lld; it may be "
			    "disabled with a mek.disable ceremony\n", jint(rot, "from"));
			json_decref(m);
			return CLI_OK;
		}
		if (strcmp(jstr(rot, "worker", ""), "running") != 0) {
			fprintf(stderr, "kmsctl: the rotation is not running (kmsctl mek "
			    "rotate --resume)\n");
			json_decref(m);
			return CLI_FAIL;
		}
		nanosleep(&second, NULL);
	}
}

static int
mek_status(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON, OPTS_END };
	const char *tf = NULL;
	json_t *m = NULL;
	int ch, json = 0, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "mek status ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_mek);
		if (common_opt(ch, &tf, &json))
			continue;
		return CLI_USAGE;
	}
	if ((r = call(tf, "GET", "/v1/mek", NULL, &m)) != CLI_OK)
		return r;
	r = json ? print_json(m) : mek_print(m);
	json_decref(m);
	return r;
}

static int
mek_rotate(int argc, char **argv)
{
	static const struct option opts[] = { OPTS_COMMON,
		OPT("resume", no_argument, O_RESUME), OPT("wait", no_argument, O_WAIT),
		OPT("no-wait", no_argument, O_NO_WAIT),
		OPT("expires-in", required_argument, O_EXPIRES_IN), OPTS_END };
	const char *tf = NULL, *expires = NULL;
	json_t *ans = NULL, *body = NULL;
	int ch, json = 0, resume = 0, wait = 0, nowait = 0, done, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "mek rotate ")) != -1) {
		switch (ch) {
		case O_HELP_: return cli_print_help(usage_mek);
		case O_TOKEN_FILE_: tf = optarg; break;
		case O_JSON_: json = 1; break;
		case O_RESUME: resume = 1; break;
		case O_WAIT: wait = 1; break;
		case O_NO_WAIT: nowait = 1; break;
		case O_EXPIRES_IN: expires = optarg; break;
		default: return CLI_USAGE;
		}
	}
	if (optind != argc)
		return cli_usage_error("mek rotate ", "unexpected argument '%s'", argv[optind]);
	if (resume) {
		/* Finished meanwhile (kmsd resumes by itself at start): say so. */
		if ((r = call(tf, "GET", "/v1/mek", NULL, &ans)) != CLI_OK)
			return r;
		done = strcmp(jstr(json_object_get(ans, "rotation"), "state", ""),
		    "running") != 0;
		json_decref(ans);
		if (done)
			return mek_follow(tf);
		if ((r = call(tf, "POST", "/v1/mek/rotation/resume", NULL, &ans)) !=
		    CLI_OK)
			return r;
		json_decref(ans);
		return nowait ? CLI_OK : mek_follow(tf);
	}
	if (wait)
		return mek_follow(tf);
	if ((body = json_pack("{s:s}", "operation", "mek.rotate")) == NULL ||
	    (expires != NULL && json_object_set_new(body, "expires_in",
	    json_string(expires)) != 0)) {
		json_decref(body);
		return CLI_USAGE;
	}
	r = call(tf, "POST", "/v1/ceremonies", body, &ans);
	json_decref(body);
	if (r != CLI_OK)
		return r;
	if (json)
		r = print_json(ans);
	else {
		print_ceremony(ans);
		printf("\nNext: %lld officers approve (kmsctl ceremony approve %s "
		    "--officer NAME --key NAME.pem),\nthen: kmsctl ceremony execute "
		    "%s && kmsctl mek rotate --wait\n", jint(ans, "required"),
		    jstr(ans, "id", "?"), jstr(ans, "id", "?"));
		r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
	}
	json_decref(ans);
	return r;
}

/* ---- key revoke ---- */

int
cli_key_revoke(int argc, char **argv, const char *token_file)
{
	static const struct option opts[] = { OPTS_COMMON, OPTS_SIGN,
		OPT("yes", no_argument, O_YES), OPTS_END };
	struct signopts so = { 0 };
	unsigned char nb[16];
	const char *tf = NULL;
	json_t *body = NULL, *ans = NULL;
	char ts[40], nonce[33], vs[48], *msg = NULL, *sig = NULL, *path = NULL;
	char q[300], *end;
	unsigned long v;
	int ch, json = 0, yes = 0, r;

	g_token = token_file;
	while ((ch = cli_next_opt_hint(argc, argv, opts, "key revoke ")) != -1) {
		if (ch == O_HELP_)
			return cli_print_help(usage_revoke);
		if (common_opt(ch, &tf, &json))
			continue;
		if (ch == O_YES)
			yes = 1;
		else if (!sign_opt(ch, &so))
			return CLI_USAGE;
	}
	if (argc - optind != 2)
		return cli_usage_error("key revoke ", "expected KEY and VERSION");
	v = strtoul(argv[optind + 1], &end, 10);
	if (*argv[optind + 1] < '1' || *argv[optind + 1] > '9' || *end != '\0' ||
	    v > 0xffffffffUL)
		return cli_usage_error("key revoke ", "VERSION must be a positive integer");
	if ((r = sign_check("key revoke ", &so, 1)) != CLI_OK)
		return r;
	snprintf(q, sizeof(q), "Revoke version %lu of key %s now, as officer %s "
	    "(final: nothing can unwrap under it again)?", v, argv[optind],
	    so.officer);
	if (!yes && !confirm(q)) {
		fprintf(stderr, "kmsctl: not signed\n");
		return CLI_FAIL;
	}
	km_time_format(km_now_us(), 0, ts, sizeof(ts));
	if (km_random(nb, sizeof(nb)) != KM_OK)
		return CLI_USAGE;
	km_hex(nb, sizeof(nb), nonce);
	if (cer_revoke_message(argv[optind], (uint32_t)v, so.officer, ts, nonce,
	    &msg) != KM_OK) {
		r = cli_usage_error("key revoke ", "'%s' is not a key name", argv[optind]);
		goto out;
	}
	if ((r = sign_message(&so, msg, &sig)) != CLI_OK)
		goto out;
	snprintf(vs, sizeof(vs), "/versions/%lu/revoke", v);
	if ((body = json_pack("{s:s, s:s, s:s, s:s}", "officer", so.officer, "ts",
	    ts, "nonce", nonce, "signature", sig)) == NULL ||
	    (r = path_of("/v1/keys/", argv[optind], vs, &path)) != CLI_OK ||
	    (r = call(tf, "POST", path, body, &ans)) != CLI_OK)
		goto out;
	if (json)
		r = print_json(ans);
	else {
		printf("version %lu of %s revoked by %s at %s\n", v, argv[optind],
		    so.officer, ts);
		r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
	}
out:
	free(msg);
	free(sig);
	free(path);
	json_decref(body);
	json_decref(ans);
	return r;
}

/* ---- dispatch ---- */

/* A command runs as run(), or as run_what() given `what` (one function
 * serves approve and reject, another execute and cancel). */
struct sub {
	const char *name;
	int (*run)(int argc, char **argv);
	int (*run_what)(int argc, char **argv, const char *what);
	const char *what;
};

static int
dispatch(const struct sub *subs, const char *group, const char *usage,
    int argc, char **argv, const char *token_file)
{
	size_t i;

	g_token = token_file;
	if (argc < 2)
		return cli_usage_error(group, "expected a command");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0)
		return cli_print_help(usage);
	for (i = 0; subs[i].name != NULL; i++) {
		if (strcmp(subs[i].name, argv[1]) == 0) {
			optind = 0;	/* glibc: 0 re-initialises getopt */
			return subs[i].run != NULL ? subs[i].run(argc - 1, argv + 1) :
			    subs[i].run_what(argc - 1, argv + 1, subs[i].what);
		}
	}
	return cli_usage_error(group, "unknown command '%s'", argv[1]);
}

int
cli_officer_main(int argc, char **argv, const char *token_file)
{
	static const struct sub subs[] = {
		{ "keygen", officer_keygen, NULL, NULL },
		{ "pubkey", officer_pubkey, NULL, NULL },
		{ "list", officer_list, NULL, NULL },
		{ NULL, NULL, NULL, NULL },
	};

	return dispatch(subs, "officer ", usage_officer, argc, argv, token_file);
}

int
cli_ceremony_main(int argc, char **argv, const char *token_file)
{
	static const struct sub subs[] = {
		{ "create", ceremony_create, NULL, NULL },
		{ "list", ceremony_list, NULL, NULL },
		{ "show", ceremony_show, NULL, NULL },
		{ "approve", NULL, ceremony_decide, "approve" },
		{ "reject", NULL, ceremony_decide, "reject" },
		{ "execute", NULL, ceremony_post, "execute" },
		{ "cancel", NULL, ceremony_post, "cancel" },
		{ "import-key", ceremony_import_key, NULL, NULL },
		{ NULL, NULL, NULL, NULL },
	};

	return dispatch(subs, "ceremony ", usage_ceremony, argc, argv, token_file);
}

int
cli_mek_main(int argc, char **argv, const char *token_file)
{
	static const struct sub subs[] = {
		{ "status", mek_status, NULL, NULL },
		{ "rotate", mek_rotate, NULL, NULL },
		{ NULL, NULL, NULL, NULL },
	};

	return dispatch(subs, "mek ", usage_mek, argc, argv, token_file);
}
