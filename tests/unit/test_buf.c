/* Unit tests for common/buf.c: growable buffer, printf, JSON string
 * escaping and UTF-8 validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* Length-aware helpers so that byte strings with embedded NULs work. */
#define UTF8_OK(lit) assert_true(cp_utf8_valid(lit, sizeof(lit) - 1))
#define UTF8_BAD(lit) assert_false(cp_utf8_valid(lit, sizeof(lit) - 1))

static void test_init_is_empty(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.failed, 0);
    /* cstr on a never-used buffer allocates and returns an empty string. */
    assert_string_equal(cp_buf_cstr(&b), "");
    assert_int_equal(b.len, 0);
    cp_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_append_and_growth(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    char expect[10000];
    for (size_t i = 0; i < sizeof expect; i++) {
        char c = (char)('a' + (i % 26));
        expect[i] = c;
        cp_buf_putc(&b, c);
        assert_int_equal(b.len, i + 1);
        /* There is always room for the terminator. */
        assert_true(b.cap >= b.len + 1);
    }
    assert_int_equal(b.failed, 0);
    assert_memory_equal(b.data, expect, sizeof expect);
    /* Capacity starts at 256 and doubles. */
    assert_int_equal(b.cap, 16384);
    const char *s = cp_buf_cstr(&b);
    assert_int_equal(strlen(s), sizeof expect);
    assert_int_equal(b.len, sizeof expect);

    /* reset keeps the storage, so later appends do not reallocate. */
    char *old = b.data;
    size_t old_cap = b.cap;
    cp_buf_reset(&b);
    assert_int_equal(b.len, 0);
    cp_buf_append(&b, expect, 5000);
    assert_ptr_equal(b.data, old);
    assert_int_equal(b.cap, old_cap);
    assert_memory_equal(b.data, expect, 5000);
    cp_buf_free(&b);
}

static void test_first_reserve_is_256(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    assert_int_equal(cp_buf_reserve(&b, 1), 0);
    assert_int_equal(b.cap, 256);
    assert_int_equal(cp_buf_reserve(&b, 255), 0); /* 255 + NUL fits */
    assert_int_equal(b.cap, 256);
    assert_int_equal(cp_buf_reserve(&b, 256), 0);
    assert_int_equal(b.cap, 512);
    assert_int_equal(cp_buf_reserve(&b, 5000), 0);
    assert_int_equal(b.cap, 8192);
    cp_buf_free(&b);
}

static void test_puts_append_binary(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "hello");
    cp_buf_putc(&b, ' ');
    cp_buf_append(&b, "wor\0ld", 6);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "hello wor\0ld", 12);
    cp_buf_puts(&b, "");
    cp_buf_append(&b, "", 0);
    assert_int_equal(b.len, 12);
    cp_buf_free(&b);
}

static void test_printf_short_and_long(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_printf(&b, "%d-%s-%lld", 42, "x", -7LL);
    assert_string_equal(cp_buf_cstr(&b), "42-x--7");

    /* Longer than the 256-byte stack buffer: formatted a second time
     * directly into the buffer. */
    char big[1001];
    memset(big, 'Q', 1000);
    big[1000] = '\0';
    cp_buf_printf(&b, "[%s]", big);
    assert_int_equal(b.len, 7 + 1002);
    const char *s = cp_buf_cstr(&b);
    assert_memory_equal(s, "42-x--7[", 8);
    assert_memory_equal(s + 8, big, 1000);
    assert_string_equal(s + 1008, "]");

    /* Exactly 255 and 256 characters: the boundary of the small path. */
    cp_buf_reset(&b);
    cp_buf_printf(&b, "%.*s", 255, big);
    assert_int_equal(b.len, 255);
    cp_buf_printf(&b, "%.*s", 256, big);
    assert_int_equal(b.len, 511);
    s = cp_buf_cstr(&b);
    assert_int_equal(strlen(s), 511);
    for (size_t i = 0; i < 511; i++)
        assert_int_equal(s[i], 'Q');

    /* Empty output appends nothing. */
    cp_buf_printf(&b, "%s", "");
    assert_int_equal(b.len, 511);
    cp_buf_free(&b);
}

