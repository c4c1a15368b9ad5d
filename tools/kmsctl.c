/* kmsctl: the command-line client of kmsd (keys, wrap/unwrap, tokens, the
 * audit commands of kmsctl_audit.c) and the first-run setup (`kmsctl init`). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "boot.h"
#include "cfg.h"
#include "km.h"
#include "kmsctl_audit.h"
#include "kmsctl_ceremony.h"
#include "kmsctl_cli.h"
#include "kmsctl_http.h"
#include "kmsctl_rewrap.h"
#include "kmsctl_sign.h"
#include "kmsd_version.h"
#include "log.h"

#define MAX_PLAINTEXT 4096		/* DESIGN.md section 4 */
#define MAX_CIPHERTEXT (64u << 10)	/* a 4096-byte blob is ~5.5 KiB */
#define KEY_PAGE "1000"			/* GET /v1/keys?limit= */

/* --token-file given before the command; a command's own option wins. */
static const char *g_token_file;

/* Options shared by the commands; values above 255 so they never clash
 * with a short option letter. */
enum {
	OPT_HELP = 'h',
	OPT_TOKEN_FILE = 256,
	OPT_JSON,
	OPT_CONFIG,
	OPT_INIT_TOKEN,
	OPT_ADMIN_TOKEN_FILE,
	OPT_OFFICERS,
	OPT_QUORUM,
	OPT_TYPE,
	OPT_ROTATION_PERIOD,
	OPT_EXPIRES_AT,
	OPT_NO_EXPIRY,
	OPT_NO_ROTATION,
	OPT_REQUIRED_CONTEXT,
	OPT_FORCE,
	OPT_CONTEXT,
	OPT_IN,
	OPT_OUT,
	OPT_TO,
	OPT_TO_CONTEXT,
	OPT_BITS,
	OPT_PLAINTEXT_OUT,
	OPT_ROLE,
	OPT_KEYS,
	OPT_DESCRIPTION,
	OPT_TTL,
	OPT_VERSION,
};

#define O_HELP { "help", no_argument, NULL, OPT_HELP }
#define O_TOKEN_FILE { "token-file", required_argument, NULL, OPT_TOKEN_FILE }
#define O_JSON { "json", no_argument, NULL, OPT_JSON }
#define O_CONTEXT { "context", required_argument, NULL, OPT_CONTEXT }
#define O_IN { "in", required_argument, NULL, OPT_IN }
#define O_OUT { "out", required_argument, NULL, OPT_OUT }
#define O_END { NULL, 0, NULL, 0 }

#define EXIT_HELP \
	"Exit status: 0 ok; 1 the server refused (4xx) or the operation failed;\n" \
	"2 usage error or local I/O error; 3 kmsd unreachable, 5xx or a bad answer.\n"

#define ENV_HELP \
	"Environment: KMS_ADDR (default http://127.0.0.1:8420), KMS_TOKEN (bearer\n" \
	"token; --token-file FILE reads it from a file instead), KMS_CACERT (CA file\n" \
	"for https).\n"

static const char usage_main[] =
    "Usage: kmsctl [--token-file FILE] COMMAND [ARGS...]\n"
    "\n"
    "Client of kmsd, the key service. Every command takes --help.\n"
    "\n"
    "Commands:\n"
    "  init          first-run setup: token, MEK, metadata store, admin token\n"
    "  key create    create a key\n"
    "  key list      list keys\n"
    "  key show      show one key and its versions\n"
    "  key rotate    make a new primary version\n"
    "  key state     move a key version to another state\n"
    "  key config    change a key's rotation period or expiry\n"
    "  key revoke    revoke a key version at once (an officer's signature)\n"
    "  key inventory every key: versions, age, next rotation, expiry, old-version use\n"
    "  wrap          wrap plaintext bytes (up to 4096) under a key\n"
    "  unwrap        unwrap a ciphertext back to its bytes\n"
    "  rewrap        rewrap a ciphertext to the primary version or another key;\n"
    "                with --sqlite or --jsonl: every DEK of a table or file\n"
    "  emergency-rotate  rotate, revoke the exposed version, exposure report,\n"
    "                rewrap (docs/ROTATION.md)\n"
    "  datakey       generate a data key, wrapped (and optionally in plaintext)\n"
    "  token create  create an API token (printed once)\n"
    "  token list    list API tokens\n"
    "  token revoke  revoke an API token\n"
    "  audit export  download a bundle of the audit log (auditor token)\n"
    "  audit verify  check a bundle offline: chain, checkpoints, quorum\n"
    "  audit head    the chain head and the newest signed checkpoint\n"
    "  audit records query audit records; --csv gives the exposure report\n"
    "  sign          sign bytes with a signing key: raw signature or JWS\n"
    "  verify        check a raw signature or a JWS of a signing key\n"
    "  jwks          print the public JWKS (no token needed)\n"
    "  officer       officer keys (keygen, pubkey) and the registry (list)\n"
    "  ceremony      M-of-N ceremonies: create, list, show, approve, reject,\n"
    "                execute, cancel; import-key for key.import (BYOK)\n"
    "                (docs/CEREMONIES.md)\n"
    "  mek           MEK status; rotate (a ceremony), --wait, --resume\n"
    "\n"
    "Options: --token-file FILE  read the bearer token from FILE\n"
    "         --version          print the version\n"
    "\n" ENV_HELP "\n" EXIT_HELP;

static const char usage_init[] =
    "Usage: kmsctl init [--config FILE] [--init-token] [--admin-token-file FILE]\n"
    "                   [--officers DIR --quorum M]\n"
    "\n"
    "First-run setup on the kmsd host (no server needed): initialises the token\n"
    "(with --init-token; for SoftHSM and test tokens), creates MEK version 1,\n"
    "the metadata store, the first admin token and, with --officers, the first\n"
    "security officers. Steps whose result exists are skipped, so running it\n"
    "again is safe.\n"
    "\n"
    "  --config FILE            kmsd configuration (default: $KMS_CONFIG, else\n"
    "                           built-in defaults and KMS_* variables)\n"
    "  --init-token             initialise a free slot as the configured token,\n"
    "                           with random PINs in <data_dir>/token.pin and\n"
    "                           <data_dir>/token.so-pin\n"
    "  --admin-token-file FILE  where the admin token goes (default\n"
    "                           <data_dir>/admin.token, mode 0600)\n"
    "  --officers DIR           register every DIR/<name>.pub.pem (kmsctl officer\n"
    "                           keygen) as a security officer; later changes are\n"
    "                           ceremonies (docs/CEREMONIES.md)\n"
    "  --quorum M               approvals a ceremony needs (1..officers)\n"
    "\n" EXIT_HELP;

