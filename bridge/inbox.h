/* The hand-over from Paho's threads to the libwebsockets service thread.
 *
 * Bus messages go into a ring that grows when full (common/ring.h), from
 * the capacity given up to a limit: a message refused to Paho is not held
 * back at the broker (Paho acknowledged it and keeps it, and every later
 * one, re-offering one per packet it receives), so refusing only turns a
 * burst into a backlog that drains at the pace of new traffic. Only at
 * the limit is a message refused (the last resort, counted). Waiting for
 * room instead would deadlock: Paho calls us holding its lock, which the
 * service thread takes to publish. Completion events (subscribe/publish
 * outcomes) go into an intrusive list; there is at most one per
 * outstanding bus operation, so it is bounded by the operations the
 * service thread started. Every push wakes the service thread with
 * lws_cancel_service(). */
#ifndef BRIDGE_INBOX_H
#define BRIDGE_INBOX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <MQTTAsync.h>

#include "ring.h"

struct lws_context;

typedef struct inbox_message {
    char *topic;
    size_t topic_len;
    MQTTAsync_message *msg;
    int64_t arrived_us; /* monotonic, when Paho handed it over */
} inbox_message;

typedef struct inbox_event inbox_event;
struct inbox_event {
    inbox_event *next;
    int kind;
    inbox_event *prev; /* utlist DL list: the head's prev is the tail */
};

typedef struct {
    pthread_mutex_t lock;
    struct lws_context *ctx;
    cp_ring ring; /* of inbox_message */
    inbox_event *events; /* oldest first */
} inbox;

/* capacity: the ring's usual size; max_capacity: how far a burst grows it. */
int inbox_init(inbox *ib, size_t capacity, size_t max_capacity);
void inbox_set_context(inbox *ib, struct lws_context *ctx);
/* Producer side (any thread). Returns 1 when queued, 0 at the limit. */
int inbox_push_message(inbox *ib, char *topic, size_t topic_len, MQTTAsync_message *msg);
void inbox_push_event(inbox *ib, inbox_event *ev);
/* Wakes the service thread without queueing anything. */
void inbox_wake(inbox *ib);
/* Consumer side (service thread): takes up to max messages into out. */
size_t inbox_take_messages(inbox *ib, inbox_message *out, size_t max);
/* Takes the whole event list (oldest first; walk it by next, which is NULL
 * at the end). */
inbox_event *inbox_take_events(inbox *ib);
size_t inbox_depth(inbox *ib);
/* Frees everything still queued (at shutdown). */
void inbox_destroy(inbox *ib);

#endif
