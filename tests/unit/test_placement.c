/* balancer/placement.c: least load with hand-out counts, draining, not
 * ready and full bridges skipped, random tie-breaks, snapshots restarting the counts, and
 * the bridge URLs parsed once per snapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "placement.h"

static placement p; /* large: not on the stack */

static bridge_info mk(unsigned conns, unsigned cap, int draining)
{
    bridge_info b;
    memset(&b, 0, sizeof b);
    b.connections = conns;
    b.capacity = cap;
    b.draining = draining;
    snprintf(b.url, sizeof b.url, "ws://127.0.0.1:9001/ws");
    return b;
}

static int index_of(const placement_bridge *b) { return b ? (int)(b - p.bridges) : -1; }

static void test_empty_and_unusable(void **state)
{
    (void)state;
    placement_load(&p, NULL, 0);
    assert_null(placement_pick(&p, 1));
    assert_int_equal(placement_usable(&p), 0);
    bridge_info b[3] = {mk(0, 10, 1), mk(10, 10, 0), mk(0, 0, 0)};
    placement_load(&p, b, 3);
    assert_null(placement_pick(&p, 1)); /* draining, full, no capacity */
    assert_int_equal(placement_usable(&p), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(p.bridges[i].handed, 0);
}

/* A bridge whose record says it cannot take sessions (starting, broker
 * away) is passed over however idle it is, and offered again once ready. */
static void test_not_ready_is_skipped(void **state)
{
    (void)state;
    bridge_info b[2] = {mk(0, 100, 0), mk(90, 1000, 0)};
    b[0].not_ready = 1;
    placement_load(&p, b, 2);
    assert_int_equal(placement_usable(&p), 1);
    for (int i = 0; i < 20; i++)
        assert_int_equal(index_of(placement_pick(&p, (uint64_t)i)), 1);
    b[1].not_ready = 1;
    placement_load(&p, b, 2);
    assert_null(placement_pick(&p, 1));
    assert_int_equal(placement_usable(&p), 0);
    b[0].not_ready = b[1].not_ready = 0;
    placement_load(&p, b, 2);
    assert_int_equal(index_of(placement_pick(&p, 1)), 0);
}

static void test_least_load_by_ratio(void **state)
{
    (void)state;
    /* 50/100 = 0.5, 30/50 = 0.6, 90/200 = 0.45 */
    bridge_info b[3] = {mk(50, 100, 0), mk(30, 50, 0), mk(90, 200, 0)};
    placement_load(&p, b, 3);
    assert_int_equal(index_of(placement_pick(&p, 7)), 2);
    assert_int_equal(p.bridges[2].handed, 1); /* the pick is counted */
    p.bridges[2].handed = 20; /* 110/200 = 0.55: now the first is least loaded */
    assert_int_equal(index_of(placement_pick(&p, 7)), 0);
    assert_int_equal(p.bridges[0].handed, 1);
    placement_unpick(&p, &p.bridges[0]); /* taken back: not counted */
    assert_int_equal(p.bridges[0].handed, 0);
    placement_unpick(&p, &p.bridges[0]); /* never below zero */
    assert_int_equal(p.bridges[0].handed, 0);
    assert_int_equal(index_of(placement_pick(&p, 7)), 0);
    assert_true(placement_load_of(&p.bridges[0]) > 0.509 &&
                placement_load_of(&p.bridges[0]) < 0.511); /* 51/100 */
}

static void test_burst_spreads_and_newcomer_fills_to_level(void **state)
{
    (void)state;
    /* Three bridges with 50 each and an empty newcomer: 100 new connections
     * between two refreshes. */
    bridge_info b[4] = {mk(50, 1000, 0), mk(50, 1000, 0), mk(50, 1000, 0), mk(0, 1000, 0)};
    placement_load(&p, b, 4);
    for (int i = 0; i < 100; i++)
        assert_non_null(placement_pick(&p, (uint64_t)i * 2654435761u));
    /* The newcomer gets 50 to reach the others, then a quarter of the rest. */
    assert_true(p.bridges[3].handed >= 61 && p.bridges[3].handed <= 63);
    unsigned handed = 0;
    for (int i = 0; i < 4; i++) {
        unsigned total = b[i].connections + p.bridges[i].handed;
        assert_true(total >= 62 && total <= 63);
        handed += p.bridges[i].handed;
    }
    assert_int_equal(handed, 100);
}

static void test_fills_up_then_refuses(void **state)
{
    (void)state;
    bridge_info b[2] = {mk(8, 10, 0), mk(9, 10, 0)};
    placement_load(&p, b, 2);
    assert_int_equal(placement_usable(&p), 2);
    for (int i = 0; i < 3; i++)
        assert_non_null(placement_pick(&p, (uint64_t)i));
    assert_null(placement_pick(&p, 3)); /* 10/10 each, counting the handed out */
    assert_int_equal(placement_usable(&p), 0);
    assert_false(placement_can_take(&p.bridges[0]));
    /* A new snapshot restarts the counts. */
    placement_load(&p, b, 2);
    assert_int_equal(p.bridges[0].handed, 0);
    assert_int_equal(p.bridges[1].handed, 0);
    assert_int_equal(placement_usable(&p), 2);
}

static void test_ties_are_random(void **state)
{
    (void)state;
    bridge_info b[3] = {mk(5, 10, 0), mk(5, 10, 0), mk(5, 10, 0)};
    int seen[3] = {0, 0, 0};
    for (uint64_t r = 0; r < 300; r++) {
        placement_load(&p, b, 3); /* keep the loads tied */
        seen[index_of(placement_pick(&p, r * 0x9E3779B97F4A7C15ULL))]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(seen[i] > 50); /* each tied bridge is chosen often */
}

static void test_url_parsed_at_load(void **state)
{
    (void)state;
    bridge_info b[2] = {mk(0, 10, 0), mk(0, 10, 0)};
    snprintf(b[1].url, sizeof b[1].url, "wss://bridge-2.example:8443/x/ws");
    placement_load(&p, b, 2);
    const placement_url *u = &p.bridges[0].url;
    assert_true(u->ok);
    assert_false(u->tls);
    assert_string_equal(u->host, "127.0.0.1");
    assert_int_equal(u->port, 9001);
    assert_string_equal(p.bridges[0].info.url + u->path_at, "ws");
    u = &p.bridges[1].url;
    assert_true(u->ok);
    assert_true(u->tls);
    assert_string_equal(u->host, "bridge-2.example");
    assert_int_equal(u->port, 8443);
    assert_string_equal(p.bridges[1].info.url + u->path_at, "x/ws");
    assert_int_equal(u->authority_len, strlen("bridge-2.example:8443"));
    assert_memory_equal(p.bridges[1].info.url + u->authority_at, "bridge-2.example:8443",
                        u->authority_len);
}

static void test_url_forms(void **state)
{
    (void)state;
    placement_url u;
    placement_parse_url("ws://[::1]:9001/ws", &u);
    assert_true(u.ok);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 9001);
    assert_int_equal(u.authority_len, strlen("[::1]:9001"));

    placement_parse_url("wss://host.example", &u); /* default port, no path */
    assert_true(u.ok);
    assert_int_equal(u.port, 443);
    assert_int_equal(u.path_at, 0);
    placement_parse_url("ws://host.example/", &u);
    assert_true(u.ok);
    assert_int_equal(u.port, 80);
    assert_int_equal(u.path_at, 0);

    /* Not usable for a relay, but the route API still names the authority. */
    placement_parse_url("http://host.example:80/ws", &u);
    assert_false(u.ok);
    assert_int_equal(u.authority_at, strlen("http://"));
    assert_int_equal(u.authority_len, strlen("host.example:80"));
    placement_parse_url("host.example:9001/ws", &u);
    assert_false(u.ok);
    assert_int_equal(u.authority_at, 0);
    assert_int_equal(u.authority_len, strlen("host.example:9001"));

    const char *bad[] = {"ws://", "ws://:9001/ws", "ws://h:0/ws", "ws://h:65536/ws",
                         "ws://h:/ws", "ws://h:90x1/ws", "ws://[::1/ws", "wss//h:1/ws"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        placement_parse_url(bad[i], &u);
        assert_false(u.ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_unusable),
        cmocka_unit_test(test_not_ready_is_skipped),
        cmocka_unit_test(test_least_load_by_ratio),
        cmocka_unit_test(test_burst_spreads_and_newcomer_fills_to_level),
        cmocka_unit_test(test_fills_up_then_refuses),
        cmocka_unit_test(test_ties_are_random),
        cmocka_unit_test(test_url_parsed_at_load),
        cmocka_unit_test(test_url_forms),
    };
    return cmocka_run_group_tests_name("placement", tests, NULL, NULL);
}
