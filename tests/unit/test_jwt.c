/* Unit tests for common/jwt.c: JWT verification (HS256, RS256, ES256).
 *
 * Every token is minted here with OpenSSL: HS256 with EVP_Q_mac, RS256 and
 * ES256 with EVP_DigestSign on keys made by EVP_PKEY_Q_keygen (the ES256
 * DER signature is turned into the 64-byte JWS r||s form). Public keys are
 * written as PEM files into a private temporary directory that the group
 * teardown removes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ids.h"
#include "jwt.h"

#define NOW INT64_C(1700000000)
#define LEEWAY 60
#define SECRET "0123456789abcdef0123456789abcdef-hs256" /* 38 bytes */
#define OTHER_SECRET "fedcba9876543210fedcba9876543210-other"

/* Big enough for tokens over CP_JWT_MAX and for RSA PEM text. */
#define TOK_CAP 16384

#define H_HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define H_RS "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define H_ES "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"

enum { SIG_HS, SIG_RS, SIG_ES };

static struct {
    char dir[64];
    char rsa_pem[128], ec_pem[128], rsa1024_pem[128], p384_pem[128], ed25519_pem[128],
        not_pem[128], missing[128];
    EVP_PKEY *rsa, *rsa_other, *ec, *ec_other;
    char rsa_pem_text[TOK_CAP], ec_pem_text[TOK_CAP];
    cp_jwt_verifier *v_hs;   /* SECRET only */
    cp_jwt_verifier *v_hs0;  /* SECRET only, no leeway */
    cp_jwt_verifier *v_rs;   /* RSA public key only */
    cp_jwt_verifier *v_es;   /* EC P-256 public key only */
    cp_jwt_verifier *v_both; /* SECRET and the RSA public key */
} g;

/* ---- minting ----------------------------------------------------------- */

/* base64url without padding; returns the length written (out gets a NUL). */
static size_t b64url(const unsigned char *in, size_t n, char *out, size_t cap)
{
    assert_true(4 * ((n + 2) / 3) + 1 <= cap);
    int m = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    assert_true(m >= 0);
    size_t len = 0;
    for (int i = 0; i < m; i++) {
        char c = out[i];
        if (c == '=')
            break;
        out[len++] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[len] = '\0';
    return len;
}

/* "b64(header).b64(payload)" into out; returns its length. */
static size_t signing_input(const char *header, const char *payload, char *out, size_t cap)
{
    size_t n = b64url((const unsigned char *)header, strlen(header), out, cap);
    assert_true(n + 2 < cap);
    out[n++] = '.';
    n += b64url((const unsigned char *)payload, strlen(payload), out + n, cap - n);
    return n;
}

/* Appends ".b64(sig)" to the signing input in out (length n). */
static size_t append_sig(char *out, size_t n, size_t cap, const unsigned char *sig, size_t slen)
{
    assert_true(n + 2 < cap);
    out[n++] = '.';
    out[n] = '\0';
    if (slen)
        n += b64url(sig, slen, out + n, cap - n);
    return n;
}

static size_t hs256_sig(const void *key, size_t key_len, const char *data, size_t n,
                        unsigned char sig[32])
{
    size_t mac_len = 0;
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len,
                              (const unsigned char *)data, n, sig, 32, &mac_len));
    assert_int_equal(mac_len, 32);
    return mac_len;
}

static size_t digest_sign(EVP_PKEY *key, const char *data, size_t n, unsigned char *sig,
                          size_t cap)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_non_null(ctx);
    size_t slen = 0;
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(ctx, NULL, &slen, (const unsigned char *)data, n), 1);
    assert_true(slen <= cap);
    assert_int_equal(EVP_DigestSign(ctx, sig, &slen, (const unsigned char *)data, n), 1);
    EVP_MD_CTX_free(ctx);
    return slen;
}

static size_t rs256_sig(EVP_PKEY *key, const char *data, size_t n, unsigned char *sig, size_t cap)
{
    return digest_sign(key, data, n, sig, cap);
}

/* ES256: DER ECDSA-Sig-Value → 32-byte r || 32-byte s. */
static size_t es256_sig(EVP_PKEY *key, const char *data, size_t n, unsigned char sig[64])
{
    unsigned char der[128];
    size_t dlen = digest_sign(key, data, n, der, sizeof der);
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    assert_non_null(es);
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(es, &r, &s);
    assert_int_equal(BN_bn2binpad(r, sig, 32), 32);
    assert_int_equal(BN_bn2binpad(s, sig + 32, 32), 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* A complete token; key is the HMAC key (SIG_HS) or an EVP_PKEY. */
static size_t mint_with(int kind, const void *key, size_t key_len, const char *header,
                        const char *payload, char *out)
{
    size_t n = signing_input(header, payload, out, TOK_CAP);
    unsigned char sig[512];
    size_t slen = 0;
    switch (kind) {
    case SIG_HS:
        slen = hs256_sig(key, key_len, out, n, sig);
        break;
    case SIG_RS:
        slen = rs256_sig((EVP_PKEY *)key, out, n, sig, sizeof sig);
        break;
    default:
        slen = es256_sig((EVP_PKEY *)key, out, n, sig);
        break;
    }
    return append_sig(out, n, TOK_CAP, sig, slen);
}

static size_t mint_hs(const char *header, const char *payload, char *out)
{
    return mint_with(SIG_HS, SECRET, strlen(SECRET), header, payload, out);
}

static size_t mint_rs(const char *header, const char *payload, char *out)
{
    return mint_with(SIG_RS, g.rsa, 0, header, payload, out);
}

static size_t mint_es(const char *header, const char *payload, char *out)
{
    return mint_with(SIG_ES, g.ec, 0, header, payload, out);
}

/* A token with an arbitrary (possibly empty) signature. */
static size_t mint_raw(const char *header, const char *payload, const unsigned char *sig,
                       size_t slen, char *out)
{
    size_t n = signing_input(header, payload, out, TOK_CAP);
    return append_sig(out, n, TOK_CAP, sig, slen);
}

/* {"sub":sub,"exp":exp} */
static const char *claims(const char *sub, int64_t exp)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "{\"sub\":\"%s\",\"exp\":%lld}", sub, (long long)exp);
    return buf;
}

