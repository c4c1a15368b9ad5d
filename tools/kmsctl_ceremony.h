/* kmsctl officer|ceremony|mek and `key revoke` (docs/CEREMONIES.md). */
#ifndef KMSCTL_CEREMONY_H
#define KMSCTL_CEREMONY_H

#include <openssl/types.h>

#include "km.h"

/* Each runs its command group; argv[0] is the group's name ("officer",
 * "ceremony", "mek"; "revoke" for key revoke). `token_file` is kmsctl's
 * global --token-file (NULL when not given). Return a kmsctl exit code
 * (kmsctl_http.h). */
int cli_officer_main(int argc, char **argv, const char *token_file) KM_WUR;
int cli_ceremony_main(int argc, char **argv, const char *token_file) KM_WUR;
int cli_mek_main(int argc, char **argv, const char *token_file) KM_WUR;
int cli_key_revoke(int argc, char **argv, const char *token_file) KM_WUR;

/* An officer's signature with the private key `pk`: ECDSA/SHA-256 over
 * `msg`, *sig_b64 (free()) base64 DER. Returns CLI_OK, or CLI_USAGE after
 * printing "signing `what` failed". */
int cli_officer_sign_key(EVP_PKEY *pk, const char *msg, const char *what,
    char **sig_b64) KM_WUR;

#endif
