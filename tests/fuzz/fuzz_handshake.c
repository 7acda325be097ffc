/* libFuzzer target for what the servers read from a handshake before any
 * lws state: the channelId rule and the token in a subprotocol list, fed
 * on to JWT verification.
 *
 * Input: <candidate channel id> NUL <Sec-WebSocket-Protocol value>.
 * Invariants (abort on violation):
 *   - a channel id that passes cp_channel_id_valid has 1..128 characters of
 *     [A-Za-z0-9._:@-] only (no MQTT wildcard, level separator or NUL);
 *   - a token taken from the list is non-empty, NUL-free, not "cloudpush",
 *     has no surrounding blanks and no comma, and appears in the list;
 *   - verifying it never succeeds without the secret's signature (the
 *     verifier's secret is random per run and never used to sign here). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "jwt.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cp_jwt_verifier *verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char secret[65];
    for (int i = 0; i < 64; i++)
        secret[i] = "0123456789abcdef"[cp_random_u64() & 15];
    secret[64] = '\0';
    char err[128];
    verifier = cp_jwt_verifier_new(secret, NULL, 60, err, sizeof err);
    if (!verifier)
        abort();
    return 0;
}

static void check_channel(const char *s, size_t n)
{
    if (!cp_channel_id_valid(s, n))
        return;
    if (n == 0 || n > CP_CHANNEL_ID_MAX)
        abort();
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 strchr("._:@-", c) != NULL;
        if (!ok || c == '\0' || c == '/' || c == '+' || c == '#')
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nul = memchr(in, '\0', size);
    size_t id_len = nul ? (size_t)(nul - in) : size;
    check_channel(in, id_len);
    if (!nul)
        return 0;
    const char *list = nul + 1;
    size_t list_len = size - id_len - 1;
    char token[CP_JWT_MAX + 1];
    size_t n = cp_jwt_from_protocol_list(list, list_len, token, sizeof token);
    if (n == 0)
        return 0;
    if (strlen(token) != n || strcmp(token, "cloudpush") == 0 || strchr(token, ',') ||
        token[0] == ' ' || token[0] == '\t' || token[n - 1] == ' ' || token[n - 1] == '\t')
        abort();
    if (!memmem(list, list_len, token, n))
        abort();
    cp_jwt_claims claims;
    const char *why = NULL;
    if (cp_jwt_verify(verifier, token, n, 1700000000, &claims, &why) == 0)
        abort(); /* a forgery */
    if (!why || !*why)
        abort();
    return 0;
}
