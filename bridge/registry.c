#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uthash.h>

#include "ids.h"
#include "log.h"
#include "redisconn.h"

typedef struct op {
    struct op *next;
    int up;
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
} mirror_entry;

struct registry {
    registry_config cfg;
    cp_redis_addr addr;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    op *head, *tail; /* queued by the service thread */
    int stopping;
    atomic_uint connections;
    atomic_int draining;
    atomic_int healthy;
    /* thread-owned */
    redisContext *ctx;
    mirror_entry *mirror;
    op *pending_head, *pending_tail; /* changes not yet written */
    int need_full_sync;
    int64_t next_connect_ms;
    int backoff_ms;
    int64_t started_ms;
    char k_bridges[CP_KEY_MAX], k_bridge[CP_KEY_MAX], k_sessions[CP_KEY_MAX];
};

static void op_free(op *o)
{
    free(o->channel);
    free(o->sid);
    free(o);
}

static void enqueue(registry *r, int up, const char *channel, const char *sid, size_t sid_len,
                    int64_t since)
{
    op *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->up = up;
    o->since_ms = since;
    o->channel = strdup(channel);
    o->sid = strndup(sid, sid_len);
    if (!o->channel || !o->sid) {
        op_free(o);
        log_error("registry: out of memory; presence will be resynchronised");
        return;
    }
    pthread_mutex_lock(&r->lock);
    if (r->tail)
        r->tail->next = o;
    else
        r->head = o;
    r->tail = o;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void registry_session_up(registry *r, const char *channel, const char *sid, size_t sid_len,
                         int64_t since_ms)
{
    if (r)
        enqueue(r, 1, channel, sid, sid_len, since_ms);
}

void registry_session_down(registry *r, const char *channel, const char *sid, size_t sid_len)
{
    if (r)
        enqueue(r, 0, channel, sid, sid_len, 0);
}

void registry_set_connections(registry *r, unsigned n)
{
    if (r)
        atomic_store(&r->connections, n);
}

void registry_set_draining(registry *r)
{
    if (!r)
        return;
    atomic_store(&r->draining, 1);
    pthread_mutex_lock(&r->lock);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

int registry_healthy(registry *r) { return r ? atomic_load(&r->healthy) : 1; }

/* Applies queued changes to the mirror and keeps them as pending writes. */
static void absorb(registry *r, op *list)
{
    while (list) {
        op *o = list;
        list = o->next;
        o->next = NULL;
        mirror_entry *e = NULL;
        HASH_FIND_STR(r->mirror, o->sid, e);
        if (o->up && !e) {
            e = calloc(1, sizeof *e);
            if (e) {
                e->sid = strdup(o->sid);
                e->channel = strdup(o->channel);
                e->since_ms = o->since_ms;
                if (!e->sid || !e->channel) {
                    free(e->sid);
                    free(e->channel);
                    free(e);
                    e = NULL;
                } else {
                    HASH_ADD_KEYPTR(hh, r->mirror, e->sid, strlen(e->sid), e);
                }
            }
        } else if (!o->up && e) {
            HASH_DEL(r->mirror, e);
            free(e->sid);
            free(e->channel);
            free(e);
        }
        if (r->pending_tail)
            r->pending_tail->next = o;
        else
            r->pending_head = o;
        r->pending_tail = o;
    }
}

static void drop_pending(registry *r)
{
    while (r->pending_head) {
        op *o = r->pending_head;
        r->pending_head = o->next;
        op_free(o);
    }
    r->pending_tail = NULL;
}

static void lost(registry *r, const char *why)
{
    log_warn("registry: Redis %s:%d: %s; will reconnect and resynchronise", r->addr.host,
             r->addr.port, why);
    redisFree(r->ctx);
    r->ctx = NULL;
    r->need_full_sync = 1;
    atomic_store(&r->healthy, 0);
    r->next_connect_ms = cp_mono_ms() + r->backoff_ms;
    r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
}

static void append_presence(registry *r, const char *channel, const char *sid, int64_t since)
{
    char key[CP_KEY_MAX], value[128];
    cp_key_client(key, sizeof key, r->cfg.prefix, channel);
    cp_presence_value(value, sizeof value, r->cfg.bridge_id, since);
    redisAppendCommand(r->ctx, "HSET %s %s %s", key, sid, value);
    redisAppendCommand(r->ctx, "HSET %s %s %s", r->k_sessions, sid, channel);
}

static void append_absence(registry *r, const char *channel, const char *sid)
{
    char key[CP_KEY_MAX];
    cp_key_client(key, sizeof key, r->cfg.prefix, channel);
    redisAppendCommand(r->ctx, "HDEL %s %s", key, sid);
    redisAppendCommand(r->ctx, "HDEL %s %s", r->k_sessions, sid);
}

/* Makes Redis hold exactly the mirror: removes sessions recorded for this
 * bridge that it no longer has (left by a crash, or ended while Redis was
 * away), then writes every current one. Returns 0 or -1 (connection lost). */
static int full_sync(registry *r)
{
    char err[256];
    redisReply *all = redisCommand(r->ctx, "HGETALL %s", r->k_sessions);
    if (!all) {
        lost(r, r->ctx->errstr);
        return -1;
    }
    size_t cmds = 0;
    unsigned removed = 0;
    if (all->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < all->elements; i += 2) {
            const char *sid = all->element[i]->str, *channel = all->element[i + 1]->str;
            mirror_entry *e = NULL;
            HASH_FIND_STR(r->mirror, sid, e);
            if (!e) {
                append_absence(r, channel, sid);
                cmds += 2;
                removed++;
            }
        }
    }
    freeReplyObject(all);
    mirror_entry *e, *tmp;
    HASH_ITER(hh, r->mirror, e, tmp)
    {
        append_presence(r, e->channel, e->sid, e->since_ms);
        cmds += 2;
    }
    if (cp_redis_read_replies(r->ctx, cmds, NULL, err, sizeof err) != 0 && !r->ctx->err) {
        log_warn("registry: resynchronisation: %s", err);
    } else if (r->ctx->err) {
        lost(r, err);
        return -1;
    }
    log_info("registry: presence synchronised: %u sessions registered, %u stale removed",
             HASH_COUNT(r->mirror), removed);
    drop_pending(r); /* the full picture covers them */
    r->need_full_sync = 0;
    return 0;
}

static size_t append_record(registry *r)
{
    int64_t now = cp_now_ms();
    char conns[24], cap[24], started[24], updated[24], ttl[24], score[24];
    snprintf(conns, sizeof conns, "%u", atomic_load(&r->connections));
    snprintf(cap, sizeof cap, "%ld", r->cfg.capacity);
    snprintf(started, sizeof started, "%lld", (long long)r->started_ms);
    snprintf(updated, sizeof updated, "%lld", (long long)now);
    snprintf(ttl, sizeof ttl, "%ld", r->cfg.ttl_ms);
    snprintf(score, sizeof score, "%lld", (long long)now);
    const char *argv[] = {"HSET", r->k_bridge, "id", r->cfg.bridge_id, "url",
                          r->cfg.advertise_url, "connections", conns, "capacity", cap,
                          "started", started, "updated", updated, "draining",
                          atomic_load(&r->draining) ? "1" : "0"};
    redisAppendCommandArgv(r->ctx, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
    redisAppendCommand(r->ctx, "PEXPIRE %s %s", r->k_bridge, ttl);
    redisAppendCommand(r->ctx, "ZADD %s %s %s", r->k_bridges, score, r->cfg.bridge_id);
    return 3;
}

/* One round: connect if needed, write pending changes and the record. */
static void round_trip(registry *r)
{
    char err[256];
    if (!r->ctx) {
        if (cp_mono_ms() < r->next_connect_ms)
            return;
        r->ctx = cp_redis_connect(&r->addr, 2000, err, sizeof err);
        if (!r->ctx) {
            lost(r, err);
            return;
        }
        r->backoff_ms = 200;
        log_info("registry: connected to Redis %s:%d", r->addr.host, r->addr.port);
        r->need_full_sync = 1;
    }
    if (r->need_full_sync && full_sync(r) != 0)
        return;
    size_t cmds = 0;
    for (op *o = r->pending_head; o; o = o->next) {
        if (o->up)
            append_presence(r, o->channel, o->sid, o->since_ms);
        else
            append_absence(r, o->channel, o->sid);
        cmds += 2;
    }
    cmds += append_record(r);
    if (cp_redis_read_replies(r->ctx, cmds, NULL, err, sizeof err) != 0) {
        if (r->ctx->err) {
            lost(r, err);
            return;
        }
        log_warn("registry: Redis refused a command: %s", err);
    }
    drop_pending(r);
    atomic_store(&r->healthy, 1);
}

static void unregister(registry *r)
{
    char err[256];
    if (!r->ctx)
        return;
    size_t cmds = 0;
    mirror_entry *e, *tmp;
    HASH_ITER(hh, r->mirror, e, tmp)
    {
        append_absence(r, e->channel, e->sid);
        cmds += 2;
    }
    redisAppendCommand(r->ctx, "DEL %s %s", r->k_sessions, r->k_bridge);
    redisAppendCommand(r->ctx, "ZREM %s %s", r->k_bridges, r->cfg.bridge_id);
    cmds += 2;
    if (cp_redis_read_replies(r->ctx, cmds, NULL, err, sizeof err) != 0)
        log_warn("registry: unregistering: %s", err);
    else
        log_info("registry: bridge %s removed from Redis", r->cfg.bridge_id);
}

static void *run(void *arg)
{
    registry *r = arg;
    int64_t next_refresh = 0;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (!r->stopping && !r->head && cp_mono_ms() < next_refresh) {
            struct timespec ts;
            cp_realtime_after_ms(&ts, next_refresh - cp_mono_ms());
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
        op *list = r->head;
        r->head = r->tail = NULL;
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

registry *registry_start(const registry_config *cfg)
{
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = *cfg;
    if (cp_redis_parse_url(cfg->redis_url, &r->addr) != 0) {
        log_error("--redis '%s' is not a redis://[:password@]host[:port][/db] URL",
                  cfg->redis_url);
        free(r);
        return NULL;
    }
    cp_key_bridges(r->k_bridges, sizeof r->k_bridges, cfg->prefix);
    cp_key_bridge(r->k_bridge, sizeof r->k_bridge, cfg->prefix, cfg->bridge_id);
    cp_key_bridge_sessions(r->k_sessions, sizeof r->k_sessions, cfg->prefix, cfg->bridge_id);
    r->started_ms = cp_now_ms();
    r->backoff_ms = 200;
    r->need_full_sync = 1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
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
    pthread_join(r->thread, NULL);
    redisFree(r->ctx);
    drop_pending(r);
    while (r->head) {
        op *o = r->head;
        r->head = o->next;
        op_free(o);
    }
    mirror_entry *e, *tmp;
    HASH_ITER(hh, r->mirror, e, tmp)
    {
        HASH_DEL(r->mirror, e);
        free(e->sid);
        free(e->channel);
        free(e);
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}