/* ---- checking ---------------------------------------------------------- */

static void expect_ok_at(const cp_jwt_verifier *v, const char *tok, int64_t now,
                         const char *sub, int64_t exp)
{
    cp_jwt_claims c;
    const char *why = NULL;
    int rc = cp_jwt_verify(v, tok, strlen(tok), now, &c, &why);
    if (rc != 0)
        fail_msg("token refused (%s): %s", why ? why : "(null)", tok);
    assert_string_equal(c.sub, sub);
    assert_int_equal(c.exp, exp);
}

static void expect_ok(const cp_jwt_verifier *v, const char *tok, const char *sub, int64_t exp)
{
    expect_ok_at(v, tok, NOW, sub, exp);
}

/* Refused with exactly `reason` (any reason when NULL); claims left zeroed. */
static void expect_refused_n(const cp_jwt_verifier *v, const char *tok, size_t len, int64_t now,
                             const char *reason)
{
    cp_jwt_claims c;
    memset(&c, 0x5a, sizeof c);
    const char *why = NULL;
    int rc = cp_jwt_verify(v, tok, len, now, &c, &why);
    if (rc != -1)
        fail_msg("token accepted (sub %s), expected refusal \"%s\": %.200s", c.sub,
                 reason ? reason : "*", tok);
    assert_non_null(why);
    if (reason)
        assert_string_equal(why, reason);
    assert_int_equal(c.sub[0], 0);
    assert_int_equal(c.exp, 0);
}

static void expect_refused_at(const cp_jwt_verifier *v, const char *tok, int64_t now,
                              const char *reason)
{
    expect_refused_n(v, tok, strlen(tok), now, reason);
}

static void expect_refused(const cp_jwt_verifier *v, const char *tok, const char *reason)
{
    expect_refused_at(v, tok, NOW, reason);
}

/* Start and length of part i (0..2) of a well-formed token. */
static void part_span(const char *tok, int i, size_t *start, size_t *len)
{
    const char *d1 = strchr(tok, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    const char *b[3] = {tok, d1 + 1, d2 + 1};
    const char *e[3] = {d1, d2, tok + strlen(tok)};
    *start = (size_t)(b[i] - tok);
    *len = (size_t)(e[i] - b[i]);
}

/* dst = a b c (c may be NULL); dst has TOK_CAP bytes. */
static void concat(char *dst, const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = c ? strlen(c) : 0;
    assert_true(la + lb + lc < TOK_CAP);
    memmove(dst, a, la);
    memcpy(dst + la, b, lb);
    if (lc)
        memcpy(dst + la + lb, c, lc);
    dst[la + lb + lc] = '\0';
}

/* Replaces the base64url character at pos with a different one. */
static void flip_char(char *tok, size_t pos)
{
    tok[pos] = tok[pos] == 'A' ? 'B' : 'A';
}

/* ---- fixture ----------------------------------------------------------- */

static void write_pubkey(EVP_PKEY *key, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, key), 1);
    assert_int_equal(fclose(f), 0);
}

static void read_text(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    assert_true(n > 0 && n < cap - 1);
    out[n] = '\0';
}

static cp_jwt_verifier *make_verifier(const char *secret, const char *pem, long leeway)
{
    char err[256] = "";
    cp_jwt_verifier *v = cp_jwt_verifier_new(secret, pem, leeway, err, sizeof err);
    if (!v)
        fail_msg("cp_jwt_verifier_new: %s", err);
    return v;
}

static int group_setup(void **state)
{
    (void)state;
    memset(&g, 0, sizeof g);
    snprintf(g.dir, sizeof g.dir, "/tmp/test_jwt.XXXXXX");
    if (!mkdtemp(g.dir))
        return -1;
    snprintf(g.rsa_pem, sizeof g.rsa_pem, "%s/rsa.pem", g.dir);
    snprintf(g.ec_pem, sizeof g.ec_pem, "%s/ec.pem", g.dir);
    snprintf(g.rsa1024_pem, sizeof g.rsa1024_pem, "%s/rsa1024.pem", g.dir);
    snprintf(g.p384_pem, sizeof g.p384_pem, "%s/p384.pem", g.dir);
    snprintf(g.ed25519_pem, sizeof g.ed25519_pem, "%s/ed25519.pem", g.dir);
    snprintf(g.not_pem, sizeof g.not_pem, "%s/not.pem", g.dir);
    snprintf(g.missing, sizeof g.missing, "%s/missing.pem", g.dir);

    g.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g.ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp384r1");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!g.rsa || !g.rsa_other || !g.ec || !g.ec_other || !rsa1024 || !p384 || !ed)
        return -1;
    write_pubkey(g.rsa, g.rsa_pem);
    write_pubkey(g.ec, g.ec_pem);
    write_pubkey(rsa1024, g.rsa1024_pem);
    write_pubkey(p384, g.p384_pem);
    write_pubkey(ed, g.ed25519_pem);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
    FILE *f = fopen(g.not_pem, "w");
    if (!f)
        return -1;
    fputs("this is not a PEM file\n", f);
    fclose(f);
    read_text(g.rsa_pem, g.rsa_pem_text, sizeof g.rsa_pem_text);
    read_text(g.ec_pem, g.ec_pem_text, sizeof g.ec_pem_text);

    g.v_hs = make_verifier(SECRET, NULL, LEEWAY);
    g.v_hs0 = make_verifier(SECRET, "", 0);
    g.v_rs = make_verifier(NULL, g.rsa_pem, LEEWAY);
    g.v_es = make_verifier("", g.ec_pem, LEEWAY);
    g.v_both = make_verifier(SECRET, g.rsa_pem, LEEWAY);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cp_jwt_verifier_free(g.v_hs);
    cp_jwt_verifier_free(g.v_hs0);
    cp_jwt_verifier_free(g.v_rs);
    cp_jwt_verifier_free(g.v_es);
    cp_jwt_verifier_free(g.v_both);
    EVP_PKEY_free(g.rsa);
    EVP_PKEY_free(g.rsa_other);
    EVP_PKEY_free(g.ec);
    EVP_PKEY_free(g.ec_other);
    const char *files[] = {g.rsa_pem,     g.ec_pem,  g.rsa1024_pem, g.p384_pem,
                           g.ed25519_pem, g.not_pem};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    rmdir(g.dir);
    return 0;
}

