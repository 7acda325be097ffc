/* Unit tests for bridge/iplimit.c: per-address cap on concurrent sessions
 * and the token bucket of new connections, on a controlled clock.
 *
 * bridge/iplimit.c keeps its state in the bridge struct (cfg, ips, n), so
 * the test uses a zeroed bridge with only the limits set. The clock is the
 * test's: the link wraps cp_mono_ms (-Wl,--wrap=cp_mono_ms, see
 * CMakeLists.txt), so refill is checked to the millisecond without sleeping.
 * iplimit_client_address reads the peer through lws_get_peer_simple, which
 * the link also wraps (--wrap=lws_get_peer_simple): the test counts the
 * calls and answers as lws does for an IPv4 peer of a dual-stack socket.
 * The X-Forwarded-For of a trusted proxy needs a live lws connection: the
 * integration tests (test_security.py) cover it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "bridge.h"

static int64_t fake_now_ms = 1000000;

int64_t __wrap_cp_mono_ms(void);
int64_t __wrap_cp_mono_ms(void) { return fake_now_ms; }

static bridge b;

static int peer_lookups;

const char *__wrap_lws_get_peer_simple(struct lws *wsi, char *name, size_t namelen);
const char *__wrap_lws_get_peer_simple(struct lws *wsi, char *name, size_t namelen)
{
    (void)wsi;
    peer_lookups++;
    snprintf(name, namelen, "::ffff:198.51.100.4");
    return name;
}

static void limits(long max_per_ip, long rate, long burst)
{
    iplimit_clear(&b);
    memset(&b, 0, sizeof b);
    b.cfg.max_connections_per_ip = max_per_ip;
    b.cfg.connect_rate_per_ip = rate;
    b.cfg.connect_burst_per_ip = burst;
}

static int teardown(void **state)
{
    (void)state;
    iplimit_clear(&b);
    return 0;
}

/* admit, expecting 0 or 429 with that code */
static void admit_ok(const char *ip)
{
    const char *code = NULL, *msg = NULL;
    assert_int_equal(iplimit_admit(&b, ip, &code, &msg), 0);
}

static void admit_refused(const char *ip, const char *want_code)
{
    const char *code = NULL, *msg = NULL;
    uint64_t limited = b.n.ip_limited;
    assert_int_equal(iplimit_admit(&b, ip, &code, &msg), 429);
    assert_string_equal(code, want_code);
    assert_non_null(msg);
    assert_int_equal(b.n.ip_limited, limited + 1);
}

static void test_off_admits_everything(void **state)
{
    (void)state;
    limits(0, 0, 0);
    for (int i = 0; i < 100; i++) {
        admit_ok("192.0.2.1");
        assert_null(iplimit_attach(&b, "192.0.2.1"));
    }
    iplimit_detach(&b, NULL); /* what a session with no entry does */
    assert_int_equal(b.n.ip_limited, 0);
}

/* The address is only looked up (a getpeername() per connect) when a
 * limit will read it. */
static void test_address_read_only_for_the_limits(void **state)
{
    (void)state;
    char ip[64] = "stale";
    limits(0, 0, 0);
    b.cfg.trusted_proxies = "";
    peer_lookups = 0;
    iplimit_client_address(&b, NULL, ip, sizeof ip);
    assert_string_equal(ip, "");
    assert_int_equal(peer_lookups, 0);
    limits(0, 5, 10);
    b.cfg.trusted_proxies = "";
    iplimit_client_address(&b, NULL, ip, sizeof ip);
    assert_string_equal(ip, "198.51.100.4");
    assert_int_equal(peer_lookups, 1);
    limits(3, 0, 0);
    b.cfg.trusted_proxies = "";
    iplimit_client_address(&b, NULL, ip, sizeof ip);
    assert_string_equal(ip, "198.51.100.4");
    assert_int_equal(peer_lookups, 2);
}

