/* Unit tests for bridge/acks.c: the unacknowledged window of ack=1
 * sessions (index by messageId under any ack order, growth, limits) and
 * the retransmit schedule, on the test's clock. The two session functions
 * acks.c calls are recorded here instead of writing to a socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

bridge *g_bridge;

static int64_t now_ms;
int64_t __wrap_cp_mono_ms(void);
int64_t __wrap_cp_mono_ms(void) { return now_ms; }

/* What acks.c asked of the session layer. */
static int enqueued, closed;
static uint16_t closed_code;
static out_frame *last_enqueued;

int session_enqueue(bridge *b, session *s, out_frame *f)
{
    (void)b;
    (void)s;
    enqueued++;
    last_enqueued = f;
    return 0;
}

void session_close(bridge *b, session *s, end_reason why, uint16_t code)
{
    (void)b;
    (void)why;
    closed++;
    closed_code = code;
    s->state = SESSION_CLOSING;
}

static bridge b;
static session s;
static char recipient[] = ",\"sessionId\":\"sid\",\"to\":[\"c\"]";

static int setup(void **state)
{
    (void)state;
    memset(&b, 0, sizeof b);
    memset(&s, 0, sizeof s);
    b.cfg.ack_window = 256;
    b.cfg.ack_timeout_s = 1;
    b.cfg.ack_retries = 3;
    cp_buf_init(&b.scratch);
    s.state = SESSION_OPEN;
    s.recipient = recipient;
    s.sid_len = 3;
    now_ms = 1000000;
    enqueued = closed = 0;
    closed_code = 0;
    last_enqueued = NULL;
    assert_int_equal(acks_enable(&b, &s), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    acks_disable(&b, &s);
    assert_null(s.acks);
    assert_int_equal(b.ack_sessions, 0);
    assert_int_equal(b.ack_outstanding, 0);
    assert_null(b.ack_pending);
    cp_buf_free(&b.scratch);
    return 0;
}

static out_frame *business(const char *id)
{
    char json[256];
    snprintf(json, sizeof json, "{\"from\":\"system\",\"messageId\":\"%s\",\"msg\":{},\"msgType\":1}",
             id);
    out_frame *f = frame_new(json, strlen(json), strlen(json) - 1, 1, CP_MSG_BUSINESS);
    assert_non_null(f);
    return f;
}

/* Tracks a new message; the window holds the only reference afterwards. */
static void track(const char *id)
{
    out_frame *f = business(id);
    assert_int_equal(acks_track(&b, &s, f), 0);
    frame_unref(f);
}

static void test_confirm_in_any_order(void **state)
{
    (void)state;
    enum { N = 200 };
    char ids[N][16];
    int order[N];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "id-%d", i);
        track(ids[i]);
        order[i] = i;
    }
    assert_int_equal(b.ack_outstanding, N);
    assert_non_null(b.ack_pending);
    /* A fixed shuffle: every removal pattern of the index is exercised. */
    srand(7);
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < N; i++) {
        acks_confirm(&b, &s, ids[order[i]]);
        assert_int_equal(b.ack_outstanding, (uint64_t)(N - 1 - i));
        acks_confirm(&b, &s, ids[order[i]]); /* again: ignored */
        assert_int_equal(b.ack_outstanding, (uint64_t)(N - 1 - i));
    }
    assert_null(b.ack_pending);
    acks_confirm(&b, &s, "never-sent");
}

static void test_duplicate_ids_are_held_once(void **state)
{
    (void)state;
    track("same");
    track("same");
    assert_int_equal(b.ack_outstanding, 1);
    acks_confirm(&b, &s, "same");
    assert_int_equal(b.ack_outstanding, 0);
}

static void test_escaped_ids_match_the_client_ack(void **state)
{
    (void)state;
    track("q\\\"uote");        /* as written in the frame: q\"uote */
    acks_confirm(&b, &s, "q\"uote"); /* as the client's JSON parser gives it */
    assert_int_equal(b.ack_outstanding, 0);
}

