/* Unit tests for bridge/frame.c: shared reference-counted frames and the
 * bounded per-session frame queue (limits, order, wraparound, growth). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

/* A large limit for tests that are not about the limits. */
#define NO_BYTE_LIMIT ((size_t)1 << 40)

static out_frame *text_frame(const char *text)
{
    out_frame *f = frame_new(text, strlen(text), 0, 0, 1);
    assert_non_null(f);
    return f;
}

static void test_new_copies_the_text_and_fields(void **state)
{
    (void)state;
    char json[] = "{\"msgType\":1}";
    out_frame *f = frame_new(json, strlen(json), 5, 1, -1);
    assert_non_null(f);
    json[0] = 'X'; /* the frame owns a copy */
    assert_int_equal(f->refs, 1);
    assert_int_equal(f->len, strlen(json));
    assert_int_equal(f->split, 5);
    assert_int_equal(f->personalised, 1);
    assert_int_equal(f->msg_type, -1);
    assert_memory_equal(f->data, "{\"msgType\":1}", f->len);
    frame_unref(f);
}

static void test_new_refuses_split_past_the_end(void **state)
{
    (void)state;
    assert_null(frame_new("abc", 3, 4, 1, 1));
    /* The gap may be at the very end. */
    out_frame *f = frame_new("abc", 3, 3, 1, 1);
    assert_non_null(f);
    assert_int_equal(f->split, 3);
    frame_unref(f);
    /* An empty frame is a frame. */
    f = frame_new("", 0, 0, 0, 0);
    assert_non_null(f);
    assert_int_equal(f->len, 0);
    frame_unref(f);
}

static void test_references(void **state)
{
    (void)state;
    out_frame *f = text_frame("shared");
    frame_ref(f);
    frame_ref(f);
    assert_int_equal(f->refs, 3);
    frame_unref(f);
    frame_unref(f);
    assert_int_equal(f->refs, 1);
    assert_memory_equal(f->data, "shared", 6); /* still alive */
    frame_unref(f);                            /* freed (ASan checks) */
    frame_unref(NULL);                         /* allowed */
}

static void test_queue_is_lazy_and_fifo(void **state)
{
    (void)state;
    frame_queue q = {0};
    assert_null(frame_queue_pop(&q, 0)); /* empty, never allocated */
    assert_null(q.slots);
    out_frame *f[3] = {text_frame("a"), text_frame("bb"), text_frame("ccc")};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(frame_queue_push(&q, f[i], 0, 100, NO_BYTE_LIMIT), 0);
        assert_int_equal(f[i]->refs, 2); /* the queue holds its own */
    }
    assert_int_equal(q.count, 3);
    assert_int_equal(q.bytes, 1 + 2 + 3);
    for (int i = 0; i < 3; i++) {
        out_frame *got = frame_queue_pop(&q, 0);
        assert_ptr_equal(got, f[i]);
        frame_unref(got); /* the popped reference is the caller's */
        assert_int_equal(f[i]->refs, 1);
    }
    assert_int_equal(q.count, 0);
    assert_int_equal(q.bytes, 0);
    assert_null(frame_queue_pop(&q, 0));
    frame_queue_clear(&q);
    for (int i = 0; i < 3; i++)
        frame_unref(f[i]);
}

static void test_queue_message_limit_leaves_queue_unchanged(void **state)
{
    (void)state;
    frame_queue q = {0};
    out_frame *f = text_frame("x");
    for (int i = 0; i < 5; i++)
        assert_int_equal(frame_queue_push(&q, f, 0, 5, NO_BYTE_LIMIT), 0);
    /* The growth stops at the limit: 4, then 5 (not 8). */
    assert_int_equal(q.cap, 5);
    assert_int_equal(frame_queue_push(&q, f, 0, 5, NO_BYTE_LIMIT), -1);
    assert_int_equal(q.count, 5);
    assert_int_equal(q.bytes, 5);
    assert_int_equal(f->refs, 1 + 5); /* no reference taken by the refusal */
    frame_queue_clear(&q);
    assert_int_equal(f->refs, 1);
    assert_null(q.slots);
    assert_int_equal(q.count + q.cap + q.head + q.bytes, 0);
    frame_unref(f);
}

