#include "groupcommit.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ids.h"
#include "log.h"
#include "redisgate.h"

/* Appends and lookups per pipeline at most; a request is never split, so
 * one with more goes alone. */
#define BATCH_MAX 4096
/* A pipeline that follows the previous one within BUSY_US waits up to
 * cfg.linger_us (--commit-linger-us) for cfg.fill messages (as the
 * sequencer does): under a steady stream each round trip, and each
 * delivery batch on the bus (--bus-batch), then carries several pushes
 * instead of one or two. An idle API never waits. Short, because
 * publishers wait for their answers: with 16 connections each sending its
 * next push when answered (bench/), a 1 ms wait held the rate to 6 000/s,
 * 300 us gave 8 000-10 000/s (docs/benchmarks.md). */
#define BUSY_US 2000

/* A request's work waiting in the queue (on its thread's stack). done is
 * a semaphore, posted without the queue's lock held: the request thread
 * wakes with nothing to fight the committer for. */
typedef group_commit_ticket queued_work;

static struct {
    group_commit_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t work;
    queued_work *head, **tail;
    size_t queued; /* messages (appends) in the queue */
    int running, stopping;
    pthread_t thread;
    /* The thread's own, below. */
    cp_redis *redis;
    cp_redis_appended *out; /* the pipeline's append replies */
    size_t out_cap;
    const char **ids;       /* the pipeline's lookups, and their answers */
    unsigned char *online;
    size_t ids_cap;
    atomic_ullong pipelines, appends, lookups;
} G = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

static cp_redis *conn(void)
{
    if (!G.redis) {
        cp_redis_options opt = {.prefix = G.cfg.prefix, .who = "redis", .timeout_ms = 1000};
        G.redis = cp_redis_open(&G.cfg.addr, &opt);
        if (!G.redis)
            return NULL;
    }
    return cp_redis_connect(G.redis) == CP_REDIS_DOWN ? NULL : G.redis;
}

static int connected(void) { return G.redis && cp_redis_connected(G.redis); }

static int room(size_t appends, size_t lookups)
{
    if (appends > G.out_cap) {
        cp_redis_appended *grown = realloc(G.out, appends * sizeof *grown);
        if (!grown)
            return -1;
        G.out = grown;
        G.out_cap = appends;
    }
    if (lookups > G.ids_cap) {
        const char **ids = realloc(G.ids, lookups * sizeof *ids);
        if (ids)
            G.ids = ids;
        unsigned char *online = realloc(G.online, lookups);
        if (online)
            G.online = online;
        if (!ids || !online)
            return -1;
        G.ids_cap = lookups;
    }
    return 0;
}

/* Every append of the batch, then every lookup, in one pipeline. The
 * appends' replies go to G.out (all zero when Redis could not take them),
 * the lookups' to G.online; *looked_up is the lookups' outcome. */
static int pipeline_once(queued_work *batch, size_t appends, size_t lookups, int *looked_up)
{
    if (appends)
        memset(G.out, 0, appends * sizeof *G.out);
    *looked_up = CP_REDIS_LOST;
    cp_redis *r = conn();
    if (!r)
        return CP_REDIS_LOST;
    size_t k = 0;
    for (queued_work *q = batch; q; q = q->next) {
        const redis_work *w = q->w;
        for (size_t i = 0; i < w->n; i++)
            cp_redis_queue_history_append(r, w->streams[i], w->message_ids[i], w->fingerprint,
                                          w->envelopes[i], w->lens[i], G.cfg.history_size,
                                          G.cfg.history_ttl_s);
        for (size_t j = 0; j < w->m; j++)
            G.ids[k++] = w->ids[j];
    }
    if (lookups)
        cp_redis_queue_presence(r, G.cfg.bridge_ttl_ms, G.ids, lookups);
    int rc = appends ? cp_redis_flush_appends(r, G.out, appends) : CP_REDIS_OK;
    if (rc == CP_REDIS_REFUSED)
        log_warn("history: Redis refused an append: %s", cp_redis_last_error(r));
    if (rc == CP_REDIS_LOST && appends)
        memset(G.out, 0, appends * sizeof *G.out);
    if (lookups && rc != CP_REDIS_LOST) {
        *looked_up = cp_redis_collect_presence(r, lookups, G.online);
        if (*looked_up == CP_REDIS_REFUSED)
            log_warn("presence: %s", cp_redis_last_error(r));
    }
    /* Lookups lost after the appends were answered leave the appends as
     * they are (presence unknown): a retry would report them duplicates. */
    return rc;
}

