#include "jwt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "envelope.h"

struct cp_jwt_verifier {
    unsigned char *secret;
    size_t secret_len;
    EVP_PKEY *key;
    int key_is_ec; /* ES256, else RS256 */
    long leeway_s;
};

cp_jwt_verifier *cp_jwt_verifier_new(const char *secret, const char *pubkey_pem, long leeway_s,
                                     char *err, size_t cap)
{
    int have_secret = secret && *secret, have_key = pubkey_pem && *pubkey_pem;
    if (!have_secret && !have_key) {
        snprintf(err, cap, "no JWT secret or public key configured");
        return NULL;
    }
    cp_jwt_verifier *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    v->leeway_s = leeway_s;
    if (have_secret) {
        v->secret_len = strlen(secret);
        if (v->secret_len < 32) {
            snprintf(err, cap, "the HS256 secret must be at least 32 bytes");
            free(v);
            return NULL;
        }
        v->secret = (unsigned char *)strdup(secret);
    }
    if (have_key) {
        FILE *f = fopen(pubkey_pem, "r");
        if (!f) {
            snprintf(err, cap, "cannot open %s", pubkey_pem);
            cp_jwt_verifier_free(v);
            return NULL;
        }
        v->key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        fclose(f);
        if (!v->key) {
            snprintf(err, cap, "%s is not a PEM public key", pubkey_pem);
            cp_jwt_verifier_free(v);
            return NULL;
        }
        if (EVP_PKEY_is_a(v->key, "EC")) {
            char group[32] = "";
            size_t glen = 0;
            EVP_PKEY_get_utf8_string_param(v->key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           &glen);
            if (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0) {
                snprintf(err, cap, "%s: ES256 needs a P-256 key, got %s", pubkey_pem, group);
                cp_jwt_verifier_free(v);
                return NULL;
            }
            v->key_is_ec = 1;
        } else if (!EVP_PKEY_is_a(v->key, "RSA") || EVP_PKEY_get_bits(v->key) < 2048) {
            snprintf(err, cap, "%s: RS256 needs an RSA key of 2048 bits or more", pubkey_pem);
            cp_jwt_verifier_free(v);
            return NULL;
        }
    }
    return v;
}

void cp_jwt_verifier_free(cp_jwt_verifier *v)
{
    if (!v)
        return;
    if (v->secret) {
        OPENSSL_cleanse(v->secret, v->secret_len);
        free(v->secret);
    }
    EVP_PKEY_free(v->key);
    free(v);
}

/* base64url without padding → bytes; returns the length or -1. */
static int b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len % 4 == 1 || len > 4 * (cap / 3))
        return -1;
    char buf[CP_JWT_MAX + 4];
    if (len + 4 > sizeof buf)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return -1; /* no padding, no standard alphabet extras */
        buf[i] = c;
    }
    /* Canonical form only: the bits of the last character that carry no data
     * must be zero, so one signature has exactly one spelling. */
    if (len % 4) {
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *at = strchr(alphabet, buf[len - 1]);
        int value = at ? (int)(at - alphabet) : 0;
        if ((len % 4 == 2 && (value & 0x0f)) || (len % 4 == 3 && (value & 0x03)))
            return -1;
    }
    size_t padded = len;
    while (padded % 4)
        buf[padded++] = '=';
    if (padded / 4 * 3 > cap)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)padded);
    if (n < 0)
        return -1;
    return n - (int)(padded - len); /* EVP_DecodeBlock counts padding as zero bytes */
}

