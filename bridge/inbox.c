#include "inbox.h"

#include <stdlib.h>

#include <libwebsockets.h>
#include <utlist.h>

#include "ids.h"
#include "log.h"

int inbox_init(inbox *ib, size_t capacity, size_t max_capacity)
{
    if (cp_ring_init(&ib->ring, sizeof(inbox_message), capacity, max_capacity) != 0)
        return -1;
    ib->events = NULL;
    ib->ctx = NULL;
    pthread_mutex_init(&ib->lock, NULL);
    return 0;
}

void inbox_set_context(inbox *ib, struct lws_context *ctx)
{
    pthread_mutex_lock(&ib->lock);
    ib->ctx = ctx;
    pthread_mutex_unlock(&ib->lock);
}

void inbox_wake(inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    struct lws_context *ctx = ib->ctx;
    pthread_mutex_unlock(&ib->lock);
    if (ctx)
        lws_cancel_service(ctx);
}

int inbox_push_message(inbox *ib, char *topic, size_t topic_len, MQTTAsync_message *msg)
{
    pthread_mutex_lock(&ib->lock);
    int grew;
    inbox_message *slot = cp_ring_push(&ib->ring, &grew);
    if (!slot) {
        pthread_mutex_unlock(&ib->lock);
        inbox_wake(ib);
        return 0;
    }
    slot->topic = topic;
    slot->topic_len = topic_len;
    slot->msg = msg;
    slot->arrived_us = cp_mono_us();
    /* Only the first message of a batch needs to wake the loop. */
    int wake = ib->ring.count == 1;
    size_t depth = ib->ring.count, room = ib->ring.cap;
    struct lws_context *ctx = ib->ctx;
    pthread_mutex_unlock(&ib->lock);
    if (grew && room >= 8 * ib->ring.base_cap)
        log_warn("inbox: %zu bus messages wait for the service thread (room for %zu now, %zu "
                 "at most)",
                 depth, room, ib->ring.max_cap);
    if (wake && ctx)
        lws_cancel_service(ctx);
    return 1;
}

void inbox_push_event(inbox *ib, inbox_event *ev)
{
    pthread_mutex_lock(&ib->lock);
    /* The loop takes the whole list (inbox_take_events): a wake-up is
     * pending already when the list was not empty. A history read of many
     * sessions' greetings then wakes the loop once, not once each. */
    int wake = ib->events == NULL;
    DL_APPEND(ib->events, ev);
    struct lws_context *ctx = ib->ctx;
    pthread_mutex_unlock(&ib->lock);
    if (wake && ctx)
        lws_cancel_service(ctx);
}

size_t inbox_take_messages(inbox *ib, inbox_message *out, size_t max)
{
    pthread_mutex_lock(&ib->lock);
    size_t n = cp_ring_take(&ib->ring, out, max);
    pthread_mutex_unlock(&ib->lock);
    return n;
}

inbox_event *inbox_take_events(inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    inbox_event *list = ib->events;
    ib->events = NULL;
    pthread_mutex_unlock(&ib->lock);
    return list;
}

size_t inbox_depth(inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    size_t n = ib->ring.count;
    pthread_mutex_unlock(&ib->lock);
    return n;
}

void inbox_destroy(inbox *ib)
{
    for (size_t i = 0; i < ib->ring.count; i++) {
        inbox_message *m = cp_ring_at(&ib->ring, i);
        MQTTAsync_freeMessage(&m->msg);
        MQTTAsync_free(m->topic);
    }
    cp_ring_free(&ib->ring);
    /* Events are owned by whoever allocated them; free them generically. */
    inbox_event *ev, *next;
    LL_FOREACH_SAFE(ib->events, ev, next)
        free(ev);
    ib->events = NULL;
    pthread_mutex_destroy(&ib->lock);
}
