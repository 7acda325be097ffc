/* The history reader thread: see history.h. */
#include "history.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Requests one pipeline carries at most: a reconnect catch-up of many
 * channels goes out in rounds of this many, and of at most about this many
 * bytes of replies (estimated from the entries read so far). */
#define BATCH_MAX 128
#define BATCH_MAX_BYTES (4u << 20)
#define ENTRY_BYTES_FIRST 512 /* the estimate before anything was read */

/* A queue of requests, oldest first. */
typedef struct {
    history_req *head, *tail;
} req_queue;

struct history {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Greetings and gap fills (a session or a stream waits on them) go
     * before catch-ups (bulk reads after a bus reconnect), which may use at
     * most 3/4 of the queue. */
    req_queue urgent, bulk;
    size_t pending, max_pending;
    size_t entry_bytes; /* average size of an entry read (the thread's) */
    int stopping;
    atomic_int healthy;
    inbox *ib;
    int event_kind;
    cp_redis *redis; /* the thread's */
};

history_req *history_req_new(int what)
{
    history_req *req = calloc(1, sizeof *req);
    if (req)
        req->what = what;
    return req;
}

void history_req_add(history_req *req, const char *stream, int64_t since, size_t max)
{
    if (req->nreads >= HISTORY_READS_MAX)
        return;
    history_read *rd = &req->reads[req->nreads++];
    snprintf(rd->stream, sizeof rd->stream, "%s", stream);
    rd->since = since < 0 ? 0 : since;
    rd->max = max;
    rd->rc = CP_REDIS_LOST;
}

