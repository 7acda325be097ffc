#include "view.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ids.h"
#include "log.h"
#include "redisconn.h"

#define VIEW_MAX_BRIDGES 1024

struct view {
    view_config cfg;
    cp_redis_addr addr;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;
    void (*on_refresh)(void *);
    void *ud;
    /* guarded by lock */
    bridge_info *items;
    size_t count;
    uint64_t generation;
    int redis_ok;
    /* thread-owned */
    redisContext *ctx;
    int backoff_ms;
    int64_t next_connect_ms;
    atomic_uint_fast64_t cleaned;
    char k_bridges[CP_KEY_MAX];
};

static void publish(view *v, bridge_info *items, size_t count, int ok)
{
    pthread_mutex_lock(&v->lock);
    if (ok) {
        free(v->items);
        v->items = items;
        v->count = count;
    } else {
        /* Without Redis nobody can tell which bridges live: keep routing to
         * the last known ones only while they would still be fresh. */
        int64_t now = cp_now_ms();
        size_t kept = 0;
        for (size_t i = 0; i < v->count; i++)
            if (now - v->items[i].updated_ms <= v->cfg.ttl_ms)
                v->items[kept++] = v->items[i];
        v->count = kept;
        free(items);
    }
    v->generation++;
    v->redis_ok = ok;
    pthread_mutex_unlock(&v->lock);
    if (v->on_refresh)
        v->on_refresh(v->ud);
}

/* Host of ws[s]://host:port/path as a numeric address: taken over from the
 * previous snapshot when the URL did not change, else looked up (this
 * thread may block; the event loop never does). */
static void resolve(view *v, bridge_info *b)
{
    b->addr[0] = '\0';
    pthread_mutex_lock(&v->lock);
    for (size_t i = 0; i < v->count; i++)
        if (strcmp(v->items[i].id, b->id) == 0 && strcmp(v->items[i].url, b->url) == 0 &&
            v->items[i].addr[0]) {
            memcpy(b->addr, v->items[i].addr, sizeof b->addr);
            break;
        }
    pthread_mutex_unlock(&v->lock);
    if (b->addr[0])
        return;
    const char *h = strstr(b->url, "://");
    h = h ? h + 3 : b->url;
    char host[256];
    size_t n;
    if (*h == '[') { /* [v6]:port */
        const char *close = strchr(h, ']');
        n = close ? (size_t)(close - h - 1) : 0;
        h++;
    } else {
        n = strcspn(h, ":/");
    }
    if (n == 0 || n >= sizeof host)
        return;
    memcpy(host, h, n);
    host[n] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
        log_warn("bridge %s: cannot resolve %s", b->id, host);
        return;
    }
    const void *a = res->ai_family == AF_INET6
                        ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                        : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, b->addr, sizeof b->addr);
    freeaddrinfo(res);
}

