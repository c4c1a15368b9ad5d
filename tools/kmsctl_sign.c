/* kmsctl sign, verify and jwks: the client side of POST /v1/keys/{name}/sign
 * and /verify and of GET /.well-known/jwks.json. */
#include "kmsctl_sign.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "kmsctl_cli.h"
#include "kmsctl_http.h"

#define SIGN_MAX_INPUT (64u << 10)		/* the server's limit (docs/SIGNING.md) */
#define MAX_SIG_TEXT (128u << 10)	/* a compact JWS of a 64 KiB payload */

enum {
	O_HELP = 'h',
	O_TOKEN_FILE = 256,
	O_IN,
	O_OUT,
	O_FORMAT,
	O_ALG,
	O_PREHASHED,
	O_MARSHALING,
	O_HEADER,
	O_JSON,
	O_JWS,
	O_SIGNATURE,
	O_KEY_VERSION,
};

#define EXIT_TEXT \
	"Exit status: 0 ok; 1 the server refused (4xx) or the operation failed;\n" \
	"2 usage error or local I/O error; 3 kmsd unreachable, 5xx or a bad answer.\n"

static const char usage_sign[] =
    "Usage: kmsctl sign KEY [--in FILE|-] [--format raw|jws] [--alg ALG]\n"
    "                   [--prehashed] [--marshaling der|jws] [--header JSON]\n"
    "                   [--out FILE|-] [--json] [--token-file FILE]\n"
    "\n"
    "Signs the bytes of --in (default stdin; at most 64 KiB) with the primary\n"
    "version of signing key KEY (app token) and prints the signature and a\n"
    "newline (default stdout): base64 for raw, the compact JWS for jws. The\n"
    "version and kid go to stderr.\n"
    "\n"
    "  --format raw|jws     raw signature (default) or a compact JWS whose\n"
    "                       payload is the input and whose protected header is\n"
    "                       {\"alg\",\"kid\"} plus --header\n"
    "  --alg ALG            RS256 (default) or PS256 for RSA keys; ES256 and\n"
    "                       EdDSA are the only algorithms of their keys\n"
    "  --prehashed          the input is a 32-byte SHA-256 digest (raw only; not\n"
    "                       for ed25519)\n"
    "  --marshaling der|jws raw ES256 signature as DER (default) or r || s\n"
    "  --header JSON        extra protected header members, e.g. '{\"typ\":\"JWT\"}'\n"
    "  --json               print the server's JSON instead\n"
    "\n" EXIT_TEXT;

static const char usage_verify[] =
    "Usage: kmsctl verify KEY --jws FILE|-\n"
    "       kmsctl verify KEY --in FILE|- --signature FILE [--alg ALG]\n"
    "                     [--prehashed] [--marshaling der|jws]\n"
    "                     [--key-version N] [--json] [--token-file FILE]\n"
    "\n"
    "Asks kmsd whether a signature made by KEY is valid (app token). A JWS\n"
    "names its version by kid; a raw signature (base64 text in FILE, as\n"
    "'kmsctl sign' prints it) is tried against every version unless\n"
    "--key-version says which. Prints \"valid\" with the version and kid, or\n"
    "\"invalid\" and the reason (a revoked version is invalid).\n"
    "\n"
    "Exit status: 0 valid; 1 invalid or the server refused (4xx); 2 usage\n"
    "error or local I/O error; 3 kmsd unreachable, 5xx or a bad answer.\n";

static const char usage_jwks[] =
    "Usage: kmsctl jwks [--out FILE|-]\n"
    "\n"
    "Prints kmsd's public JWKS (GET /.well-known/jwks.json; no token needed):\n"
    "every published signing-key version with its kid, use and alg.\n"
    "\n" EXIT_TEXT;

/* A text file (a JWS, a base64 signature): trailing whitespace cut, NUL
 * refused. *out (free()) is NUL-terminated. */
static int
read_text(const char *path, char **out)
{
	struct km_buf b = KM_BUF_INIT(MAX_SIG_TEXT + 1);
	int r;

	*out = NULL;
	if ((r = cli_read_input(path, MAX_SIG_TEXT, &b)) != CLI_OK)
		goto out;
	while (b.len > 0 && isspace(b.data[b.len - 1]))
		b.len--;
	if (b.len == 0 || memchr(b.data, '\0', b.len) != NULL) {
		fprintf(stderr, "kmsctl: %s holds no text\n", path ? path : "input");
		r = CLI_USAGE;
		goto out;
	}
	if ((*out = km_buf_take_str(&b)) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
	}
out:
	km_buf_free(&b);
	return r;
}

