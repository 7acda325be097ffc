#include "inbox.h"

#include <stdlib.h>

#include <libwebsockets.h>
#include <utlist.h>

#include "ids.h"

int inbox_init(inbox *ib, size_t capacity)
{
    ib->ring = calloc(capacity, sizeof *ib->ring);
    if (!ib->ring)
        return -1;
    ib->cap = capacity;
    ib->head = ib->count = 0;
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
    if (ib->count == ib->cap) {
        pthread_mutex_unlock(&ib->lock);
        inbox_wake(ib);
        return 0;
    }
    inbox_message *slot = &ib->ring[(ib->head + ib->count) % ib->cap];
    slot->topic = topic;
    slot->topic_len = topic_len;
    slot->msg = msg;
    slot->arrived_us = cp_mono_us();
    ib->count++;
    /* Only the first message of a batch needs to wake the loop. */
    int wake = ib->count == 1;
    struct lws_context *ctx = ib->ctx;
    pthread_mutex_unlock(&ib->lock);
    if (wake && ctx)
        lws_cancel_service(ctx);
    return 1;
}

void inbox_push_event(inbox *ib, inbox_event *ev)
{
    pthread_mutex_lock(&ib->lock);
    DL_APPEND(ib->events, ev);
    struct lws_context *ctx = ib->ctx;
    pthread_mutex_unlock(&ib->lock);
    if (ctx)
        lws_cancel_service(ctx);
}

size_t inbox_take_messages(inbox *ib, inbox_message *out, size_t max)
{
    pthread_mutex_lock(&ib->lock);
    size_t n = ib->count < max ? ib->count : max;
    for (size_t i = 0; i < n; i++)
        out[i] = ib->ring[(ib->head + i) % ib->cap];
    ib->head = (ib->head + n) % ib->cap;
    ib->count -= n;
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
    size_t n = ib->count;
    pthread_mutex_unlock(&ib->lock);
    return n;
}

void inbox_destroy(inbox *ib)
{
    for (size_t i = 0; i < ib->count; i++) {
        inbox_message *m = &ib->ring[(ib->head + i) % ib->cap];
        MQTTAsync_freeMessage(&m->msg);
        MQTTAsync_free(m->topic);
    }
    free(ib->ring);
    ib->ring = NULL;
    ib->count = 0;
    /* Events are owned by whoever allocated them; free them generically. */
    inbox_event *ev, *next;
    LL_FOREACH_SAFE(ib->events, ev, next)
        free(ev);
    ib->events = NULL;
    pthread_mutex_destroy(&ib->lock);
}