static int verify_signature(const cp_jwt_verifier *v, const char *alg, const char *signed_part,
                            size_t signed_len, const unsigned char *sig, size_t sig_len,
                            const char **why)
{
    if (strcmp(alg, "HS256") == 0) {
        if (!v->secret) {
            *why = "HS256 tokens are not accepted here";
            return -1;
        }
        unsigned char mac[32];
        size_t mac_len = 0;
        if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, v->secret, v->secret_len,
                       (const unsigned char *)signed_part, signed_len, mac, sizeof mac, &mac_len) ||
            mac_len != 32 || sig_len != 32 || CRYPTO_memcmp(mac, sig, 32) != 0) {
            *why = "bad signature";
            return -1;
        }
        return 0;
    }
    int es = strcmp(alg, "ES256") == 0, rs = strcmp(alg, "RS256") == 0;
    if ((!es && !rs) || !v->key || es != v->key_is_ec) {
        *why = "algorithm not accepted";
        return -1;
    }
    unsigned char der[80];
    const unsigned char *check = sig;
    size_t check_len = sig_len;
    if (es) {
        /* JWS carries r||s (32 bytes each); OpenSSL wants DER. */
        if (sig_len != 64) {
            *why = "bad signature";
            return -1;
        }
        ECDSA_SIG *es_sig = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        if (!es_sig || !r || !s || !ECDSA_SIG_set0(es_sig, r, s)) {
            ECDSA_SIG_free(es_sig);
            BN_free(r);
            BN_free(s);
            *why = "bad signature";
            return -1;
        }
        unsigned char *p = der;
        int n = i2d_ECDSA_SIG(es_sig, NULL);
        if (n <= 0 || (size_t)n > sizeof der) {
            ECDSA_SIG_free(es_sig);
            *why = "bad signature";
            return -1;
        }
        i2d_ECDSA_SIG(es_sig, &p);
        ECDSA_SIG_free(es_sig);
        check = der;
        check_len = (size_t)n;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, v->key) == 1 &&
             EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)signed_part,
                              signed_len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        *why = "bad signature";
        return -1;
    }
    return 0;
}

static int number_claim(const cJSON *payload, const char *name, int64_t *out, int *present)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(payload, name);
    *present = c != NULL;
    if (!c)
        return 0;
    if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble) || c->valuedouble < 0 ||
        c->valuedouble > 1e12)
        return -1;
    *out = (int64_t)c->valuedouble;
    return 0;
}

/* A pattern of `pub`: a channel id, or one followed by '*' (a prefix), or
 * "*" alone. */
static int pub_pattern_valid(const char *s)
{
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '*')
        n--;
    return n == 0 ? s[0] == '*' : cp_channel_id_valid(s, n);
}

/* Copies the `pub` claim into out->pub; 0, or -1 when it is malformed. */
static int pub_claim(const cJSON *claims, cp_jwt_claims *out)
{
    out->pub_len = 0;
    const cJSON *pub = cJSON_GetObjectItemCaseSensitive(claims, "pub");
    if (!pub)
        return 0;
    if (!cJSON_IsArray(pub) || cJSON_GetArraySize(pub) > CP_JWT_PUB_ENTRIES)
        return -1;
    const cJSON *el;
    cJSON_ArrayForEach(el, pub)
    {
        if (!cJSON_IsString(el) || !pub_pattern_valid(el->valuestring))
            return -1;
        size_t n = strlen(el->valuestring) + 1;
        if (out->pub_len + n > sizeof out->pub)
            return -1;
        memcpy(out->pub + out->pub_len, el->valuestring, n);
        out->pub_len += n;
    }
    return 0;
}

