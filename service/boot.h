/* First-run setup, used by `kmsctl init`: optionally initialise a token,
 * create MEK version 1 and the audit-signing key in it, create the metadata
 * store and the first admin token. Every step is skipped when its result exists, so init is idempotent. */
#ifndef BOOT_H
#define BOOT_H

#include "cfg.h"

struct boot_options {
	/* Initialise a free slot as a token labelled as the token= attribute
	 * of cfg->pkcs11_token, with a random user PIN written to
	 * cfg->pin_file and a random SO PIN to <data_dir>/token.so-pin (both
	 * 0600). For SoftHSM and test tokens; real HSMs are initialised by
	 * their own procedure. Skipped when the token already exists. */
	int init_token;
	/* Where the first admin token is written (mode 0600); NULL means
	 * <data_dir>/admin.token. Skipped when an admin token exists. */
	const char *admin_token_path;
	/* Registers every <name>.pub.pem (ECDSA P-256) in this directory as
	 * an officer, with `quorum` as M, unless officers exist (then kept).
	 * NULL: no officers (ceremonies cannot run until some are). */
	const char *officers_dir;
	int quorum;
};

/* Prints what it did to stdout, one line per step. */
int boot_init(const struct cfg *c, const struct boot_options *opt) KM_WUR;

#endif
