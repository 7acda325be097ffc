/* common/reload.c: the files SIGHUP re-reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "reload.h"

static char path[64];

static int make_file(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/cp-reload-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int remove_file(void **state)
{
    (void)state;
    unlink(path);
    cp_log_set_level(CP_LOG_INFO);
    return 0;
}

static void write_file(const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void test_read_trims_trailing_whitespace(void **state)
{
    (void)state;
    write_file("secret value \r\n\n", 16);
    char *out;
    assert_int_equal(cp_reload_read_file("--x", path, &out), 12);
    assert_string_equal(out, "secret value");
    free(out);
}

static void test_read_refuses_missing_and_oversized(void **state)
{
    (void)state;
    char *out = (char *)1;
    assert_int_equal(cp_reload_read_file("--x", "/nonexistent/cp-reload", &out), -1);
    assert_null(out);
    char *big = malloc(CP_RELOAD_FILE_MAX + 1);
    assert_non_null(big);
    memset(big, 'k', CP_RELOAD_FILE_MAX + 1);
    write_file(big, CP_RELOAD_FILE_MAX + 1);
    assert_int_equal(cp_reload_read_file("--x", path, &out), -1);
    assert_null(out);
    write_file(big, CP_RELOAD_FILE_MAX); /* exactly the limit is fine */
    assert_int_equal(cp_reload_read_file("--x", path, &out), CP_RELOAD_FILE_MAX);
    free(out);
    free(big);
}

static void test_log_level_applied_or_kept(void **state)
{
    (void)state;
    cp_log_set_level(CP_LOG_INFO);
    assert_int_equal(cp_reload_log_level(""), 0); /* no file: nothing to do */
    assert_int_equal(cp_reload_log_level(NULL), 0);
    write_file("  debug\n", 8);
    assert_int_equal(cp_reload_log_level(path), 0);
    assert_int_equal(cp_log_get_level(), CP_LOG_DEBUG);
    write_file("loud\n", 5);
    assert_int_equal(cp_reload_log_level(path), -1);
    assert_int_equal(cp_log_get_level(), CP_LOG_DEBUG); /* unchanged */
    write_file("WARN", 4);
    assert_int_equal(cp_reload_log_level(path), 0);
    assert_int_equal(cp_log_get_level(), CP_LOG_WARN);
    assert_int_equal(cp_reload_log_level("/nonexistent/cp-level"), -1);
    assert_int_equal(cp_log_get_level(), CP_LOG_WARN);
}

int main(void)
{
    cp_log_init("test", CP_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_trims_trailing_whitespace, make_file,
                                        remove_file),
        cmocka_unit_test_setup_teardown(test_read_refuses_missing_and_oversized, make_file,
                                        remove_file),
        cmocka_unit_test_setup_teardown(test_log_level_applied_or_kept, make_file, remove_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
