/* Unit tests for bridge/order.c: delivery in offset order, duplicates,
 * gaps filled or reported, epoch resets, the bounded reorder buffer. The
 * sink records what order.c decided. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "order.h"

typedef struct {
    int64_t delivered[64];
    int n_delivered;
    int discarded;
    int64_t gap_from[8], gap_to[8];
    int n_gaps;
    int64_t beyond[8];
    int n_beyond;
    int spilled;
} record;

static void rec_deliver(void *ud, void *item, int64_t offset)
{
    record *r = ud;
    (void)item;
    r->delivered[r->n_delivered++] = offset;
}

static void rec_discard(void *ud, void *item)
{
    record *r = ud;
    (void)item;
    r->discarded++;
}

static void rec_gap(void *ud, int64_t from, int64_t to)
{
    record *r = ud;
    r->gap_from[r->n_gaps] = from;
    r->gap_to[r->n_gaps] = to;
    r->n_gaps++;
}

static record rec;
static order_stream st;
static const order_limits lim = {.max_held = 4, .window_ms = 100, .fetch_wait_ms = 1000};
static void rec_beyond(void *ud, void *item, int64_t offset)
{
    record *r = ud;
    (void)item;
    r->beyond[r->n_beyond++] = offset;
}

static void rec_spill(void *ud, void *item)
{
    record *r = ud;
    (void)item;
    r->spilled++;
}

static const order_sink sink = {rec_deliver, rec_discard, rec_gap, rec_beyond, rec_spill, &rec};

static int setup(void **state)
{
    (void)state;
    memset(&rec, 0, sizeof rec);
    memset(&st, 0, sizeof st);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    order_clear(&st, &sink);
    return 0;
}

static int offer(int64_t offset, const char *epoch, int64_t now)
{
    return order_offer(&st, &lim, &sink, offset, epoch, NULL, now);
}

static void in_order_and_duplicates(void **state)
{
    (void)state;
    assert_int_equal(offer(5, "e1", 0), ORDER_RESET); /* the first sets the position */
    assert_int_equal(offer(6, "e1", 0), ORDER_DELIVERED);
    assert_int_equal(offer(6, "e1", 0), ORDER_DUPLICATE);
    assert_int_equal(offer(3, NULL, 0), ORDER_DUPLICATE);
    assert_int_equal(offer(7, NULL, 0), ORDER_DELIVERED); /* no epoch: the stream's */
    assert_int_equal(rec.n_delivered, 3);
    assert_int_equal(rec.delivered[2], 7);
    assert_int_equal(rec.discarded, 2);
    assert_int_equal(rec.n_gaps, 0);
}

static void unsequenced_bypasses(void **state)
{
    (void)state;
    offer(1, "e", 0);
    assert_int_equal(offer(-1, NULL, 0), ORDER_UNSEQUENCED);
    assert_int_equal(offer(2, "e", 0), ORDER_DELIVERED);
    assert_int_equal(rec.n_delivered, 3);
    assert_int_equal(st.last, 2);
}

static void gap_filled_by_the_bus(void **state)
{
    (void)state;
    offer(1, "e", 0);
    assert_int_equal(offer(3, "e", 10), ORDER_HELD);
    assert_int_equal(offer(4, "e", 11), ORDER_HELD);
    int64_t since, to;
    assert_true(order_missing(&st, &since, &to));
    assert_int_equal(since, 1);
    assert_int_equal(to, 2);
    order_fetch_started(&st, to, 1);
    assert_false(order_missing(&st, &since, &to)); /* one fetch at a time */
    assert_int_equal(offer(2, "e", 20), ORDER_DELIVERED);
    assert_int_equal(rec.n_delivered, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rec.delivered[i], i + 1);
    /* The fetch answers late with what the bus brought: duplicates. */
    assert_int_equal(offer(2, "e", 30), ORDER_DUPLICATE);
    order_fetch_done(&st, &sink, 1, 2, 30);
    assert_int_equal(rec.n_gaps, 0);
    assert_int_equal(st.held_n, 0);
}

