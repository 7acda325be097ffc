/* Unit tests for the Redis URL parser (common/redis.c): every part of
 * redis://[[username]:password@]host[:port][/db], rediss:// recognised and
 * refused, and the inputs it must reject. Also the reconnect backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "backoff.h"
#include "redis.h"

static cp_redis_addr parse_ok(const char *url)
{
    cp_redis_addr a;
    int rc = cp_redis_parse_url(url, &a);
    if (rc != CP_REDIS_URL_OK)
        fail_msg("'%s' refused (%d)", url, rc);
    return a;
}

static void test_host_only_takes_defaults(void **state)
{
    (void)state;
    cp_redis_addr a = parse_ok("redis://cache.internal");
    assert_string_equal(a.host, "cache.internal");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_string_equal(a.username, "");
    assert_string_equal(a.password, "");
    assert_int_equal(a.tls, 0);
}

static void test_port_and_db(void **state)
{
    (void)state;
    cp_redis_addr a = parse_ok("redis://127.0.0.1:6380/5");
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 5);
    a = parse_ok("redis://h/");
    assert_int_equal(a.db, 0);
    a = parse_ok("redis://h:1/1000000");
    assert_int_equal(a.port, 1);
    assert_int_equal(a.db, 1000000);
}

static void test_password_only(void **state)
{
    (void)state;
    cp_redis_addr a = parse_ok("redis://:s3cret@h:7000");
    assert_string_equal(a.username, "");
    assert_string_equal(a.password, "s3cret");
    assert_string_equal(a.host, "h");
    assert_int_equal(a.port, 7000);
    /* userinfo without ':' is a password, as redis-cli reads it */
    a = parse_ok("redis://legacy@h");
    assert_string_equal(a.username, "");
    assert_string_equal(a.password, "legacy");
}

static void test_acl_username(void **state)
{
    (void)state;
    cp_redis_addr a = parse_ok("redis://pushapp:pa:ss@word@redis.example:6390/2");
    assert_string_equal(a.username, "pushapp");
    /* the last '@' ends the userinfo; ':' after the first belong to the password */
    assert_string_equal(a.password, "pa:ss@word");
    assert_string_equal(a.host, "redis.example");
    assert_int_equal(a.port, 6390);
    assert_int_equal(a.db, 2);
}

static void test_ipv6_host(void **state)
{
    (void)state;
    cp_redis_addr a = parse_ok("redis://[::1]:6381/3");
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 6381);
    assert_int_equal(a.db, 3);
    a = parse_ok("redis://u:p@[fe80::1]");
    assert_string_equal(a.host, "fe80::1");
    assert_int_equal(a.port, 6379);
}

static void test_rediss_parsed_then_refused(void **state)
{
    (void)state;
    cp_redis_addr a;
    int rc = cp_redis_parse_url("rediss://user:pw@secure.example:6380/1", &a);
    assert_int_equal(rc, CP_REDIS_URL_TLS);
    /* parsed all the same, so the message can name what was asked */
    assert_int_equal(a.tls, 1);
    assert_string_equal(a.username, "user");
    assert_string_equal(a.password, "pw");
    assert_string_equal(a.host, "secure.example");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 1);
    const char *why = cp_redis_url_strerror(rc);
    assert_non_null(strstr(why, "rediss://"));
    assert_non_null(strstr(why, "TLS"));
    /* a broken rediss:// URL is simply invalid */
    assert_int_equal(cp_redis_parse_url("rediss://h:0", &a), CP_REDIS_URL_INVALID);
}

static void test_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "redis:/h",
        "http://h:6379",
        "REDIS://h",
        "unix:///tmp/redis.sock",
        "redis://",
        "redis://:6379",
        "redis://:pw@",
        "redis://h:",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:12ab",
        "redis://h:6379x/1",
        "redis://h/-1",
        "redis://h/1000001",
        "redis://h/db",
        "redis://h/1/2",
        "redis://[::1",
        "redis://[::1]x",
        "redis://[]:6379",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cp_redis_addr a;
        int rc = cp_redis_parse_url(bad[i], &a);
        if (rc != CP_REDIS_URL_INVALID)
            fail_msg("'%s' accepted (%d)", bad[i], rc);
    }
    assert_non_null(strstr(cp_redis_url_strerror(CP_REDIS_URL_INVALID), "redis://"));
}

static void test_too_long_parts(void **state)
{
    (void)state;
    char url[1024];
    cp_redis_addr a;
    char host[300];
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(url, sizeof url, "redis://%s:1", host);
    assert_int_equal(cp_redis_parse_url(url, &a), CP_REDIS_URL_INVALID);
    host[255] = '\0'; /* exactly fits host[256] */
    snprintf(url, sizeof url, "redis://%s:1", host);
    assert_int_equal(cp_redis_parse_url(url, &a), CP_REDIS_URL_OK);
    char user[200];
    memset(user, 'u', sizeof user - 1);
    user[sizeof user - 1] = '\0';
    snprintf(url, sizeof url, "redis://%s:pw@h", user);
    assert_int_equal(cp_redis_parse_url(url, &a), CP_REDIS_URL_INVALID);
}

static void test_backoff_doubles_to_cap_and_resets(void **state)
{
    (void)state;
    cp_backoff b = {0};
    const int want[] = {200, 400, 800, 1600, 3200, 5000, 5000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(cp_backoff_next(&b), want[i]);
    cp_backoff_reset(&b);
    assert_int_equal(cp_backoff_next(&b), 200);
    assert_int_equal(cp_backoff_next(&b), 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_only_takes_defaults),
        cmocka_unit_test(test_port_and_db),
        cmocka_unit_test(test_password_only),
        cmocka_unit_test(test_acl_username),
        cmocka_unit_test(test_ipv6_host),
        cmocka_unit_test(test_rediss_parsed_then_refused),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_too_long_parts),
        cmocka_unit_test(test_backoff_doubles_to_cap_and_resets),
    };
    return cmocka_run_group_tests_name("redis_url", tests, NULL, NULL);
}
