/* Unit tests for bridge/inbox.c: the bounded ring of bus messages (full,
 * empty, wraparound, order), the event list, and a producer thread handing
 * messages to a consumer thread as Paho's threads and the service thread do.
 * No lws context is set: waking the service thread is not tested here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "inbox.h"

/* The messages of these tests carry a sequence number in topic_len; topic
 * and msg are not looked at by the ring. */
static int push_seq(inbox *ib, size_t seq) { return inbox_push_message(ib, NULL, seq, NULL); }

static void take_expect(inbox *ib, size_t max, size_t first, size_t n)
{
    inbox_message out[64];
    assert_true(max <= 64);
    assert_int_equal(inbox_take_messages(ib, out, max), n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].topic_len, first + i);
}

static void test_empty(void **state)
{
    (void)state;
    inbox ib;
    assert_int_equal(inbox_init(&ib, 4, 4), 0);
    inbox_message out[4];
    assert_int_equal(inbox_take_messages(&ib, out, 4), 0);
    assert_null(inbox_take_events(&ib));
    assert_int_equal(inbox_depth(&ib), 0);
    inbox_wake(&ib); /* no context yet: nothing to wake, no crash */
    inbox_destroy(&ib);
}

static void test_a_burst_grows_it_to_its_limit_then_it_refuses(void **state)
{
    (void)state;
    inbox ib;
    assert_int_equal(inbox_init(&ib, 4, 8), 0);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(push_seq(&ib, i), 1); /* past 4: it grows, nothing refused */
    assert_int_equal(inbox_depth(&ib), 8);
    assert_int_equal(push_seq(&ib, 99), 0); /* at its limit: Paho redelivers later */
    assert_int_equal(inbox_depth(&ib), 8);
    take_expect(&ib, 64, 0, 8);
    assert_int_equal(inbox_depth(&ib), 0);
    assert_int_equal(ib.ring.cap, 4); /* emptied: back to its usual size */
    inbox_destroy(&ib);
}

static void test_take_at_most_max_in_order_with_wraparound(void **state)
{
    (void)state;
    inbox ib;
    assert_int_equal(inbox_init(&ib, 5, 5), 0);
    size_t in = 0, out = 0;
    /* 3 in, 2 out, repeatedly: the head goes round the ring many times. */
    for (int round = 0; round < 40; round++) {
        for (int k = 0; k < 3; k++) {
            if (push_seq(&ib, in) == 1)
                in++;
        }
        size_t depth = in - out;
        assert_int_equal(inbox_depth(&ib), depth);
        size_t n = depth < 2 ? depth : 2;
        take_expect(&ib, 2, out, n);
        out += n;
    }
    assert_true(in > 40); /* it really went round */
    /* Taking more than there is returns what there is. */
    take_expect(&ib, 64, out, in - out);
    inbox_destroy(&ib);
}

static void test_events_in_order(void **state)
{
    (void)state;
    inbox ib;
    assert_int_equal(inbox_init(&ib, 1, 1), 0);
    inbox_event ev[3] = {{.kind = 10}, {.kind = 11}, {.kind = 12}};
    for (int i = 0; i < 3; i++)
        inbox_push_event(&ib, &ev[i]);
    inbox_event *list = inbox_take_events(&ib);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(list, &ev[i]);
        list = list->next;
    }
    assert_null(list);
    assert_null(inbox_take_events(&ib));
    /* The list starts over after a take. */
    inbox_push_event(&ib, &ev[1]);
    list = inbox_take_events(&ib);
    assert_ptr_equal(list, &ev[1]);
    assert_null(list->next);
    inbox_destroy(&ib);
}

/* Paho's allocator keeps a list of its live blocks (so LeakSanitizer never
 * sees them leak) and reports their total here. Libpaho exports it without
 * declaring it in MQTTAsync.h; the layout is Heap.h's heap_info. */
typedef struct {
    size_t current_size;
    size_t max_size;
} paho_heap_info;
paho_heap_info *Heap_get_info(void);

/* What is still queued at shutdown is freed: messages back to Paho's
 * allocator (checked with its byte count), events with free (ASan). */