static void gap_filled_by_the_history(void **state)
{
    (void)state;
    offer(1, "e", 0);
    offer(4, "e", 0);
    st.fetching = 1;
    offer(2, "e", 5); /* from the fetch */
    offer(3, "e", 5);
    order_fetch_done(&st, &sink, 1, 3, 5);
    assert_int_equal(rec.n_delivered, 4);
    assert_int_equal(rec.delivered[3], 4);
    assert_int_equal(rec.n_gaps, 0);
}

static void gap_the_history_cannot_fill_is_reported(void **state)
{
    (void)state;
    offer(1, "e", 0);
    offer(2, "e", 0);
    offer(4, "e", 0);
    st.fetching = 1;
    order_fetch_done(&st, &sink, 1, 3, 5); /* read up to 3: 3 is not there */
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(rec.gap_from[0], 3);
    assert_int_equal(rec.gap_to[0], 3);
    assert_int_equal(rec.delivered[rec.n_delivered - 1], 4);
    assert_int_equal(offer(3, "e", 6), ORDER_DUPLICATE); /* too late */
}

static void failed_fetch_waits_for_the_window(void **state)
{
    (void)state;
    offer(1, "e", 0);
    offer(5, "e", 0);
    int64_t since, to;
    assert_true(order_missing(&st, &since, &to));
    order_fetch_started(&st, to, 1);
    order_fetch_done(&st, &sink, 0, 0, 10); /* Redis down */
    /* Not asked again (Redis down would answer at once, again and again). */
    assert_false(order_missing(&st, &since, &to));
    offer(7, "e", 20); /* the same gap still comes first */
    assert_false(order_missing(&st, &since, &to));
    assert_int_equal(order_tick(&st, &lim, &sink, 50), 1);
    assert_int_equal(rec.n_gaps, 0);
    assert_int_equal(order_tick(&st, &lim, &sink, 100), 1); /* 7 still waits */
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(rec.gap_from[0], 2);
    assert_int_equal(rec.gap_to[0], 4);
    assert_int_equal(st.last, 5);
    /* The next gap (6) is a new one: asked for. */
    assert_true(order_missing(&st, &since, &to));
    assert_int_equal(since, 5);
    assert_int_equal(to, 6);
    /* Its window starts when the first gap was given up. */
    assert_int_equal(order_tick(&st, &lim, &sink, 199), 1);
    assert_int_equal(order_tick(&st, &lim, &sink, 200), 0);
    assert_int_equal(rec.n_gaps, 2);
}

static void running_fetch_is_awaited_past_the_window(void **state)
{
    (void)state;
    offer(1, "e", 0);
    offer(3, "e", 0);
    st.fetching = 1;
    assert_int_equal(order_tick(&st, &lim, &sink, 500), 1);
    assert_int_equal(rec.n_gaps, 0);
    assert_int_equal(order_tick(&st, &lim, &sink, 1100), 0); /* window + fetch wait */
    assert_int_equal(rec.n_gaps, 1);
}

static void full_buffer_gives_the_oldest_gap_up(void **state)
{
    (void)state;
    offer(1, "e", 0);
    offer(3, "e", 0);
    offer(4, "e", 0);
    offer(6, "e", 0);
    offer(7, "e", 0); /* four held: full */
    assert_int_equal(st.held_n, 4);
    offer(9, "e", 0);
    /* 2 reported lost, 3 and 4 delivered; 6, 7, 9 wait for 5 and 8 */
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(rec.gap_from[0], 2);
    assert_int_equal(rec.gap_to[0], 2);
    assert_int_equal(st.last, 4);
    assert_int_equal(st.held_n, 3);
    offer(5, "e", 1);
    assert_int_equal(st.last, 7);
    assert_int_equal(st.held_n, 1);
}

/* With a history (spill), a full buffer keeps the oldest messages and lets
 * the newest go: one fetch reads the gap and the spilled ones back. */
static const order_limits slim = {.max_held = 4, .window_ms = 100, .fetch_wait_ms = 1000,
                                  .max_jump = 100, .spill = 1};

static int soffer(int64_t offset, int64_t now)
{
    return order_offer(&st, &slim, &sink, offset, "e", NULL, now);
}

