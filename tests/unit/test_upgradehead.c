/* balancer/upgradehead.c: which peeked requests the balancer may hand to a
 * bridge unread (everything else goes through lws and its checks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "upgradehead.h"

static const char up[] = "GET /ws?channelId=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n";

static int scan(const char *s, size_t *len)
{
    return upgrade_head_scan(s, strlen(s), 1900, len);
}

static void test_a_whole_upgrade_is_taken_with_its_length(void **state)
{
    (void)state;
    size_t len = 0;
    assert_int_equal(scan(up, &len), 1);
    assert_int_equal(len, strlen(up));
    /* what follows the head is not part of it */
    char more[sizeof up + 8];
    snprintf(more, sizeof more, "%s\x81\x02hi", up);
    len = 0;
    assert_int_equal(upgrade_head_scan(more, strlen(more), 1900, &len), 1);
    assert_int_equal(len, strlen(up));
    /* any case, in a list */
    assert_int_equal(scan("GET / HTTP/1.1\r\nuPgRaDe: h2c, WebSocket \r\n\r\n", &len), 1);
}

static void test_every_prefix_is_incomplete(void **state)
{
    (void)state;
    size_t len;
    for (size_t n = 0; n < strlen(up); n++)
        assert_int_equal(upgrade_head_scan(up, n, 1900, &len), 0);
}

static void test_anything_unusual_is_left_to_lws(void **state)
{
    (void)state;
    size_t len;
    const char *no[] = {
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",                /* no upgrade */
        "POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",          /* method */
        "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",           /* version */
        "GET ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",            /* not origin-form */
        "GET /ws  HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",          /* two spaces */
        "GET /ws HTTP/1.1\r\nUpgrade: websockets\r\n\r\n",          /* another token */
        "GET /ws HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n",         /* another header */
        "GET /ws HTTP/1.1\r\nUpgrade:\r\n websocket\r\n\r\n",       /* folded */
        "GET /ws HTTP/1.1\r\nUpgrade websocket\r\n\r\n",            /* no colon */
        "GET /w\ts HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",         /* control in target */
        "GET /ws HTTP/1.1\r\n\r\n",                                  /* no header */
    };
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        assert_int_equal(scan(no[i], &len), 0);
    /* a blank line alone, shorter than "GET /" (found by fuzz_upgradehead) */
    assert_int_equal(upgrade_head_scan("\r\n\r\n", 4, 1900, &len), 0);
    /* a NUL inside the head */
    char nul[] = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nX: a\0b\r\n\r\n";
    assert_int_equal(upgrade_head_scan(nul, sizeof nul - 1, 1900, &len), 0);
}

static void test_a_long_target_is_left_to_lws(void **state)
{
    (void)state;
    char req[2200];
    size_t len;
    for (size_t t = 1898; t <= 1902; t++) {
        memset(req, 0, sizeof req);
        memcpy(req, "GET /", 5);
        memset(req + 5, 'q', t - 1);
        strcat(req, " HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert_int_equal(scan(req, &len), t <= 1900);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_whole_upgrade_is_taken_with_its_length),
        cmocka_unit_test(test_every_prefix_is_incomplete),
        cmocka_unit_test(test_anything_unusual_is_left_to_lws),
        cmocka_unit_test(test_a_long_target_is_left_to_lws),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