static const char usage_key[] =
    "Usage: kmsctl key create|list|show|rotate|config|state ...\n"
    "\n"
    "  key create NAME [--type T] [--rotation-period P] [--expires-at TIME]\n"
    "             [--required-context a,b] [--json]\n"
    "  key list [--json]\n"
    "  key show NAME [--json]\n"
    "  key rotate NAME [--json]\n"
    "  key config NAME [--rotation-period P|--no-rotation]\n"
    "             [--expires-at TIME|--no-expiry] [--json]\n"
    "  key state NAME VERSION STATE [--force] [--json]\n"
    "  key revoke NAME VERSION --officer O (--key F | --pkcs11-uri U) [--yes]\n"
    "  key inventory [--json] [--auditor-token-file F] [--window 24h]\n"
    "\n"
    "See 'kmsctl key COMMAND --help'.\n";

static const char usage_key_create[] =
    "Usage: kmsctl key create NAME [options]\n"
    "\n"
    "Creates key NAME (admin token) and prints it.\n"
    "\n"
    "  --type T                 aes256-gcm (default), ec-p256, rsa-2048, rsa-3072,\n"
    "                           ed25519\n"
    "  --rotation-period P      automatic rotation, <n>s|m|h|d, e.g. 90d\n"
    "  --expires-at TIME        RFC 3339, e.g. 2027-12-31T00:00:00Z\n"
    "  --required-context a,b   context names every wrap/unwrap must carry\n"
    "  --json                   print the server's JSON\n"
    "  --token-file FILE        bearer token file (else KMS_TOKEN)\n"
    "\n" EXIT_HELP;

static const char usage_key_list[] =
    "Usage: kmsctl key list [--json] [--token-file FILE]\n"
    "\n"
    "Lists every key the token may see, one line each: name, type, primary\n"
    "version and every version with its state. --json prints {\"keys\":[...]}.\n"
    "\n" EXIT_HELP;

static const char usage_key_show[] =
    "Usage: kmsctl key show NAME [--json] [--token-file FILE]\n"
    "\n"
    "Shows key NAME and a table of its versions.\n"
    "\n" EXIT_HELP;

static const char usage_key_rotate[] =
    "Usage: kmsctl key rotate NAME [--json] [--token-file FILE]\n"
    "\n"
    "Creates a new primary version of NAME (admin token); the old primary\n"
    "becomes active (unwrap only).\n"
    "\n" EXIT_HELP;

static const char usage_key_config[] =
    "Usage: kmsctl key config NAME [options] [--json] [--token-file FILE]\n"
    "\n"
    "Changes the rotation schedule or the expiry of key NAME (admin token)\n"
    "and prints it. What is not given is left as it is.\n"
    "\n"
    "  --rotation-period P      automatic rotation, <n>s|m|h|d, counted from the\n"
    "                           primary version's creation\n"
    "  --no-rotation            no automatic rotation\n"
    "  --expires-at TIME        RFC 3339, in the future\n"
    "  --no-expiry              no expiry\n"
    "\n" EXIT_HELP;

static const char usage_key_state[] =
    "Usage: kmsctl key state NAME VERSION STATE [--force] [--json]\n"
    "                        [--token-file FILE]\n"
    "\n"
    "Moves a version of NAME to STATE: active, retired, archived or revoked\n"
    "(destroyed and archived -> active need a ceremony). --force retires a\n"
    "version that was used recently.\n"
    "\n" EXIT_HELP;

static const char usage_wrap[] =
    "Usage: kmsctl wrap KEY [--context k=v]... [--in FILE|-] [--out FILE|-]\n"
    "                   [--token-file FILE]\n"
    "\n"
    "Reads 1..4096 raw bytes (default stdin) and prints the ciphertext\n"
    "\"kms:v<N>:...\" and a newline (default stdout). App token.\n"
    "\n"
    "  --context k=v   encryption context pair; repeat for more. The same pairs\n"
    "                  are needed to unwrap.\n"
    "\n" EXIT_HELP;

static const char usage_unwrap[] =
    "Usage: kmsctl unwrap KEY [--context k=v]... [--in FILE|-] [--out FILE|-]\n"
    "                     [--token-file FILE]\n"
    "\n"
    "Reads a ciphertext (default stdin; trailing whitespace is ignored) and\n"
    "writes the raw plaintext bytes (default stdout; a file is created with\n"
    "mode 0600). Warns on stderr when the blob is not under the primary\n"
    "version (rewrap recommended). App token.\n"
    "\n" EXIT_HELP;

static const char usage_rewrap[] =
    "Usage: kmsctl rewrap KEY [--context k=v]... [--to KEY2] [--to-context k=v]...\n"
    "                     [--in FILE|-] [--out FILE|-] [--token-file FILE]\n"
    "\n"
    "Reads a ciphertext of KEY and prints it rewrapped under the primary\n"
    "version of KEY, or of KEY2 with --to. The plaintext never leaves kmsd.\n"
    "\n"
    "  --to KEY2          destination key (the app token must match both keys)\n"
    "  --to-context k=v   destination context (default: the source context)\n"
    "\n" EXIT_HELP;

static const char usage_datakey[] =
    "Usage: kmsctl datakey KEY [--bits 128|256] [--context k=v]...\n"
    "                      [--plaintext-out FILE|-] [--out FILE|-]\n"
    "                      [--token-file FILE]\n"
    "\n"
    "Generates a data key in the token and prints it wrapped under KEY (to\n"
    "--out, default stdout). The plaintext key is asked for only with\n"
    "--plaintext-out: raw bytes to FILE (mode 0600), or to stdout with '-'\n"
    "(then --out FILE is required for the ciphertext).\n"
    "\n"
    "  --bits N   128 or 256 (default 256)\n"
    "\n" EXIT_HELP;

static const char usage_token[] =
    "Usage: kmsctl token create|list|revoke ...\n"
    "\n"
    "  token create --role ROLE [--keys PATTERN] [--description D] [--ttl T]\n"
    "  token list [--json]\n"
    "  token revoke ID\n"
    "\n"
    "See 'kmsctl token COMMAND --help'. Admin token.\n";

static const char usage_token_create[] =
    "Usage: kmsctl token create --role app|admin|auditor|officer [--keys PATTERN]\n"
    "                           [--description D] [--ttl T] [--json]\n"
    "                           [--token-file FILE]\n"
    "\n"
    "Creates an API token. The token is printed alone on stdout (so\n"
    "T=$(kmsctl token create ...) works) and its id on stderr; kmsd keeps only\n"
    "a hash, so it cannot be shown again.\n"
    "\n"
    "  --role R          app, admin, auditor or officer\n"
    "  --keys PATTERN    key names an app token may use ('matter-*'; several\n"
    "                    patterns comma-separated); required for app\n"
    "  --description D   free text\n"
    "  --ttl T           lifetime, <n>s|m|h|d (default: no expiry)\n"
    "  --json            print the server's JSON (with the token) instead\n"
    "\n" EXIT_HELP;