static void json(cp_buf *b, const char *s, size_t len)
{
    cp_buf_reset(b);
    cp_buf_json_string(b, s, len);
    cp_buf_cstr(b);
}
#define JSON_IS(b, lit, expect)                                                                   \
    do {                                                                                          \
        json(b, lit, sizeof(lit) - 1);                                                            \
        assert_string_equal((b)->data, expect);                                                   \
        assert_true(cp_utf8_valid((b)->data, (b)->len));                                          \
    } while (0)

static void test_json_string_escapes(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    JSON_IS(&b, "", "\"\"");
    JSON_IS(&b, "plain text", "\"plain text\"");
    JSON_IS(&b, "a\"b", "\"a\\\"b\"");
    JSON_IS(&b, "a\\b", "\"a\\\\b\"");
    JSON_IS(&b, "\n\r\t", "\"\\n\\r\\t\"");
    JSON_IS(&b, "\b\f", "\"\\u0008\\u000c\"");
    JSON_IS(&b, "\x01\x1f", "\"\\u0001\\u001f\"");
    JSON_IS(&b, "a\0b", "\"a\\u0000b\"");
    /* DEL and '/' need no escaping. */
    JSON_IS(&b, "\x7f/", "\"\x7f/\"");
    /* Valid multi-byte UTF-8 is copied as is. */
    JSON_IS(&b, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    cp_buf_free(&b);
}

static void test_json_string_invalid_utf8(void **state)
{
    (void)state;
    cp_buf b;
    cp_buf_init(&b);
    JSON_IS(&b, "\xff", "\"\\ufffd\"");
    JSON_IS(&b, "a\xfe" "b", "\"a\\ufffdb\"");
    /* Lone continuation byte. */
    JSON_IS(&b, "\x80", "\"\\ufffd\"");
    /* Overlong NUL: each byte replaced. */
    JSON_IS(&b, "\xc0\x80", "\"\\ufffd\\ufffd\"");
    /* Surrogate U+D800 encoded in UTF-8. */
    JSON_IS(&b, "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
    /* Truncated sequence at the end of the string. */
    JSON_IS(&b, "ok\xe2\x82", "\"ok\\ufffd\\ufffd\"");
    /* Bad continuation: the lead byte is replaced, the ASCII kept. */
    JSON_IS(&b, "\xc3(", "\"\\ufffd(\"");
    /* Mixed with valid sequences and escapes. */
    JSON_IS(&b, "\xc3\xa9\xff\"", "\"\xc3\xa9\\ufffd\\\"\"");
    /* Beyond U+10FFFF. */
    JSON_IS(&b, "\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    cp_buf_free(&b);
}

static void test_json_string_long(void **state)
{
    (void)state;
    /* A string longer than the first allocation, full of escapes, so the
     * output grows well past the len + 2 reserved up front. */
    char in[600];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (i % 2) ? '"' : '\x01';
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "prefix:");
    cp_buf_json_string(&b, in, sizeof in);
    assert_int_equal(b.failed, 0);
    assert_int_equal(b.len, 7 + 2 + 300 * 6 + 300 * 2);
    const char *s = cp_buf_cstr(&b);
    assert_memory_equal(s, "prefix:\"\\u0001\\\"\\u0001", 22);
    assert_int_equal(s[b.len - 1], '"');
    cp_buf_free(&b);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(cp_utf8_valid("", 0));
    assert_true(cp_utf8_valid(NULL, 0));
    UTF8_OK("plain ASCII \x01\x7f");
    UTF8_OK("a\0b");                /* NUL is a valid code point */
    UTF8_OK("\xc2\x80");            /* U+0080, smallest 2-byte */
    UTF8_OK("\xc3\xa9");            /* U+00E9 */
    UTF8_OK("\xdf\xbf");            /* U+07FF, largest 2-byte */
    UTF8_OK("\xe0\xa0\x80");        /* U+0800, smallest 3-byte */
    UTF8_OK("\xe2\x82\xac");        /* U+20AC */
    UTF8_OK("\xed\x9f\xbf");        /* U+D7FF, just below surrogates */
    UTF8_OK("\xee\x80\x80");        /* U+E000, just above surrogates */
    UTF8_OK("\xef\xbf\xbf");        /* U+FFFF */
    UTF8_OK("\xf0\x90\x80\x80");    /* U+10000, smallest 4-byte */
    UTF8_OK("\xf0\x9f\x98\x80");    /* U+1F600 */
    UTF8_OK("\xf4\x8f\xbf\xbf");    /* U+10FFFF, largest */
    UTF8_OK("x\xc3\xa9y\xe2\x82\xacz\xf0\x9f\x98\x80");
}

static void test_utf8_invalid(void **state)
{
    (void)state;
    /* Lone continuation bytes and bytes that never appear. */
    UTF8_BAD("\x80");
    UTF8_BAD("\xbf");
    UTF8_BAD("\xfe");
    UTF8_BAD("\xff");
    UTF8_BAD("\xf5\x80\x80\x80");
    UTF8_BAD("\xf8\x88\x80\x80\x80"); /* old 5-byte form */
    /* Overlong forms. */
    UTF8_BAD("\xc0\x80");
    UTF8_BAD("\xc0\xaf");
    UTF8_BAD("\xc1\xbf");
    UTF8_BAD("\xe0\x80\x80");
    UTF8_BAD("\xe0\x9f\xbf");
    UTF8_BAD("\xf0\x80\x80\x80");
    UTF8_BAD("\xf0\x8f\xbf\xbf");
    /* UTF-16 surrogates. */
    UTF8_BAD("\xed\xa0\x80"); /* U+D800 */
    UTF8_BAD("\xed\xaf\xbf"); /* U+DBFF */
    UTF8_BAD("\xed\xb0\x80"); /* U+DC00 */
    UTF8_BAD("\xed\xbf\xbf"); /* U+DFFF */
    UTF8_BAD("\xed\xa0\xbd\xed\xb8\x80"); /* CESU-8 pair */
    /* Above U+10FFFF. */
    UTF8_BAD("\xf4\x90\x80\x80");
    UTF8_BAD("\xf7\xbf\xbf\xbf");
    /* Truncated sequences. */
    UTF8_BAD("\xc3");
    UTF8_BAD("\xe2\x82");
    UTF8_BAD("\xf0\x9f\x98");
    UTF8_BAD("abc\xf0\x9f");
    /* Bad continuation bytes. */
    UTF8_BAD("\xc3\x28");
    UTF8_BAD("\xe2\x28\xa1");
    UTF8_BAD("\xe2\x82\x28");
    UTF8_BAD("\xf0\x9f\x98\x28");
    UTF8_BAD("\xc3\xc3\xa9");
    /* Valid text followed by one bad byte. */
    UTF8_BAD("hello \xc3\xa9 world\xff");
}

static void test_utf8_respects_len(void **state)
{
    (void)state;
    const char *s = "ab\xe2\x82\xac";
    assert_true(cp_utf8_valid(s, 5));
    assert_false(cp_utf8_valid(s, 4)); /* cut inside the euro sign */
    assert_false(cp_utf8_valid(s, 3));
    assert_true(cp_utf8_valid(s, 2));
    /* Bytes after len are never looked at. */
    assert_true(cp_utf8_valid("ok\xff", 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_empty),
        cmocka_unit_test(test_append_and_growth),
        cmocka_unit_test(test_first_reserve_is_256),
        cmocka_unit_test(test_puts_append_binary),
        cmocka_unit_test(test_printf_short_and_long),
        cmocka_unit_test(test_json_string_escapes),
        cmocka_unit_test(test_json_string_invalid_utf8),
        cmocka_unit_test(test_json_string_long),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_utf8_respects_len),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
