#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uthash.h>
#include <utlist.h>

#include "ids.h"
#include "log.h"
#include "redis.h"

/* A session change, queued by the service thread (a utlist DL list). */
typedef struct op {
    struct op *prev, *next;
    int up;     /* 1 up, 0 down, -1 every session of `worker` is gone */
    int worker; /* the worker process that holds the session (0: this one) */
    int64_t since_ms;
    char *channel;
    char *sid;
} op;

/* A session this bridge holds, as last told by the service thread. */
typedef struct mirror_entry {
    UT_hash_handle hh;
    char *sid;
    char *channel;
    int64_t since_ms;
    int worker;
} mirror_entry;

struct registry {
    registry_config cfg;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    op *queued; /* by the service thread */
    int stopping;
    atomic_uint connections;
    atomic_int draining;
    atomic_int not_ready; /* 1 until told it can take sessions */
    int record_due;       /* (lock) the record changed: write it now */
    atomic_int healthy;
    /* thread-owned */
    cp_redis *redis;
    cp_redis_bridge record; /* id, url, capacity and start fixed; the rest per round */
    mirror_entry *mirror;
    op *pending; /* changes not yet written */
    int need_full_sync;
    /* A worker's registry (--workers): changes go to the master over this
     * socket instead of Redis; -1 otherwise. */
    int master_sock;
    int64_t next_refresh_ms; /* no_thread: when the record is due */
    void (*on_connections)(void *ud, unsigned n);
    void *on_connections_ud;
};

static void op_free(op *o)
{
    free(o->channel);
    free(o->sid);
    free(o);
}

static void mirror_entry_free(mirror_entry *e)
{
    free(e->sid);
    free(e->channel);
    free(e);
}

