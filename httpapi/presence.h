/* Who is online, read from the bridges' registry in Redis (docs/redis.md).
 * Called from CivetWeb worker threads: each keeps its own connection. */
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

/* For each id, online[i] = 1 when it has a session on a live bridge.
 * Returns 0, or -1 when Redis could not answer. One round trip. */
int presence_online(const presence_config *pc, const char *const *ids, size_t n,
                    unsigned char *online);

/* Appends {"channelId":..,"online":..,"sessions":[...]} for one id.
 * Returns 0, or -1 when Redis could not answer. */
int presence_client_json(const presence_config *pc, const char *id, cp_buf *out);

/* 1 when Redis answers a PING now. */
int presence_ping(const presence_config *pc);

/* Frees the calling thread's connection (worker thread exit). */
void presence_thread_exit(void);

#endif
