/* Unit tests for common/ids.c: message ids, UUIDs, channel id validation
 * and session id formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ids.h"

static int is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

static void test_message_id_shape(void **state)
{
    (void)state;
    for (int round = 0; round < 100; round++) {
        char id[CP_MESSAGE_ID_LEN + 1];
        memset(id, 'X', sizeof id);
        cp_message_id(id);
        assert_int_equal(strlen(id), 32);
        for (int i = 0; i < 32; i++)
            assert_true(is_lower_hex(id[i]));
    }
}

static void test_message_ids_differ(void **state)
{
    (void)state;
    enum { N = 1000 };
    static char ids[N][CP_MESSAGE_ID_LEN + 1];
    for (int i = 0; i < N; i++)
        cp_message_id(ids[i]);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(ids[i], ids[j]);
}

static void *other_thread_id(void *arg)
{
    cp_message_id(arg);
    return NULL;
}

static void test_message_id_per_thread_generators_differ(void **state)
{
    (void)state;
    /* Each thread seeds its own generator: two threads must not produce
     * the same first id. */
    char a[CP_MESSAGE_ID_LEN + 1], b[CP_MESSAGE_ID_LEN + 1];
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, other_thread_id, a), 0);
    assert_int_equal(pthread_create(&t2, NULL, other_thread_id, b), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(strlen(a), 32);
    assert_string_not_equal(a, b);
}

static void test_uuid_format(void **state)
{
    (void)state;
    char prev[37] = "";
    for (int round = 0; round < 200; round++) {
        char u[37];
        memset(u, 'X', sizeof u);
        cp_uuid_dashed(u);
        assert_int_equal(strlen(u), 36);
        for (int i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23)
                assert_int_equal(u[i], '-');
            else
                assert_true(is_lower_hex(u[i]));
        }
        assert_int_equal(u[14], '4');                  /* version nibble */
        assert_non_null(strchr("89ab", u[19]));         /* RFC 4122 variant */
        assert_string_not_equal(u, prev);
        memcpy(prev, u, sizeof u);
    }
}

static void test_random_u64_varies(void **state)
{
    (void)state;
    uint64_t a = cp_random_u64(), b = cp_random_u64(), c = cp_random_u64();
    assert_true(a != b || b != c);
    /* Over many draws every bit position is seen both set and clear. */
    uint64_t ored = 0, anded = ~(uint64_t)0;
    for (int i = 0; i < 256; i++) {
        uint64_t v = cp_random_u64();
        ored |= v;
        anded &= v;
    }
    assert_true(ored == ~(uint64_t)0);
    assert_true(anded == 0);
}

#define CH_OK(lit) assert_true(cp_channel_id_valid(lit, sizeof(lit) - 1))
#define CH_BAD(lit) assert_false(cp_channel_id_valid(lit, sizeof(lit) - 1))

static void test_channel_id_valid_accepts(void **state)
{
    (void)state;
    CH_OK("a");
    CH_OK("Z");
    CH_OK("0");
    CH_OK("-");
    CH_OK("device-42");
    CH_OK("user@example.com");
    CH_OK("urn:dev:ABC_123.x");
    CH_OK("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-");

    char s[CP_CHANNEL_ID_MAX + 1];
    memset(s, 'c', sizeof s);
    assert_true(cp_channel_id_valid(s, 128));
    assert_true(cp_channel_id_valid(s, 1));
    /* Only len bytes are looked at: the string need not be terminated. */
    assert_true(cp_channel_id_valid("ab/c", 2));
}

static void test_channel_id_valid_rejects(void **state)
{
    (void)state;
    assert_false(cp_channel_id_valid("", 0));
    assert_false(cp_channel_id_valid(NULL, 0));
    assert_false(cp_channel_id_valid(NULL, 5));
    char s[CP_CHANNEL_ID_MAX + 2];
    memset(s, 'c', sizeof s);
    assert_false(cp_channel_id_valid(s, 129));
    assert_false(cp_channel_id_valid(s, 1000));

    CH_BAD("a/b");
    CH_BAD("/");
    CH_BAD("a+");
    CH_BAD("+");
    CH_BAD("#");
    CH_BAD("a#b");
    CH_BAD("a b");
    CH_BAD(" ");
    CH_BAD("a\tb");
    CH_BAD("a\nb");
    CH_BAD("a\0b");      /* NUL inside */
    CH_BAD("ab\0");      /* NUL at the end, counted in len */
    CH_BAD("caf\xc3\xa9"); /* non-ASCII (valid UTF-8) */
    CH_BAD("\xff");
    CH_BAD("a\"b");
    CH_BAD("a\\b");
    CH_BAD("a,b");
    CH_BAD("a$b");
    CH_BAD("a*b");
    CH_BAD("a%b");
}