static void field(const redisReply *h, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    if (!h || h->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (h->element[i]->str && strcmp(h->element[i]->str, name) == 0 &&
            h->element[i + 1]->str) {
            snprintf(out, cap, "%s", h->element[i + 1]->str);
            return;
        }
}

/* Removes what a dead bridge left: its sessions from the client hashes, its
 * session list and its index entry. A bridge whose record still exists is
 * alive (only late), and is left alone. */
static int cleanup_dead(view *v, int64_t now)
{
    char err[256];
    char cutoff[32];
    snprintf(cutoff, sizeof cutoff, "(%lld", (long long)(now - v->cfg.ttl_ms));
    redisReply *old = redisCommand(v->ctx, "ZRANGEBYSCORE %s -inf %s LIMIT 0 16", v->k_bridges,
                                   cutoff);
    if (!old)
        return -1;
    for (size_t i = 0; old->type == REDIS_REPLY_ARRAY && i < old->elements; i++) {
        const char *id = old->element[i]->str;
        char k_bridge[CP_KEY_MAX], k_sessions[CP_KEY_MAX];
        cp_key_bridge(k_bridge, sizeof k_bridge, v->cfg.prefix, id);
        cp_key_bridge_sessions(k_sessions, sizeof k_sessions, v->cfg.prefix, id);
        redisReply *exists = redisCommand(v->ctx, "EXISTS %s", k_bridge);
        if (!exists) {
            freeReplyObject(old);
            return -1;
        }
        int alive = exists->type == REDIS_REPLY_INTEGER && exists->integer > 0;
        freeReplyObject(exists);
        if (alive)
            continue;
        redisReply *sessions = redisCommand(v->ctx, "HGETALL %s", k_sessions);
        if (!sessions) {
            freeReplyObject(old);
            return -1;
        }
        size_t cmds = 0;
        for (size_t j = 0; sessions->type == REDIS_REPLY_ARRAY && j + 1 < sessions->elements;
             j += 2) {
            char k_client[CP_KEY_MAX];
            cp_key_client(k_client, sizeof k_client, v->cfg.prefix,
                          sessions->element[j + 1]->str);
            redisAppendCommand(v->ctx, "HDEL %s %s", k_client, sessions->element[j]->str);
            cmds++;
        }
        size_t n = sessions->type == REDIS_REPLY_ARRAY ? sessions->elements / 2 : 0;
        freeReplyObject(sessions);
        redisAppendCommand(v->ctx, "DEL %s", k_sessions);
        /* Should the bridge come back right now, its next refresh (one
         * interval later) adds it again. */
        redisAppendCommand(v->ctx, "ZREM %s %s", v->k_bridges, id);
        cmds += 2;
        if (cp_redis_read_replies(v->ctx, cmds, NULL, err, sizeof err) != 0 && v->ctx->err) {
            freeReplyObject(old);
            return -1;
        }
        atomic_fetch_add(&v->cleaned, 1);
        log_warn("bridge %s is gone (no refresh for %ld ms): removed its %zu sessions", id,
                 v->cfg.ttl_ms, n);
    }
    freeReplyObject(old);
    return 0;
}

/* Reads the live bridges: index entries fresher than the TTL, then their
 * records in one pipeline. Returns 0 or -1 (connection lost). */
static int refresh(view *v)
{
    char err[256];
    int64_t now = cp_now_ms();
    char cutoff[32];
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)(now - v->cfg.ttl_ms));
    redisReply *ids = redisCommand(v->ctx, "ZRANGEBYSCORE %s %s +inf LIMIT 0 %d", v->k_bridges,
                                   cutoff, VIEW_MAX_BRIDGES);
    if (!ids)
        return -1;
    size_t n = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
    for (size_t i = 0; i < n; i++) {
        char key[CP_KEY_MAX];
        cp_key_bridge(key, sizeof key, v->cfg.prefix, ids->element[i]->str);
        redisAppendCommand(v->ctx, "HGETALL %s", key);
    }
    redisReply **recs = calloc(n ? n : 1, sizeof *recs);
    bridge_info *items = calloc(n ? n : 1, sizeof *items);
    if (!recs || !items) {
        free(recs);
        free(items);
        freeReplyObject(ids);
        return 0;
    }
    int rc = cp_redis_read_replies(v->ctx, n, recs, err, sizeof err);
    size_t count = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char buf[VIEW_URL_MAX];
        bridge_info *b = &items[count];
        field(recs[i], "id", b->id, sizeof b->id);
        field(recs[i], "url", b->url, sizeof b->url);
        if (!b->id[0] || !b->url[0])
            continue; /* the record expired between the two reads */
        field(recs[i], "connections", buf, sizeof buf);
        b->connections = (unsigned)strtoul(buf, NULL, 10);
        field(recs[i], "capacity", buf, sizeof buf);
        b->capacity = (unsigned)strtoul(buf, NULL, 10);
        field(recs[i], "draining", buf, sizeof buf);
        b->draining = buf[0] == '1';
        field(recs[i], "started", buf, sizeof buf);
        b->started_ms = strtoll(buf, NULL, 10);
        field(recs[i], "updated", buf, sizeof buf);
        b->updated_ms = strtoll(buf, NULL, 10);
        resolve(v, b);
        if (!b->addr[0])
            continue; /* unreachable by name: not offered */
        count++;
    }
    for (size_t i = 0; i < n; i++)
        if (recs[i])
            freeReplyObject(recs[i]);
    free(recs);
    freeReplyObject(ids);
    if (rc != 0 && v->ctx->err) {
        free(items);
        return -1;
    }
    publish(v, items, count, 1);
    return cleanup_dead(v, now);
}

