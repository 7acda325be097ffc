/* Redis: the one module that talks to it. It owns the connection (URL,
 * AUTH, SELECT, reconnect with backoff) and the schema of docs/redis.md as
 * functions; no other file knows a key name or a command.
 *
 * hiredis, synchronous: every caller runs Redis I/O on a thread of its own
 * (never an event loop), so a blocking client with timeouts is the simple,
 * right tool. A cp_redis handle belongs to one thread.
 *
 * Writes are pipelined: cp_redis_queue_* append commands, cp_redis_flush
 * sends them and reads every reply, so one round costs one round trip. */
#ifndef CP_REDIS_H
#define CP_REDIS_H

#include <stddef.h>
#include <stdint.h>

/* ---- the address ---- */

typedef struct {
    char host[256];
    int port;
    char username[128]; /* empty: AUTH with the password only */
    char password[256]; /* empty (and no username): no AUTH */
    int db;
    int tls; /* rediss://: parsed, but refused (hiredis 0.14 has no TLS) */
} cp_redis_addr;

enum {
    CP_REDIS_URL_OK = 0,
    CP_REDIS_URL_INVALID = -1,
    CP_REDIS_URL_TLS = -2, /* a valid rediss:// URL, which this build cannot serve */
};

/* redis[s]://[[username]:password@]host[:port][/db]; host may be [v6].
 * userinfo without ':' is a password (as redis-cli reads it). Returns
 * CP_REDIS_URL_OK, or CP_REDIS_URL_INVALID / CP_REDIS_URL_TLS (out is filled
 * for TLS all the same). */
int cp_redis_parse_url(const char *url, cp_redis_addr *out);
/* Why cp_redis_parse_url refused, for an error message. */
const char *cp_redis_url_strerror(int rc);

/* ---- the connection ---- */

typedef struct cp_redis cp_redis;

typedef struct {
    const char *prefix; /* key prefix (--prefix) */
    const char *who;    /* log tag: "registry", "view", "presence" */
    int timeout_ms;     /* connect and command timeout */
    int backoff;        /* 1: after a failure, wait cp_backoff before the next
                           attempt (a background loop); 0: try at every call */
    int log_connects;   /* 1: log each successful connect at info level */
} cp_redis_options;

/* Allocates a handle; does not connect. NULL when memory is short. The
 * address and prefix are copied. */
cp_redis *cp_redis_open(const cp_redis_addr *addr, const cp_redis_options *opt);
void cp_redis_close(cp_redis *r);

enum { CP_REDIS_DOWN = -1, CP_REDIS_UP = 0, CP_REDIS_NEW = 1 };
/* Connects (AUTH, SELECT) unless connected or the backoff says wait.
 * Returns CP_REDIS_UP (was connected), CP_REDIS_NEW (connected now: a
 * writer resynchronises) or CP_REDIS_DOWN (failed, or waiting). */
int cp_redis_connect(cp_redis *r);
/* The same, without waiting for the backoff: once, right after a
 * connection broke in the middle of a pipeline whose writes are
 * idempotent (appends with a messageId), so they are retried at once. */
int cp_redis_connect_now(cp_redis *r);
int cp_redis_connected(const cp_redis *r);
/* Drops the connection (a later call reconnects). */
void cp_redis_disconnect(cp_redis *r);
/* The last error text (a refused command or the lost connection). */
const char *cp_redis_last_error(const cp_redis *r);

/* Every call below needs a connection (cp_redis_connect first) and returns
 * CP_REDIS_LOST when it broke: the handle then dropped it, logged it and
 * set the backoff. */
enum { CP_REDIS_OK = 0, CP_REDIS_REFUSED = 1, CP_REDIS_LOST = -1 };

/* Sends what was queued and reads every reply: CP_REDIS_OK, CP_REDIS_REFUSED
 * (a command got an error reply; the rest were applied) or CP_REDIS_LOST. */
int cp_redis_flush(cp_redis *r);

/* PING: CP_REDIS_OK when Redis answers PONG, CP_REDIS_REFUSED when it
 * answers an error (e.g. NOAUTH), CP_REDIS_LOST. */
int cp_redis_ping(cp_redis *r);

/* ---- the schema: leases (one holder among processes) ---- */

/* Takes or keeps the lease <prefix>:lease:{name} for token (unique per
 * holder) for ttl_ms: free or already token's, it is (re)set and *held is
 * 1; held by another, *held is 0. CP_REDIS_OK, CP_REDIS_REFUSED or
 * CP_REDIS_LOST (*held then unknown: 0). */
