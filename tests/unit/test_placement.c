/* balancer/placement.c: least load with hand-out counts, draining and full
 * bridges skipped, random tie-breaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "placement.h"

static bridge_info mk(unsigned conns, unsigned cap, int draining)
{
    bridge_info b;
    memset(&b, 0, sizeof b);
    b.connections = conns;
    b.capacity = cap;
    b.draining = draining;
    return b;
}

static void test_empty_and_unusable(void **state)
{
    (void)state;
    unsigned handed[3] = {0, 0, 0};
    assert_int_equal(placement_pick(NULL, handed, 0, 1), -1);
    bridge_info b[3] = {mk(0, 10, 1), mk(10, 10, 0), mk(0, 0, 0)};
    assert_int_equal(placement_pick(b, handed, 3, 1), -1); /* draining, full, no capacity */
}

static void test_least_load_by_ratio(void **state)
{
    (void)state;
    unsigned handed[3] = {0, 0, 0};
    /* 50/100 = 0.5, 30/50 = 0.6, 90/200 = 0.45 */
    bridge_info b[3] = {mk(50, 100, 0), mk(30, 50, 0), mk(90, 200, 0)};
    assert_int_equal(placement_pick(b, handed, 3, 7), 2);
    handed[2] = 20; /* 110/200 = 0.55: now the first is least loaded */
    assert_int_equal(placement_pick(b, handed, 3, 7), 0);
}

static void test_burst_spreads_and_newcomer_fills_to_level(void **state)
{
    (void)state;
    /* Three bridges with 50 each and an empty newcomer: 100 new connections
     * between two refreshes. */
    bridge_info b[4] = {mk(50, 1000, 0), mk(50, 1000, 0), mk(50, 1000, 0), mk(0, 1000, 0)};
    unsigned handed[4] = {0, 0, 0, 0};
    for (int i = 0; i < 100; i++) {
        int k = placement_pick(b, handed, 4, (uint64_t)i * 2654435761u);
        assert_true(k >= 0);
        handed[k]++;
    }
    unsigned total[4];
    for (int i = 0; i < 4; i++)
        total[i] = b[i].connections + handed[i];
    /* The newcomer gets 50 to reach the others, then a quarter of the rest. */
    assert_true(handed[3] >= 61 && handed[3] <= 63);
    for (int i = 0; i < 4; i++)
        assert_true(total[i] >= 62 && total[i] <= 63);
}

static void test_ties_are_random(void **state)
{
    (void)state;
    bridge_info b[3] = {mk(5, 10, 0), mk(5, 10, 0), mk(5, 10, 0)};
    unsigned handed[3] = {0, 0, 0};
    int seen[3] = {0, 0, 0};
    for (uint64_t r = 0; r < 300; r++)
        seen[placement_pick(b, handed, 3, r * 0x9E3779B97F4A7C15ULL)]++;
    for (int i = 0; i < 3; i++)
        assert_true(seen[i] > 50); /* each tied bridge is chosen often */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_unusable),
        cmocka_unit_test(test_least_load_by_ratio),
        cmocka_unit_test(test_burst_spreads_and_newcomer_fills_to_level),
        cmocka_unit_test(test_ties_are_random),
    };
    return cmocka_run_group_tests_name("placement", tests, NULL, NULL);
}
