/* libFuzzer target for JWT verification (common/jwt.c).
 *
 * LLVMFuzzerInitialize builds two verifiers, both with a leeway of 60 s:
 *   - HS256 with a fixed 38-byte secret (the seeds in corpus/jwt/ that are
 *     valid tokens are signed with it);
 *   - ES256 with a P-256 key generated at start-up; its public key is
 *     written as PEM to a temporary file, loaded, and the file removed.
 * Each input is verified at a fixed "now" (1700000000):
 *   1. as a token, with the HS256 verifier;
 *   2. as a token, with the ES256 verifier;
 *   3. as a signing input: "<input>.<base64url HMAC-SHA256 of input>" with
 *      the HS256 verifier, so that mutated headers and claims get past the
 *      signature and reach the header, time and sub checks.
 * Invariants:
 *   - on success: sub is a valid channel id (cp_channel_id_valid), NUL-
 *     terminated within the buffer; 0 <= exp <= 1e12 and exp + leeway >=
 *     now; the token is at most CP_JWT_MAX bytes with exactly two dots;
 *   - on failure: why is a non-empty string and the claims are zeroed;
 *   - the ES256 verifier never accepts anything: the private key never
 *     leaves this process, so a success is a forgery or alg confusion;
 *   - pass 3 never fails with "bad signature" (the MAC is right by
 *     construction).
 * Any violation aborts, so libFuzzer saves the input as a crash artifact.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ids.h"
#include "jwt.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW INT64_C(1700000000)
#define LEEWAY 60
#define SECRET "0123456789abcdef0123456789abcdef-hs256"

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond))                                                                              \
            check_failed(#cond, __LINE__);                                                        \
    } while (0)

static void check_failed(const char *what, int line)
{
    fprintf(stderr, "fuzz_jwt.c:%d: check failed: %s\n", line, what);
    abort();
}

static cp_jwt_verifier *hs_verifier, *es_verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256] = "";
    hs_verifier = cp_jwt_verifier_new(SECRET, NULL, LEEWAY, err, sizeof err);
    if (!hs_verifier) {
        fprintf(stderr, "fuzz_jwt: HS256 verifier: %s\n", err);
        abort();
    }

    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!key) {
        fprintf(stderr, "fuzz_jwt: cannot generate a P-256 key\n");
        abort();
    }
    const char *tmpdir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/fuzz_jwt.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || PEM_write_PUBKEY(f, key) != 1 || fclose(f) != 0) {
        fprintf(stderr, "fuzz_jwt: cannot write the public key to %s\n", path);
        abort();
    }
    EVP_PKEY_free(key); /* only the public half is kept, in the verifier */
    es_verifier = cp_jwt_verifier_new(NULL, path, LEEWAY, err, sizeof err);
    unlink(path);
    if (!es_verifier) {
        fprintf(stderr, "fuzz_jwt: ES256 verifier: %s\n", err);
        abort();
    }
    return 0;
}

static size_t count_dots(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == '.';
    return n;
}

/* Runs one verification and checks the invariants; returns rc. */
static int verify_checked(const cp_jwt_verifier *v, const char *token, size_t len,
                          const char **why_out)
{
    cp_jwt_claims claims;
    memset(&claims, 0xa5, sizeof claims);
    const char *why = NULL;
    int rc = cp_jwt_verify(v, token, len, NOW, &claims, &why);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        CHECK(memchr(claims.sub, '\0', sizeof claims.sub) != NULL);
        CHECK(cp_channel_id_valid(claims.sub, strlen(claims.sub)));
        CHECK(claims.exp >= 0 && claims.exp <= INT64_C(1000000000000));
        CHECK(claims.exp + LEEWAY >= NOW);
        CHECK(len <= CP_JWT_MAX);
        CHECK(count_dots(token, len) == 2);
    } else {
        CHECK(why != NULL);
        CHECK(why[0] != '\0');
        CHECK(claims.sub[0] == '\0');
        CHECK(claims.exp == 0);
    }
    *why_out = why;
    return rc;
}

/* base64url without padding of 32 bytes: 43 characters plus NUL. */
static void b64url32(const unsigned char in[32], char out[45])
{
    int m = EVP_EncodeBlock((unsigned char *)out, in, 32);
    int n = 0;
    for (int i = 0; i < m && out[i] != '='; i++)
        out[n++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[n] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *token = (const char *)data;
    const char *why;

    /* 1 and 2: the input as a token. */
    verify_checked(hs_verifier, token, size, &why);
    int rc = verify_checked(es_verifier, token, size, &why);
    CHECK(rc != 0);

    /* 3: the input as header.payload, correctly signed with the secret. */
    if (size > 2 * CP_JWT_MAX)
        return 0;
    unsigned char mac[32];
    size_t mac_len = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, SECRET, strlen(SECRET), data, size, mac,
                   sizeof mac, &mac_len) ||
        mac_len != 32)
        abort();
    char sig[45];
    b64url32(mac, sig);
    char *signed_token = malloc(size + 1 + sizeof sig);
    if (!signed_token)
        abort();
    if (size)
        memcpy(signed_token, data, size);
    signed_token[size] = '.';
    memcpy(signed_token + size + 1, sig, 43);
    size_t len = size + 1 + 43;
    rc = verify_checked(hs_verifier, signed_token, len, &why);
    if (rc != 0)
        CHECK(strcmp(why, "bad signature") != 0);
    free(signed_token);
    return 0;
}
