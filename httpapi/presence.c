#include "presence.h"

#include <string.h>

#include "log.h"
#include "redisgate.h"

/* Each worker thread keeps its own handle; while Redis is unreachable the
 * shared gate (redisgate.h) spares requests the attempt. */
static _Thread_local cp_redis *tl_redis;

static cp_redis *conn(const presence_config *pc)
{
    if (!tl_redis) {
        cp_redis_options opt = {.prefix = pc->prefix, .who = "presence", .timeout_ms = 1000};
        tl_redis = cp_redis_open(&pc->addr, &opt);
        if (!tl_redis)
            return NULL;
    }
    return cp_redis_connect(tl_redis) == CP_REDIS_DOWN ? NULL : tl_redis;
}

static int had_connection(void) { return tl_redis && cp_redis_connected(tl_redis); }

void presence_thread_exit(void)
{
    cp_redis_close(tl_redis);
    tl_redis = NULL;
}

typedef struct {
    cp_buf *out;
    int count;
} session_list;

static void session_json(void *ud, const char *sid, const char *bridge, int64_t since)
{
    session_list *l = ud;
    cp_buf *out = l->out;
    if (l->count++)
        cp_buf_putc(out, ',');
    cp_buf_puts(out, "{\"sessionId\":");
    cp_buf_json_string(out, sid, strlen(sid));
    cp_buf_puts(out, ",\"bridge\":");
    cp_buf_json_string(out, bridge, strlen(bridge));
    cp_buf_printf(out, ",\"connectedSince\":%lld}", (long long)since);
}

static int client_once(const presence_config *pc, const char *id, cp_buf *out)
{
    cp_redis *r = conn(pc);
    if (!r)
        return -1;
    size_t mark = out->len;
    cp_buf_puts(out, "{\"channelId\":");
    cp_buf_json_string(out, id, strlen(id));
    cp_buf_puts(out, ",\"sessions\":[");
    session_list list = {out, 0};
    int rc = cp_redis_client_sessions(r, pc->bridge_ttl_ms, id, session_json, &list);
    if (rc != CP_REDIS_OK || out->failed) {
        if (rc == CP_REDIS_REFUSED)
            log_warn("presence: %s", cp_redis_last_error(r));
        out->len = mark;
        return -1;
    }
    cp_buf_printf(out, "],\"online\":%s}", list.count ? "true" : "false");
    return 0;
}

/* A worker's connection may have gone stale (Redis restarted since it was
 * last used): when a call fails because the connection broke, it is tried
 * once more on a fresh one. */
int presence_client_json(const presence_config *pc, const char *id, cp_buf *out)
{
    if (!redis_gate_open())
        return -1;
    int had = had_connection();
    int rc = client_once(pc, id, out);
    if (rc != 0 && had && !had_connection())
        rc = client_once(pc, id, out);
    redis_gate_report(had_connection());
    return rc;
}

int presence_ping(const presence_config *pc)
{
    if (!redis_gate_open())
        return 0;
    cp_redis *r = conn(pc);
    int rc = r ? cp_redis_ping(r) : CP_REDIS_LOST;
    if (rc == CP_REDIS_LOST && r) { /* maybe only this connection was stale */
        r = conn(pc);
        rc = r ? cp_redis_ping(r) : CP_REDIS_LOST;
    }
    redis_gate_report(had_connection());
    return rc == CP_REDIS_OK;
}