static void enqueue(registry *r, int up, int worker, const char *channel, size_t channel_len,
                    const char *sid, size_t sid_len, int64_t since)
{
    op *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->up = up;
    o->worker = worker;
    o->since_ms = since;
    o->channel = strndup(channel, channel_len);
    o->sid = strndup(sid, sid_len);
    if (!o->channel || !o->sid) {
        op_free(o);
        log_error("registry: out of memory; presence will be resynchronised");
        return;
    }
    /* The thread takes the whole queue: only the first change of a burst
     * needs to wake it. */
    pthread_mutex_lock(&r->lock);
    int wake = !r->queued;
    DL_APPEND(r->queued, o);
    if (wake)
        pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void registry_session_up(registry *r, const char *channel, const char *sid, size_t sid_len,
                         int64_t since_ms)
{
    if (r)
        enqueue(r, 1, 0, channel, strlen(channel), sid, sid_len, since_ms);
}

void registry_session_down(registry *r, const char *channel, const char *sid, size_t sid_len)
{
    if (r)
        enqueue(r, 0, 0, channel, strlen(channel), sid, sid_len, 0);
}

void registry_set_connections(registry *r, unsigned n)
{
    if (!r)
        return;
    atomic_store(&r->connections, n);
    if (r->on_connections)
        r->on_connections(r->on_connections_ud, n);
}

/* The record changed in a way the balancers must see now, not at the next
 * refresh. */
static void record_changed(registry *r)
{
    pthread_mutex_lock(&r->lock);
    r->record_due = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void registry_set_draining(registry *r)
{
    if (!r || r->master_sock >= 0) /* the master drains the bridge's record */
        return;
    atomic_store(&r->draining, 1);
    record_changed(r);
}

void registry_set_ready(registry *r, int ready)
{
    if (!r || r->master_sock >= 0) /* the master speaks for its workers */
        return;
    if (atomic_exchange(&r->not_ready, !ready) != !ready)
        record_changed(r);
}

int registry_healthy(registry *r) { return r ? atomic_load(&r->healthy) : 1; }

/* Applies queued changes to the mirror and keeps them as pending writes. */
static void absorb(registry *r, op *list)
{
    op *o;
    op *gone = NULL, *tmp;
    DL_FOREACH_SAFE(list, o, tmp)
    {
        if (o->up < 0) {
            /* A worker died: every session it held is down. */
            DL_DELETE(list, o);
            mirror_entry *e, *etmp;
            HASH_ITER(hh, r->mirror, e, etmp)
            {
                if (e->worker != o->worker)
                    continue;
                op *d = calloc(1, sizeof *d);
                if (d) {
                    d->channel = e->channel;
                    d->sid = e->sid;
                    DL_APPEND(gone, d);
                    HASH_DEL(r->mirror, e);
                    free(e);
                } else {
                    HASH_DEL(r->mirror, e);
                    mirror_entry_free(e);
                }
            }
            op_free(o);
            continue;
        }
        mirror_entry *e = NULL;
        HASH_FIND_STR(r->mirror, o->sid, e);
        if (o->up && !e) {
            e = calloc(1, sizeof *e);
            if (e) {
                e->sid = strdup(o->sid);
                e->channel = strdup(o->channel);
                e->since_ms = o->since_ms;
                e->worker = o->worker;
                if (!e->sid || !e->channel) {
                    mirror_entry_free(e);
                    e = NULL;
                } else {
                    HASH_ADD_KEYPTR(hh, r->mirror, e->sid, strlen(e->sid), e);
                }
            }
        } else if (!o->up && e) {
            HASH_DEL(r->mirror, e);
            mirror_entry_free(e);
        }
    }
    DL_CONCAT(r->pending, list);
    DL_CONCAT(r->pending, gone);
}

static void free_ops(op **list)
{
    op *o, *tmp;
    DL_FOREACH_SAFE(*list, o, tmp)
    {
        DL_DELETE(*list, o);
        op_free(o);
    }
}

/* The connection broke: write everything again once it is back. */
static void lost(registry *r)
{
    r->need_full_sync = 1;
    atomic_store(&r->healthy, 0);
}

static int holds(void *ud, const char *sid)
{
    registry *r = ud;
    mirror_entry *e = NULL;
    HASH_FIND_STR(r->mirror, sid, e);
    return e != NULL;
}

/* Makes Redis hold exactly the mirror: removes sessions recorded for this
 * bridge that it no longer has (left by a crash, or ended while Redis was
 * away), then writes every current one. Returns 0 or -1 (connection lost). */
static int full_sync(registry *r)
{
    unsigned removed = 0;
    if (cp_redis_queue_stale_sessions(r->redis, r->cfg.bridge_id, holds, r, &removed) != 0) {
        lost(r);
        return -1;
    }
    mirror_entry *e, *tmp;
    HASH_ITER(hh, r->mirror, e, tmp)
    {
        cp_redis_queue_session_up(r->redis, r->cfg.bridge_id, e->channel, e->sid, e->since_ms);
    }
    int rc = cp_redis_flush(r->redis);
    if (rc == CP_REDIS_LOST) {
        lost(r);
        return -1;
    }
    if (rc == CP_REDIS_REFUSED)
        log_warn("registry: resynchronisation: %s", cp_redis_last_error(r->redis));
    log_info("registry: presence synchronised: %u sessions registered, %u stale removed",
             HASH_COUNT(r->mirror), removed);
    free_ops(&r->pending); /* the full picture covers them */
    r->need_full_sync = 0;
    return 0;
}

/* One round: connect if needed, write pending changes and the record. */
static void round_trip(registry *r)
{
    int conn = cp_redis_connect(r->redis);
    if (conn == CP_REDIS_DOWN) {
        lost(r);
        return;
    }
    if (conn == CP_REDIS_NEW)
        r->need_full_sync = 1;
    if (r->need_full_sync && full_sync(r) != 0)
        return;
    op *o;
    DL_FOREACH(r->pending, o)
    {
        if (o->up)
            cp_redis_queue_session_up(r->redis, r->cfg.bridge_id, o->channel, o->sid,
                                      o->since_ms);
        else
            cp_redis_queue_session_down(r->redis, r->cfg.bridge_id, o->channel, o->sid);
    }
    r->record.connections = atomic_load(&r->connections);
    r->record.draining = atomic_load(&r->draining);
    r->record.not_ready = atomic_load(&r->not_ready);
    cp_redis_queue_bridge_record(r->redis, &r->record, r->cfg.ttl_ms);
    int rc = cp_redis_flush(r->redis);
    if (rc == CP_REDIS_LOST) {
        lost(r);
        return;
    }
    if (rc == CP_REDIS_REFUSED)
        log_warn("registry: Redis refused a command: %s", cp_redis_last_error(r->redis));
    free_ops(&r->pending);
    atomic_store(&r->healthy, 1);
}

static void unregister(registry *r)
{
    if (!cp_redis_connected(r->redis))
        return;
    mirror_entry *e, *tmp;
    HASH_ITER(hh, r->mirror, e, tmp)
    {
        cp_redis_queue_session_down(r->redis, r->cfg.bridge_id, e->channel, e->sid);
    }
    cp_redis_queue_bridge_removal(r->redis, r->cfg.bridge_id);
    if (cp_redis_flush(r->redis) != CP_REDIS_OK)
        log_warn("registry: unregistering: %s", cp_redis_last_error(r->redis));
    else
        log_info("registry: bridge %s removed from Redis", r->cfg.bridge_id);
}

/* A worker's round: its changes go to the master, as many lines
 * ("U<since> <channel> <sid>" or "D <channel> <sid>") per datagram as fit:
 * a burst of connections costs a system call per datagram, not per
 * session. A lost master ends the worker anyway (it gets SIGTERM), so a
 * failed send is only logged. */
static void send_to_master(registry *r)
{
    char msg[REGISTRY_MESSAGE_MAX];
    size_t len = 0;
    op *o;
    DL_FOREACH(r->pending, o)
    {
        char line[CP_REDIS_BRIDGE_ID_MAX + 2 * 512];
        int n = o->up ? snprintf(line, sizeof line, "U%lld %s %s\n", (long long)o->since_ms,
                                 o->channel, o->sid)
                      : snprintf(line, sizeof line, "D %s %s\n", o->channel, o->sid);
        if (n <= 0 || (size_t)n >= sizeof line)
            continue;
        if (len + (size_t)n > sizeof msg) {
            if (send(r->master_sock, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
                log_warn("registry: cannot tell the master about sessions: %s", strerror(errno));
            len = 0;
        }
        memcpy(msg + len, line, (size_t)n);
        len += (size_t)n;
    }
    if (len && send(r->master_sock, msg, len, MSG_NOSIGNAL) != (ssize_t)len)
        log_warn("registry: cannot tell the master about sessions: %s", strerror(errno));
    free_ops(&r->pending);
}

static void *run(void *arg)
{
    registry *r = arg;
    if (r->master_sock >= 0) {
        for (;;) {
            pthread_mutex_lock(&r->lock);
            while (!r->stopping && !r->queued)
                pthread_cond_wait(&r->cond, &r->lock);
            op *list = r->queued;
            r->queued = NULL;
            int stopping = r->stopping;
            pthread_mutex_unlock(&r->lock);
            DL_CONCAT(r->pending, list);
            send_to_master(r);
            if (stopping)
                return NULL;
        }
    }
    int64_t next_refresh = 0;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (!r->stopping && !r->queued && !r->record_due && cp_mono_ms() < next_refresh) {
            struct timespec ts;
            cp_realtime_after_ms(&ts, next_refresh - cp_mono_ms());
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
        op *list = r->queued;
        r->queued = NULL;
        r->record_due = 0;
        int stopping = r->stopping;
        pthread_mutex_unlock(&r->lock);

        absorb(r, list);
        round_trip(r);
        next_refresh = cp_mono_ms() + r->cfg.interval_ms;
        if (stopping)
            break;
    }
    unregister(r);
    return NULL;
}

void registry_service(registry *r)
{
    if (!r || !r->cfg.no_thread)
        return;
    pthread_mutex_lock(&r->lock);
    op *list = r->queued;
    r->queued = NULL;
    int due = r->record_due;
    r->record_due = 0;
    pthread_mutex_unlock(&r->lock);
    if (!list && !due && cp_mono_ms() < r->next_refresh_ms)
        return;
    absorb(r, list);
    round_trip(r);
    r->next_refresh_ms = cp_mono_ms() + r->cfg.interval_ms;
}

registry *registry_to_master(int sock, void (*on_connections)(void *ud, unsigned n), void *ud)
{
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->master_sock = sock;
    r->on_connections = on_connections;
    r->on_connections_ud = ud;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

/* One line of a worker's datagram. */
static int worker_line(registry *r, int worker, const char *line, size_t len)
{
    char buf[CP_REDIS_BRIDGE_ID_MAX + 2 * 512];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    char *channel = strchr(buf, ' ');
    char *sid = channel ? strchr(channel + 1, ' ') : NULL;
    if (!sid || (buf[0] != 'U' && buf[0] != 'D'))
        return -1;
    channel++;
    sid++;
    enqueue(r, buf[0] == 'U', worker, channel, (size_t)(sid - 1 - channel), sid, strlen(sid),
            buf[0] == 'U' ? strtoll(buf + 1, NULL, 10) : 0);
    return 0;
}

int registry_worker_message(registry *r, int worker, const char *msg, size_t len)
{
    if (!r || len == 0)
        return -1;
    int rc = 0;
    for (const char *p = msg, *end = msg + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (worker_line(r, worker, p, n) != 0)
            rc = -1;
        p += n + 1;
    }
    return rc;
}

void registry_worker_gone(registry *r, int worker)
{
    if (!r)
        return;
    op *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->up = -1;
    o->worker = worker;
    pthread_mutex_lock(&r->lock);
    DL_APPEND(r->queued, o);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

registry *registry_start(const registry_config *cfg)
{
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->master_sock = -1;
    r->cfg = *cfg;
    cp_redis_addr addr;
    int url = cp_redis_parse_url(cfg->redis_url, &addr);
    if (url != CP_REDIS_URL_OK) {
        log_error("--redis '%s': %s", cfg->redis_url, cp_redis_url_strerror(url));
        free(r);
        return NULL;
    }
    if (strlen(cfg->bridge_id) > CP_REDIS_BRIDGE_ID_MAX ||
        strlen(cfg->advertise_url) >= CP_REDIS_BRIDGE_URL_MAX) {
        log_error("registry: bridge id or advertised URL too long for its record");
        free(r);
        return NULL;
    }
    atomic_store(&r->not_ready, 1); /* until the bridge says it can take sessions */
    strcpy(r->record.id, cfg->bridge_id);
    strcpy(r->record.url, cfg->advertise_url);
    r->record.capacity = cfg->capacity > 0 ? (unsigned)cfg->capacity : 0;
    r->record.started_ms = cp_now_ms();
    cp_redis_options opt = {.prefix = cfg->prefix,
                            .who = "registry",
                            .timeout_ms = 2000,
                            .backoff = 1,
                            .log_connects = 1};
    r->redis = cp_redis_open(&addr, &opt);
    if (!r->redis) {
        free(r);
        return NULL;
    }
    r->need_full_sync = 1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (cfg->no_thread) {
        registry_service(r);
        return r;
    }
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        cp_redis_close(r->redis);
        free(r);
        return NULL;
    }
    return r;
}

void registry_stop(registry *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (r->cfg.no_thread) {
        r->next_refresh_ms = 0;
        registry_service(r);
        unregister(r);
    } else {
        pthread_join(r->thread, NULL);
    }
    if (r->master_sock >= 0)
        close(r->master_sock);
    else
        cp_redis_close(r->redis);
    free_ops(&r->pending);
    free_ops(&r->queued);
    mirror_entry *e, *tmp;
    HASH_ITER(hh, r->mirror, e, tmp)
    {
        HASH_DEL(r->mirror, e);
        mirror_entry_free(e);
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}
