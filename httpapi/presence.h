/* Who is online, read from the bridges' registry in Redis (docs/redis.md),
 * for GET /api/v1/client/{id} and /readyz. Called from CivetWeb worker
 * threads: each keeps its own connection. (A push's own lookups ride on
 * its group commit, groupcommit.h.) */
#ifndef HTTPAPI_PRESENCE_H
#define HTTPAPI_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "redis.h"

typedef struct {
    cp_redis_addr addr;
    const char *prefix;
    long bridge_ttl_ms;
} presence_config;

/* Appends {"channelId":..,"online":..,"sessions":[...]} for one id.
 * Returns 0, or -1 when Redis could not answer. */
int presence_client_json(const presence_config *pc, const char *id, cp_buf *out);

/* 1 when Redis answers a PING now. */
int presence_ping(const presence_config *pc);

/* Frees the calling thread's connection (worker thread exit). */
void presence_thread_exit(void);

#endif