/* ---- valid tokens ------------------------------------------------------ */

static void test_valid_hs256(void **state)
{
    (void)state;
    char t[TOK_CAP];
    mint_hs(H_HS, claims("user-1", NOW + 3600), t);
    expect_ok(g.v_hs, t, "user-1", NOW + 3600);
    /* With nbf and iat in the past, extra claims, no typ. */
    mint_hs("{\"alg\":\"HS256\"}",
            "{\"iss\":\"x\",\"sub\":\"a.B_c:d@e-9\",\"iat\":1699999000,\"nbf\":1699999000,"
            "\"exp\":1700000300,\"aud\":[\"y\"]}",
            t);
    expect_ok(g.v_hs, t, "a.B_c:d@e-9", 1700000300);
    /* The verifier holding a secret and an RSA key takes HS256 too. */
    mint_hs(H_HS, claims("both", NOW + 1), t);
    expect_ok(g.v_both, t, "both", NOW + 1);
    /* A secret of exactly 32 bytes. */
    cp_jwt_verifier *v32 = make_verifier("0123456789abcdef0123456789abcdef", NULL, 0);
    mint_with(SIG_HS, "0123456789abcdef0123456789abcdef", 32, H_HS, claims("s32", NOW + 5), t);
    expect_ok(v32, t, "s32", NOW + 5);
    cp_jwt_verifier_free(v32);
}

static void test_valid_rs256(void **state)
{
    (void)state;
    char t[TOK_CAP];
    mint_rs(H_RS, claims("rsa-user", NOW + 600), t);
    expect_ok(g.v_rs, t, "rsa-user", NOW + 600);
    expect_ok(g.v_both, t, "rsa-user", NOW + 600);
}

static void test_valid_es256(void **state)
{
    (void)state;
    char t[TOK_CAP];
    /* ECDSA is randomised and r or s may have leading zero bytes: try a few. */
    for (int i = 0; i < 20; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "ec-user-%d", i);
        mint_es(H_ES, claims(sub, NOW + 600 + i), t);
        expect_ok(g.v_es, t, sub, NOW + 600 + i);
    }
}

static void test_sub_128_accepted(void **state)
{
    (void)state;
    char sub[CP_CHANNEL_ID_MAX + 1], t[TOK_CAP];
    memset(sub, 'x', CP_CHANNEL_ID_MAX);
    sub[CP_CHANNEL_ID_MAX] = '\0';
    mint_hs(H_HS, claims(sub, NOW + 10), t);
    expect_ok(g.v_hs, t, sub, NOW + 10);
}

/* ---- signatures -------------------------------------------------------- */

/* Flips one character in the middle of each part, and one decoded byte of
 * the signature. */
static void check_flips(const cp_jwt_verifier *v, const char *good)
{
    char t[TOK_CAP];
    for (int part = 0; part < 3; part++) {
        size_t start, len;
        part_span(good, part, &start, &len);
        snprintf(t, sizeof t, "%s", good);
        flip_char(t, start + len / 2);
        /* A changed header may no longer be JSON; the payload and the
         * signature are covered by the signature. */
        expect_refused(v, t, part == 0 ? NULL : "bad signature");
        snprintf(t, sizeof t, "%s", good);
        flip_char(t, start);
        expect_refused(v, t, part == 0 ? NULL : "bad signature");
    }
}

static void test_bad_signature_hs256(void **state)
{
    (void)state;
    char good[TOK_CAP], t[TOK_CAP];
    mint_hs(H_HS, claims("u", NOW + 60), good);
    expect_ok(g.v_hs, good, "u", NOW + 60);
    check_flips(g.v_hs, good);

    /* Signed with another secret. */
    mint_with(SIG_HS, OTHER_SECRET, strlen(OTHER_SECRET), H_HS, claims("u", NOW + 60), t);
    expect_refused(g.v_hs, t, "bad signature");

    /* Decoded signature byte flipped; signature truncated / extended. */
    unsigned char sig[33];
    size_t n = signing_input(H_HS, claims("u", NOW + 60), t, sizeof t);
    hs256_sig(SECRET, strlen(SECRET), t, n, sig);
    sig[5] ^= 0x01;
    mint_raw(H_HS, claims("u", NOW + 60), sig, 32, t);
    expect_refused(g.v_hs, t, "bad signature");
    sig[5] ^= 0x01;
    sig[31] ^= 0x01; /* the last MAC byte */
    mint_raw(H_HS, claims("u", NOW + 60), sig, 32, t);
    expect_refused(g.v_hs, t, "bad signature");
    sig[31] ^= 0x01;
    mint_raw(H_HS, claims("u", NOW + 60), sig, 31, t);
    expect_refused(g.v_hs, t, "bad signature");
    sig[32] = 0;
    mint_raw(H_HS, claims("u", NOW + 60), sig, 33, t);
    expect_refused(g.v_hs, t, "bad signature");

    /* Same signature over a different payload (another sub) and header. */
    size_t start, len;
    part_span(good, 2, &start, &len);
    n = signing_input(H_HS, claims("admin", NOW + 60), t, sizeof t);
    snprintf(t + n, sizeof t - n, "%s", good + start - 1);
    expect_refused(g.v_hs, t, "bad signature");
    n = signing_input("{\"alg\":\"HS256\",\"kid\":\"k\"}", claims("u", NOW + 60), t, sizeof t);
    snprintf(t + n, sizeof t - n, "%s", good + start - 1);
    expect_refused(g.v_hs, t, "bad signature");
}

