#include "presence.h"

#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "log.h"

static _Thread_local redisContext *tl_redis;

static redisContext *conn(const presence_config *pc)
{
    if (tl_redis && !tl_redis->err)
        return tl_redis;
    if (tl_redis) {
        redisFree(tl_redis);
        tl_redis = NULL;
    }
    char err[256];
    tl_redis = cp_redis_connect(&pc->addr, 1000, err, sizeof err);
    if (!tl_redis)
        log_warn("presence: Redis %s:%d: %s", pc->addr.host, pc->addr.port, err);
    return tl_redis;
}

static void drop(void)
{
    redisFree(tl_redis);
    tl_redis = NULL;
}

void presence_thread_exit(void) { drop(); }

/* Live bridges: the index entries fresher than the TTL. */
static void append_live(redisContext *c, const presence_config *pc)
{
    char key[CP_KEY_MAX], cutoff[32];
    cp_key_bridges(key, sizeof key, pc->prefix);
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)(cp_now_ms() - pc->bridge_ttl_ms));
    redisAppendCommand(c, "ZRANGEBYSCORE %s %s +inf", key, cutoff);
}

static int is_live(const redisReply *live, const char *bridge)
{
    for (size_t i = 0; live->type == REDIS_REPLY_ARRAY && i < live->elements; i++)
        if (live->element[i]->str && strcmp(live->element[i]->str, bridge) == 0)
            return 1;
    return 0;
}

static int online_once(const presence_config *pc, const char *const *ids, size_t n,
                       unsigned char *online)
{
    redisContext *c = conn(pc);
    if (!c)
        return -1;
    append_live(c, pc);
    for (size_t i = 0; i < n; i++) {
        char key[CP_KEY_MAX];
        cp_key_client(key, sizeof key, pc->prefix, ids[i]);
        redisAppendCommand(c, "HVALS %s", key);
    }
    redisReply **r = calloc(n + 1, sizeof *r);
    if (!r) {
        drop(); /* the replies are still in flight */
        return -1;
    }
    char err[256];
    int rc = cp_redis_read_replies(c, n + 1, r, err, sizeof err);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            online[i] = 0;
            for (size_t j = 0; r[i + 1]->type == REDIS_REPLY_ARRAY && j < r[i + 1]->elements;
                 j++) {
                char bridge[80];
                int64_t since;
                if (cp_presence_parse(r[i + 1]->element[j]->str, bridge, sizeof bridge,
                                      &since) == 0 &&
                    is_live(r[0], bridge)) {
                    online[i] = 1;
                    break;
                }
            }
        }
    } else {
        log_warn("presence: %s", err);
        if (c->err)
            drop();
    }
    for (size_t i = 0; i <= n; i++)
        if (r[i])
            freeReplyObject(r[i]);
    free(r);
    return rc;
}

static int client_once(const presence_config *pc, const char *id, cp_buf *out)
{
    redisContext *c = conn(pc);
    if (!c)
        return -1;
    char key[CP_KEY_MAX], err[256];
    append_live(c, pc);
    cp_key_client(key, sizeof key, pc->prefix, id);
    redisAppendCommand(c, "HGETALL %s", key);
    redisReply *r[2] = {NULL, NULL};
    int rc = cp_redis_read_replies(c, 2, r, err, sizeof err);
    if (rc == 0) {
        cp_buf_puts(out, "{\"channelId\":");
        cp_buf_json_string(out, id, strlen(id));
        cp_buf_puts(out, ",\"sessions\":[");
        int count = 0;
        for (size_t j = 0; r[1]->type == REDIS_REPLY_ARRAY && j + 1 < r[1]->elements; j += 2) {
            char bridge[80];
            int64_t since;
            const char *sid = r[1]->element[j]->str;
            if (cp_presence_parse(r[1]->element[j + 1]->str, bridge, sizeof bridge, &since) !=
                    0 ||
                !is_live(r[0], bridge))
                continue; /* left by a bridge that died; the balancer removes it */
            if (count++)
                cp_buf_putc(out, ',');
            cp_buf_puts(out, "{\"sessionId\":");
            cp_buf_json_string(out, sid, strlen(sid));
            cp_buf_puts(out, ",\"bridge\":");
            cp_buf_json_string(out, bridge, strlen(bridge));
            cp_buf_printf(out, ",\"connectedSince\":%lld}", (long long)since);
        }
        cp_buf_printf(out, "],\"online\":%s}", count ? "true" : "false");
    } else {
        log_warn("presence: %s", err);
        if (c->err)
            drop();
    }
    for (int i = 0; i < 2; i++)
        if (r[i])
            freeReplyObject(r[i]);
    return rc;
}

/* A worker's connection may have gone stale (Redis restarted since it was
 * last used): when a call fails because the connection broke, it is tried
 * once more on a fresh one. */
int presence_online(const presence_config *pc, const char *const *ids, size_t n,
                    unsigned char *online)
{
    int had = tl_redis != NULL;
    int rc = online_once(pc, ids, n, online);
    if (rc != 0 && had && !tl_redis)
        rc = online_once(pc, ids, n, online);
    return rc;
}

int presence_client_json(const presence_config *pc, const char *id, cp_buf *out)
{
    int had = tl_redis != NULL;
    size_t mark = out->len;
    int rc = client_once(pc, id, out);
    if (rc != 0 && had && !tl_redis) {
        out->len = mark;
        rc = client_once(pc, id, out);
    }
    return rc;
}

int presence_ping(const presence_config *pc)
{
    redisContext *c = conn(pc);
    if (!c)
        return 0;
    redisReply *r = redisCommand(c, "PING");
    if (!r) {
        drop();
        c = conn(pc); /* maybe only this connection was stale */
        r = c ? redisCommand(c, "PING") : NULL;
        if (!r) {
            drop();
            return 0;
        }
    }
    int ok = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return ok;
}