static void *run(void *arg)
{
    view *v = arg;
    char err[256];
    for (;;) {
        pthread_mutex_lock(&v->lock);
        int stopping = v->stopping;
        pthread_mutex_unlock(&v->lock);
        if (stopping)
            break;
        if (!v->ctx && cp_mono_ms() >= v->next_connect_ms) {
            v->ctx = cp_redis_connect(&v->addr, 2000, err, sizeof err);
            if (v->ctx) {
                log_info("connected to Redis %s:%d", v->addr.host, v->addr.port);
                v->backoff_ms = 200;
            } else {
                log_warn("Redis %s:%d: %s", v->addr.host, v->addr.port, err);
                v->next_connect_ms = cp_mono_ms() + v->backoff_ms;
                v->backoff_ms = v->backoff_ms * 2 > 5000 ? 5000 : v->backoff_ms * 2;
            }
        }
        if (v->ctx && refresh(v) != 0) {
            log_warn("Redis %s:%d: %s; reconnecting", v->addr.host, v->addr.port,
                     v->ctx->errstr[0] ? v->ctx->errstr : "connection lost");
            redisFree(v->ctx);
            v->ctx = NULL;
        }
        if (!v->ctx)
            publish(v, NULL, 0, 0);

        struct timespec ts;
        cp_realtime_after_ms(&ts, v->cfg.refresh_ms);
        pthread_mutex_lock(&v->lock);
        if (!v->stopping)
            pthread_cond_timedwait(&v->cond, &v->lock, &ts);
        pthread_mutex_unlock(&v->lock);
    }
    return NULL;
}

view *view_start(const view_config *cfg, void (*on_refresh)(void *), void *ud)
{
    view *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->cfg = *cfg;
    if (cp_redis_parse_url(cfg->redis_url, &v->addr) != 0) {
        log_error("--redis '%s' is not a redis://[:password@]host[:port][/db] URL",
                  cfg->redis_url);
        free(v);
        return NULL;
    }
    cp_key_bridges(v->k_bridges, sizeof v->k_bridges, cfg->prefix);
    v->on_refresh = on_refresh;
    v->ud = ud;
    v->backoff_ms = 200;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cond, NULL);
    if (pthread_create(&v->thread, NULL, run, v) != 0) {
        free(v);
        return NULL;
    }
    return v;
}

size_t view_snapshot(view *v, bridge_info *out, size_t cap, uint64_t *generation, int *redis_ok)
{
    pthread_mutex_lock(&v->lock);
    size_t n = v->count < cap ? v->count : cap;
    if (n)
        memcpy(out, v->items, n * sizeof *out);
    if (generation)
        *generation = v->generation;
    if (redis_ok)
        *redis_ok = v->redis_ok;
    pthread_mutex_unlock(&v->lock);
    return n;
}

uint64_t view_cleaned_bridges(view *v) { return atomic_load(&v->cleaned); }

void view_stop(view *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&v->lock);
    v->stopping = 1;
    pthread_cond_signal(&v->cond);
    pthread_mutex_unlock(&v->lock);
    pthread_join(v->thread, NULL);
    redisFree(v->ctx);
    free(v->items);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->cond);
    free(v);
}