/* A signature has one spelling: in the last base64url character of a
 * 32-byte HS256 MAC (43 characters) the low 2 bits carry no data, and
 * setting them must not give an accepted twin of the token. */
static void test_noncanonical_signature_refused(void **state)
{
    (void)state;
    char good[TOK_CAP];
    size_t n = mint_hs(H_HS, claims("u", NOW + 60), good);
    expect_ok(g.v_hs, good, "u", NOW + 60);
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *at = strchr(alphabet, good[n - 1]);
    assert_non_null(at);
    int value = (int)(at - alphabet);
    assert_int_equal(value & 3, 0);
    for (int extra = 1; extra < 4; extra++) {
        char twin[TOK_CAP];
        memcpy(twin, good, n + 1);
        twin[n - 1] = alphabet[value | extra];
        expect_refused(g.v_hs, twin, "malformed token");
    }
}

static void test_bad_signature_rs256(void **state)
{
    (void)state;
    char good[TOK_CAP], t[TOK_CAP];
    mint_rs(H_RS, claims("u", NOW + 60), good);
    expect_ok(g.v_rs, good, "u", NOW + 60);
    check_flips(g.v_rs, good);

    mint_with(SIG_RS, g.rsa_other, 0, H_RS, claims("u", NOW + 60), t);
    expect_refused(g.v_rs, t, "bad signature");

    unsigned char sig[512];
    size_t n = signing_input(H_RS, claims("u", NOW + 60), t, sizeof t);
    size_t slen = rs256_sig(g.rsa, t, n, sig, sizeof sig);
    assert_int_equal(slen, 256);
    sig[100] ^= 0x80;
    mint_raw(H_RS, claims("u", NOW + 60), sig, slen, t);
    expect_refused(g.v_rs, t, "bad signature");
    sig[100] ^= 0x80;
    mint_raw(H_RS, claims("u", NOW + 60), sig, slen - 1, t);
    expect_refused(g.v_rs, t, "bad signature");

    size_t start, len;
    part_span(good, 2, &start, &len);
    n = signing_input(H_RS, claims("admin", NOW + 60), t, sizeof t);
    snprintf(t + n, sizeof t - n, "%s", good + start - 1);
    expect_refused(g.v_rs, t, "bad signature");
}

static void test_bad_signature_es256(void **state)
{
    (void)state;
    char good[TOK_CAP], t[TOK_CAP];
    mint_es(H_ES, claims("u", NOW + 60), good);
    expect_ok(g.v_es, good, "u", NOW + 60);
    check_flips(g.v_es, good);

    mint_with(SIG_ES, g.ec_other, 0, H_ES, claims("u", NOW + 60), t);
    expect_refused(g.v_es, t, "bad signature");

    unsigned char sig[65];
    size_t n = signing_input(H_ES, claims("u", NOW + 60), t, sizeof t);
    es256_sig(g.ec, t, n, sig);
    sig[40] ^= 0x10; /* in s */
    mint_raw(H_ES, claims("u", NOW + 60), sig, 64, t);
    expect_refused(g.v_es, t, "bad signature");
    sig[40] ^= 0x10;
    sig[3] ^= 0x10; /* in r */
    mint_raw(H_ES, claims("u", NOW + 60), sig, 64, t);
    expect_refused(g.v_es, t, "bad signature");
    sig[3] ^= 0x10;
    /* Not 64 bytes. */
    mint_raw(H_ES, claims("u", NOW + 60), sig, 63, t);
    expect_refused(g.v_es, t, "bad signature");
    sig[64] = 0;
    mint_raw(H_ES, claims("u", NOW + 60), sig, 65, t);
    expect_refused(g.v_es, t, "bad signature");
    /* r = s = 0, r = s = 0xff.. (above the group order). */
    memset(sig, 0, 64);
    mint_raw(H_ES, claims("u", NOW + 60), sig, 64, t);
    expect_refused(g.v_es, t, "bad signature");
    memset(sig, 0xff, 64);
    mint_raw(H_ES, claims("u", NOW + 60), sig, 64, t);
    expect_refused(g.v_es, t, "bad signature");
    /* The DER form instead of r||s. */
    unsigned char der[128];
    n = signing_input(H_ES, claims("u", NOW + 60), t, sizeof t);
    size_t dlen = digest_sign(g.ec, t, n, der, sizeof der);
    mint_raw(H_ES, claims("u", NOW + 60), der, dlen, t);
    expect_refused(g.v_es, t, "bad signature");
}

/* ---- algorithms -------------------------------------------------------- */

static void test_alg_none(void **state)
{
    (void)state;
    char t[TOK_CAP];
    const cp_jwt_verifier *vs[] = {g.v_hs, g.v_rs, g.v_es, g.v_both};
    unsigned char junk[32];
    memset(junk, 0x41, sizeof junk);
    const char *nones[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
                           "{\"alg\":\"none\",\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        for (size_t j = 0; j < sizeof nones / sizeof nones[0]; j++) {
            /* The classic form: empty signature. */
            mint_raw(nones[j], claims("u", NOW + 60), NULL, 0, t);
            assert_int_equal(t[strlen(t) - 1], '.');
            expect_refused(vs[i], t, "malformed token");
            /* With some signature bytes. */
            mint_raw(nones[j], claims("u", NOW + 60), junk, sizeof junk, t);
            expect_refused(vs[i], t, "algorithm not accepted");
        }
        /* "none" with a real HS256 MAC over its own signing input. */
        mint_with(SIG_HS, SECRET, strlen(SECRET), "{\"alg\":\"none\"}", claims("u", NOW + 60),
                  t);
        expect_refused(vs[i], t, "algorithm not accepted");
    }
}