static void full_buffer_spills_to_the_history(void **state)
{
    (void)state;
    soffer(1, 0);
    for (int64_t o = 3; o <= 5; o++)
        assert_int_equal(soffer(o, 0), ORDER_HELD);
    assert_int_equal(soffer(8, 0), ORDER_HELD); /* four held: full */
    assert_int_equal(soffer(6, 0), ORDER_HELD); /* older: 8, the newest, let go */
    assert_int_equal(rec.spilled, 1);
    assert_int_equal(soffer(7, 0), ORDER_SPILLED); /* newer than all held: let go */
    assert_int_equal(st.spilled_to, 8);
    assert_int_equal(st.held[3].offset, 6);
    assert_int_equal(rec.n_gaps, 0);
    assert_int_equal(st.held_n, 4);
    int64_t since, to;
    assert_true(order_missing(&st, &since, &to));
    assert_int_equal(since, 1);
    assert_int_equal(to, 8); /* the gap, the held and the spilled in one read */
    order_fetch_started(&st, to, 1);
    assert_int_equal(soffer(9, 1), ORDER_SPILLED); /* while the read runs */
    assert_int_equal(st.spilled_to, 9);
    /* The read brings 2..8: 3, 4, 5 and 6 are held, and delivered with 2
     * (the reader passes them over, streams.c), 7 and 8 delivered in order,
     * 9 still to read. */
    int64_t was_last = st.last;
    assert_false(order_read_has(&st, was_last, 2));
    for (int64_t o = 3; o <= 6; o++)
        assert_true(order_read_has(&st, was_last, o));
    assert_false(order_read_has(&st, was_last, 7));
    int passed_over = 0;
    for (int64_t o = 2; o <= 8; o++) {
        if (order_read_has(&st, was_last, o))
            passed_over++;
        else
            soffer(o, 2);
    }
    assert_int_equal(passed_over, 4);
    assert_int_equal(rec.discarded, 0);
    assert_false(order_read_has(&st, was_last, 1)); /* before the read: a repeat */
    order_fetch_done(&st, &sink, 1, 8, 2);
    assert_int_equal(st.last, 8);
    assert_int_equal(rec.n_gaps, 0);
    assert_true(order_waiting(&st));
    assert_true(order_missing(&st, &since, &to));
    assert_int_equal(since, 8);
    assert_int_equal(to, 9);
    order_fetch_started(&st, to, 1);
    /* The history lacks 9 (it was read up to 9): reported lost. */
    order_fetch_done(&st, &sink, 1, 9, 3);
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(rec.gap_from[0], 9);
    assert_int_equal(rec.gap_to[0], 9);
    assert_false(order_waiting(&st));
    assert_int_equal(rec.spilled, 3);
}

static void spill_without_a_fetch_ends_with_the_window(void **state)
{
    (void)state;
    soffer(1, 0);
    for (int64_t o = 3; o <= 6; o++)
        soffer(o, 0);
    soffer(7, 0); /* spilled */
    /* No fetch could run: the window reports the gap, delivers the held,
     * and then reports the spilled as lost too. */
    order_fetch_started(&st, 7, 0);
    assert_int_equal(order_tick(&st, &slim, &sink, 100), 1);
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(st.last, 6);
    assert_int_equal(order_tick(&st, &slim, &sink, 200), 0);
    assert_int_equal(rec.n_gaps, 2);
    assert_int_equal(rec.gap_from[1], 7);
    assert_int_equal(rec.gap_to[1], 7);
    assert_int_equal(st.last, 7);
}

static void duplicate_while_held(void **state)
{
    (void)state;
    offer(1, "e", 0);
    assert_int_equal(offer(3, "e", 0), ORDER_HELD);
    assert_int_equal(offer(3, "e", 0), ORDER_DUPLICATE);
    assert_int_equal(st.held_n, 1);
}