static const char usage_token_list[] =
    "Usage: kmsctl token list [--json] [--token-file FILE]\n"
    "\n"
    "Lists API tokens (never their secrets).\n"
    "\n" EXIT_HELP;

static const char usage_token_revoke[] =
    "Usage: kmsctl token revoke ID [--token-file FILE]\n"
    "\n"
    "Revokes the token with id ID at once.\n"
    "\n" EXIT_HELP;

/* ---- local files ---- */

/* Writes `s` and a newline. */
static int
write_line(const char *path, const char *s)
{
	struct km_buf b = KM_BUF_INIT(CLI_MAX_RESPONSE + 2);
	int r;

	km_buf_append_str(&b, s);
	km_buf_append(&b, "\n", 1);
	if (b.failed) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
	} else
		r = cli_write_output(path, b.data, b.len, 0);
	km_buf_free(&b);
	return r;
}

/* ---- JSON helpers ---- */

static int
print_json(const json_t *doc)
{
	if (json_dumpf(doc, stdout, JSON_INDENT(2)) != 0 ||
	    fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* Adds "k=v" to the object *ctx (created on first use). */
static int
add_context(const char *cmd, json_t **ctx, const char *kv)
{
	const char *eq = strchr(kv, '=');
	char *name = NULL;
	json_t *v = NULL;
	int r = CLI_USAGE;

	if (eq == NULL || eq == kv) {
		r = cli_usage_error(cmd, "context '%s' is not NAME=VALUE", kv);
		goto out;
	}
	if ((name = strndup(kv, (size_t)(eq - kv))) == NULL ||
	    (*ctx == NULL && (*ctx = json_object()) == NULL)) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	if (json_object_get(*ctx, name) != NULL) {
		r = cli_usage_error(cmd, "context name '%s' given twice", name);
		goto out;
	}
	if ((v = json_string(eq + 1)) == NULL) {
		r = cli_usage_error(cmd, "context '%s' is not valid UTF-8", name);
		goto out;
	}
	if (json_object_set_new(*ctx, name, v) != 0) {
		v = NULL;
		r = cli_usage_error(cmd, "context name '%s' is not valid UTF-8", name);
		goto out;
	}
	r = CLI_OK;
out:
	free(name);
	return r;
}

/* json_object_set_new that reports failure once for a chain of calls. */
static int
set_new(json_t *obj, const char *k, json_t *v, int *failed)
{
	if (v == NULL || json_object_set_new(obj, k, v) != 0)
		*failed = 1;
	return *failed;
}

static const char *
str_or(const json_t *obj, const char *k, const char *def)
{
	const char *s = json_string_value(json_object_get(obj, k));

	return s != NULL ? s : def;
}

/* Server strings go to a terminal: control bytes become '?'. */
static void
fput_safe(FILE *f, const char *s, int width)
{
	int n = 0;

	for (; *s != '\0'; s++, n++)
		putc(iscntrl((unsigned char)*s) ? '?' : *s, f);
	for (; n < width; n++)
		putc(' ', f);
}

static void
put_safe(const char *s, int width)
{
	fput_safe(stdout, s, width);
}

static int
str_width(const char *s)
{
	size_t n = strlen(s);

	return n > 200 ? 200 : (int)n;
}

/* "1:active 2:primary" into buf. */
static void
versions_summary(const json_t *key, char *buf, size_t len)
{
	const json_t *vs = json_object_get(key, "versions"), *v;
	size_t i, used = 0;
	int n;

	buf[0] = '\0';
	json_array_foreach(vs, i, v) {
		n = snprintf(buf + used, len - used, "%s%lld:%s", i ? " " : "",
		    (long long)json_integer_value(json_object_get(v, "version")),
		    str_or(v, "state", "?"));
		if (n < 0 || (size_t)n >= len - used) {
			/* Keys with many versions: end with an ellipsis. */
			if (len >= 4)
				memcpy(buf + len - 4, "...", 4);
			return;
		}
		used += (size_t)n;
	}
}

static void
primary_str(const json_t *key, char *buf, size_t len)
{
	const json_t *p = json_object_get(key, "primary_version");

	if (json_is_integer(p))
		snprintf(buf, len, "%lld", (long long)json_integer_value(p));
	else
		snprintf(buf, len, "-");
}

static int
print_key_table(const json_t *keys)
{
	const json_t *k;
	char prim[32], vers[512];
	int wn = 4, wt = 4;
	size_t i;

	json_array_foreach(keys, i, k) {
		int a = str_width(str_or(k, "name", "?"));
		int b = str_width(str_or(k, "type", "?"));

		if (a > wn)
			wn = a;
		if (b > wt)
			wt = b;
	}
	printf("%-*s  %-*s  %-7s  %s\n", wn, "NAME", wt, "TYPE", "PRIMARY",
	    "VERSIONS");
	json_array_foreach(keys, i, k) {
		primary_str(k, prim, sizeof(prim));
		versions_summary(k, vers, sizeof(vers));
		put_safe(str_or(k, "name", "?"), wn);
		fputs("  ", stdout);
		put_safe(str_or(k, "type", "?"), wt);
		printf("  %-7s  ", prim);
		put_safe(vers, 0);
		putchar('\n');
	}
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		return CLI_USAGE;
	}
	return CLI_OK;
}

static void
print_field(const char *label, const char *value)
{
	printf("%-18s", label);
	put_safe(value, 0);
	putchar('\n');
}

static int
print_key(const json_t *k)
{
	const json_t *vs = json_object_get(k, "versions"), *v, *rc, *x;
	char prim[32], buf[1024];
	size_t i, used = 0;
	int n;

	primary_str(k, prim, sizeof(prim));
	print_field("name:", str_or(k, "name", "?"));
	snprintf(buf, sizeof(buf), "%s (%s)", str_or(k, "type", "?"),
	    str_or(k, "purpose", "?"));
	print_field("type:", buf);
	print_field("primary version:", prim);
	snprintf(buf, sizeof(buf), "%s%s%s%s", str_or(k, "rotation_period", "-"),
	    json_is_string(json_object_get(k, "next_rotation_at")) ? " (next " : "",
	    str_or(k, "next_rotation_at", ""),
	    json_is_string(json_object_get(k, "next_rotation_at")) ? ")" : "");
	print_field("rotation period:", buf);
	print_field("expires at:", str_or(k, "expires_at", "-"));
	buf[0] = '\0';
	rc = json_object_get(k, "required_context");
	json_array_foreach(rc, i, x) {
		n = snprintf(buf + used, sizeof(buf) - used, "%s%s", i ? "," : "",
		    json_string_value(x) ? json_string_value(x) : "?");
		if (n < 0 || (size_t)n >= sizeof(buf) - used)
			break;
		used += (size_t)n;
	}
	print_field("required context:", buf[0] ? buf : "-");
	print_field("created at:", str_or(k, "created_at", "-"));
	printf("\n%-7s  %-9s  %-27s  %-3s  %-8s  %s\n", "VERSION", "STATE",
	    "CREATED", "MEK", "USES", "LAST USED");
	json_array_foreach(vs, i, v) {
		printf("%-7lld  ",
		    (long long)json_integer_value(json_object_get(v, "version")));
		put_safe(str_or(v, "state", "?"), 9);
		fputs("  ", stdout);
		put_safe(str_or(v, "created_at", "-"), 27);
		printf("  %-3lld  %-8lld  ",
		    (long long)json_integer_value(json_object_get(v, "mek_version")),
		    (long long)json_integer_value(json_object_get(v, "use_count")));
		put_safe(str_or(v, "last_used_at", "-"), 0);
		putchar('\n');
	}
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		return CLI_USAGE;
	}
	return CLI_OK;
}