static void test_other_algs_refused(void **state)
{
    (void)state;
    char t[TOK_CAP];
    const char *algs[] = {"hs256", "Hs256", "HS384", "HS512", "RS384", "RS512", "PS256",
                          "ES384", "ES512", "EdDSA", "",      "HS256 ", " HS256"};
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        char h[64];
        snprintf(h, sizeof h, "{\"alg\":\"%s\"}", algs[i]);
        /* Signed the HS256 way with the right secret: the alg string still
         * has to match exactly. */
        mint_with(SIG_HS, SECRET, strlen(SECRET), h, claims("u", NOW + 60), t);
        expect_refused(g.v_hs, t, "algorithm not accepted");
        expect_refused(g.v_both, t, "algorithm not accepted");
        mint_with(SIG_RS, g.rsa, 0, h, claims("u", NOW + 60), t);
        expect_refused(g.v_rs, t, "algorithm not accepted");
    }
    /* alg missing, not a string, alg only in the payload. */
    const char *headers[] = {"{}", "{\"typ\":\"JWT\"}", "{\"alg\":null}", "{\"alg\":256}",
                             "{\"alg\":[\"HS256\"]}", "{\"ALG\":\"HS256\"}"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        mint_hs(headers[i], "{\"alg\":\"HS256\",\"sub\":\"u\",\"exp\":1700000060}", t);
        expect_refused(g.v_hs, t, "malformed token header");
    }
}

static void test_alg_confusion_hs256_with_public_key(void **state)
{
    (void)state;
    char t[TOK_CAP];
    /* HMAC keyed with the PEM text of the verifier's RSA public key (with
     * and without the final newline). */
    size_t pem_len = strlen(g.rsa_pem_text);
    mint_with(SIG_HS, g.rsa_pem_text, pem_len, H_HS, claims("u", NOW + 60), t);
    expect_refused(g.v_rs, t, "HS256 tokens are not accepted here");
    mint_with(SIG_HS, g.rsa_pem_text, pem_len - 1, H_HS, claims("u", NOW + 60), t);
    expect_refused(g.v_rs, t, "HS256 tokens are not accepted here");
    /* A verifier that also has a secret checks the MAC with the secret. */
    mint_with(SIG_HS, g.rsa_pem_text, pem_len, H_HS, claims("u", NOW + 60), t);
    expect_refused(g.v_both, t, "bad signature");
    /* The same with the EC key. */
    mint_with(SIG_HS, g.ec_pem_text, strlen(g.ec_pem_text), H_HS, claims("u", NOW + 60), t);
    expect_refused(g.v_es, t, "HS256 tokens are not accepted here");
}

static void test_rs256_against_hs_only(void **state)
{
    (void)state;
    char t[TOK_CAP];
    mint_rs(H_RS, claims("u", NOW + 60), t);
    expect_refused(g.v_hs, t, "algorithm not accepted");
    mint_es(H_ES, claims("u", NOW + 60), t);
    expect_refused(g.v_hs, t, "algorithm not accepted");
}

static void test_es256_against_rsa_key(void **state)
{
    (void)state;
    char t[TOK_CAP];
    mint_es(H_ES, claims("u", NOW + 60), t);
    expect_refused(g.v_rs, t, "algorithm not accepted");
    expect_refused(g.v_both, t, "algorithm not accepted");
    /* And the other way round: RS256 with an EC key configured. */
    mint_rs(H_RS, claims("u", NOW + 60), t);
    expect_refused(g.v_es, t, "algorithm not accepted");
    /* An RSA signature under an ES256 header for the RSA verifier. */
    mint_with(SIG_RS, g.rsa, 0, H_ES, claims("u", NOW + 60), t);
    expect_refused(g.v_rs, t, "algorithm not accepted");
}

static void test_crit_refused(void **state)
{
    (void)state;
    char t[TOK_CAP];
    mint_hs("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", claims("u", NOW + 60), t);
    expect_refused(g.v_hs, t, "unsupported critical header");
    mint_hs("{\"alg\":\"HS256\",\"crit\":[]}", claims("u", NOW + 60), t);
    expect_refused(g.v_hs, t, "unsupported critical header");
    mint_rs("{\"alg\":\"RS256\",\"crit\":[\"b64\"],\"b64\":false}", claims("u", NOW + 60), t);
    expect_refused(g.v_rs, t, "unsupported critical header");
    mint_es("{\"crit\":null,\"alg\":\"ES256\"}", claims("u", NOW + 60), t);
    expect_refused(g.v_es, t, "unsupported critical header");
}

/* ---- time claims ------------------------------------------------------- */

static void test_exp_required(void **state)
{
    (void)state;
    char t[TOK_CAP];
    mint_hs(H_HS, "{\"sub\":\"u\"}", t);
    expect_refused(g.v_hs, t, "exp is required");
    mint_hs(H_HS, "{\"sub\":\"u\",\"nbf\":1699999000,\"iat\":1699999000}", t);
    expect_refused(g.v_hs, t, "exp is required");
    mint_hs(H_HS, "{\"sub\":\"u\",\"EXP\":1700000060}", t);
    expect_refused(g.v_hs, t, "exp is required");
}