static void epoch_change_resets(void **state)
{
    (void)state;
    offer(10, "old", 0);
    offer(12, "old", 0); /* held */
    uint32_t gen = st.gen;
    assert_int_equal(offer(1, "new", 5), ORDER_RESET);
    /* 11 reported, 12 delivered, then the new epoch from 1 */
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(rec.delivered[rec.n_delivered - 1], 1);
    assert_int_equal(rec.delivered[rec.n_delivered - 2], 12);
    assert_string_equal(st.epoch, "new");
    assert_int_equal(st.last, 1);
    assert_int_equal(st.gen, gen + 1);
    assert_int_equal(offer(2, "new", 5), ORDER_DELIVERED);
    /* A new epoch whose first messages were lost: a gap from 1. */
    assert_int_equal(offer(3, "newer", 6), ORDER_HELD);
    int64_t since, to;
    assert_true(order_missing(&st, &since, &to));
    assert_int_equal(since, 0);
    assert_int_equal(to, 2);
    assert_int_equal(offer(1, "newer", 6), ORDER_DELIVERED);
    assert_int_equal(st.held_n, 1); /* 3 waits for 2 */
}

static void base_from_history(void **state)
{
    (void)state;
    order_set_base(&st, &sink, 7, "e", 0);
    assert_int_equal(offer(7, "e", 0), ORDER_DUPLICATE);
    assert_int_equal(offer(9, "e", 0), ORDER_HELD);
    order_set_base(&st, &sink, 100, "e", 0); /* known: ignored */
    assert_int_equal(st.last, 7);
}

/* With a history, the first live messages of an unknown stream wait for
 * its position: the lower offset arriving second is not a duplicate. */
static const order_limits wlim = {.max_held = 4, .window_ms = 100, .fetch_wait_ms = 1000,
                                  .wait_for_base = 1};

static int woffer(int64_t offset, const char *epoch, int64_t now)
{
    return order_offer(&st, &wlim, &sink, offset, epoch, NULL, now);
}

static void unknown_stream_waits_for_its_position(void **state)
{
    (void)state;
    assert_int_equal(woffer(5, "e", 0), ORDER_HELD);
    assert_int_equal(woffer(4, "e", 1), ORDER_HELD);
    int64_t since, to;
    assert_false(order_missing(&st, &since, &to)); /* no range before a position */
    order_set_base(&st, &sink, 3, "e", 5);
    assert_int_equal(rec.n_delivered, 2);
    assert_int_equal(rec.delivered[0], 4);
    assert_int_equal(rec.delivered[1], 5);
    assert_int_equal(rec.discarded, 0);
    assert_int_equal(rec.n_gaps, 0);
    assert_int_equal(woffer(6, "e", 6), ORDER_DELIVERED);
}

static void unknown_stream_position_shows_a_gap(void **state)
{
    (void)state;
    woffer(5, "e", 0);
    woffer(4, "e", 0);
    order_set_base(&st, &sink, 2, "e", 1); /* 3 is missing */
    assert_int_equal(rec.n_delivered, 0);
    int64_t since, to;
    assert_true(order_missing(&st, &since, &to));
    assert_int_equal(since, 2);
    assert_int_equal(to, 3);
    assert_int_equal(woffer(3, "e", 2), ORDER_DELIVERED);
    assert_int_equal(rec.n_delivered, 3);
    assert_int_equal(st.last, 5);
}

static void unknown_stream_drops_what_the_position_covers(void **state)
{
    (void)state;
    woffer(7, "e", 0);
    woffer(8, "e", 0);
    order_set_base(&st, &sink, 7, "e", 1); /* 7 was before the greeting */
    assert_int_equal(rec.discarded, 1);
    assert_int_equal(rec.n_delivered, 1);
    assert_int_equal(rec.delivered[0], 8);
}

static void unknown_stream_without_position_starts_at_the_lowest(void **state)
{
    (void)state;
    woffer(5, "e", 0);
    woffer(4, "e", 10);
    assert_int_equal(order_tick(&st, &wlim, &sink, 99), 1);
    assert_int_equal(rec.n_delivered, 0);
    assert_int_equal(order_tick(&st, &wlim, &sink, 100), 0); /* Redis down: the window ends */
    assert_int_equal(rec.n_delivered, 2);
    assert_int_equal(rec.delivered[0], 4);
    assert_int_equal(rec.n_gaps, 0); /* nothing before it is this bridge's to report */
    assert_true(st.known);
    /* A full buffer ends the wait too. */
    order_clear(&st, &sink);
    memset(&st, 0, sizeof st);
    for (int i = 0; i < 4; i++)
        woffer(20 + 2 * i, "e", 0);
    assert_int_equal(woffer(30, "e", 0), ORDER_HELD);
    assert_true(st.known);
    assert_int_equal(st.last, 20); /* 20 went out, 22.. wait for 21 as any gap */
    assert_int_equal(st.held_n, 4);
    assert_int_equal(rec.n_gaps, 0);
}