static int
print_token_table(const json_t *tokens)
{
	const json_t *t;
	size_t i;
	int wi = 2, wk = 4, wr = 4;

	json_array_foreach(tokens, i, t) {
		int a = str_width(str_or(t, "id", "?"));
		int b = str_width(str_or(t, "keys", "-"));
		int c = str_width(str_or(t, "role", "?"));

		wi = a > wi ? a : wi;
		wk = b > wk ? b : wk;
		wr = c > wr ? c : wr;
	}
	printf("%-*s  %-*s  %-*s  %-20s  %-20s  %-20s  %s\n", wi, "ID", wr,
	    "ROLE", wk, "KEYS", "CREATED", "EXPIRES", "REVOKED", "DESCRIPTION");
	json_array_foreach(tokens, i, t) {
		put_safe(str_or(t, "id", "?"), wi);
		fputs("  ", stdout);
		put_safe(str_or(t, "role", "?"), wr);
		fputs("  ", stdout);
		put_safe(str_or(t, "keys", "-"), wk);
		fputs("  ", stdout);
		put_safe(str_or(t, "created_at", "-"), 20);
		fputs("  ", stdout);
		put_safe(str_or(t, "expires_at", "-"), 20);
		fputs("  ", stdout);
		put_safe(str_or(t, "revoked_at", "-"), 20);
		fputs("  ", stdout);
		put_safe(str_or(t, "description", ""), 0);
		putchar('\n');
	}
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* ---- init ---- */

static int
cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP,
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "init-token", no_argument, NULL, OPT_INIT_TOKEN },
		{ "admin-token-file", required_argument, NULL, OPT_ADMIN_TOKEN_FILE },
		{ "officers", required_argument, NULL, OPT_OFFICERS },
		{ "quorum", required_argument, NULL, OPT_QUORUM },
		O_END
	};
	struct boot_options bo = { 0, NULL, NULL, 0 };
	char *qend;
	const char *config = getenv("KMS_CONFIG");
	struct cfg *c = NULL;
	int ch, lvl, r = CLI_USAGE, kr;

	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		switch (ch) {
		case OPT_HELP:
			return cli_print_help(usage_init);
		case OPT_CONFIG:
			config = optarg;
			break;
		case OPT_INIT_TOKEN:
			bo.init_token = 1;
			break;
		case OPT_ADMIN_TOKEN_FILE:
			bo.admin_token_path = optarg;
			break;
		case OPT_OFFICERS:
			bo.officers_dir = optarg;
			break;
		case OPT_QUORUM:
			bo.quorum = (int)strtol(optarg, &qend, 10);
			if (*optarg == '\0' || *qend != '\0' || bo.quorum < 1 ||
			    bo.quorum > 64)
				return cli_usage_error("init ", "--quorum must be 1..64");
			break;
		default:
			return cli_usage_hint("init ");
		}
	}
	if (optind != argc)
		return cli_usage_error("init ", "unexpected argument '%s'", argv[optind]);
	if ((bo.officers_dir != NULL) != (bo.quorum != 0))
		return cli_usage_error("init ", "--officers and --quorum go together");
	if (config != NULL && *config == '\0')
		config = NULL;
	if ((kr = cfg_load(config, &c)) != KM_OK) {
		fprintf(stderr, "kmsctl: cannot load the configuration%s%s: %s\n",
		    config ? " " : "", config ? config : "", km_strerror(kr));
		goto out;
	}
	if ((lvl = log_level_parse(c->log_level)) >= 0)
		log_set_level((enum log_level)lvl);
	if ((kr = boot_init(c, &bo)) != KM_OK) {
		fprintf(stderr, "kmsctl: init failed: %s\n", km_strerror(kr));
		r = CLI_FAIL;
		goto out;
	}
	r = CLI_OK;
out:
	cfg_free(c);
	return r;
}

/* ---- server commands ---- */

/* One server command's command line: its words in messages ("key create "),
 * its help, the options it takes and how many operands it wants. */
struct cmd_spec {
	const char *cmd;
	const char *usage;
	const struct option *opts;
	int nargs;
	const char *nargs_error;	/* when not nargs operands (nargs > 0) */
	int once;			/* rotation and expiry at most once each */
};

/* What parse_args() found; a command's option table says which of these
 * it can be given. */
struct args {
	const char *token_file, *in, *out, *pt_out, *to;
	const char *type, *period, *expires, *required;
	const char *role, *keys, *desc, *ttl;
	json_t *ctx, *to_ctx;		/* --context, --to-context */
	int json, force, bits, no_rotation, no_expiry;
	char **arg;			/* the operands */
	int help;			/* --help was printed: return the status */
};

static void
args_free(struct args *a)
{
	json_decref(a->ctx);
	json_decref(a->to_ctx);
}

/* Parses the options and operands of `s` into *a (args_free() it whatever
 * the status). Returns CLI_OK, or the exit status after printing why. */
