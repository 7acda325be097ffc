#include "history.h"

#include <string.h>

#include "log.h"
#include "redisgate.h"

/* Each worker thread keeps its own connection; while Redis is unreachable
 * the shared gate (redisgate.h) spares requests the attempt, and their
 * messages go out with offset null at once. */
static _Thread_local cp_redis *tl_redis;

static cp_redis *conn(const history_config *hc)
{
    if (!tl_redis) {
        cp_redis_options opt = {.prefix = hc->prefix, .who = "history", .timeout_ms = 1000};
        tl_redis = cp_redis_open(&hc->addr, &opt);
        if (!tl_redis)
            return NULL;
    }
    return cp_redis_connect(tl_redis) == CP_REDIS_DOWN ? NULL : tl_redis;
}

void history_thread_exit(void)
{
    cp_redis_close(tl_redis);
    tl_redis = NULL;
}

static int append_once(const history_config *hc, size_t n, const char *const *streams,
                       const char *const *message_ids, const char *fingerprint,
                       const char *const *envelopes, const size_t *lens,
                       cp_redis_appended *out)
{
    memset(out, 0, n * sizeof *out);
    cp_redis *r = conn(hc);
    if (!r)
        return -1;
    for (size_t i = 0; i < n; i++)
        cp_redis_queue_history_append(r, streams[i], message_ids[i], fingerprint, envelopes[i],
                                      lens[i], hc->history_size, hc->history_ttl_s);
    int rc = cp_redis_flush_appends(r, out, n);
    if (rc == CP_REDIS_REFUSED)
        log_warn("history: Redis refused an append: %s", cp_redis_last_error(r));
    if (rc == CP_REDIS_LOST)
        memset(out, 0, n * sizeof *out);
    return rc == CP_REDIS_OK ? 0 : -1;
}

/* A worker's connection may have gone stale (Redis restarted since it was
 * last used): when it broke, the request tries once more on a fresh one.
 * A pipeline lost half way is retried whole: an append that reached Redis
 * before the break comes back as a duplicate (same offset), so nothing is
 * stored twice, and it is published with that offset like the others. */
int history_append(const history_config *hc, size_t n, const char *const *streams,
                   const char *const *message_ids, const char *fingerprint,
                   const char *const *envelopes, const size_t *lens, cp_redis_appended *out)
{
    if (!redis_gate_open()) {
        memset(out, 0, n * sizeof *out);
        return -1;
    }
    int had = tl_redis && cp_redis_connected(tl_redis);
    int rc = append_once(hc, n, streams, message_ids, fingerprint, envelopes, lens, out);
    if (rc != 0 && had && !cp_redis_connected(tl_redis))
        rc = append_once(hc, n, streams, message_ids, fingerprint, envelopes, lens, out);
    /* A refusal (an error reply) still means Redis answered. */
    redis_gate_report(tl_redis && cp_redis_connected(tl_redis));
    return rc;
}