static void test_window_limit_and_reuse_while_wrapping(void **state)
{
    (void)state;
    b.cfg.ack_window = 8;
    char id[16];
    /* The head moves on while the ring wraps many times. */
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "w-%d", i);
        track(id);
        if (i >= 5) {
            snprintf(id, sizeof id, "w-%d", i - 5);
            acks_confirm(&b, &s, id);
        }
    }
    assert_int_equal(b.ack_outstanding, 5);
    track("w-100");
    track("w-101");
    track("w-102");
    assert_int_equal(b.ack_outstanding, 8);
    out_frame *f = business("w-103");
    assert_int_equal(acks_track(&b, &s, f), -1); /* full */
    frame_unref(f);
    /* Confirming a later one leaves a hole: the span still counts. */
    acks_confirm(&b, &s, "w-102");
    f = business("w-104");
    assert_int_equal(acks_track(&b, &s, f), -1);
    frame_unref(f);
    acks_confirm(&b, &s, "w-95"); /* the oldest: room again */
    track("w-105");
    for (int i = 96; i <= 101; i++) {
        snprintf(id, sizeof id, "w-%d", i);
        acks_confirm(&b, &s, id);
    }
    acks_confirm(&b, &s, "w-105");
    assert_int_equal(b.ack_outstanding, 0);
}

static void test_sequence_numbers_wrap(void **state)
{
    (void)state;
    s.acks->head = s.acks->tail = UINT32_MAX - 5;
    char id[16];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "wrap-%d", i);
        track(id);
    }
    for (int i = 19; i >= 0; i -= 2) {
        snprintf(id, sizeof id, "wrap-%d", i);
        acks_confirm(&b, &s, id);
    }
    assert_int_equal(b.ack_outstanding, 10);
    for (int i = 0; i < 20; i += 2) {
        snprintf(id, sizeof id, "wrap-%d", i);
        acks_confirm(&b, &s, id);
    }
    assert_int_equal(b.ack_outstanding, 0);
    assert_int_equal(s.acks->head, s.acks->tail);
}

static void test_frames_without_an_id_are_not_tracked(void **state)
{
    (void)state;
    const char *json = "{\"from\":\"system\",\"msg\":{},\"msgType\":1}";
    out_frame *f = frame_new(json, strlen(json), 0, 0, CP_MSG_BUSINESS);
    assert_int_equal(acks_track(&b, &s, f), 0);
    assert_int_equal(f->refs, 1);
    assert_int_equal(b.ack_outstanding, 0);
    frame_unref(f);
}

static void test_resends_then_4006(void **state)
{
    (void)state;
    out_frame *f = business("late");
    assert_int_equal(acks_track(&b, &s, f), 0);
    now_ms += 500;
    track("confirmed");
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 0);
    now_ms += 499; /* 999 ms after the first send */
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 0);
    now_ms += 1;
    acks_confirm(&b, &s, "confirmed");
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 1);
    assert_ptr_equal(last_enqueued, f); /* the same frame, no copy */
    assert_int_equal(b.n.ack_retransmits, 1);
    now_ms += 500;
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 1);
    now_ms += 500; /* 2 s */
    acks_check(&b, now_ms);
    now_ms += 1000; /* 3 s */
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 3);
    assert_int_equal(closed, 0);
    now_ms += 1000; /* 4 s: --ack-retries (3) resends done */
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 3);
    assert_int_equal(closed, 1);
    assert_int_equal(closed_code, CLOSE_UNACKED);
    /* A closing session is not looked at again. */
    now_ms += 5000;
    acks_check(&b, now_ms);
    assert_int_equal(closed, 1);
    frame_unref(f);
}

static void test_acked_message_is_not_resent(void **state)
{
    (void)state;
    track("a");
    track("b");
    acks_confirm(&b, &s, "a");
    now_ms += 1000;
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 1); /* only b */
    acks_confirm(&b, &s, "b");
    now_ms += 10000;
    acks_check(&b, now_ms);
    assert_int_equal(enqueued, 1);
    assert_int_equal(closed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_confirm_in_any_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_ids_are_held_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaped_ids_match_the_client_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_limit_and_reuse_while_wrapping, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sequence_numbers_wrap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frames_without_an_id_are_not_tracked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_resends_then_4006, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acked_message_is_not_resent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