static void test_time_claims_must_be_numbers(void **state)
{
    (void)state;
    char t[TOK_CAP];
    const char *payloads[] = {
        "{\"sub\":\"u\",\"exp\":\"1700000060\"}",
        "{\"sub\":\"u\",\"exp\":null}",
        "{\"sub\":\"u\",\"exp\":true}",
        "{\"sub\":\"u\",\"exp\":-1}",
        "{\"sub\":\"u\",\"exp\":1e13}",
        "{\"sub\":\"u\",\"exp\":1e999}",
        "{\"sub\":\"u\",\"exp\":[1700000060]}",
        "{\"sub\":\"u\",\"exp\":1700000060,\"nbf\":\"0\"}",
        "{\"sub\":\"u\",\"exp\":1700000060,\"nbf\":-5}",
        "{\"sub\":\"u\",\"exp\":1700000060,\"iat\":{}}",
        "{\"sub\":\"u\",\"exp\":1700000060,\"iat\":null}",
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        mint_hs(H_HS, payloads[i], t);
        expect_refused(g.v_hs, t, "exp, nbf and iat must be numbers (seconds)");
    }
}

static void test_expiry_and_leeway(void **state)
{
    (void)state;
    char t[TOK_CAP];
    int64_t exp = NOW - 100;
    mint_hs(H_HS, claims("u", exp), t);
    /* Leeway 60: accepted up to exp + 60 inclusive. */
    expect_ok_at(g.v_hs, t, exp, "u", exp);
    expect_ok_at(g.v_hs, t, exp + 1, "u", exp);
    expect_ok_at(g.v_hs, t, exp + LEEWAY, "u", exp);
    expect_refused_at(g.v_hs, t, exp + LEEWAY + 1, "token expired");
    expect_refused_at(g.v_hs, t, NOW, "token expired");
    /* Leeway 0. */
    expect_ok_at(g.v_hs0, t, exp, "u", exp);
    expect_refused_at(g.v_hs0, t, exp + 1, "token expired");
    /* exp 0 is a number, long expired. */
    mint_hs(H_HS, claims("u", 0), t);
    expect_refused(g.v_hs, t, "token expired");
    /* Fractional exp is truncated to whole seconds. */
    mint_hs(H_HS, "{\"sub\":\"u\",\"exp\":1700000000.9}", t);
    expect_ok_at(g.v_hs0, t, NOW, "u", NOW);
    expect_refused_at(g.v_hs0, t, NOW + 1, "token expired");
}

static void test_nbf_in_future(void **state)
{
    (void)state;
    char t[TOK_CAP], p[256];
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)(NOW + 3600),
             (long long)(NOW + LEEWAY + 1));
    mint_hs(H_HS, p, t);
    expect_refused(g.v_hs, t, "token not valid yet");
    expect_ok_at(g.v_hs, t, NOW + 1, "u", NOW + 3600);
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)(NOW + 3600),
             (long long)(NOW + LEEWAY));
    mint_hs(H_HS, p, t);
    expect_ok(g.v_hs, t, "u", NOW + 3600);
    expect_refused(g.v_hs0, t, "token not valid yet");
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", (long long)(NOW + 3600),
             (long long)(NOW + 86400));
    mint_rs(H_RS, p, t);
    expect_refused(g.v_rs, t, "token not valid yet");
}

static void test_iat_in_future(void **state)
{
    (void)state;
    char t[TOK_CAP], p[256];
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"iat\":%lld}", (long long)(NOW + 3600),
             (long long)(NOW + LEEWAY + 1));
    mint_hs(H_HS, p, t);
    expect_refused(g.v_hs, t, "token issued in the future");
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"iat\":%lld}", (long long)(NOW + 3600),
             (long long)(NOW + 7200));
    mint_es(H_ES, p, t);
    expect_refused(g.v_es, t, "token issued in the future");
    /* Within the leeway (clock skew) it passes; without leeway it does not. */
    snprintf(p, sizeof p, "{\"sub\":\"u\",\"exp\":%lld,\"iat\":%lld}", (long long)(NOW + 3600),
             (long long)(NOW + 30));
    mint_hs(H_HS, p, t);
    expect_ok(g.v_hs, t, "u", NOW + 3600);
    expect_refused(g.v_hs0, t, "token issued in the future");
}

/* ---- sub --------------------------------------------------------------- */

static void test_sub_invalid(void **state)
{
    (void)state;
    char t[TOK_CAP], p[512], long_sub[CP_CHANNEL_ID_MAX + 2];
    memset(long_sub, 'x', CP_CHANNEL_ID_MAX + 1);
    long_sub[CP_CHANNEL_ID_MAX + 1] = '\0';
    const char *subs[] = {"a/b", "#", "+", "a b", "", "caf\xc3\xa9", "a\\u0000b", "a\\nb",
                          long_sub};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(p, sizeof p, "{\"sub\":\"%s\",\"exp\":%lld}", subs[i], (long long)(NOW + 60));
        mint_hs(H_HS, p, t);
        const char *want = "sub must be a valid channel id";
        /* \u0000 is refused by the strict JSON parser itself. */
        if (strstr(subs[i], "\\u0000"))
            want = "malformed token claims";
        expect_refused(g.v_hs, t, want);
    }
    const char *payloads[] = {
        "{\"exp\":1700000060}",
        "{\"sub\":42,\"exp\":1700000060}",
        "{\"sub\":null,\"exp\":1700000060}",
        "{\"sub\":true,\"exp\":1700000060}",
        "{\"sub\":[\"u\"],\"exp\":1700000060}",
        "{\"sub\":{\"id\":\"u\"},\"exp\":1700000060}",
        "{\"SUB\":\"u\",\"exp\":1700000060}",
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        mint_hs(H_HS, payloads[i], t);
        expect_refused(g.v_hs, t, "sub must be a valid channel id");
    }
    mint_rs(H_RS, claims("a/b", NOW + 60), t);
    expect_refused(g.v_rs, t, "sub must be a valid channel id");
    mint_es(H_ES, claims("#", NOW + 60), t);
    expect_refused(g.v_es, t, "sub must be a valid channel id");
}