/* The connection may have gone stale (Redis restarted since it was last
 * used): when it broke, the batch is tried once more on a fresh one. A
 * pipeline lost half way is retried whole: an append that reached Redis
 * before the break comes back as a duplicate (same offset), so nothing is
 * stored twice. */
static void run_batch(queued_work *batch, size_t appends, size_t lookups)
{
    int rc = CP_REDIS_LOST, looked_up = CP_REDIS_LOST;
    int fits = room(appends, lookups) == 0;
    if (fits && redis_gate_open()) {
        int had = connected();
        rc = pipeline_once(batch, appends, lookups, &looked_up);
        if (rc == CP_REDIS_LOST && had && !connected())
            rc = pipeline_once(batch, appends, lookups, &looked_up);
        /* A refusal (an error reply) still means Redis answered. */
        redis_gate_report(connected());
        atomic_fetch_add(&G.pipelines, 1);
        atomic_fetch_add(&G.appends, appends);
        atomic_fetch_add(&G.lookups, lookups);
    }
    size_t at = 0, k = 0;
    for (queued_work *q = batch; q; q = q->next) {
        redis_work *w = q->w;
        w->rc = 0;
        for (size_t i = 0; i < w->n; i++) {
            if (rc == CP_REDIS_LOST || !fits)
                memset(&w->out[i], 0, sizeof w->out[i]);
            else
                w->out[i] = G.out[at + i];
            /* Every answered append has an offset (a conflict: the other
             * message's); one without was refused. */
            if (w->out[i].offset <= 0)
                w->rc = -1;
        }
        at += w->n;
        w->online_rc = fits && looked_up == CP_REDIS_OK ? 0 : -1;
        if (w->online_rc == 0 && w->m)
            memcpy(w->online, G.online + k, w->m);
        k += w->m;
    }
}

/* Group commit: whatever queued while the previous pipeline was in
 * flight goes out together in the next one. */
static void *committer(void *arg)
{
    (void)arg;
    int64_t last_pipeline_us = 0;
    int lingered = 0;
    pthread_mutex_lock(&G.lock);
    for (;;) {
        while (!G.head && !G.stopping)
            pthread_cond_wait(&G.work, &G.lock);
        if (!G.head)
            break;
        if (!G.stopping && !lingered && G.cfg.linger_us > 0 && G.queued < G.cfg.fill &&
            cp_mono_us() - last_pipeline_us < BUSY_US) {
            lingered = 1;
            struct timespec later;
            clock_gettime(CLOCK_REALTIME, &later);
            later.tv_nsec += G.cfg.linger_us * 1000L;
            later.tv_sec += later.tv_nsec / 1000000000L;
            later.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&G.work, &G.lock, &later);
            continue;
        }
        lingered = 0;
        queued_work *batch = G.head, *last = batch;
        size_t appends = batch->w->n, lookups = batch->w->m;
        while (last->next &&
               appends + lookups + last->next->w->n + last->next->w->m <= BATCH_MAX) {
            last = last->next;
            appends += last->w->n;
            lookups += last->w->m;
        }
        G.queued = G.queued > appends ? G.queued - appends : 0;
        G.head = last->next;
        if (!G.head)
            G.tail = &G.head;
        last->next = NULL;
        pthread_mutex_unlock(&G.lock);
        run_batch(batch, appends, lookups);
        last_pipeline_us = cp_mono_us();
        for (queued_work *q = batch; q; q = q->next) {
            q->w->pipeline_appends = appends;
            if (q->w->then)
                q->w->then(q->w);
        }
        if (G.cfg.after)
            G.cfg.after(G.cfg.after_ud);
        for (queued_work *q = batch, *next; q; q = next) {
            next = q->next; /* q is gone once posted */
            sem_post(&q->done);
        }
        pthread_mutex_lock(&G.lock);
    }
    pthread_mutex_unlock(&G.lock);
    return NULL;
}