int cp_redis_lease(cp_redis *r, const char *name, const char *token, long ttl_ms, int *held);
/* Gives the lease up when token holds it (a clean stop: the next holder
 * need not wait for the expiry). CP_REDIS_OK, CP_REDIS_REFUSED or LOST. */
int cp_redis_lease_release(cp_redis *r, const char *name, const char *token);

/* ---- the schema: bridges ---- */

#define CP_REDIS_BRIDGE_ID_MAX 64
#define CP_REDIS_BRIDGE_URL_MAX 512

/* The hash <prefix>:bridge:{id}. */
typedef struct {
    char id[CP_REDIS_BRIDGE_ID_MAX + 1];
    char url[CP_REDIS_BRIDGE_URL_MAX]; /* advertised ws URL */
    unsigned connections;
    unsigned capacity;
    int draining;
    /* Cannot take sessions now: starting, or its broker is away (field
     * "ready" 0). A record without the field (an older bridge) is ready. */
    int not_ready;
    int64_t started_ms;
    int64_t updated_ms; /* written as "now" by cp_redis_queue_bridge_record */
} cp_redis_bridge;

/* A bridge's refresh: its record (expiring after ttl_ms) and its index
 * entry scored now. */
void cp_redis_queue_bridge_record(cp_redis *r, const cp_redis_bridge *b, long ttl_ms);
/* A bridge that stops: its record, its session list and its index entry
 * (queue its sessions' cp_redis_queue_session_down first). */
void cp_redis_queue_bridge_removal(cp_redis *r, const char *bridge_id);

/* The live bridges: index entries refreshed within ttl_ms whose record
 * exists, at most max. *out is malloc'ed (the caller frees it), *n set.
 * CP_REDIS_OK, CP_REDIS_REFUSED (memory short: nothing read, *out NULL) or
 * CP_REDIS_LOST. A record that cannot be read is left out. */
int cp_redis_live_bridges(cp_redis *r, long ttl_ms, size_t max, cp_redis_bridge **out,
                          size_t *n);

/* Removes what dead bridges left (index entry older than ttl_ms and record
 * expired): their sessions in the client hashes, their session list, their
 * index entry. A bridge that is only late (record still there) is left
 * alone. At most 16 per call. Returns how many were removed, or
 * CP_REDIS_LOST. */
int cp_redis_remove_dead_bridges(cp_redis *r, long ttl_ms);

/* ---- the schema: sessions and presence ---- */

/* A session greeted on / ended at bridge_id: the client hash and the
 * bridge's session list. */
void cp_redis_queue_session_up(cp_redis *r, const char *bridge_id, const char *channel_id,
                               const char *session_id, int64_t since_ms);
void cp_redis_queue_session_down(cp_redis *r, const char *bridge_id, const char *channel_id,
                                 const char *session_id);

/* The first half of a bridge's full sync: reads its session list and
 * queues the removal of every session holds() says it no longer has
 * (*removed counts them). The caller then queues cp_redis_queue_session_up
 * for each session it holds and flushes. CP_REDIS_OK or CP_REDIS_LOST. */
int cp_redis_queue_stale_sessions(cp_redis *r, const char *bridge_id,
                                  int (*holds)(void *ud, const char *session_id), void *ud,
                                  unsigned *removed);

/* online[i] = 1 when ids[i] has a session on a live bridge. One round
 * trip. CP_REDIS_OK, CP_REDIS_REFUSED or CP_REDIS_LOST. */
int cp_redis_presence(cp_redis *r, long ttl_ms, const char *const *ids, size_t n,
                      unsigned char *online);

/* cp_redis_presence in two halves, to share a pipeline with other work:
 * queue the lookups, then (after the replies queued before them were
 * read) collect them. */
void cp_redis_queue_presence(cp_redis *r, long ttl_ms, const char *const *ids, size_t n);
int cp_redis_collect_presence(cp_redis *r, size_t n, unsigned char *online);

/* Calls each() for every session of channel_id on a live bridge. One
 * round trip. CP_REDIS_OK, CP_REDIS_REFUSED or CP_REDIS_LOST. */
int cp_redis_client_sessions(cp_redis *r, long ttl_ms, const char *channel_id,
                             void (*each)(void *ud, const char *session_id,
                                          const char *bridge_id, int64_t since_ms),
                             void *ud);

