/* Unit tests for common/commalist.c: the comma-separated option values
 * (--trusted-proxies, --api-keys, --console-bridges). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "commalist.h"

/* Joins the items of list with '|' into out. */
static const char *walk(const char *list, char *out, size_t cap)
{
    out[0] = '\0';
    const char *item;
    size_t len, used = 0;
    for (const char *p = list; cp_comma_next(&p, &item, &len);)
        used += (size_t)snprintf(out + used, cap - used, "%s%.*s", used ? "|" : "", (int)len,
                                 item);
    return out;
}

static void test_items_in_order(void **state)
{
    (void)state;
    char out[128];
    assert_string_equal(walk("a,bb,ccc", out, sizeof out), "a|bb|ccc");
    assert_string_equal(walk("one", out, sizeof out), "one");
}

static void test_empty_items_are_skipped(void **state)
{
    (void)state;
    char out[128];
    assert_string_equal(walk(",a,,b,", out, sizeof out), "a|b");
    assert_string_equal(walk(",,,", out, sizeof out), "");
    assert_string_equal(walk("", out, sizeof out), "");
    assert_string_equal(walk(NULL, out, sizeof out), "");
}

static void test_items_are_not_trimmed(void **state)
{
    (void)state;
    char out[128];
    assert_string_equal(walk(" a , b", out, sizeof out), " a | b");
}

static void test_end_is_sticky(void **state)
{
    (void)state;
    const char *p = "x";
    const char *item = NULL;
    size_t len = 0;
    assert_int_equal(cp_comma_next(&p, &item, &len), 1);
    assert_int_equal(len, 1);
    assert_memory_equal(item, "x", 1);
    assert_int_equal(cp_comma_next(&p, &item, &len), 0);
    assert_int_equal(cp_comma_next(&p, &item, &len), 0);
}

static void test_has_token(void **state)
{
    (void)state;
    const char *v = " keep-alive ,\tUpgrade,h2c";
    assert_true(cp_comma_has_token(v, strlen(v), "upgrade"));
    assert_true(cp_comma_has_token(v, strlen(v), "Keep-Alive"));
    assert_true(cp_comma_has_token(v, strlen(v), "h2c"));
    assert_false(cp_comma_has_token(v, strlen(v), "keep"));
    assert_false(cp_comma_has_token(v, strlen(v), "h2"));
    assert_false(cp_comma_has_token(v, 10, "keep-alive")); /* cut before the item ends */
    assert_true(cp_comma_has_token(v, 11, "keep-alive"));
    assert_false(cp_comma_has_token("", 0, "x"));
    assert_false(cp_comma_has_token(",, ,", 4, "x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_items_in_order),
        cmocka_unit_test(test_empty_items_are_skipped),
        cmocka_unit_test(test_items_are_not_trimmed),
        cmocka_unit_test(test_end_is_sticky),
        cmocka_unit_test(test_has_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
