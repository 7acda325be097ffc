/* JSON Web Token verification (RFC 7519, JWS compact form) with OpenSSL.
 *
 * Accepted algorithms are exactly the configured ones: HS256 with a shared
 * secret, RS256 or ES256 with a PEM public key. "none" and any algorithm
 * the configuration does not name are refused, so a token cannot choose
 * how it is checked (no algorithm confusion). */
#ifndef CP_JWT_H
#define CP_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "ids.h"

typedef struct cp_jwt_verifier cp_jwt_verifier;

/* secret: HS256 key (NULL or "" for none); pubkey_pem: path of an RSA or
 * EC P-256 public key (NULL or "" for none). At least one is needed.
 * Returns NULL and a reason in err. */
cp_jwt_verifier *cp_jwt_verifier_new(const char *secret, const char *pubkey_pem, long leeway_s,
                                     char *err, size_t err_cap);
void cp_jwt_verifier_free(cp_jwt_verifier *v);

/* Room for the `pub` claim: what the client may push to. */
#define CP_JWT_PUB_MAX 1024
#define CP_JWT_PUB_ENTRIES 64

typedef struct {
    char sub[CP_CHANNEL_ID_MAX + 1];
    int64_t exp; /* seconds since the epoch */
    /* `pub`: channel ids ("bob"), prefixes ("room-*") or "*" (any), stored
     * back to back, each ending in '\0'; pub_len 0 when the claim is absent
     * or empty (no client pushes). */
    char pub[CP_JWT_PUB_MAX];
    size_t pub_len;
} cp_jwt_claims;

/* 1 when the patterns of a `pub` claim (as in cp_jwt_claims) allow pushing
 * to channel id `to`. */
int cp_jwt_pub_allows(const char *pub, size_t pub_len, const char *to);

/* Longest token accepted. */
#define CP_JWT_MAX 4096

/* Verifies signature and time claims at now_s. Returns 0 and fills out, or
 * -1 with a short reason in *why (a static string). `sub` must be a valid
 * channel id; `exp` is required; `nbf` and `iat` are honoured; `pub`, when
 * present, must be an array of at most CP_JWT_PUB_ENTRIES patterns. */
int cp_jwt_verify(const cp_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                  cp_jwt_claims *out, const char **why);

/* The token among the offered WebSocket subprotocols ("cloudpush, <JWT>"):
 * the first entry that is not "cloudpush", trimmed. Copies it into out and
 * returns its length, or 0 when there is none (or it does not fit). */
size_t cp_jwt_from_protocol_list(const char *list, size_t len, char *out, size_t cap);

/* Mints an HS256 token {"sub":sub,"exp":exp,"iat":now,"pub":["*"]} (for
 * development setups: the HTTP API's --dev-token-secret; the demo pushes to
 * anyone). Returns its length, or -1. */
int cp_jwt_sign_hs256(const char *secret, const char *sub, int64_t exp, int64_t now, char *out,
                      size_t cap);

#endif