static int
write_out(const char *path, const char *text)
{
	FILE *f = stdout;
	int ok;

	if (path != NULL && strcmp(path, "-") != 0 &&
	    (f = fopen(path, "w")) == NULL) {
		fprintf(stderr, "kmsctl: cannot create %s: %s\n", path,
		    strerror(errno));
		return CLI_USAGE;
	}
	ok = fputs(text, f) != EOF && fputc('\n', f) != EOF;
	ok = (f == stdout ? fflush(f) == 0 : fclose(f) == 0) && ok;
	if (!ok) {
		fprintf(stderr, "kmsctl: writing %s failed\n", path ? path :
		    "standard output");
		return CLI_USAGE;
	}
	return CLI_OK;
}

static int
print_json(const json_t *doc, const char *path)
{
	char *text = json_dumps(doc, JSON_INDENT(2));
	int r;

	if (text == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_USAGE;
	}
	r = write_out(path, text);
	free(text);
	return r;
}

/* Server strings on a terminal: control bytes become '?'. */
static void
put_safe(FILE *f, const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		putc(iscntrl((unsigned char)*s) ? '?' : *s, f);
}

static const char *
str_of(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "";
}

/* Adds member `k` (a new reference, may be NULL: out of memory). */
static int
set(json_t *o, const char *k, json_t *v)
{
	return v == NULL || json_object_set_new(o, k, v) != 0 ? -1 : 0;
}