int cp_jwt_verify(const cp_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                  cp_jwt_claims *out, const char **why)
{
    memset(out, 0, sizeof *out);
    if (len == 0 || len > CP_JWT_MAX) {
        *why = "malformed token";
        return -1;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) {
        *why = "malformed token";
        return -1;
    }
    unsigned char header[1024], payload[CP_JWT_MAX], sig[512];
    int hlen = b64url_decode(token, (size_t)(dot1 - token), header, sizeof header - 1);
    int plen = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload, sizeof payload - 1);
    int slen = b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, sizeof sig);
    if (hlen <= 0 || plen <= 0 || slen <= 0) {
        *why = "malformed token";
        return -1;
    }
    cJSON *h = cp_json_parse_strict((const char *)header, (size_t)hlen, NULL);
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    if (!cJSON_IsObject(h) || !cJSON_IsString(alg)) {
        cJSON_Delete(h);
        *why = "malformed token header";
        return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(h, "crit")) {
        cJSON_Delete(h);
        *why = "unsupported critical header";
        return -1;
    }
    int rc = verify_signature(v, alg->valuestring, token, (size_t)(dot2 - token), sig,
                              (size_t)slen, why);
    cJSON_Delete(h);
    if (rc != 0)
        return -1;

    /* Only a token whose signature holds has its claims read. */
    cJSON *p = cp_json_parse_strict((const char *)payload, (size_t)plen, NULL);
    if (!cJSON_IsObject(p)) {
        cJSON_Delete(p);
        *why = "malformed token claims";
        return -1;
    }
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(p, "sub");
    int64_t exp = 0, nbf = 0, iat = 0;
    int has_exp, has_nbf, has_iat;
    if (!cJSON_IsString(sub) || !cp_channel_id_valid(sub->valuestring, strlen(sub->valuestring))) {
        *why = "sub must be a valid channel id";
        rc = -1;
    } else if (number_claim(p, "exp", &exp, &has_exp) || number_claim(p, "nbf", &nbf, &has_nbf) ||
               number_claim(p, "iat", &iat, &has_iat)) {
        *why = "exp, nbf and iat must be numbers (seconds)";
        rc = -1;
    } else if (!has_exp) {
        *why = "exp is required";
        rc = -1;
    } else if (now_s > exp + v->leeway_s) {
        *why = "token expired";
        rc = -1;
    } else if (has_nbf && now_s + v->leeway_s < nbf) {
        *why = "token not valid yet";
        rc = -1;
    } else if (has_iat && now_s + v->leeway_s < iat) {
        *why = "token issued in the future";
        rc = -1;
    } else if (pub_claim(p, out) != 0) {
        *why = "pub must be an array of channel ids, prefixes ending in * or \"*\"";
        rc = -1;
    } else {
        snprintf(out->sub, sizeof out->sub, "%s", sub->valuestring);
        out->exp = exp;
    }
    cJSON_Delete(p);
    return rc;
}

int cp_jwt_pub_allows(const char *pub, size_t pub_len, const char *to)
{
    for (size_t i = 0; i < pub_len;) {
        const char *pattern = pub + i;
        size_t n = strlen(pattern);
        if (n > 0 && pattern[n - 1] == '*') {
            if (strncmp(to, pattern, n - 1) == 0)
                return 1;
        } else if (strcmp(to, pattern) == 0) {
            return 1;
        }
        i += n + 1;
    }
    return 0;
}

/* bytes -> base64url without padding; returns the length or -1. */
static int b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    if ((len + 2) / 3 * 4 + 1 > cap)
        return -1;
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    out[n] = '\0';
    return n;
}

int cp_jwt_sign_hs256(const char *secret, const char *sub, int64_t exp, int64_t now, char *out,
                      size_t cap)
{
    char payload[256];
    int plen = snprintf(payload, sizeof payload,
                        "{\"sub\":\"%s\",\"exp\":%lld,\"iat\":%lld,\"pub\":[\"*\"]}",
                        sub, (long long)exp, (long long)now);
    if (plen < 0 || (size_t)plen >= sizeof payload || !cp_channel_id_valid(sub, strlen(sub)))
        return -1;
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    int h = b64url_encode((const unsigned char *)header, sizeof header - 1, out, cap);
    if (h < 0 || (size_t)h + 2 >= cap)
        return -1;
    out[h] = '.';
    int p = b64url_encode((const unsigned char *)payload, (size_t)plen, out + h + 1,
                          cap - (size_t)h - 1);
    if (p < 0 || (size_t)(h + 1 + p) + 2 >= cap)
        return -1;
    size_t signed_len = (size_t)(h + 1 + p);
    unsigned char mac[32];
    size_t mac_len = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret),
                   (const unsigned char *)out, signed_len, mac, sizeof mac, &mac_len))
        return -1;
    out[signed_len] = '.';
    int s = b64url_encode(mac, mac_len, out + signed_len + 1, cap - signed_len - 1);
    if (s < 0)
        return -1;
    return (int)(signed_len + 1 + (size_t)s);
}

size_t cp_jwt_from_protocol_list(const char *list, size_t len, char *out, size_t cap)
{
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && list[i] != ',')
            i++;
        size_t end = i++;
        while (start < end && (list[start] == ' ' || list[start] == '\t'))
            start++;
        while (end > start && (list[end - 1] == ' ' || list[end - 1] == '\t'))
            end--;
        size_t n = end - start;
        if (n == 0 || (n == 9 && memcmp(list + start, "cloudpush", 9) == 0) || n >= cap ||
            memchr(list + start, '\0', n))
            continue;
        memcpy(out, list + start, n);
        out[n] = '\0';
        return n;
    }
    return 0;
}
