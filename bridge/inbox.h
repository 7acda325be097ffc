/* The hand-over from Paho's threads to the libwebsockets service thread.
 *
 * Bus messages go into a bounded ring: when it is full the producer is told
 * so and Paho redelivers later. Known limit: Paho then redelivers only one
 * queued message per receive cycle, so an overflow leaves a backlog that
 * drains slowly; the ring is sized (65 536) to make that rare. Waiting for
 * room instead would deadlock: the service thread takes Paho's lock to
 * publish while Paho's thread would be waiting on us. Completion events (subscribe/publish outcomes) go into an
 * intrusive list; there is at most one per outstanding bus operation, so it
 * is bounded by the operations the service thread started. Every push wakes
 * the service thread with lws_cancel_service(). */
#ifndef BRIDGE_INBOX_H
#define BRIDGE_INBOX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <MQTTAsync.h>

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
    inbox_message *ring;
    size_t cap, head, count;
    inbox_event *events; /* oldest first */
} inbox;

int inbox_init(inbox *ib, size_t capacity);
void inbox_set_context(inbox *ib, struct lws_context *ctx);
/* Producer side (any thread). Returns 1 when queued, 0 when full. */
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
