/* Unit tests for common/ratelimit.c: the token bucket shared by the
 * bridge's per-address and per-session limits and the HTTP API's per-key
 * limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ratelimit.h"

static void test_starts_full_then_refuses(void **state)
{
    (void)state;
    cp_bucket b;
    cp_bucket_init(&b, 3, 1000);
    assert_int_equal(cp_bucket_take(&b, 1, 3, 1000), 1);
    assert_int_equal(cp_bucket_take(&b, 1, 3, 1000), 1);
    assert_int_equal(cp_bucket_take(&b, 1, 3, 1000), 1);
    assert_int_equal(cp_bucket_take(&b, 1, 3, 1000), 0);
    assert_true(b.tokens >= 0.0 && b.tokens < 1.0);
}

static void test_refills_at_rate(void **state)
{
    (void)state;
    cp_bucket b;
    cp_bucket_init(&b, 1, 0);
    assert_int_equal(cp_bucket_take(&b, 10, 1, 0), 1);
    /* 10 a second: one token after 100 ms, not after 99. */
    assert_int_equal(cp_bucket_take(&b, 10, 1, 99), 0);
    assert_int_equal(cp_bucket_take(&b, 10, 1, 100), 1);
    assert_int_equal(b.at_ms, 100);
}

static void test_refill_is_capped_at_burst(void **state)
{
    (void)state;
    cp_bucket b;
    cp_bucket_init(&b, 2, 0);
    cp_bucket_refill(&b, 100, 2, 60000); /* a minute idle */
    assert_true(b.tokens == 2.0);
    assert_int_equal(cp_bucket_take(&b, 100, 2, 60000), 1);
    assert_int_equal(cp_bucket_take(&b, 100, 2, 60000), 1);
    assert_int_equal(cp_bucket_take(&b, 100, 2, 60000), 0);
}

static void test_refused_take_keeps_the_fraction(void **state)
{
    (void)state;
    cp_bucket b;
    cp_bucket_init(&b, 1, 0);
    assert_int_equal(cp_bucket_take(&b, 1, 1, 0), 1);
    /* Half a token accrues, a refusal keeps it: the next half completes it. */
    assert_int_equal(cp_bucket_take(&b, 1, 1, 500), 0);
    assert_true(b.tokens > 0.49 && b.tokens < 0.51);
    assert_int_equal(cp_bucket_take(&b, 1, 1, 1000), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starts_full_then_refuses),
        cmocka_unit_test(test_refills_at_rate),
        cmocka_unit_test(test_refill_is_capped_at_burst),
        cmocka_unit_test(test_refused_take_keeps_the_fraction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
