/* A push request's Redis work in one round trip shared with the requests
 * running beside it (docs/design-delivery.md, 1; docs/http-api.md):
 *   - appending each message to its stream (the recipient's channel id, or
 *     the broadcast stream), which gives it its offset and epoch before it
 *     is published;
 *   - looking up which recipients have a live session (the answer's
 *     "online" and "offline").
 *
 * Group commit: CivetWeb worker threads hand their work to one thread,
 * which sends whatever queued while its previous pipeline was in flight
 * as one Redis pipeline on its own connection. Under load one round trip
 * (one write and one read on each side) carries many pushes; idle, a push
 * waits for its own round trip only. */
#ifndef HTTPAPI_GROUPCOMMIT_H
#define HTTPAPI_GROUPCOMMIT_H

#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#include "redis.h"

typedef struct {
    cp_redis_addr addr;
    const char *prefix;
    long history_size;
    long history_ttl_s;
    long bridge_ttl_ms; /* a bridge whose record is older is dead (presence) */
    /* Optional: runs on the committer's thread after the then of every
     * request of a pipeline, before they are woken (the HTTP API publishes
     * the delivery batch their thens filled there). */
    void (*after)(void *ud);
    void *after_ud;
    /* Under a steady stream a pipeline waits up to linger_us (0: not at
     * all) for fill messages before it goes (groupcommit.c); fill at least 1. */
    size_t fill;
    long linger_us;
} group_commit_config;

/* One request's work. In: the appends (n, maybe 0) and the presence
 * lookups (m, maybe 0). Out: out[i] and rc, online[j] and online_rc. */
typedef struct redis_work redis_work;
struct redis_work {
    size_t n;
    const char *const *streams;     /* the stream of message i */
    const char *const *message_ids; /* its idempotency key, matched with fingerprint */
    const char *fingerprint;        /* cp_seq_fingerprint of the messages */
    const char *const *envelopes;   /* the envelope as stored */
    const size_t *lens;
    cp_redis_appended *out; /* offset 0: not stored (conflict: another message has the id) */
    int rc;                 /* 0: Redis stored every message; -1: down, refused, stopping */
    size_t m;
    const char *const *ids;
    unsigned char *online;
    int online_rc; /* 0: online[] is known; -1 otherwise */
    /* Optional: runs once the outcome above is set, on the committer's
     * thread (on the caller's when the committer cannot take the work),
     * before group_commit_end returns. The HTTP API publishes from there:
     * one thread calls Paho for many requests, and a request thread sleeps
     * once (Redis and the hand-over to the bus) instead of twice. */
    void (*then)(redis_work *w);
    void *ud;
    /* Set for then: the appends of the whole pipeline w went in (0 when
     * then runs on the caller's thread). */
    size_t pipeline_appends;
};

/* A request's place in the queue, on the caller's stack from
 * group_commit_begin to group_commit_end. */
typedef struct group_commit_ticket {
    struct group_commit_ticket *next;
    redis_work *w;
    sem_t done;
} group_commit_ticket;

/* Starts the thread (cfg is copied; its strings must outlive it). 0, or
 * -1 after logging. */
int group_commit_start(const group_commit_config *cfg);

/* Does w's work, blocking until Redis answered (or could not be reached);
 * sets w->rc and w->online_rc. */
void group_commit_run(redis_work *w);

/* group_commit_run in two halves: begin queues w and returns at once;
 * end waits until the committer is done with w (its then included). Every
 * begin is followed by its end. */
void group_commit_begin(redis_work *w, group_commit_ticket *t);
void group_commit_end(group_commit_ticket *t);

/* Pipelines sent and the appends and lookups they carried (their ratio is
 * the mean batch). */
void group_commit_stats(uint64_t *pipelines, uint64_t *appends, uint64_t *lookups);

/* Finishes what is queued and ends the thread (after the server stopped). */
void group_commit_stop(void);

#endif
