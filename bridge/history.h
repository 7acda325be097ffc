/* Reads of the stream history in Redis (docs/redis.md "History streams"),
 * on a thread of its own with its own connection: the service thread never
 * waits on Redis. It submits requests into a bounded queue; the thread
 * takes what is pending (a batch bounded in count and in bytes), pipelines
 * every read of the batch (one round trip) and hands each request back,
 * filled, through the bridge's inbox (inbox_push_event wakes the service
 * thread with lws_cancel_service). */
#ifndef BRIDGE_HISTORY_H
#define BRIDGE_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "inbox.h"
#include "redis.h"
#include "ids.h"

typedef struct history history;

/* One retained message, as stored (the envelope). */
typedef struct history_entry {
    struct history_entry *next;
    int64_t offset;
    size_t len;
    char data[];
} history_entry;

/* One stream read: its state and its messages with offset > since. */
typedef struct {
    char stream[CP_CHANNEL_ID_MAX + 1]; /* a channel id, or CP_REDIS_BROADCAST_STREAM */
    int64_t since;
    size_t max; /* 0: the state only */
    /* filled by the thread */
    int rc; /* CP_REDIS_OK, or the failure (REFUSED, LOST: Redis down) */
    cp_redis_stream_state state;
    history_entry *entries, *tail;
    size_t n, bytes;
} history_read;

/* VERIFY: a stream's state only, to learn its current epoch. */
enum { HISTORY_GREET = 1, HISTORY_FILL, HISTORY_CATCH_UP, HISTORY_VERIFY };

#define HISTORY_READS_MAX 2
/* A request: starts with the inbox event it travels back as. */
typedef struct history_req {
    inbox_event ev;
    struct history_req *qnext; /* the thread's queue */
    int what;                  /* HISTORY_* (the service thread's) */
    uint64_t session_id;       /* HISTORY_GREET */
    uint64_t generation;       /* the channel entry it was made for */
    int broadcast;             /* FILL, CATCH_UP: of the broadcast stream */
    int nreads;
    history_read reads[HISTORY_READS_MAX];
} history_req;

/* Starts the thread (the queue holds at most max_pending requests); NULL
 * when the URL is invalid or memory is short. Results go to ib as events of
 * kind event_kind. */
history *history_start(const char *redis_url, const char *prefix, inbox *ib, int event_kind,
                       size_t max_pending);
/* A zeroed request, or NULL when memory is short. */
history_req *history_req_new(int what);
/* Adds a read to req (at most HISTORY_READS_MAX). */
void history_req_add(history_req *req, const char *stream, int64_t since, size_t max);
/* Queues req: 0, or -1 when the queue is full (the caller keeps req).
 * Greetings and gap fills are read before catch-ups (HISTORY_CATCH_UP),
 * which may fill at most 3/4 of the queue: a session or a gap never waits
 * behind a reconnect's bulk reads. */
int history_submit(history *h, history_req *req);
void history_req_free(history_req *req);
/* 1 while the last read reached Redis. */
int history_healthy(history *h);
/* Stops the thread; unanswered requests are freed. */
void history_stop(history *h);

#endif