static void unknown_stream_drops_another_epoch_at_its_position(void **state)
{
    (void)state;
    woffer(9, "old", 0);
    woffer(1, "new", 0);
    order_set_base(&st, &sink, 0, "new", 1);
    assert_int_equal(rec.n_delivered, 1);
    assert_int_equal(rec.delivered[0], 1);
    assert_int_equal(rec.discarded, 1);
    assert_string_equal(st.epoch, "new");
}

static void epoch_left_is_never_taken_back(void **state)
{
    (void)state;
    offer(4, "A", 0);
    assert_int_equal(offer(1, "B", 1), ORDER_RESET);
    /* A late message of A: dropped, the stream stays in B. */
    assert_int_equal(offer(5, "A", 2), ORDER_STALE);
    assert_string_equal(st.epoch, "B");
    assert_int_equal(st.last, 1);
    assert_int_equal(offer(2, "B", 3), ORDER_DELIVERED);
    assert_int_equal(rec.discarded, 1);
    /* Nor from the history. */
    order_stream fresh;
    memset(&fresh, 0, sizeof fresh);
    memcpy(fresh.left, st.left, sizeof fresh.left);
    order_set_base(&fresh, &sink, 9, "A", 4);
    assert_false(fresh.known);
}

static void unknown_stream_never_written(void **state)
{
    (void)state;
    woffer(2, "e", 0);
    woffer(1, "e", 0);
    order_set_base(&st, &sink, 0, "", 1); /* the greeting read an empty stream */
    assert_int_equal(rec.n_delivered, 2);
    assert_int_equal(rec.delivered[0], 1);
    assert_string_equal(st.epoch, "e");
    assert_int_equal(woffer(3, "e", 2), ORDER_DELIVERED);
}

/* A bogus offset far ahead (a d/ topic without the ACL) does not move the
 * stream: delivered as it is when its window ends, or taken out by the
 * caller when the history does not have it. */
static const order_limits jlim = {.max_held = 4, .window_ms = 100, .fetch_wait_ms = 1000,
                                  .max_jump = 1000};

static void jump_beyond_the_history_does_not_move_the_stream(void **state)
{
    (void)state;
    order_offer(&st, &jlim, &sink, 5, "e", NULL, 0);
    assert_int_equal(order_offer(&st, &jlim, &sink, 999999999, "e", NULL, 0), ORDER_HELD);
    assert_int_equal(order_offer(&st, &jlim, &sink, 6, "e", NULL, 50), ORDER_DELIVERED);
    assert_int_equal(order_tick(&st, &jlim, &sink, 100), 0);
    assert_int_equal(rec.n_beyond, 1);
    assert_int_equal(rec.beyond[0], 999999999);
    assert_int_equal(rec.n_gaps, 0);
    assert_int_equal(st.last, 6);
    assert_int_equal(order_offer(&st, &jlim, &sink, 7, "e", NULL, 101), ORDER_DELIVERED);
    /* A gap within the bound is reported and skipped as before. */
    order_offer(&st, &jlim, &sink, 1007, "e", NULL, 200);
    order_tick(&st, &jlim, &sink, 300);
    assert_int_equal(rec.n_gaps, 1);
    assert_int_equal(st.last, 1007);
    /* The caller takes out what the history denies. */
    order_offer(&st, &jlim, &sink, 5000000, "e", NULL, 400);
    assert_null(order_take(&st, 42));
    order_take(&st, 5000000);
    assert_int_equal(st.held_n, 0);
    assert_int_equal(order_tick(&st, &jlim, &sink, 1000), 0);
    assert_int_equal(st.last, 1007);
}

/* With a history, an epoch not seen yet waits for the history's word: a
 * late message of an older history must not switch the stream. */