static void test_queue_byte_limit_counts_extra_bytes(void **state)
{
    (void)state;
    frame_queue q = {0};
    out_frame *f = text_frame("0123456789"); /* 10 bytes */
    /* Each costs 10 + 5 recipient bytes: two fit in 30, a third does not. */
    assert_int_equal(frame_queue_push(&q, f, 5, 100, 30), 0);
    assert_int_equal(frame_queue_push(&q, f, 5, 100, 30), 0);
    assert_int_equal(q.bytes, 30);
    assert_int_equal(frame_queue_push(&q, f, 0, 100, 30), -1);
    assert_int_equal(q.count, 2);
    assert_int_equal(q.bytes, 30);
    out_frame *got = frame_queue_pop(&q, 5);
    assert_int_equal(q.bytes, 15);
    frame_unref(got);
    /* Exactly at the limit is allowed. */
    assert_int_equal(frame_queue_push(&q, f, 5, 100, 30), 0);
    assert_int_equal(q.bytes, 30);
    frame_queue_clear(&q);
    assert_int_equal(f->refs, 1);
    frame_unref(f);
}

/* The byte limit bounds a backlog: an empty queue takes one frame of any
 * size (a single message never makes a reader a slow consumer), and then
 * nothing more until it has drained. */
static void test_empty_queue_takes_one_frame_over_the_byte_limit(void **state)
{
    (void)state;
    frame_queue q = {0};
    out_frame *big = text_frame("0123456789012345678901234567890123456789"); /* 40 bytes */
    out_frame *small = text_frame("x");
    assert_int_equal(frame_queue_push(&q, big, 5, 100, 30), 0);
    assert_int_equal(q.bytes, 45);
    assert_int_equal(frame_queue_push(&q, small, 0, 100, 30), -1);
    assert_int_equal(q.count, 1);
    frame_unref(frame_queue_pop(&q, 5));
    assert_int_equal(frame_queue_push(&q, small, 0, 100, 30), 0);
    frame_queue_clear(&q);
    frame_unref(big);
    frame_unref(small);
}

/* Frame sizes around the WebSocket header length boundaries (7-bit up to
 * 125, 16-bit from 126 up to 65535, 64-bit from 65536): the data is kept
 * whole and the queue's byte count is exact. */
static void test_frames_around_length_boundaries(void **state)
{
    (void)state;
    static const size_t sizes[] = {125, 126, 65535, 65536};
    char *text = malloc(65536);
    assert_non_null(text);
    for (size_t i = 0; i < 65536; i++)
        text[i] = (char)('a' + i % 26);
    frame_queue q = {0};
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        out_frame *f = frame_new(text, sizes[i], 0, 0, 1);
        assert_non_null(f);
        assert_int_equal(f->len, sizes[i]);
        assert_int_equal(frame_queue_push(&q, f, 0, 100, NO_BYTE_LIMIT), 0);
        frame_unref(f);
        total += sizes[i];
        assert_int_equal(q.bytes, total);
    }
    for (size_t i = 0; i < 4; i++) {
        out_frame *f = frame_queue_pop(&q, 0);
        assert_int_equal(f->len, sizes[i]);
        assert_memory_equal(f->data, text, sizes[i]);
        frame_unref(f);
    }
    assert_int_equal(q.bytes, 0);
    frame_queue_clear(&q);
    free(text);
}

/* Pushes and pops interleaved so the ring's head wraps, then grows while
 * wrapped: every frame still comes out in order. */