/* Session ids contain local time: pin the zone so the digits are known. */
static int set_utc(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    return 0;
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static void test_session_id_exact(void **state)
{
    (void)state;
    char out[128];
    /* 1700000000 = 2023-11-14 22:13:20 UTC */
    int n = cp_session_id_format(out, sizeof out, "bridge1", "dev-7", 1700000000, 0x1f);
    assert_string_equal(out, "bridge1_dev-7_20231114221320-000000001f");
    assert_int_equal(n, (int)strlen(out));

    n = cp_session_id_format(out, sizeof out, "b", "c", 0, 0);
    assert_string_equal(out, "b_c_19700101000000-0000000000");
    assert_int_equal(n, 29);

    n = cp_session_id_format(out, sizeof out, "b", "c", 1700000000, UINT64_MAX);
    assert_string_equal(out, "b_c_20231114221320-ffffffffffffffff");
    assert_int_equal(n, (int)strlen(out));
}

static void test_session_id_shape(void **state)
{
    (void)state;
    char out[256];
    int n = cp_session_id_format(out, sizeof out, "br-x", "user@example.com", time(NULL), 12345);
    assert_true(n > 0);
    assert_int_equal(n, (int)strlen(out));
    const char *p = out;
    assert_memory_equal(p, "br-x_", 5);
    p += 5;
    assert_memory_equal(p, "user@example.com_", 17);
    p += 17;
    assert_true(all_digits(p, 14));
    p += 14;
    assert_int_equal(*p, '-');
    p++;
    assert_string_equal(p, "0000003039"); /* 12345 in lowercase hex, 10 digits */
}

static void test_session_id_seq_makes_unique(void **state)
{
    (void)state;
    char a[128], b[128];
    time_t now = 1700000000;
    assert_true(cp_session_id_format(a, sizeof a, "b", "c", now, 1) > 0);
    assert_true(cp_session_id_format(b, sizeof b, "b", "c", now, 2) > 0);
    assert_string_not_equal(a, b);
    /* Same inputs give the same id. */
    assert_true(cp_session_id_format(b, sizeof b, "b", "c", now, 1) > 0);
    assert_string_equal(a, b);
}

static void test_session_id_too_small(void **state)
{
    (void)state;
    char out[64];
    const char *expect = "b_c_20231114221320-000000000a"; /* 29 chars */
    assert_int_equal(cp_session_id_format(out, 30, "b", "c", 1700000000, 10), 29);
    assert_string_equal(out, expect);
    assert_int_equal(cp_session_id_format(out, 29, "b", "c", 1700000000, 10), -1);
    assert_int_equal(cp_session_id_format(out, 5, "b", "c", 1700000000, 10), -1);
    assert_int_equal(cp_session_id_format(out, 1, "b", "c", 1700000000, 10), -1);
    /* Must not write past cap. */
    char guard[32];
    memset(guard, '#', sizeof guard);
    assert_int_equal(cp_session_id_format(guard, 8, "bridge", "chan", 1700000000, 10), -1);
    for (size_t i = 8; i < sizeof guard; i++)
        assert_int_equal(guard[i], '#');
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = cp_now_ms();
    /* Sometime after 2023 and before 2100. */
    assert_true(now > 1700000000000LL);
    assert_true(now < 4102444800000LL);
    int64_t a = cp_mono_ms();
    int64_t b = cp_mono_ms();
    assert_true(b >= a);
    assert_true(a >= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_id_shape),
        cmocka_unit_test(test_message_ids_differ),
        cmocka_unit_test(test_message_id_per_thread_generators_differ),
        cmocka_unit_test(test_uuid_format),
        cmocka_unit_test(test_random_u64_varies),
        cmocka_unit_test(test_channel_id_valid_accepts),
        cmocka_unit_test(test_channel_id_valid_rejects),
        cmocka_unit_test(test_session_id_exact),
        cmocka_unit_test(test_session_id_shape),
        cmocka_unit_test(test_session_id_seq_makes_unique),
        cmocka_unit_test(test_session_id_too_small),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests_name("ids", tests, set_utc, NULL);
}