static void new_epoch_is_verified_with_the_history(void **state)
{
    (void)state;
    order_set_base(&st, &sink, 2, "B", 0);
    assert_int_equal(woffer(3, "B", 0), ORDER_DELIVERED);
    assert_int_equal(woffer(7, "A", 1), ORDER_PENDING);
    assert_true(order_verify_wanted(&st));
    order_verify_started(&st);
    assert_false(order_verify_wanted(&st));
    assert_int_equal(woffer(4, "B", 2), ORDER_DELIVERED); /* the stream goes on meanwhile */
    order_epoch_verified(&st, &wlim, &sink, 1, "B", 3);  /* A is older: dropped, left */
    assert_int_equal(rec.discarded, 1);
    assert_int_equal(st.pend_n, 0);
    assert_int_equal(woffer(8, "A", 4), ORDER_STALE);
    assert_string_equal(st.epoch, "B");
    /* A real new epoch: taken once the history confirms it. */
    assert_int_equal(woffer(2, "C", 5), ORDER_PENDING);
    assert_int_equal(woffer(1, "C", 5), ORDER_PENDING);
    order_epoch_verified(&st, &wlim, &sink, 1, "C", 6);
    assert_string_equal(st.epoch, "C");
    assert_int_equal(st.last, 2);
    assert_int_equal(rec.delivered[rec.n_delivered - 1], 2);
    assert_int_equal(rec.delivered[rec.n_delivered - 2], 1);
    assert_int_equal(woffer(5, "B", 7), ORDER_STALE);
    /* No answer within the window and the fetch wait: switched, as
     * without a history. */
    assert_int_equal(woffer(1, "D", 10), ORDER_PENDING);
    assert_int_equal(order_tick(&st, &wlim, &sink, 10 + 1099), 1);
    assert_string_equal(st.epoch, "C");
    assert_int_equal(order_tick(&st, &wlim, &sink, 10 + 1100), 0);
    assert_string_equal(st.epoch, "D");
    assert_int_equal(st.last, 1);
    /* A history read in a new epoch is adopted at once. */
    order_adopt_epoch(&st, &wlim, &sink, "E", 2000);
    assert_string_equal(st.epoch, "E");
    assert_int_equal(st.last, 0);
    order_adopt_epoch(&st, &wlim, &sink, "D", 2001); /* left: never back */
    assert_string_equal(st.epoch, "E");
}

static void epoch_hash_keys_the_floor(void **state)
{
    (void)state;
    assert_int_equal(order_epoch_hash(NULL), 0);
    assert_int_equal(order_epoch_hash(""), 0);
    assert_true(order_epoch_hash("a") != 0);
    assert_true(order_epoch_hash("a") == order_epoch_hash("a"));
    assert_true(order_epoch_hash("a") != order_epoch_hash("b"));
    offer(1, "x", 0);
    assert_true(st.epoch_h == order_epoch_hash("x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(in_order_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(unsequenced_bypasses, setup, teardown),
        cmocka_unit_test_setup_teardown(gap_filled_by_the_bus, setup, teardown),
        cmocka_unit_test_setup_teardown(gap_filled_by_the_history, setup, teardown),
        cmocka_unit_test_setup_teardown(gap_the_history_cannot_fill_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_fetch_waits_for_the_window, setup, teardown),
        cmocka_unit_test_setup_teardown(running_fetch_is_awaited_past_the_window, setup, teardown),
        cmocka_unit_test_setup_teardown(full_buffer_gives_the_oldest_gap_up, setup, teardown),
        cmocka_unit_test_setup_teardown(full_buffer_spills_to_the_history, setup, teardown),
        cmocka_unit_test_setup_teardown(spill_without_a_fetch_ends_with_the_window, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(duplicate_while_held, setup, teardown),
        cmocka_unit_test_setup_teardown(epoch_change_resets, setup, teardown),
        cmocka_unit_test_setup_teardown(base_from_history, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_stream_waits_for_its_position, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_stream_position_shows_a_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_stream_drops_what_the_position_covers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unknown_stream_without_position_starts_at_the_lowest,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_stream_drops_another_epoch_at_its_position, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(epoch_left_is_never_taken_back, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_stream_never_written, setup, teardown),
        cmocka_unit_test_setup_teardown(epoch_hash_keys_the_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(new_epoch_is_verified_with_the_history, setup, teardown),
        cmocka_unit_test_setup_teardown(jump_beyond_the_history_does_not_move_the_stream, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
