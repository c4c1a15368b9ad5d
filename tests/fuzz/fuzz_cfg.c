/* libFuzzer target: the kmsd config file (`key = value` lines) through
 * cfg_load, from a real file as kmsd reads it. Checked: no crash, leak or
 * undefined behaviour on any bytes; a loaded config has every derived path
 * set and every number within its documented range; a refused one leaves
 * no config behind. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "fuzz.h"

static char dir[PATH_MAX], path[PATH_MAX + 16];

static void
cleanup(void)
{
	fuzz_rm_tree(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	extern char **environ;
	char **e;

	(void)argc;
	(void)argv;
	/* Only the file decides: drop every KMS_* override. */
	for (e = environ; *e != NULL;) {
		if (strncmp(*e, "KMS_", 4) == 0) {
			char *name = strndup(*e, strcspn(*e, "="));

			unsetenv(name);
			free(name);
			e = environ;
			continue;
		}
		e++;
	}
	if (fuzz_scratch_dir("cfg", dir, sizeof(dir)) != 0) {
		perror("fuzz_cfg: scratch dir");
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/kmsd.conf", dir);
	atexit(cleanup);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cfg *c = (struct cfg *)1;
	FILE *f;
	int r;

	if ((f = fopen(path, "wb")) == NULL)
		return 0;
	if (size > 0 && fwrite(data, 1, size, f) != size) {
		fclose(f);
		return 0;
	}
	fclose(f);
	fuzz_quiet_begin();
	r = cfg_load(path, &c);
	fuzz_quiet_end();
	if (r != KM_OK) {
		fuzz_assert(c == NULL, "a refused config was handed out");
		return 0;
	}
	fuzz_assert(c != NULL && c->data_dir && c->listen && c->pkcs11_module &&
	    c->pkcs11_token && c->pin_file && c->db_path && c->audit_dir &&
	    c->log_level, "a loaded config lacks a setting");
	fuzz_assert(c->data_dir[0] && c->listen[0], "an empty setting");
	fuzz_assert(c->http_threads >= 1 && c->http_threads <= 256 &&
	    c->hsm_sessions >= 1 && c->max_body >= 1024 &&
	    c->max_connections >= 1 && c->connection_timeout >= 1,
	    "a number out of its range");
	cfg_free(c);
	return 0;
}
