/* kmsctl sign, verify and jwks: signing-key commands (docs/SIGNING.md,
 * docs/KMSCTL.md). */
#ifndef KMSCTL_SIGN_H
#define KMSCTL_SIGN_H

#include <jansson.h>

#include "km.h"

/* `kmsctl sign KEY ...`; argv[0] is "sign". `token_file` is kmsctl's
 * global --token-file (NULL when not given). Returns a kmsctl exit code
 * (kmsctl_http.h). */
int cli_sign_main(int argc, char **argv, const char *token_file) KM_WUR;
/* `kmsctl verify KEY ...`: exit 0 when the signature is valid, 1 when it is
 * not (the reason on stderr) or the server refused, 2/3 as usual. */
int cli_verify_main(int argc, char **argv, const char *token_file) KM_WUR;
/* `kmsctl jwks [--out FILE]`: the public JWKS, no token needed. */
int cli_jwks_main(int argc, char **argv, const char *token_file) KM_WUR;

/* After `kmsctl key rotate` of a signing key: prints "new kid: <kid>
 * (version N)" for the primary version of the key object `key`; prints
 * nothing for other keys. */
void cli_sign_print_new_kid(const json_t *key);

#endif
