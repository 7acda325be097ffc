/* The stream history of the messages a push request publishes
 * (docs/design-delivery.md, 1): each message is appended to its stream
 * (the recipient's channel id, or the broadcast stream) in one Redis
 * pipeline per request, which gives it its offset and epoch before it is
 * published. Called from CivetWeb worker threads: each keeps its own
 * connection (as presence.c). */
#ifndef HTTPAPI_HISTORY_H
#define HTTPAPI_HISTORY_H

#include <stddef.h>

#include "redis.h"

typedef struct {
    cp_redis_addr addr;
    const char *prefix;
    long history_size;
    long history_ttl_s;
} history_config;

/* Appends n messages: streams[i], message_ids[i] (the idempotency key,
 * matched with the messages' fingerprint, cp_seq_fingerprint), the
 * envelope text envelopes[i] of lens[i] bytes. out[i].offset is 0 for a
 * message that was not stored (out[i].conflict: its id was used by
 * another message). Returns 0 when Redis answered for every message, -1
 * when it could not take them (down, refused). */
int history_append(const history_config *hc, size_t n, const char *const *streams,
                   const char *const *message_ids, const char *fingerprint,
                   const char *const *envelopes, const size_t *lens, cp_redis_appended *out);

/* Frees the calling thread's connection (worker thread exit). */
void history_thread_exit(void);

#endif