static int
parse_args(int argc, char **argv, const struct cmd_spec *s, struct args *a)
{
	int ch, r, n_period = 0, n_expires = 0;

	*a = (struct args){ .bits = 256 };
	while ((ch = cli_next_opt(argc, argv, s->opts)) != -1) {
		switch (ch) {
		case OPT_HELP:
			a->help = 1;
			return cli_print_help(s->usage);
		case OPT_TOKEN_FILE:
			a->token_file = optarg;
			break;
		case OPT_JSON:
			a->json = 1;
			break;
		case OPT_FORCE:
			a->force = 1;
			break;
		case OPT_CONTEXT:
		case OPT_TO_CONTEXT:
			if ((r = add_context(s->cmd, ch == OPT_CONTEXT ? &a->ctx :
			    &a->to_ctx, optarg)) != CLI_OK)
				return r;
			break;
		case OPT_IN:
			a->in = optarg;
			break;
		case OPT_OUT:
			a->out = optarg;
			break;
		case OPT_PLAINTEXT_OUT:
			a->pt_out = optarg;
			break;
		case OPT_TO:
			a->to = optarg;
			break;
		case OPT_BITS:
			if (strcmp(optarg, "128") == 0)
				a->bits = 128;
			else if (strcmp(optarg, "256") == 0)
				a->bits = 256;
			else
				return cli_usage_error(s->cmd, "--bits must be 128 "
				    "or 256");
			break;
		case OPT_TYPE:
			a->type = optarg;
			break;
		case OPT_ROTATION_PERIOD:
		case OPT_NO_ROTATION:
			if (s->once && n_period++ > 0)
				goto twice;
			a->period = optarg;
			a->no_rotation = ch == OPT_NO_ROTATION;
			break;
		case OPT_EXPIRES_AT:
		case OPT_NO_EXPIRY:
			if (s->once && n_expires++ > 0)
				goto twice;
			a->expires = optarg;
			a->no_expiry = ch == OPT_NO_EXPIRY;
			break;
		case OPT_REQUIRED_CONTEXT:
			a->required = optarg;
			break;
		case OPT_ROLE:
			a->role = optarg;
			break;
		case OPT_KEYS:
			a->keys = optarg;
			break;
		case OPT_DESCRIPTION:
			a->desc = optarg;
			break;
		case OPT_TTL:
			a->ttl = optarg;
			break;
		default:
			return cli_usage_hint(s->cmd);
		}
	}
	if (argc - optind != s->nargs) {
		if (s->nargs == 0)
			return cli_usage_error(s->cmd, "unexpected argument '%s'",
			    argv[optind]);
		return cli_usage_error(s->cmd, "%s", s->nargs_error);
	}
	a->arg = argv + optind;
	return CLI_OK;
twice:
	return cli_usage_error(s->cmd, "give the rotation and the expiry once "
	    "each");
}

/* Opens the client, with --token-file from the command or the global one. */
static int
open_http(const char *token_file, struct cli_http **h)
{
	return cli_http_new(token_file != NULL ? token_file : g_token_file, h);
}

/* Sends `method` (with `body` when not NULL) to `prefix` + the escaped
 * `name` + `suffix`, or to `prefix` alone when `name` is NULL; *ans as for
 * cli_http_call(). */
static int
server_call(const struct args *a, const char *method, const char *prefix,
    const char *name, const char *suffix, const json_t *body, json_t **ans)
{
	struct cli_http *h = NULL;
	char *path = NULL;
	int r;

	if ((r = open_http(a->token_file, &h)) != CLI_OK)
		goto out;
	if (name != NULL &&
	    (r = cli_http_path(h, prefix, name, suffix, &path)) != CLI_OK)
		goto out;
	r = cli_http_call(h, method, path != NULL ? path : prefix, body, ans);
out:
	free(path);
	cli_http_free(h);
	return r;
}

static int
cmd_key_create(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_JSON,
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "rotation-period", required_argument, NULL, OPT_ROTATION_PERIOD },
		{ "expires-at", required_argument, NULL, OPT_EXPIRES_AT },
		{ "required-context", required_argument, NULL, OPT_REQUIRED_CONTEXT },
		O_END
	};
	static const struct cmd_spec spec = {
		"key create ", usage_key_create, opts, 1, "expected one key NAME", 0
	};
	struct args a;
	json_t *body = NULL, *ans = NULL, *rc = NULL;
	char *names = NULL, *p, *save = NULL;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help)
		goto out;
	if ((body = json_object()) == NULL)
		goto nomem;
	set_new(body, "name", json_string(a.arg[0]), &failed);
	set_new(body, "type", json_string(a.type != NULL ? a.type : "aes256-gcm"),
	    &failed);
	if (a.period != NULL)
		set_new(body, "rotation_period", json_string(a.period), &failed);
	if (a.expires != NULL)
		set_new(body, "expires_at", json_string(a.expires), &failed);
	if (a.required != NULL) {
		if ((names = strdup(a.required)) == NULL ||
		    (rc = json_array()) == NULL)
			goto nomem;
		for (p = strtok_r(names, ",", &save); p != NULL;
		    p = strtok_r(NULL, ",", &save))
			if (json_array_append_new(rc, json_string(p)) != 0)
				failed = 1;
		set_new(body, "required_context", rc, &failed);
		rc = NULL;
	}
	if (failed) {
		r = cli_usage_error("key create ", "arguments must be valid UTF-8");
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys", NULL, NULL, body,
	    &ans)) != CLI_OK)
		goto out;
	r = a.json ? print_json(ans) : print_key(ans);
	goto out;
nomem:
	fprintf(stderr, "kmsctl: out of memory\n");
	r = CLI_USAGE;