static void test_concurrent_cap_and_release(void **state)
{
    (void)state;
    limits(2, 0, 0);
    const char *ip = "192.0.2.7";
    admit_ok(ip);
    ip_entry *s1 = iplimit_attach(&b, ip);
    assert_non_null(s1);
    admit_ok(ip);
    ip_entry *s2 = iplimit_attach(&b, ip);
    assert_ptr_equal(s2, s1); /* one entry per address */
    admit_refused(ip, "too_many_connections_from_address");
    admit_refused(ip, "too_many_connections_from_address");
    /* Other addresses have their own count. */
    admit_ok("192.0.2.8");
    admit_ok("2001:db8::1");
    /* A session ends: one more may come. */
    iplimit_detach(&b, s1);
    admit_ok(ip);
    ip_entry *s3 = iplimit_attach(&b, ip);
    admit_refused(ip, "too_many_connections_from_address");
    iplimit_detach(&b, s2);
    iplimit_detach(&b, s3);
    admit_ok(ip);
    admit_ok(ip); /* admission alone does not hold a place */
}

static void test_rate_burst_and_refill(void **state)
{
    (void)state;
    limits(0, 2, 3); /* 2 new connections a second, bursts of 3 */
    const char *ip = "198.51.100.5";
    for (int i = 0; i < 3; i++)
        admit_ok(ip);
    admit_refused(ip, "connection_rate_exceeded");
    /* A refusal takes no token: half a second later there is exactly one. */
    fake_now_ms += 499;
    admit_refused(ip, "connection_rate_exceeded");
    fake_now_ms += 1;
    admit_ok(ip);
    admit_refused(ip, "connection_rate_exceeded");
    /* A long pause refills only up to the burst. */
    fake_now_ms += 60000;
    for (int i = 0; i < 3; i++)
        admit_ok(ip);
    admit_refused(ip, "connection_rate_exceeded");
    /* Another address has its own bucket. */
    for (int i = 0; i < 3; i++)
        admit_ok("198.51.100.6");
}

static void test_both_limits(void **state)
{
    (void)state;
    limits(1, 1, 5);
    const char *ip = "203.0.113.9";
    admit_ok(ip);
    ip_entry *e = iplimit_attach(&b, ip);
    /* The cap refuses before the bucket is asked: no token is spent. */
    for (int i = 0; i < 10; i++)
        admit_refused(ip, "too_many_connections_from_address");
    iplimit_detach(&b, e);
    for (int i = 0; i < 4; i++)
        admit_ok(ip); /* 5 - 1 tokens left */
    admit_refused(ip, "connection_rate_exceeded");
}

/* prune forgets only addresses with no session and a full bucket; the
 * others keep their counts (a forgotten entry would start over full). */
static void test_prune_keeps_what_still_counts(void **state)
{
    (void)state;
    limits(1, 1, 2);
    const char *held = "192.0.2.20", *spent = "192.0.2.21", *idle = "192.0.2.22";
    admit_ok(held);
    ip_entry *e = iplimit_attach(&b, held);
    admit_ok(spent);
    admit_ok(spent);
    admit_ok(idle);
    fake_now_ms += 1000; /* idle: full again; spent: 1 of 2 */
    iplimit_prune(&b);
    admit_refused(held, "too_many_connections_from_address");
    admit_ok(spent);
    admit_refused(spent, "connection_rate_exceeded");
    admit_ok(idle);
    admit_ok(idle);
    admit_refused(idle, "connection_rate_exceeded");
    iplimit_detach(&b, e); /* e is still valid (ASan checks) */
    admit_ok(held);
    /* Everything full and without sessions: all forgotten, and a new
     * entry starts with a full bucket. */
    fake_now_ms += 10000;
    iplimit_prune(&b);
    assert_null(b.ips);
    admit_ok(spent);
    admit_ok(spent);
    admit_refused(spent, "connection_rate_exceeded");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_off_admits_everything, teardown),
        cmocka_unit_test_teardown(test_address_read_only_for_the_limits, teardown),
        cmocka_unit_test_teardown(test_concurrent_cap_and_release, teardown),
        cmocka_unit_test_teardown(test_rate_burst_and_refill, teardown),
        cmocka_unit_test_teardown(test_both_limits, teardown),
        cmocka_unit_test_teardown(test_prune_keeps_what_still_counts, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
