/* The route table: every endpoint, its audit op name and who may call it.
 * The authz matrix test walks this table, so a new route cannot be missed. */
#include "api.h"

#define ALL_READERS (ROLE_ADMIN | ROLE_APP | ROLE_AUDITOR | ROLE_OFFICER)

const struct api_route api_routes[] = {
	{ "GET", "/v1/health", api_health, "health", 0 },
	{ "GET", "/v1/ready", api_ready, "ready", 0 },
	{ "POST", "/v1/keys", api_keys_create, "key.create", ROLE_ADMIN },
	{ "GET", "/v1/keys", api_keys_list, "key.list", ALL_READERS },
	{ "GET", "/v1/keys/{}", api_keys_get, "key.get", ALL_READERS },
	{ "POST", "/v1/keys/{}/rotate", api_keys_rotate, "key.rotate", ROLE_ADMIN },
	{ "POST", "/v1/keys/{}/versions/{}/state", api_keys_state, "key.state",
	    ROLE_ADMIN | ROLE_OFFICER },
	{ "POST", "/v1/keys/{}/wrap", api_crypto_wrap, "wrap", ROLE_APP },
	{ "POST", "/v1/keys/{}/unwrap", api_crypto_unwrap, "unwrap", ROLE_APP },
	{ "POST", "/v1/keys/{}/rewrap", api_crypto_rewrap, "rewrap", ROLE_APP },
	{ "POST", "/v1/keys/{}/datakey", api_crypto_datakey, "datakey", ROLE_APP },
	{ "POST", "/v1/tokens", api_tokens_create, "token.create", ROLE_ADMIN },
	{ "GET", "/v1/tokens", api_tokens_list, "token.list", ROLE_ADMIN },
	{ "DELETE", "/v1/tokens/{}", api_tokens_revoke, "token.revoke", ROLE_ADMIN },
	{ "GET", "/v1/audit/head", api_audit_head, "audit.head",
	    ROLE_AUDITOR | ROLE_ADMIN | ROLE_OFFICER },
	{ "GET", "/v1/audit/checkpoints", api_audit_checkpoints,
	    "audit.checkpoints", ROLE_AUDITOR | ROLE_ADMIN | ROLE_OFFICER },
	{ "GET", "/v1/audit/keys", api_audit_keys, "audit.keys",
	    ROLE_AUDITOR | ROLE_ADMIN | ROLE_OFFICER },
	{ "GET", "/v1/audit/records", api_audit_records, "audit.records",
	    ROLE_AUDITOR },
	{ "GET", "/v1/audit/files", api_audit_files, "audit.files", ROLE_AUDITOR },
	{ "GET", "/v1/audit/files/{}", api_audit_file, "audit.file", ROLE_AUDITOR },
	{ NULL, NULL, NULL, NULL, 0 },
};