out:
	free(names);
	json_decref(rc);
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_key_list(int argc, char **argv)
{
	static const struct option opts[] = { O_HELP, O_TOKEN_FILE, O_JSON, O_END };
	static const struct cmd_spec spec = {
		"key list ", usage_key_list, opts, 0, NULL, 0
	};
	struct args a;
	struct cli_http *h = NULL;
	json_t *all = NULL, *page = NULL, *out = NULL;
	char *path = NULL;
	const char *next;
	int r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help)
		goto out;
	if ((all = json_array()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((r = open_http(a.token_file, &h)) != CLI_OK)
		goto out;
	if ((path = strdup("/v1/keys?limit=" KEY_PAGE)) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	/* Follow `next` until the server says there is no more. */
	for (;;) {
		json_t *keys;

		if ((r = cli_http_call(h, "GET", path, NULL, &page)) != CLI_OK)
			goto out;
		keys = json_object_get(page, "keys");
		if (!json_is_array(keys) || json_array_extend(all, keys) != 0) {
			fprintf(stderr, "kmsctl: the key list answer has no keys "
			    "array\n");
			r = CLI_UNREACHABLE;
			goto out;
		}
		if ((next = json_string_value(json_object_get(page, "next"))) == NULL)
			break;
		free(path);
		if ((r = cli_http_path(h, "/v1/keys?limit=" KEY_PAGE "&after=",
		    next, NULL, &path)) != CLI_OK)
			goto out;
		json_decref(page);
		page = NULL;
	}
	if (a.json) {
		if ((out = json_pack("{s:O}", "keys", all)) == NULL) {
			fprintf(stderr, "kmsctl: out of memory\n");
			r = CLI_USAGE;
			goto out;
		}
		r = print_json(out);
	} else
		r = print_key_table(all);
out:
	free(path);
	json_decref(page);
	json_decref(all);
	json_decref(out);
	cli_http_free(h);
	args_free(&a);
	return r;
}

/* show and rotate: NAME [--json]. */
static int
key_one(int argc, char **argv, const char *cmd, const char *usage,
    const char *method, const char *suffix)
{
	static const struct option opts[] = { O_HELP, O_TOKEN_FILE, O_JSON, O_END };
	const struct cmd_spec spec = {
		cmd, usage, opts, 1, "expected one key NAME", 0
	};
	struct args a;
	json_t *ans = NULL;
	int r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help ||
	    (r = server_call(&a, method, "/v1/keys/", a.arg[0], suffix, NULL,
	    &ans)) != CLI_OK)
		goto out;
	r = a.json ? print_json(ans) : print_key(ans);
	/* A rotated signing key: the kid its new signatures carry. */
	if (r == CLI_OK && !a.json && suffix != NULL &&
	    strcmp(suffix, "/rotate") == 0)
		cli_sign_print_new_kid(ans);
out:
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_key_show(int argc, char **argv)
{
	return key_one(argc, argv, "key show ", usage_key_show, "GET", NULL);
}

static int
cmd_key_rotate(int argc, char **argv)
{
	return key_one(argc, argv, "key rotate ", usage_key_rotate, "POST",
	    "/rotate");
}

/* A --rotation-period or --expires-at, or JSON null for its --no-... */
static void
set_or_null(json_t *body, const char *k, const char *v, int none, int *failed)
{
	if (none)
		set_new(body, k, json_null(), failed);
	else if (v != NULL)
		set_new(body, k, json_string(v), failed);
}

static int
cmd_key_config(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_JSON,
		{ "rotation-period", required_argument, NULL, OPT_ROTATION_PERIOD },
		{ "no-rotation", no_argument, NULL, OPT_NO_ROTATION },
		{ "expires-at", required_argument, NULL, OPT_EXPIRES_AT },
		{ "no-expiry", no_argument, NULL, OPT_NO_EXPIRY },
		O_END
	};
	static const struct cmd_spec spec = {
		"key config ", usage_key_config, opts, 1, "expected one key NAME", 1
	};
	struct args a;
	json_t *body = NULL, *ans = NULL;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help)
		goto out;
	if (a.period == NULL && !a.no_rotation && a.expires == NULL &&
	    !a.no_expiry) {
		r = cli_usage_error("key config ", "nothing to change: give "
		    "--rotation-period, --no-rotation, --expires-at or --no-expiry");
		goto out;
	}
	if ((body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	set_or_null(body, "rotation_period", a.period, a.no_rotation, &failed);
	set_or_null(body, "expires_at", a.expires, a.no_expiry, &failed);
	if (failed) {
		r = cli_usage_error("key config ", "arguments must be valid UTF-8");
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys/", a.arg[0], "/config", body,
	    &ans)) != CLI_OK)
		goto out;
	r = a.json ? print_json(ans) : print_key(ans);
out:
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
parse_version(const char *s, long long *v)
{
	char *end;

	errno = 0;
	*v = strtoll(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' && *v >= 1 &&
	    *v <= 0xffffffffLL ? 0 : -1;
}

static int
cmd_key_state(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_JSON,
		{ "force", no_argument, NULL, OPT_FORCE },
		O_END
	};
	static const struct cmd_spec spec = {
		"key state ", usage_key_state, opts, 3,
		"expected NAME VERSION STATE", 0
	};
	struct args a;
	json_t *body = NULL, *ans = NULL;
	char suffix[64];
	long long version;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help)
		goto out;
	if (parse_version(a.arg[1], &version) != 0) {
		r = cli_usage_error("key state ", "VERSION '%s' is not a positive "
		    "number", a.arg[1]);
		goto out;
	}
	snprintf(suffix, sizeof(suffix), "/versions/%lld/state", version);
	if ((body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	set_new(body, "state", json_string(a.arg[2]), &failed);
	set_new(body, "force", json_boolean(a.force), &failed);
	if (failed) {
		r = cli_usage_error("key state ", "STATE must be valid UTF-8");
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys/", a.arg[0], suffix, body,
	    &ans)) != CLI_OK)
		goto out;
	r = a.json ? print_json(ans) : print_key(ans);
out:
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

/* ---- crypto ---- */

/* Reads a ciphertext and trims trailing whitespace (a newline from `echo`
 * or from kmsctl wrap's own output). */
static int
read_ciphertext(const char *path, struct km_buf *b)
{
	int r;

	if ((r = cli_read_input(path, MAX_CIPHERTEXT, b)) != CLI_OK)
		return r;
	while (b->len > 0 && isspace(b->data[b->len - 1]))
		b->data[--b->len] = '\0';
	if (b->len == 0) {
		fprintf(stderr, "kmsctl: no ciphertext in %s\n",
		    path != NULL && strcmp(path, "-") != 0 ? path : "standard input");
		return CLI_USAGE;
	}
	if (memchr(b->data, '\0', b->len) != NULL) {
		fprintf(stderr, "kmsctl: the ciphertext holds a NUL byte\n");
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* unwrap and rewrap: *body = {"ciphertext" read from --in, "context"};
 * a field that could not be set sets *failed. */
static int
ciphertext_body(const struct args *a, struct km_buf *ct, json_t **body,
    int *failed)
{
	int r;

	if ((r = read_ciphertext(a->in, ct)) != CLI_OK)
		return r;
	if ((*body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_USAGE;
	}
	set_new(*body, "ciphertext", json_stringn((const char *)ct->data, ct->len),
	    failed);
	if (a->ctx != NULL)
		set_new(*body, "context", json_incref(a->ctx), failed);
	return CLI_OK;
}

/* The ciphertext in a 2xx answer, or CLI_UNREACHABLE. */
static int
answer_ciphertext(const json_t *ans, const char **ct)
{
	if ((*ct = json_string_value(json_object_get(ans, "ciphertext"))) == NULL) {
		fprintf(stderr, "kmsctl: the answer has no ciphertext\n");
		return CLI_UNREACHABLE;
	}
	return CLI_OK;
}

/* The base64 "plaintext" of a 2xx answer decoded into *pt, or
 * CLI_UNREACHABLE. */
static int
answer_plaintext(const json_t *ans, unsigned char **pt, size_t *pt_len)
{
	const char *b64;

	if ((b64 = json_string_value(json_object_get(ans, "plaintext"))) == NULL ||
	    km_b64_decode(b64, strlen(b64), pt, pt_len) != KM_OK) {
		fprintf(stderr, "kmsctl: the answer has no valid plaintext\n");
		return CLI_UNREACHABLE;
	}
	return CLI_OK;
}

static int
cmd_wrap(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_CONTEXT, O_IN, O_OUT, O_END
	};
	static const struct cmd_spec spec = {
		"wrap ", usage_wrap, opts, 1, "expected one KEY", 0
	};
	struct km_buf pt = KM_BUF_INIT(MAX_PLAINTEXT + 1);
	struct args a;
	const char *ct;
	json_t *body = NULL, *ans = NULL;
	char *b64 = NULL;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help ||
	    (r = cli_read_input(a.in, MAX_PLAINTEXT, &pt)) != CLI_OK)
		goto out;
	if (pt.len == 0) {
		fprintf(stderr, "kmsctl: the plaintext is empty (1..%d bytes)\n",
		    MAX_PLAINTEXT);
		r = CLI_USAGE;
		goto out;
	}
	if (km_b64_encode(pt.data, pt.len, &b64) != KM_OK ||
	    (body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	set_new(body, "plaintext", json_string(b64), &failed);
	if (a.ctx != NULL)
		set_new(body, "context", json_incref(a.ctx), &failed);
	if (failed) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys/", a.arg[0], "/wrap", body,
	    &ans)) != CLI_OK || (r = answer_ciphertext(ans, &ct)) != CLI_OK)
		goto out;
	r = write_line(a.out, ct);
out:
	if (b64 != NULL)
		km_secure_free(b64, strlen(b64));
	km_buf_free(&pt);
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_unwrap(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_CONTEXT, O_IN, O_OUT, O_END
	};
	static const struct cmd_spec spec = {
		"unwrap ", usage_unwrap, opts, 1, "expected one KEY", 0
	};
	struct km_buf ct = KM_BUF_INIT(MAX_CIPHERTEXT + 1);
	struct args a;
	json_t *body = NULL, *ans = NULL;
	unsigned char *pt = NULL;
	size_t pt_len = 0;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help ||
	    (r = ciphertext_body(&a, &ct, &body, &failed)) != CLI_OK)
		goto out;
	if (failed) {
		fprintf(stderr, "kmsctl: the ciphertext is not valid UTF-8\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys/", a.arg[0], "/unwrap", body,
	    &ans)) != CLI_OK || (r = answer_plaintext(ans, &pt, &pt_len)) != CLI_OK)
		goto out;
	if (json_is_true(json_object_get(ans, "rewrap_recommended")))
		fprintf(stderr, "kmsctl: warning: this ciphertext is under version "
		    "%lld of %s, which is no longer primary; rewrap recommended "
		    "(kmsctl rewrap)\n",
		    (long long)json_integer_value(json_object_get(ans, "key_version")),
		    a.arg[0]);
	r = cli_write_output(a.out, pt, pt_len, 1);