int
cli_sign_main(int argc, char **argv, const char *token_file)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, O_HELP },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "in", required_argument, NULL, O_IN },
		{ "out", required_argument, NULL, O_OUT },
		{ "format", required_argument, NULL, O_FORMAT },
		{ "alg", required_argument, NULL, O_ALG },
		{ "prehashed", no_argument, NULL, O_PREHASHED },
		{ "marshaling", required_argument, NULL, O_MARSHALING },
		{ "header", required_argument, NULL, O_HEADER },
		{ "json", no_argument, NULL, O_JSON },
		{ NULL, 0, NULL, 0 },
	};
	const char *in = NULL, *out = NULL, *format = NULL, *alg = NULL,
	    *marshaling = NULL, *header = NULL;
	struct km_buf input = KM_BUF_INIT(SIGN_MAX_INPUT + 1);
	struct cli_http *h = NULL;
	json_t *body = NULL, *ans = NULL, *hdr = NULL;
	char *b64 = NULL, *path = NULL;
	int ch, prehashed = 0, json = 0, r = CLI_USAGE;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "sign ")) != -1) {
		switch (ch) {
		case O_HELP: return cli_print_help(usage_sign);
		case O_TOKEN_FILE: token_file = optarg; break;
		case O_IN: in = optarg; break;
		case O_OUT: out = optarg; break;
		case O_FORMAT: format = optarg; break;
		case O_ALG: alg = optarg; break;
		case O_PREHASHED: prehashed = 1; break;
		case O_MARSHALING: marshaling = optarg; break;
		case O_HEADER: header = optarg; break;
		case O_JSON: json = 1; break;
		default: return CLI_USAGE;
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("sign ", "expected one signing key name");
	if (format != NULL && strcmp(format, "raw") != 0 &&
	    strcmp(format, "jws") != 0)
		return cli_usage_error("sign ", "--format is raw or jws");
	if (header != NULL) {
		json_error_t jerr;

		if ((hdr = json_loads(header, JSON_REJECT_DUPLICATES, &jerr)) ==
		    NULL || !json_is_object(hdr)) {
			json_decref(hdr);
			return cli_usage_error("sign ", "--header is not a JSON object");
		}
	}
	if ((r = cli_read_input(in, SIGN_MAX_INPUT, &input)) != CLI_OK)
		goto out;
	if (input.len == 0) {
		r = cli_usage_error("sign ", "no input to sign");
		goto out;
	}
	if (km_b64_encode(input.data, input.len, &b64) != KM_OK ||
	    (body = json_object()) == NULL ||
	    set(body, "input", json_string(b64)) ||
	    (format != NULL && set(body, "format", json_string(format))) ||
	    (alg != NULL && set(body, "alg", json_string(alg))) ||
	    (prehashed && set(body, "prehashed", json_true())) ||
	    (marshaling != NULL && set(body, "marshaling",
	    json_string(marshaling))) ||
	    (hdr != NULL && set(body, "header", json_incref(hdr)))) {
		fprintf(stderr, "kmsctl: out of memory or an argument is not "
		    "UTF-8\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((r = cli_http_new(token_file, &h)) != CLI_OK ||
	    (r = cli_http_path(h, "/v1/keys/", argv[optind], "/sign",
	    &path)) != CLI_OK ||
	    (r = cli_http_call(h, "POST", path, body, &ans)) != CLI_OK)
		goto out;
	if (json) {
		r = print_json(ans, out);
		goto out;
	}
	if (!json_is_string(json_object_get(ans, "signature"))) {
		fprintf(stderr, "kmsctl: the answer has no signature\n");
		r = CLI_UNREACHABLE;
		goto out;
	}
	if ((r = write_out(out, str_of(ans, "signature"))) != CLI_OK)
		goto out;
	fprintf(stderr, "version %lld, kid ",
	    (long long)json_integer_value(json_object_get(ans, "key_version")));
	put_safe(stderr, str_of(ans, "kid"));
	fputs(", alg ", stderr);
	put_safe(stderr, str_of(ans, "alg"));
	fputc('\n', stderr);
out:
	if (b64 != NULL)
		km_secure_free(b64, strlen(b64));
	km_buf_free(&input);
	free(path);
	json_decref(hdr);
	json_decref(body);
	json_decref(ans);
	cli_http_free(h);
	return r;
}

int
cli_verify_main(int argc, char **argv, const char *token_file)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, O_HELP },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "in", required_argument, NULL, O_IN },
		{ "jws", required_argument, NULL, O_JWS },
		{ "signature", required_argument, NULL, O_SIGNATURE },
		{ "alg", required_argument, NULL, O_ALG },
		{ "prehashed", no_argument, NULL, O_PREHASHED },
		{ "marshaling", required_argument, NULL, O_MARSHALING },
		{ "key-version", required_argument, NULL, O_KEY_VERSION },
		{ "json", no_argument, NULL, O_JSON },
		{ NULL, 0, NULL, 0 },
	};
	const char *in = NULL, *jws_path = NULL, *sig_path = NULL, *alg = NULL,
	    *marshaling = NULL, *kv = NULL;
	struct km_buf input = KM_BUF_INIT(SIGN_MAX_INPUT + 1);
	struct cli_http *h = NULL;
	json_t *body = NULL, *ans = NULL;
	char *jws = NULL, *sig = NULL, *b64 = NULL, *path = NULL, *end;
	long long version = 0;
	int ch, prehashed = 0, json = 0, r = CLI_USAGE;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "verify ")) != -1) {
		switch (ch) {
		case O_HELP: return cli_print_help(usage_verify);
		case O_TOKEN_FILE: token_file = optarg; break;
		case O_IN: in = optarg; break;
		case O_JWS: jws_path = optarg; break;
		case O_SIGNATURE: sig_path = optarg; break;
		case O_ALG: alg = optarg; break;
		case O_PREHASHED: prehashed = 1; break;
		case O_MARSHALING: marshaling = optarg; break;
		case O_KEY_VERSION: kv = optarg; break;
		case O_JSON: json = 1; break;
		default: return CLI_USAGE;
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("verify ", "expected one signing key name");
	if ((jws_path != NULL) == (sig_path != NULL))
		return cli_usage_error("verify ", "give --jws FILE, or --in FILE and "
		    "--signature FILE");
	if (jws_path != NULL && (in != NULL || alg != NULL || prehashed ||
	    marshaling != NULL || kv != NULL))
		return cli_usage_error("verify ", "a JWS carries its own input, alg and "
		    "kid: only --jws");
	if (kv != NULL) {
		errno = 0;
		version = strtoll(kv, &end, 10);
		if (errno != 0 || *kv == '\0' || *end != '\0' || version < 1 ||
		    version > 0xffffffffLL)
			return cli_usage_error("verify ", "--key-version '%s' is not a "
			    "positive number", kv);
	}
	if ((body = json_object()) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	if (jws_path != NULL) {
		if ((r = read_text(jws_path, &jws)) != CLI_OK)
			goto out;
		if (set(body, "jws", json_string(jws))) {
			r = cli_usage_error("verify ", "the JWS is not text");
			goto out;
		}
	} else {
		if ((r = cli_read_input(in, SIGN_MAX_INPUT, &input)) != CLI_OK ||
		    (r = read_text(sig_path, &sig)) != CLI_OK)
			goto out;
		r = CLI_USAGE;
		if (km_b64_encode(input.data, input.len, &b64) != KM_OK ||
		    set(body, "input", json_string(b64)) ||
		    set(body, "signature", json_string(sig)) ||
		    (alg != NULL && set(body, "alg", json_string(alg))) ||
		    (prehashed && set(body, "prehashed", json_true())) ||
		    (marshaling != NULL && set(body, "marshaling",
		    json_string(marshaling))) ||
		    (version != 0 && set(body, "key_version",
		    json_integer(version)))) {
			fprintf(stderr, "kmsctl: out of memory or an argument is "
			    "not UTF-8\n");
			goto out;
		}
	}
	if ((r = cli_http_new(token_file, &h)) != CLI_OK ||
	    (r = cli_http_path(h, "/v1/keys/", argv[optind], "/verify",
	    &path)) != CLI_OK ||
	    (r = cli_http_call(h, "POST", path, body, &ans)) != CLI_OK)
		goto out;
	if (!json_is_boolean(json_object_get(ans, "valid"))) {
		fprintf(stderr, "kmsctl: the answer has no valid member\n");
		r = CLI_UNREACHABLE;
		goto out;
	}
	if (json)
		r = print_json(ans, NULL);
	else if (json_is_true(json_object_get(ans, "valid"))) {
		printf("valid: version %lld, kid ", (long long)json_integer_value(
		    json_object_get(ans, "key_version")));
		put_safe(stdout, str_of(ans, "kid"));
		printf(", alg ");
		put_safe(stdout, str_of(ans, "alg"));
		putchar('\n');
		r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
	} else {
		printf("invalid: ");
		put_safe(stdout, str_of(ans, "reason"));
		putchar('\n');
		r = fflush(stdout) == EOF ? CLI_USAGE : CLI_OK;
	}
	if (r == CLI_OK && !json_is_true(json_object_get(ans, "valid")))
		r = CLI_FAIL;
out:
	if (b64 != NULL)
		km_secure_free(b64, strlen(b64));
	km_buf_free(&input);
	free(jws);
	free(sig);
	free(path);
	json_decref(body);
	json_decref(ans);
	cli_http_free(h);
	return r;
}

int
cli_jwks_main(int argc, char **argv, const char *token_file)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, O_HELP },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "out", required_argument, NULL, O_OUT },
		{ NULL, 0, NULL, 0 },
	};
	const char *out = NULL;
	struct cli_http *h = NULL;
	json_t *ans = NULL;
	int ch, r;

	while ((ch = cli_next_opt_hint(argc, argv, opts, "jwks ")) != -1) {
		switch (ch) {
		case O_HELP: return cli_print_help(usage_jwks);
		case O_TOKEN_FILE: token_file = optarg; break;
		case O_OUT: out = optarg; break;
		default: return CLI_USAGE;
		}
	}
	if (argc - optind != 0)
		return cli_usage_error("jwks ", "no arguments expected");
	if ((r = cli_http_new(token_file, &h)) != CLI_OK ||
	    (r = cli_http_call(h, "GET", "/.well-known/jwks.json", NULL,
	    &ans)) != CLI_OK)
		goto out;
	r = print_json(ans, out);
out:
	json_decref(ans);
	cli_http_free(h);
	return r;
}

void
cli_sign_print_new_kid(const json_t *key)
{
	const json_t *p = json_object_get(key, "primary_version"), *v;
	size_t i;

	if (strcmp(str_of(key, "purpose"), "sign") != 0 || !json_is_integer(p))
		return;
	json_array_foreach(json_object_get(key, "versions"), i, v) {
		if (json_integer_value(json_object_get(v, "version")) ==
		    json_integer_value(p) && json_is_string(json_object_get(v,
		    "kid"))) {
			printf("\nnew kid: ");
			put_safe(stdout, str_of(v, "kid"));
			printf(" (version %lld)\n", (long long)json_integer_value(p));
			fflush(stdout);
			return;
		}
	}
}