void history_req_free(history_req *req)
{
    if (!req)
        return;
    for (int i = 0; i < req->nreads; i++) {
        history_entry *e = req->reads[i].entries, *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(req);
}

static void queue_push(req_queue *q, history_req *req)
{
    req->qnext = NULL;
    if (q->tail)
        q->tail->qnext = req;
    else
        q->head = req;
    q->tail = req;
}

static history_req *queue_pop(req_queue *q)
{
    history_req *req = q->head;
    if (req) {
        q->head = req->qnext;
        if (!q->head)
            q->tail = NULL;
        req->qnext = NULL;
    }
    return req;
}

int history_submit(history *h, history_req *req)
{
    int bulk = req->what == HISTORY_CATCH_UP;
    pthread_mutex_lock(&h->lock);
    size_t room = bulk ? h->max_pending - h->max_pending / 4 : h->max_pending;
    int ok = !h->stopping && h->pending < room;
    if (ok) {
        req->ev.kind = h->event_kind;
        queue_push(bulk ? &h->bulk : &h->urgent, req);
        h->pending++;
        pthread_cond_signal(&h->cond);
    }
    pthread_mutex_unlock(&h->lock);
    return ok ? 0 : -1;
}

int history_healthy(history *h) { return h && atomic_load(&h->healthy); }

static void keep_entry(void *ud, int64_t offset, const char *envelope, size_t len)
{
    history_read *rd = ud;
    history_entry *e = malloc(sizeof *e + len + 1);
    if (!e) {
        rd->rc = CP_REDIS_REFUSED; /* incomplete: not a usable read */
        return;
    }
    e->next = NULL;
    e->offset = offset;
    e->len = len;
    rd->bytes += len;
    memcpy(e->data, envelope, len);
    e->data[len] = '\0';
    if (rd->tail)
        rd->tail->next = e;
    else
        rd->entries = e;
    rd->tail = e;
    rd->n++;
}

/* Reads everything the batch asks for in one pipeline. */
static void read_batch(history *h, history_req *batch)
{
    int up = cp_redis_connect(h->redis) != CP_REDIS_DOWN;
    if (up) {
        for (history_req *q = batch; q; q = q->qnext)
            for (int i = 0; i < q->nreads; i++)
                cp_redis_queue_history_read(h->redis, q->reads[i].stream, q->reads[i].since,
                                            q->reads[i].max);
    }
    for (history_req *q = batch; q; q = q->qnext) {
        for (int i = 0; i < q->nreads; i++) {
            history_read *rd = &q->reads[i];
            if (!up) {
                rd->rc = CP_REDIS_LOST;
                continue;
            }
            rd->rc = CP_REDIS_OK;
            int rc = cp_redis_collect_history_read(h->redis, &rd->state, keep_entry, rd);
            if (rc != CP_REDIS_OK || rd->rc != CP_REDIS_OK)
                rd->rc = rc != CP_REDIS_OK ? rc : rd->rc;
            if (rc == CP_REDIS_LOST)
                up = 0; /* the rest of the pipeline is gone with the connection */
        }
    }
    atomic_store(&h->healthy, up);
    /* The estimate for the next batches: a moving average. */
    for (history_req *q = batch; q; q = q->qnext)
        for (int i = 0; i < q->nreads; i++)
            if (q->reads[i].n > 0)
                h->entry_bytes = (h->entry_bytes * 7 + q->reads[i].bytes / q->reads[i].n) / 8 + 1;
}

/* What a request's replies may weigh, from the average entry. */
static size_t request_bytes(const history *h, const history_req *req)
{
    size_t est = 64;
    for (int i = 0; i < req->nreads; i++) {
        size_t max = req->reads[i].max;
        est += max > BATCH_MAX_BYTES / h->entry_bytes ? BATCH_MAX_BYTES : max * h->entry_bytes;
    }
    return est;
}

/* Takes the next batch: urgent requests first, then catch-ups, at most
 * BATCH_MAX requests and about BATCH_MAX_BYTES of replies (at least one
 * request). Called with the lock held. */
static history_req *take_batch(history *h)
{
    history_req *first = NULL, *last = NULL;
    size_t n = 0, bytes = 0;
    req_queue *queues[2] = {&h->urgent, &h->bulk};
    for (int k = 0; k < 2; k++) {
        req_queue *q = queues[k];
        while (q->head && n < BATCH_MAX) {
            size_t cost = request_bytes(h, q->head);
            if (n > 0 && bytes + cost > BATCH_MAX_BYTES)
                return first;
            history_req *req = queue_pop(q);
            if (last)
                last->qnext = req;
            else
                first = req;
            last = req;
            n++;
            bytes += cost;
            h->pending--;
        }
    }
    return first;
}

static void *run(void *arg)
{
    history *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->lock);
        while (!h->urgent.head && !h->bulk.head && !h->stopping)
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->stopping) {
            pthread_mutex_unlock(&h->lock);
            break;
        }
        history_req *batch = take_batch(h);
        pthread_mutex_unlock(&h->lock);

        read_batch(h, batch);
        for (history_req *q = batch, *next; q; q = next) {
            next = q->qnext;
            inbox_push_event(h->ib, &q->ev);
        }
    }
    return NULL;
}

history *history_start(const char *redis_url, const char *prefix, inbox *ib, int event_kind,
                       size_t max_pending)
{
    cp_redis_addr addr;
    int rc = cp_redis_parse_url(redis_url, &addr);
    if (rc != CP_REDIS_URL_OK) {
        log_error("history: --redis: %s", cp_redis_url_strerror(rc));
        return NULL;
    }
    history *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    cp_redis_options opt = {
        .prefix = prefix,
        .who = "history",
        .timeout_ms = 2000,
        .backoff = 1,
        .log_connects = 0,
    };
    h->redis = cp_redis_open(&addr, &opt);
    h->ib = ib;
    h->event_kind = event_kind;
    h->entry_bytes = ENTRY_BYTES_FIRST;
    h->max_pending = max_pending;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    if (!h->redis || pthread_create(&h->thread, NULL, run, h) != 0) {
        cp_redis_close(h->redis);
        free(h);
        return NULL;
    }
    return h;
}

void history_stop(history *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stopping = 1;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    history_req *q;
    while ((q = queue_pop(&h->urgent)) || (q = queue_pop(&h->bulk)))
        history_req_free(q);
    cp_redis_close(h->redis);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}