/* ---- the schema: history streams (docs/design-delivery.md) ----
 *
 * A stream per channel id, and CP_REDIS_BROADCAST_STREAM for broadcasts:
 * every message appended gets the next offset (1, 2, ...: no gaps) under
 * the stream's epoch, a random id that changes only when the history was
 * lost (Redis emptied, or the stream expired). At most history_size
 * messages are kept (roughly: trimmed with MAXLEN ~), for ttl_s after the
 * last append. Keys share the stream's hash tag ({stream}), so one stream
 * lives on one Redis Cluster node. */

#define CP_REDIS_BROADCAST_STREAM "*"
#define CP_REDIS_EPOCH_MAX 32

typedef struct {
    int64_t offset;
    char epoch[CP_REDIS_EPOCH_MAX + 1];
    int duplicate; /* message_id was appended before (same fingerprint): its earlier offset */
    int conflict;  /* message_id was appended before with another fingerprint: nothing
                      appended (offset: the other message's) */
} cp_redis_appended;

/* Queues the append of one message (the serialised envelope, without its
 * offset) to stream. A non-empty message_id makes a retry idempotent:
 * while the stream holds its record (at least its last history_size
 * messages, at most ttl_s after its last append) the same id on the same
 * stream with the same fingerprint (cp_seq_fingerprint: its sender and
 * payload; NULL or "": any) is not appended again (duplicate); with
 * another fingerprint it is a conflict, not appended either (the caller
 * gives it another id). */
void cp_redis_queue_history_append(cp_redis *r, const char *stream, const char *message_id,
                                   const char *fingerprint, const char *envelope, size_t len,
                                   long history_size, long ttl_s);
/* The same, for a message the sequencer leader took on its well-known
 * MQTT session with QoS 1 packet id packet_id (> 0; 0: not recorded):
 * in the same script the stream's ids hash records message_id under the
 * field p:<session>:<packet_id>, whatever the outcome, for as long as the
 * messageIds themselves. A broker redelivering the message (DUP=1, same
 * packet id) to the next leader finds its messageId there
 * (cp_redis_packet_lookup), so the append is a duplicate rather than a
 * new message. */
#define CP_REDIS_PACKET_MID_MAX 128
void cp_redis_queue_history_append_packet(cp_redis *r, const char *stream,
                                          const char *message_id, const char *fingerprint,
                                          const char *envelope, size_t len, long history_size,
                                          long ttl_s, const char *session, int packet_id);
/* The messageIds recorded for packet_ids[i] on streams[i] (session as
 * above), into out[i] ("" when none). Nothing else may be queued; one
 * round trip. CP_REDIS_OK, CP_REDIS_REFUSED or CP_REDIS_LOST (out all ""). */
int cp_redis_packet_lookup(cp_redis *r, const char *const *streams, const char *session,
                           const int *packet_ids, size_t n, char (*out)[CP_REDIS_PACKET_MID_MAX + 1]);
/* Sends the queued appends (only appends may be queued) and reads their
 * results, in order, into out[0..n). CP_REDIS_OK, CP_REDIS_REFUSED (an
 * append failed: its out offset is 0; the others are valid) or
 * CP_REDIS_LOST (none is known). */
int cp_redis_flush_appends(cp_redis *r, cp_redis_appended *out, size_t n);

typedef struct {
    char epoch[CP_REDIS_EPOCH_MAX + 1]; /* "" when the stream has no history */
    int64_t last;                       /* the newest offset, 0 when none */
    int64_t first;                      /* the oldest offset still kept, 0 when none */
} cp_redis_stream_state;

/* The stream's state and its retained messages with offset > since, at
 * most max, in order: each(ud, offset, envelope, len). One round trip.
 * CP_REDIS_OK, CP_REDIS_REFUSED or CP_REDIS_LOST. */
int cp_redis_history_read(cp_redis *r, const char *stream, int64_t since, size_t max,
                          cp_redis_stream_state *state,
                          void (*each)(void *ud, int64_t offset, const char *envelope,
                                       size_t len),
                          void *ud);

/* The same, pipelined: queue several reads (nothing else between), then
 * collect each one's result in the order queued; the first collect sends
 * them all, so n reads cost one round trip. After a CP_REDIS_LOST the
 * later collects report it too. max 0 reads the state only. */
void cp_redis_queue_history_read(cp_redis *r, const char *stream, int64_t since, size_t max);
int cp_redis_collect_history_read(cp_redis *r, cp_redis_stream_state *state,
                                  void (*each)(void *ud, int64_t offset, const char *envelope,
                                               size_t len),
                                  void *ud);

#endif