int group_commit_start(const group_commit_config *cfg)
{
    G.cfg = *cfg;
    if (G.cfg.fill < 1)
        G.cfg.fill = 1;
    if (G.cfg.fill > BATCH_MAX)
        G.cfg.fill = BATCH_MAX;
    G.head = NULL;
    G.tail = &G.head;
    G.queued = 0;
    G.stopping = 0;
    if (pthread_create(&G.thread, NULL, committer, NULL) != 0) {
        log_error("cannot start the Redis group commit thread");
        return -1;
    }
    G.running = 1;
    return 0;
}

void group_commit_stop(void)
{
    if (!G.running)
        return;
    pthread_mutex_lock(&G.lock);
    G.stopping = 1;
    pthread_cond_signal(&G.work);
    pthread_mutex_unlock(&G.lock);
    pthread_join(G.thread, NULL);
    G.running = 0;
    cp_redis_close(G.redis);
    G.redis = NULL;
    free(G.out);
    free(G.ids);
    free(G.online);
    G.out = NULL;
    G.ids = NULL;
    G.online = NULL;
    G.out_cap = G.ids_cap = 0;
}

static void nothing_done(redis_work *w)
{
    if (w->n)
        memset(w->out, 0, w->n * sizeof *w->out);
    w->rc = -1;
    w->online_rc = -1;
}

/* The work is done (or refused) on the caller's thread: its then runs
 * there and the ticket is already complete. */
static void done_here(redis_work *w, queued_work *q, int refused)
{
    w->pipeline_appends = 0;
    if (refused)
        nothing_done(w);
    else
        w->rc = w->online_rc = 0;
    if (w->then)
        w->then(w);
    sem_post(&q->done);
}

void group_commit_begin(redis_work *w, group_commit_ticket *q)
{
    q->next = NULL;
    q->w = w;
    if (sem_init(&q->done, 0, 0) != 0) { /* cannot fail for a private, unshared one */
        log_error("group commit: sem_init failed");
        abort();
    }
    if (w->n == 0 && w->m == 0) {
        done_here(w, q, 0);
        return;
    }
    if (!G.running || !redis_gate_open()) {
        done_here(w, q, 1);
        return;
    }
    pthread_mutex_lock(&G.lock);
    if (G.stopping) { /* the thread may be gone */
        pthread_mutex_unlock(&G.lock);
        done_here(w, q, 1);
        return;
    }
    *G.tail = q;
    G.tail = &q->next;
    /* The committer waits for the first request, or lingers for a fill:
     * waking it for every one in between would cost a wake-up each. */
    size_t was = G.queued;
    G.queued += w->n;
    int wake = !G.head->next || (was < G.cfg.fill && G.queued >= G.cfg.fill);
    pthread_mutex_unlock(&G.lock);
    if (wake)
        pthread_cond_signal(&G.work); /* after the unlock: the committer takes the lock at once */
}

void group_commit_end(group_commit_ticket *q)
{
    while (sem_wait(&q->done) != 0 && errno == EINTR)
        ;
    sem_destroy(&q->done);
}

void group_commit_run(redis_work *w)
{
    group_commit_ticket q;
    group_commit_begin(w, &q);
    group_commit_end(&q);
}

void group_commit_stats(uint64_t *pipelines, uint64_t *appends, uint64_t *lookups)
{
    *pipelines = atomic_load(&G.pipelines);
    *appends = atomic_load(&G.appends);
    *lookups = atomic_load(&G.lookups);
}
