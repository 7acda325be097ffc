/* Unit tests for common/log.c: level parsing, filtering and line format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char captured[8192];

static FILE *capture_begin(int *saved)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    fflush(stderr);
    *saved = dup(STDERR_FILENO);
    assert_true(*saved >= 0);
    dup2(fileno(f), STDERR_FILENO);
    return f;
}

static void capture_end(FILE *f, int saved)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(f);
    size_t n = fread(captured, 1, sizeof captured - 1, f);
    captured[n] = '\0';
    fclose(f);
}

static void test_parse_level(void **state)
{
    (void)state;
    cp_log_level l = CP_LOG_INFO;
    assert_int_equal(cp_log_parse_level("error", &l), 0);
    assert_int_equal(l, CP_LOG_ERROR);
    assert_int_equal(cp_log_parse_level("WARN", &l), 0);
    assert_int_equal(l, CP_LOG_WARN);
    assert_int_equal(cp_log_parse_level("warning", &l), 0);
    assert_int_equal(l, CP_LOG_WARN);
    assert_int_equal(cp_log_parse_level("Info", &l), 0);
    assert_int_equal(l, CP_LOG_INFO);
    assert_int_equal(cp_log_parse_level("debug", &l), 0);
    assert_int_equal(l, CP_LOG_DEBUG);
    l = CP_LOG_INFO;
    assert_int_equal(cp_log_parse_level("", &l), -1);
    assert_int_equal(cp_log_parse_level("trace", &l), -1);
    assert_int_equal(cp_log_parse_level("debug ", &l), -1);
    assert_int_equal(cp_log_parse_level("3", &l), -1);
    assert_int_equal(l, CP_LOG_INFO);
}

static void test_levels(void **state)
{
    (void)state;
    cp_log_init("unit", CP_LOG_WARN);
    assert_int_equal(cp_log_get_level(), CP_LOG_WARN);
    assert_true(cp_log_enabled(CP_LOG_ERROR));
    assert_true(cp_log_enabled(CP_LOG_WARN));
    assert_false(cp_log_enabled(CP_LOG_INFO));
    assert_false(cp_log_enabled(CP_LOG_DEBUG));
    cp_log_set_level(CP_LOG_DEBUG);
    assert_true(cp_log_enabled(CP_LOG_DEBUG));
    cp_log_set_level(CP_LOG_ERROR);
    assert_false(cp_log_enabled(CP_LOG_WARN));
}

static void test_line_format(void **state)
{
    (void)state;
    cp_log_init("unit", CP_LOG_INFO);
    int saved;
    FILE *f = capture_begin(&saved);
    log_info("hello %d", 42);
    log_debug("not shown %d", 1);
    log_error("with trailing newlines\n\n");
    capture_end(f, saved);

    /* 2024-01-02T03:04:05.678Z unit INFO hello 42 */
    const char *l1 = captured;
    assert_true(strlen(l1) > 25);
    assert_int_equal(l1[4], '-');
    assert_int_equal(l1[10], 'T');
    assert_int_equal(l1[19], '.');
    assert_int_equal(l1[23], 'Z');
    const char *nl = strchr(l1, '\n');
    assert_non_null(nl);
    assert_memory_equal(l1 + 24, " unit INFO hello 42\n", 20);
    const char *l2 = nl + 1;
    assert_memory_equal(l2 + 23, "Z unit ERROR with trailing newlines\n", 36);
    assert_string_equal(l2 + 23 + 36, ""); /* one newline, nothing else */
}

static void test_long_line_truncated(void **state)
{
    (void)state;
    cp_log_init("unit", CP_LOG_INFO);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    int saved;
    FILE *f = capture_begin(&saved);
    log_warn("%s", big);
    capture_end(f, saved);
    size_t n = strlen(captured);
    assert_true(n <= 2047);
    assert_true(n > 2000);
    assert_int_equal(captured[n - 1], '\n');
    assert_int_equal(captured[n - 2], 'x');
    assert_ptr_equal(strchr(captured, '\n'), captured + n - 1); /* one line */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_long_line_truncated),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