out:
	km_secure_free(pt, pt_len);
	km_buf_free(&ct);
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_rewrap(int argc, char **argv)
{
	if (cli_rewrap_is_bulk(argc, argv))
		return cli_rewrap_bulk_main(argc, argv, g_token_file);
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_CONTEXT, O_IN, O_OUT,
		{ "to", required_argument, NULL, OPT_TO },
		{ "to-context", required_argument, NULL, OPT_TO_CONTEXT },
		O_END
	};
	static const struct cmd_spec spec = {
		"rewrap ", usage_rewrap, opts, 1, "expected one KEY", 0
	};
	struct km_buf ct = KM_BUF_INIT(MAX_CIPHERTEXT + 1);
	struct args a;
	const char *nct;
	json_t *body = NULL, *ans = NULL;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help ||
	    (r = ciphertext_body(&a, &ct, &body, &failed)) != CLI_OK)
		goto out;
	if (a.to != NULL)
		set_new(body, "destination_key", json_string(a.to), &failed);
	if (a.to_ctx != NULL)
		set_new(body, "destination_context", json_incref(a.to_ctx), &failed);
	if (failed) {
		fprintf(stderr, "kmsctl: the ciphertext or --to is not valid UTF-8\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys/", a.arg[0], "/rewrap", body,
	    &ans)) != CLI_OK || (r = answer_ciphertext(ans, &nct)) != CLI_OK)
		goto out;
	r = write_line(a.out, nct);
out:
	km_buf_free(&ct);
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_datakey(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_CONTEXT, O_OUT,
		{ "bits", required_argument, NULL, OPT_BITS },
		{ "plaintext-out", required_argument, NULL, OPT_PLAINTEXT_OUT },
		O_END
	};
	static const struct cmd_spec spec = {
		"datakey ", usage_datakey, opts, 1, "expected one KEY", 0
	};
	struct args a;
	const char *ct;
	json_t *body = NULL, *ans = NULL;
	unsigned char *pt = NULL;
	size_t pt_len = 0;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help)
		goto out;
	if (a.pt_out != NULL && strcmp(a.pt_out, "-") == 0 &&
	    (a.out == NULL || strcmp(a.out, "-") == 0)) {
		r = cli_usage_error("datakey ", "--plaintext-out - writes the key to "
		    "stdout; give --out FILE for the ciphertext");
		goto out;
	}
	r = CLI_USAGE;
	if ((body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	set_new(body, "bits", json_integer(a.bits), &failed);
	set_new(body, "return_plaintext", json_boolean(a.pt_out != NULL), &failed);
	if (a.ctx != NULL)
		set_new(body, "context", json_incref(a.ctx), &failed);
	if (failed) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/keys/", a.arg[0], "/datakey", body,
	    &ans)) != CLI_OK || (r = answer_ciphertext(ans, &ct)) != CLI_OK)
		goto out;
	if (a.pt_out != NULL) {
		/* The key first: a ciphertext without its key on disk is
		 * harmless, a key written after a failure is not. */
		if ((r = answer_plaintext(ans, &pt, &pt_len)) != CLI_OK ||
		    (r = cli_write_output(a.pt_out, pt, pt_len, 1)) != CLI_OK)
			goto out;
	}
	r = write_line(a.out, ct);
out:
	km_secure_free(pt, pt_len);
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

/* ---- tokens ---- */