/* ---- malformed --------------------------------------------------------- */

static void test_malformed_parts(void **state)
{
    (void)state;
    char good[TOK_CAP], t[TOK_CAP];
    size_t n = mint_hs(H_HS, claims("u", NOW + 60), good);
    size_t hs, hl, ps, pl, ss, sl;
    part_span(good, 0, &hs, &hl);
    part_span(good, 1, &ps, &pl);
    part_span(good, 2, &ss, &sl);

    expect_refused_n(g.v_hs, good, 0, NOW, "malformed token");
    expect_refused(g.v_hs, "", "malformed token");
    expect_refused(g.v_hs, ".", "malformed token");
    expect_refused(g.v_hs, "..", "malformed token");
    expect_refused(g.v_hs, "...", "malformed token");
    expect_refused(g.v_hs, "abc", "malformed token");

    /* Two parts: header.payload, and header.payload with the signature
     * glued on without the dot. */
    snprintf(t, sizeof t, "%.*s", (int)(ps + pl), good);
    expect_refused(g.v_hs, t, "malformed token");
    snprintf(t, sizeof t, "%.*s%s", (int)(ps + pl), good, good + ss);
    expect_refused(g.v_hs, t, "malformed token");
    /* Four parts. */
    concat(t, good, ".", NULL);
    expect_refused(g.v_hs, t, "malformed token");
    concat(t, good, ".", good + ss);
    expect_refused(g.v_hs, t, "malformed token");
    snprintf(t, sizeof t, "%.*s.%s", (int)(ps + pl), good, good + ps);
    expect_refused(g.v_hs, t, "malformed token");
    /* Empty header / payload / signature. */
    snprintf(t, sizeof t, "%s", good + hl);
    expect_refused(g.v_hs, t, "malformed token");
    snprintf(t, sizeof t, "%.*s.%s", (int)(hl + 1), good, good + ss);
    expect_refused(g.v_hs, t, "malformed token");
    snprintf(t, sizeof t, "%.*s.", (int)(ps + pl), good);
    expect_refused(g.v_hs, t, "malformed token");

    /* Characters outside base64url, in each part. */
    const char bad_chars[] = {'+', '/', '=', ' ', '\n', '*', '\0'};
    size_t starts[] = {hs, ps, ss}, lens[] = {hl, pl, sl};
    for (int part = 0; part < 3; part++) {
        for (size_t k = 0; k < sizeof bad_chars; k++) {
            memcpy(t, good, n + 1);
            t[starts[part] + lens[part] / 2] = bad_chars[k];
            expect_refused_n(g.v_hs, t, n, NOW, "malformed token");
        }
    }
    /* '=' padding on the signature (43 → 44 characters) and on the
     * header. */
    assert_int_equal(sl, 43);
    concat(t, good, "=", NULL);
    expect_refused(g.v_hs, t, "malformed token");
    snprintf(t, sizeof t, "%.*s=%s", (int)hl, good, good + hl);
    expect_refused(g.v_hs, t, "malformed token");
    /* Standard base64 for the signature where it differs from base64url. */
    int changed = 0;
    memcpy(t, good, n + 1);
    for (size_t i = ss; i < n; i++) {
        if (t[i] == '-' || t[i] == '_') {
            t[i] = t[i] == '-' ? '+' : '/';
            changed = 1;
        }
    }
    if (changed)
        expect_refused(g.v_hs, t, "malformed token");
    /* A part whose length is 1 mod 4 cannot be base64. */
    concat(t, good, "A", NULL);
    assert_int_equal((sl + 1) % 4, 0);
    expect_refused(g.v_hs, t, NULL);
    snprintf(t, sizeof t, "%s", good);
    t[n - 2] = '\0'; /* 41 characters: 1 mod 4 */
    expect_refused(g.v_hs, t, "malformed token");
    /* A NUL byte inside the token. */
    memcpy(t, good, n + 1);
    t[ps + 2] = '\0';
    expect_refused_n(g.v_hs, t, n, NOW, "malformed token");
}

static void test_malformed_json(void **state)
{
    (void)state;
    char t[TOK_CAP];
    /* Header: not JSON, not an object, trailing garbage, two values. */
    const char *headers[] = {
        "not json",
        "[\"alg\",\"HS256\"]",
        "\"HS256\"",
        "42",
        "{\"alg\":\"HS256\"} x",
        "{\"alg\":\"HS256\"}{}",
        "{\"alg\":\"HS256\"",
        "{\"alg\":\"HS256\",}",
        "{\"alg\":\"HS\\u0000256\"}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        mint_hs(headers[i], claims("u", NOW + 60), t);
        expect_refused(g.v_hs, t, "malformed token header");
    }
    /* Trailing white space after the header object is fine. */
    mint_hs("{\"alg\":\"HS256\"}\n ", claims("u", NOW + 60), t);
    expect_ok(g.v_hs, t, "u", NOW + 60);

    /* Payload (correctly signed): not JSON, not an object, trailing
     * garbage. */
    const char *payloads[] = {
        "not json",
        "[\"sub\",\"u\"]",
        "\"u\"",
        "null",
        "{\"sub\":\"u\",\"exp\":1700000060} x",
        "{\"sub\":\"u\",\"exp\":1700000060}{}",
        "{\"sub\":\"u\",\"exp\":1700000060}\"",
        "{\"sub\":\"u\",\"exp\":1700000060",
        "{\"sub\":\"u\",\"exp\":1700000060,}",
        "{\"sub\":\"u\xff\",\"exp\":1700000060}",
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        mint_hs(H_HS, payloads[i], t);
        expect_refused(g.v_hs, t, "malformed token claims");
        mint_es(H_ES, payloads[i], t);
        expect_refused(g.v_es, t, "malformed token claims");
    }
    mint_hs(H_HS, "{\"sub\":\"u\",\"exp\":1700000060}\r\n\t ", t);
    expect_ok(g.v_hs, t, "u", NOW + 60);
}

