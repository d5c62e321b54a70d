/* rpc_auth.h: bearer tokens: the token store read from --token-file (reloaded on SIGHUP), and
 * the check of a call's `authorization: Bearer TOKEN` metadata, made before a request is parsed.
 * Tokens never leave this module: messages and identities name a token by its name or line. */
#ifndef FRACTALD_RPC_AUTH_H
#define FRACTALD_RPC_AUTH_H

#include <grpc/grpc.h>
#include <stddef.h>

typedef struct rpc_auth rpc_auth;

/* The identity a check hands back: the token's name ("ci" for a line "ci:TOKEN"), or "line3". */
#define RPC_AUTH_ID_MAX 64

/* Reads the token file at path. Format: one token per line; blank lines and lines starting with
 * '#' are skipped; a line may be "NAME:TOKEN" (NAME: letters, digits, '.', '_', '-'); surrounding
 * blanks are ignored. A token is 16..512 characters of RFC 6750's b64token set. Returns 0 and the
 * store in *out (free with rpc_auth_free), or ERR_INVALID / ERR_NOMEM with "PATH:LINE: ..." in msg
 * (never the token itself). */
int rpc_auth_new(rpc_auth **out, const char *path, char *msg, size_t msglen);

/* Reads the file again and, if it is valid, replaces the tokens at once (calls being checked see
 * the old set or the new one, never a mix). A file that fails keeps the old tokens. Returns 0 with
 * "N tokens" in msg, or the error of rpc_auth_new with its message. Any thread. */
int rpc_auth_reload(rpc_auth *a, char *msg, size_t msglen);

void rpc_auth_free(rpc_auth *a);

/* Checks the request metadata for a known bearer token. Each stored token is compared in time that
 * depends only on the presented token's length. Returns 0 with the token's identity in id (cap
 * RPC_AUTH_ID_MAX), or ERR_UNAUTHENTICATED with the client's message in msg: no authorization
 * metadata, a malformed one, or a token the server does not know. Any thread. */
int rpc_auth_check(rpc_auth *a, const grpc_metadata_array *md, char *id, char *msg, size_t msglen);

#endif
