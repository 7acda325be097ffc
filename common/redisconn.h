/* Redis connections (hiredis, synchronous) and the registry's key names.
 *
 * Every caller runs Redis I/O on a thread of its own (never an event loop),
 * so a blocking client with timeouts is the simple, right tool. Keys are
 * documented in docs/redis.md. */
#ifndef CP_REDISCONN_H
#define CP_REDISCONN_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

typedef struct {
    char host[256];
    int port;
    char password[256];
    int db;
} cp_redis_addr;

/* redis://[[user]:password@]host[:port][/db]. Returns 0 or -1. */
int cp_redis_parse_url(const char *url, cp_redis_addr *out);

/* Connects, authenticates and selects the database. Returns NULL and a
 * reason in err on failure. */
redisContext *cp_redis_connect(const cp_redis_addr *addr, int timeout_ms, char *err,
                               size_t err_cap);

/* Reads n pipelined replies; returns 0 when all arrived and none is an
 * error reply. Replies are stored into out (when not NULL, the caller frees
 * them with freeReplyObject) or freed. */
int cp_redis_read_replies(redisContext *c, size_t n, redisReply **out, char *err, size_t cap);

/* Key names. */
#define CP_KEY_MAX 320
void cp_key_bridges(char *out, size_t cap, const char *prefix);
void cp_key_bridge(char *out, size_t cap, const char *prefix, const char *bridge_id);
void cp_key_bridge_sessions(char *out, size_t cap, const char *prefix, const char *bridge_id);
void cp_key_client(char *out, size_t cap, const char *prefix, const char *channel_id);

/* The value stored per session in a client hash: "<bridgeId> <sinceMs>". */
int cp_presence_value(char *out, size_t cap, const char *bridge_id, int64_t since_ms);
int cp_presence_parse(const char *value, char *bridge_id, size_t cap, int64_t *since_ms);

#endif