static void test_destroy_frees_what_is_queued(void **state)
{
    (void)state;
    /* Paho's allocator keeps its books only while a client exists, as it
     * does in the bridge. */
    MQTTAsync client;
    assert_int_equal(MQTTAsync_create(&client, "tcp://127.0.0.1:1", "cp-test-inbox",
                                      MQTTCLIENT_PERSISTENCE_NONE, NULL),
                     MQTTASYNC_SUCCESS);
    size_t paho_bytes = Heap_get_info()->current_size;
    inbox ib;
    assert_int_equal(inbox_init(&ib, 4, 4), 0);
    /* Wrapped and not full: the first message is taken (and freed, as the
     * service thread does), so the two left start at slot 1. */
    for (int i = 0; i < 3; i++) {
        char *topic = MQTTAsync_malloc(8);
        memcpy(topic, "t/x", 4);
        MQTTAsync_message *m = MQTTAsync_malloc(sizeof *m);
        MQTTAsync_message init = MQTTAsync_message_initializer;
        *m = init;
        m->payload = MQTTAsync_malloc(16);
        m->payloadlen = 16;
        assert_int_equal(inbox_push_message(&ib, topic, 3, m), 1);
    }
    inbox_message first;
    assert_int_equal(inbox_take_messages(&ib, &first, 1), 1);
    MQTTAsync_freeMessage(&first.msg);
    MQTTAsync_free(first.topic);
    assert_true(Heap_get_info()->current_size > paho_bytes);
    inbox_event *ev = calloc(1, sizeof *ev);
    inbox_push_event(&ib, ev);
    inbox_destroy(&ib);
    assert_null(ib.ring.slots);
    assert_int_equal(Heap_get_info()->current_size, paho_bytes);
    MQTTAsync_destroy(&client);
}

/* ---- across threads */

enum { CROSS_N = 200000, PRODUCERS = 3 };

typedef struct {
    inbox *ib;
    size_t producer;
    inbox_event *events;
} producer_arg;

#define SEQ(p, i) (((size_t)(p) << 32) | (size_t)(i))

static void *produce(void *arg)
{
    producer_arg *a = arg;
    for (size_t i = 0; i < CROSS_N; i++) {
        while (!push_seq(a->ib, SEQ(a->producer, i)))
            sched_yield(); /* full: as Paho does, try again later */
        if (i % 1000 == 0)
            inbox_push_event(a->ib, &a->events[i / 1000]);
    }
    return NULL;
}

/* Several producers push into a small ring while this thread takes: no
 * message is lost or duplicated, and each producer's messages come out in
 * the order it pushed them; likewise every event arrives once. */
static void test_producers_and_consumer_threads(void **state)
{
    (void)state;
    inbox ib;
    assert_int_equal(inbox_init(&ib, 64, 64), 0);
    producer_arg args[PRODUCERS];
    pthread_t threads[PRODUCERS];
    static inbox_event events[PRODUCERS][CROSS_N / 1000];
    for (size_t p = 0; p < PRODUCERS; p++) {
        args[p] = (producer_arg){.ib = &ib, .producer = p, .events = events[p]};
        assert_int_equal(pthread_create(&threads[p], NULL, produce, &args[p]), 0);
    }
    size_t next[PRODUCERS] = {0};
    size_t total = 0, events_seen = 0;
    while (total < (size_t)PRODUCERS * CROSS_N) {
        inbox_message out[16];
        size_t n = inbox_take_messages(&ib, out, 16);
        for (size_t i = 0; i < n; i++) {
            size_t p = out[i].topic_len >> 32;
            size_t seq = out[i].topic_len & 0xffffffffu;
            assert_true(p < PRODUCERS);
            assert_int_equal(seq, next[p]);
            next[p]++;
        }
        total += n;
        for (inbox_event *ev = inbox_take_events(&ib); ev; ev = ev->next)
            events_seen++;
        if (n == 0)
            sched_yield();
    }
    for (size_t p = 0; p < PRODUCERS; p++) {
        assert_int_equal(pthread_join(threads[p], NULL), 0);
        assert_int_equal(next[p], CROSS_N);
    }
    for (inbox_event *ev = inbox_take_events(&ib); ev; ev = ev->next)
        events_seen++;
    assert_int_equal(events_seen, PRODUCERS * (CROSS_N / 1000));
    assert_int_equal(inbox_depth(&ib), 0);
    inbox_destroy(&ib);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_a_burst_grows_it_to_its_limit_then_it_refuses),
        cmocka_unit_test(test_take_at_most_max_in_order_with_wraparound),
        cmocka_unit_test(test_events_in_order),
        cmocka_unit_test(test_destroy_frees_what_is_queued),
        cmocka_unit_test(test_producers_and_consumer_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