static void test_queue_wraparound_and_growth_keep_order(void **state)
{
    (void)state;
    enum { N = 1000 };
    out_frame *f[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        f[i] = text_frame(id);
    }
    frame_queue q = {0};
    int next_in = 0, next_out = 0;
    /* Steps of +3/-2 then +5/-1 and a drain: the head moves around the ring
     * and the queue grows from 4 up to the limit 64. */
    while (next_out < N) {
        int in = next_in < N / 2 ? 3 : 5;
        int out = next_in < N / 2 ? 2 : 1;
        for (int k = 0; k < in && next_in < N; k++) {
            if (frame_queue_push(&q, f[next_in], 0, 64, NO_BYTE_LIMIT) != 0)
                break; /* full: drain below */
            next_in++;
        }
        if (q.count == 64 || next_in == N)
            out = (int)q.count;
        for (int k = 0; k < out; k++) {
            out_frame *got = frame_queue_pop(&q, 0);
            assert_non_null(got);
            assert_ptr_equal(got, f[next_out]);
            frame_unref(got);
            next_out++;
        }
        assert_true(q.cap <= 64);
    }
    assert_int_equal(q.count, 0);
    assert_int_equal(q.cap, 64);
    frame_queue_clear(&q);
    for (int i = 0; i < N; i++) {
        assert_int_equal(f[i]->refs, 1);
        frame_unref(f[i]);
    }
}

/* The ring is full and wrapped (head not at slot 0) when it grows: the
 * frames keep their order. */
static void test_growth_while_wrapped_keeps_order(void **state)
{
    (void)state;
    frame_queue q = {0};
    out_frame *f[6];
    for (int i = 0; i < 6; i++) {
        char id[2] = {(char)('a' + i), 0};
        f[i] = text_frame(id);
    }
    assert_int_equal(frame_queue_push(&q, f[0], 0, 64, NO_BYTE_LIMIT), 0);
    assert_int_equal(frame_queue_push(&q, f[0], 0, 64, NO_BYTE_LIMIT), 0);
    assert_int_equal(frame_queue_push(&q, f[1], 0, 64, NO_BYTE_LIMIT), 0);
    for (int k = 0; k < 2; k++)
        frame_unref(frame_queue_pop(&q, 0));
    /* head is 2 of 4 now; three more fill the ring across its end. */
    for (int i = 2; i <= 4; i++)
        assert_int_equal(frame_queue_push(&q, f[i], 0, 64, NO_BYTE_LIMIT), 0);
    assert_int_equal(q.cap, 4);
    assert_int_equal(q.head, 2);
    assert_int_equal(frame_queue_push(&q, f[5], 0, 64, NO_BYTE_LIMIT), 0); /* grows */
    assert_int_equal(q.cap, 8);
    for (int i = 1; i <= 5; i++) {
        out_frame *got = frame_queue_pop(&q, 0);
        assert_ptr_equal(got, f[i]);
        frame_unref(got);
    }
    frame_queue_clear(&q);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(f[i]->refs, 1);
        frame_unref(f[i]);
    }
}

/* clear drops the references of exactly the queued frames, also when the
 * queue does not start at slot 0. */
static void test_clear_drops_queued_references(void **state)
{
    (void)state;
    frame_queue q = {0};
    out_frame *a = text_frame("a"), *b = text_frame("b"), *c = text_frame("c");
    assert_int_equal(frame_queue_push(&q, a, 0, 4, NO_BYTE_LIMIT), 0);
    assert_int_equal(frame_queue_push(&q, b, 0, 4, NO_BYTE_LIMIT), 0);
    assert_int_equal(frame_queue_push(&q, c, 0, 4, NO_BYTE_LIMIT), 0);
    frame_unref(frame_queue_pop(&q, 0)); /* a leaves: b and c from slot 1 */
    assert_int_equal(a->refs, 1);
    assert_int_equal(b->refs, 2);
    assert_int_equal(c->refs, 2);
    frame_queue_clear(&q);
    assert_int_equal(b->refs, 1);
    assert_int_equal(c->refs, 1);
    assert_int_equal(a->refs, 1);
    /* A cleared queue is usable again. */
    assert_int_equal(frame_queue_push(&q, b, 0, 4, NO_BYTE_LIMIT), 0);
    frame_queue_clear(&q);
    frame_unref(a);
    frame_unref(b);
    frame_unref(c);
}

static void test_message_id_is_found_once_and_cached(void **state)
{
    (void)state;
    const char *json = "{\"activeTime\":1,\"from\":\"x\\\"messageId\\\":\\\"no\","
                       "\"messageId\":\"m-1\",\"msg\":{\"messageId\":\"inner\"},\"msgType\":1}";
    out_frame *f = frame_new(json, strlen(json), strlen(json) - 1, 1, 1);
    assert_non_null(f);
    size_t len = 0;
    const char *id = frame_message_id(f, &len);
    assert_non_null(id);
    assert_int_equal(len, 3);
    assert_memory_equal(id, "m-1", 3);
    assert_int_equal(f->mid_state, FRAME_MID_FOUND);
    assert_ptr_equal(frame_message_id(f, &len), id);
    frame_unref(f);
}