/* Builds a valid HS256 token of exactly `want` characters by padding a
 * claim and the header's white space. */
static void mint_hs_exact(size_t want, char *t)
{
    char *p = malloc(TOK_CAP), *h = malloc(64);
    assert_non_null(p);
    assert_non_null(h);
    for (size_t pad = 0; pad < 4000; pad++) {
        for (int sp = 0; sp < 3; sp++) {
            snprintf(h, 64, "{\"alg\":\"HS256\"%*s}", sp, "");
            int m = snprintf(p, TOK_CAP, "{\"sub\":\"u\",\"exp\":1700000060,\"pad\":\"");
            memset(p + m, 'p', pad);
            snprintf(p + m + pad, TOK_CAP - (size_t)m - pad, "\"}");
            if (mint_hs(h, p, t) == want) {
                free(p);
                free(h);
                return;
            }
        }
    }
    fail_msg("cannot build a token of %zu characters", want);
}

static void test_length_limit(void **state)
{
    (void)state;
    char *t = malloc(TOK_CAP);
    assert_non_null(t);
    mint_hs_exact(CP_JWT_MAX, t);
    assert_int_equal(strlen(t), CP_JWT_MAX);
    expect_ok(g.v_hs, t, "u", NOW + 60);
    mint_hs_exact(CP_JWT_MAX + 1, t);
    assert_int_equal(strlen(t), CP_JWT_MAX + 1);
    expect_refused(g.v_hs, t, "malformed token");
    mint_hs_exact(CP_JWT_MAX + 100, t);
    expect_refused(g.v_hs, t, "malformed token");
    /* The length argument is what counts: the first CP_JWT_MAX bytes of a
     * longer buffer holding a valid token plus junk. */
    mint_hs_exact(CP_JWT_MAX, t);
    memset(t + CP_JWT_MAX, 'A', 10);
    t[CP_JWT_MAX + 10] = '\0';
    cp_jwt_claims c;
    const char *why = NULL;
    assert_int_equal(cp_jwt_verify(g.v_hs, t, CP_JWT_MAX, NOW, &c, &why), 0);
    assert_string_equal(c.sub, "u");
    free(t);
}

/* ---- verifier creation ------------------------------------------------- */

static void expect_new_fails(const char *secret, const char *pem, const char *want_err)
{
    char err[512];
    memset(err, 0, sizeof err);
    cp_jwt_verifier *v = cp_jwt_verifier_new(secret, pem, LEEWAY, err, sizeof err);
    if (v) {
        cp_jwt_verifier_free(v);
        fail_msg("verifier created, expected \"%s\"", want_err);
    }
    assert_string_equal(err, want_err);
}

static void test_verifier_new_errors(void **state)
{
    (void)state;
    char want[512];
    expect_new_fails(NULL, NULL, "no JWT secret or public key configured");
    expect_new_fails("", "", "no JWT secret or public key configured");
    expect_new_fails("", NULL, "no JWT secret or public key configured");
    expect_new_fails("0123456789abcdef0123456789abcde", NULL,
                     "the HS256 secret must be at least 32 bytes");
    expect_new_fails("x", g.rsa_pem, "the HS256 secret must be at least 32 bytes");

    snprintf(want, sizeof want, "cannot open %s", g.missing);
    expect_new_fails(NULL, g.missing, want);
    expect_new_fails(SECRET, g.missing, want); /* the secret is freed */
    /* A directory opens with fopen "r" on Linux but is no PEM key. */
    snprintf(want, sizeof want, "%s is not a PEM public key", g.dir);
    expect_new_fails(NULL, g.dir, want);

    snprintf(want, sizeof want, "%s is not a PEM public key", g.not_pem);
    expect_new_fails(NULL, g.not_pem, want);

    snprintf(want, sizeof want, "%s: ES256 needs a P-256 key, got secp384r1", g.p384_pem);
    expect_new_fails(NULL, g.p384_pem, want);
    expect_new_fails(SECRET, g.p384_pem, want);

    snprintf(want, sizeof want, "%s: RS256 needs an RSA key of 2048 bits or more",
             g.rsa1024_pem);
    expect_new_fails(NULL, g.rsa1024_pem, want);

    snprintf(want, sizeof want, "%s: RS256 needs an RSA key of 2048 bits or more",
             g.ed25519_pem);
    expect_new_fails(NULL, g.ed25519_pem, want);

    cp_jwt_verifier_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_hs256),
        cmocka_unit_test(test_valid_rs256),
        cmocka_unit_test(test_valid_es256),
        cmocka_unit_test(test_sub_128_accepted),
        cmocka_unit_test(test_bad_signature_hs256),
        cmocka_unit_test(test_bad_signature_rs256),
        cmocka_unit_test(test_bad_signature_es256),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_other_algs_refused),
        cmocka_unit_test(test_alg_confusion_hs256_with_public_key),
        cmocka_unit_test(test_rs256_against_hs_only),
        cmocka_unit_test(test_es256_against_rsa_key),
        cmocka_unit_test(test_crit_refused),
        cmocka_unit_test(test_exp_required),
        cmocka_unit_test(test_time_claims_must_be_numbers),
        cmocka_unit_test(test_expiry_and_leeway),
        cmocka_unit_test(test_nbf_in_future),
        cmocka_unit_test(test_iat_in_future),
        cmocka_unit_test(test_sub_invalid),
        cmocka_unit_test(test_noncanonical_signature_refused),
        cmocka_unit_test(test_malformed_parts),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_verifier_new_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
