#include "view.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ids.h"
#include "log.h"
#include "redis.h"

#define VIEW_MAX_BRIDGES 1024

_Static_assert(VIEW_ID_MAX == CP_REDIS_BRIDGE_ID_MAX && VIEW_URL_MAX == CP_REDIS_BRIDGE_URL_MAX,
               "bridge_info holds a whole record");

struct view {
    view_config cfg;
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
    cp_redis *redis;
    atomic_uint_fast64_t cleaned;
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

/* Reads the live bridges, publishes them, then removes what dead bridges
 * left. Returns 0 or -1 (connection lost). */
static int refresh(view *v)
{
    cp_redis_bridge *recs = NULL;
    size_t n = 0;
    int rc = cp_redis_live_bridges(v->redis, v->cfg.ttl_ms, VIEW_MAX_BRIDGES, &recs, &n);
    if (rc == CP_REDIS_LOST)
        return -1;
    if (rc != CP_REDIS_OK)
        return 0; /* out of memory: try again next round */
    bridge_info *items = calloc(n ? n : 1, sizeof *items);
    if (!items) {
        free(recs);
        return 0;
    }
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        bridge_info *b = &items[count];
        memcpy(b->id, recs[i].id, sizeof b->id);
        memcpy(b->url, recs[i].url, sizeof b->url);
        b->connections = recs[i].connections;
        b->capacity = recs[i].capacity;
        b->draining = recs[i].draining;
        b->not_ready = recs[i].not_ready;
        b->started_ms = recs[i].started_ms;
        b->updated_ms = recs[i].updated_ms;
        resolve(v, b);
        if (!b->addr[0])
            continue; /* unreachable by name: not offered */
        count++;
    }
    free(recs);
    publish(v, items, count, 1);
    int removed = cp_redis_remove_dead_bridges(v->redis, v->cfg.ttl_ms);
    if (removed < 0)
        return -1;
    atomic_fetch_add(&v->cleaned, (uint_fast64_t)removed);
    return 0;
}

static void *run(void *arg)
{
    view *v = arg;
    for (;;) {
        pthread_mutex_lock(&v->lock);
        int stopping = v->stopping;
        pthread_mutex_unlock(&v->lock);
        if (stopping)
            break;
        /* A lost connection is logged, and retried with backoff, by the
         * handle. */
        if (cp_redis_connect(v->redis) != CP_REDIS_DOWN)
            refresh(v);
        if (!cp_redis_connected(v->redis))
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
    cp_redis_addr addr;
    int url = cp_redis_parse_url(cfg->redis_url, &addr);
    if (url != CP_REDIS_URL_OK) {
        log_error("--redis '%s': %s", cfg->redis_url, cp_redis_url_strerror(url));
        free(v);
        return NULL;
    }
    cp_redis_options opt = {
        .prefix = cfg->prefix, .who = "view", .timeout_ms = 2000, .backoff = 1, .log_connects = 1};
    v->redis = cp_redis_open(&addr, &opt);
    if (!v->redis) {
        free(v);
        return NULL;
    }
    v->on_refresh = on_refresh;
    v->ud = ud;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cond, NULL);
    if (pthread_create(&v->thread, NULL, run, v) != 0) {
        cp_redis_close(v->redis);
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
    cp_redis_close(v->redis);
    free(v->items);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->cond);
    free(v);
}
