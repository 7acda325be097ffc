/* common/ring.c: a FIFO that doubles when full up to its limit, keeps the
 * order across growth and wrap-around, and returns to its base size when
 * emptied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ring.h"

static void push(cp_ring *r, int v, int expect_grew)
{
    int grew = -1;
    int *slot = cp_ring_push(r, &grew);
    assert_non_null(slot);
    assert_int_equal(grew, expect_grew);
    *slot = v;
}

static void test_order_through_wrap_and_growth(void **state)
{
    (void)state;
    cp_ring r;
    assert_int_equal(cp_ring_init(&r, sizeof(int), 4, 16), 0);
    push(&r, 1, 0);
    push(&r, 2, 0);
    push(&r, 3, 0);
    int out[16];
    assert_int_equal(cp_ring_take(&r, out, 2), 2); /* head moves: the next pushes wrap */
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    push(&r, 4, 0);
    push(&r, 5, 0);
    push(&r, 6, 0); /* 3 4 5 6: full, wrapped */
    assert_int_equal(r.cap, 4);
    push(&r, 7, 1); /* doubles, the order kept */
    assert_int_equal(r.cap, 8);
    for (int v = 8; v <= 18; v++)
        push(&r, v, v == 11);
    assert_int_equal(r.cap, 16);
    assert_null(cp_ring_push(&r, NULL)); /* at its limit: nothing added */
    assert_int_equal(r.count, 16);
    assert_int_equal(*(int *)cp_ring_at(&r, 0), 3);
    assert_int_equal(*(int *)cp_ring_at(&r, 15), 18);
    assert_int_equal(cp_ring_take(&r, out, 10), 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(out[i], 3 + i);
    assert_int_equal(r.cap, 16); /* not empty: keeps its size */
    assert_int_equal(cp_ring_take(&r, out, 16), 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(out[i], 13 + i);
    assert_int_equal(r.count, 0);
    assert_int_equal(r.cap, 4); /* emptied: back to its base size */
    push(&r, 42, 0);
    assert_int_equal(cp_ring_take(&r, out, 16), 1);
    assert_int_equal(out[0], 42);
    cp_ring_free(&r);
}

static void test_a_limit_below_the_base_is_the_base(void **state)
{
    (void)state;
    cp_ring r;
    assert_int_equal(cp_ring_init(&r, sizeof(int), 2, 1), 0);
    push(&r, 1, 0);
    push(&r, 2, 0);
    assert_null(cp_ring_push(&r, NULL));
    cp_ring_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_through_wrap_and_growth),
        cmocka_unit_test(test_a_limit_below_the_base_is_the_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