static int
cmd_token_create(int argc, char **argv)
{
	static const struct option opts[] = {
		O_HELP, O_TOKEN_FILE, O_JSON,
		{ "role", required_argument, NULL, OPT_ROLE },
		{ "keys", required_argument, NULL, OPT_KEYS },
		{ "description", required_argument, NULL, OPT_DESCRIPTION },
		{ "ttl", required_argument, NULL, OPT_TTL },
		O_END
	};
	static const struct cmd_spec spec = {
		"token create ", usage_token_create, opts, 0, NULL, 0
	};
	struct args a;
	const char *tok, *id;
	json_t *body = NULL, *ans = NULL;
	int failed = 0, r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help)
		goto out;
	if (a.role == NULL) {
		r = cli_usage_error("token create ", "--role is required");
		goto out;
	}
	if ((body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	set_new(body, "role", json_string(a.role), &failed);
	if (a.keys != NULL)
		set_new(body, "keys", json_string(a.keys), &failed);
	if (a.desc != NULL)
		set_new(body, "description", json_string(a.desc), &failed);
	if (a.ttl != NULL)
		set_new(body, "ttl", json_string(a.ttl), &failed);
	if (failed) {
		r = cli_usage_error("token create ", "arguments must be valid UTF-8");
		goto out;
	}
	if ((r = server_call(&a, "POST", "/v1/tokens", NULL, NULL, body,
	    &ans)) != CLI_OK)
		goto out;
	if (a.json) {
		r = print_json(ans);
		goto out;
	}
	if ((tok = json_string_value(json_object_get(ans, "token"))) == NULL ||
	    (id = json_string_value(json_object_get(ans, "id"))) == NULL) {
		fprintf(stderr, "kmsctl: the answer has no token or id\n");
		r = CLI_UNREACHABLE;
		goto out;
	}
	fprintf(stderr, "id: ");
	fput_safe(stderr, id, 0);
	fputc('\n', stderr);
	if (printf("%s\n", tok) < 0 || fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		r = CLI_USAGE;
		goto out;
	}
	r = CLI_OK;
out:
	json_decref(body);
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_token_list(int argc, char **argv)
{
	static const struct option opts[] = { O_HELP, O_TOKEN_FILE, O_JSON, O_END };
	static const struct cmd_spec spec = {
		"token list ", usage_token_list, opts, 0, NULL, 0
	};
	struct args a;
	json_t *ans = NULL, *tokens;
	int r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help ||
	    (r = server_call(&a, "GET", "/v1/tokens", NULL, NULL, NULL,
	    &ans)) != CLI_OK)
		goto out;
	if (a.json) {
		r = print_json(ans);
		goto out;
	}
	if (!json_is_array(tokens = json_object_get(ans, "tokens"))) {
		fprintf(stderr, "kmsctl: the answer has no tokens array\n");
		r = CLI_UNREACHABLE;
		goto out;
	}
	r = print_token_table(tokens);
out:
	json_decref(ans);
	args_free(&a);
	return r;
}

static int
cmd_token_revoke(int argc, char **argv)
{
	static const struct option opts[] = { O_HELP, O_TOKEN_FILE, O_END };
	static const struct cmd_spec spec = {
		"token revoke ", usage_token_revoke, opts, 1,
		"expected one token ID", 0
	};
	struct args a;
	json_t *ans = NULL;
	int r;

	if ((r = parse_args(argc, argv, &spec, &a)) != CLI_OK || a.help ||
	    (r = server_call(&a, "DELETE", "/v1/tokens/", a.arg[0], NULL, NULL,
	    &ans)) != CLI_OK)
		goto out;
	printf("revoked ");
	put_safe(str_or(ans, "id", a.arg[0]), 0);
	printf(" at ");
	put_safe(str_or(ans, "revoked_at", "?"), 0);
	putchar('\n');
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "kmsctl: writing standard output failed\n");
		r = CLI_USAGE;
	}
out:
	json_decref(ans);
	args_free(&a);
	return r;
}

/* ---- dispatch ---- */

/* A command runs as run(), or as run_tf() with the global --token-file. */
struct cmd {
	const char *name;
	int (*run)(int argc, char **argv);
	int (*run_tf)(int argc, char **argv, const char *token_file);
};

static const struct cmd key_cmds[] = {
	{ "create", cmd_key_create, NULL },
	{ "list", cmd_key_list, NULL },
	{ "show", cmd_key_show, NULL },
	{ "rotate", cmd_key_rotate, NULL },
	{ "config", cmd_key_config, NULL },
	{ "state", cmd_key_state, NULL },
	{ "inventory", NULL, cli_inventory_main },
	{ "revoke", NULL, cli_key_revoke },
	{ NULL, NULL, NULL }
};

static const struct cmd token_cmds[] = {
	{ "create", cmd_token_create, NULL },
	{ "list", cmd_token_list, NULL },
	{ "revoke", cmd_token_revoke, NULL },
	{ NULL, NULL, NULL }
};

/* Runs the table entry named argv[0]; argv[0] of the callee is its name. */
static int
dispatch(const struct cmd *cmds, const char *group, const char *usage,
    int argc, char **argv)
{
	size_t i;

	if (argc < 1)
		return cli_usage_error(group, "expected a command");
	if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
	    strcmp(argv[0], "help") == 0)
		return cli_print_help(usage);
	for (i = 0; cmds[i].name != NULL; i++) {
		if (strcmp(cmds[i].name, argv[0]) == 0) {
			optind = 0;	/* glibc: 0 re-initialises getopt */
			return cmds[i].run != NULL ? cmds[i].run(argc, argv) :
			    cmds[i].run_tf(argc, argv, g_token_file);
		}
	}
	return cli_usage_error(group, "unknown command '%s'", argv[0]);
}

static int
cmd_key(int argc, char **argv)
{
	return dispatch(key_cmds, "key ", usage_key, argc - 1, argv + 1);
}

static int
cmd_token(int argc, char **argv)
{
	return dispatch(token_cmds, "token ", usage_token, argc - 1, argv + 1);
}

static const struct cmd main_cmds[] = {
	{ "init", cmd_init, NULL },
	{ "key", cmd_key, NULL },
	{ "wrap", cmd_wrap, NULL },
	{ "unwrap", cmd_unwrap, NULL },
	{ "rewrap", cmd_rewrap, NULL },
	{ "datakey", cmd_datakey, NULL },
	{ "token", cmd_token, NULL },
	{ "audit", NULL, cli_audit_main },
	{ "officer", NULL, cli_officer_main },
	{ "ceremony", NULL, cli_ceremony_main },
	{ "mek", NULL, cli_mek_main },
	{ "emergency-rotate", NULL, cli_emergency_main },
	{ "sign", NULL, cli_sign_main },
	{ "verify", NULL, cli_verify_main },
	{ "jwks", NULL, cli_jwks_main },
	{ NULL, NULL, NULL }
};

int
main(int argc, char **argv)
{
	int i = 1, r;

	cli_json_setup();
	/* Global options, before the command. */
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return cli_print_help(usage_main);
		if (strcmp(argv[i], "--version") == 0) {
			printf("kmsctl %s\n", KMSD_VERSION);
			return fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
		}
		if (strcmp(argv[i], "--token-file") == 0) {
			if (i + 1 >= argc) {
				cli_option_error("--token-file", 1);
				return cli_usage_hint("");
			}
			g_token_file = argv[i + 1];
			i += 2;
		} else if (strncmp(argv[i], "--token-file=", 13) == 0) {
			g_token_file = argv[i] + 13;
			i++;
		} else {
			cli_option_error(argv[i], 0);
			return cli_usage_hint("");
		}
	}
	if (i >= argc)
		return cli_usage_error("", "expected a command");
	if (strcmp(argv[i], "help") == 0)
		return cli_print_help(usage_main);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "kmsctl: cannot initialise libcurl\n");
		return CLI_USAGE;
	}
	r = dispatch(main_cmds, "", usage_main, argc - i, argv + i);
	curl_global_cleanup();
	return r;
}