static void test_message_id_escaped_kept_as_written(void **state)
{
    (void)state;
    const char *json = "{\"messageId\":\"a\\\"b\\\\\",\"msg\":{},\"msgType\":1}";
    out_frame *f = frame_new(json, strlen(json), 0, 0, 1);
    size_t len = 0;
    const char *id = frame_message_id(f, &len);
    assert_non_null(id);
    assert_int_equal(len, 6);
    assert_memory_equal(id, "a\\\"b\\\\", 6);
    frame_unref(f);
}

static void test_message_id_absent_or_only_in_the_payload(void **state)
{
    (void)state;
    const char *texts[] = {
        "{\"msg\":{\"messageId\":\"inner\"},\"msgType\":1}",
        "{\"msgType\":0,\"resultMsg\":\"x\"}",
        "{\"messageId\":\"\",\"msg\":{},\"msgType\":1}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        out_frame *f = frame_new(texts[i], strlen(texts[i]), 0, 0, 1);
        size_t len = 0;
        assert_null(frame_message_id(f, &len));
        assert_int_equal(f->mid_state, FRAME_MID_NONE);
        frame_unref(f);
    }
}

/* frame_stream_offset: the top-level offset only, -1 for none, null or a
 * broadcast's; the payload's own keys, strings and nesting do not fool it. */
static void test_stream_offset(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        long long want;
    } cases[] = {
        {"{\"epoch\":\"e\",\"msg\":{\"x\":1},\"msgType\":1,\"offset\":42,\"trigger\":3}", 42},
        {"{\"msg\":{\"offset\":7,\"a\":[{\"offset\":8},\"}\"]},\"msgType\":1,\"offset\":9}", 9},
        {"{\"msg\":{\"offset\":7},\"msgType\":1,\"trigger\":3}", -1},
        {"{\"from\":\"\\\",\\\"offset\\\":5\",\"msgType\":1}", -1},
        {"{\"msg\":{},\"msgType\":1,\"offset\":null}", -1},
        {"{\"broadcast\":true,\"msg\":{},\"msgType\":1,\"offset\":3}", -1},
        {"{\"broadcast\":false,\"msg\":{},\"msgType\":1,\"offset\":0}", 0},
        {"{\"msgType\":0,\"offset\":12,\"resultMsg\":\"connected\"}", 12},
        {"{\"msgType\":1,\"offset\":-4}", -1},
        {"{\"msgType\":1,\"offset\":12345678901234567890}", -1},
        {"", -1},
        {"{\"msg\":{\"unterminated\":\"", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        out_frame *f = frame_new(cases[i].json, strlen(cases[i].json), 0, 0, 1);
        assert_non_null(f);
        assert_int_equal(frame_stream_offset(f), cases[i].want);
        assert_int_equal(f->offset_known, 1);
        assert_int_equal(frame_stream_offset(f), cases[i].want); /* cached */
        frame_unref(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_copies_the_text_and_fields),
        cmocka_unit_test(test_new_refuses_split_past_the_end),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_queue_is_lazy_and_fifo),
        cmocka_unit_test(test_queue_message_limit_leaves_queue_unchanged),
        cmocka_unit_test(test_queue_byte_limit_counts_extra_bytes),
        cmocka_unit_test(test_empty_queue_takes_one_frame_over_the_byte_limit),
        cmocka_unit_test(test_frames_around_length_boundaries),
        cmocka_unit_test(test_queue_wraparound_and_growth_keep_order),
        cmocka_unit_test(test_growth_while_wrapped_keeps_order),
        cmocka_unit_test(test_clear_drops_queued_references),
        cmocka_unit_test(test_message_id_is_found_once_and_cached),
        cmocka_unit_test(test_stream_offset),
        cmocka_unit_test(test_message_id_escaped_kept_as_written),
        cmocka_unit_test(test_message_id_absent_or_only_in_the_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
