/* The bridge's record and its sessions in Redis (see docs/redis.md), kept
 * by a thread of its own: the service thread only queues changes.
 *
 * The thread mirrors this bridge's sessions in memory, so after Redis was
 * unreachable or restarted it rewrites the full picture (and removes what
 * it no longer holds) without asking the service thread anything. */
#ifndef BRIDGE_REGISTRY_H
#define BRIDGE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

typedef struct registry registry;

typedef struct {
    const char *redis_url;
    const char *prefix;
    const char *bridge_id;
    const char *advertise_url;
    long capacity;
    long interval_ms;
    long ttl_ms;
    /* No thread: the owner calls registry_service from its own loop (the
     * workers' master, which forks and so must stay single-threaded). */
    int no_thread;
} registry_config;

/* Starts the thread; NULL when the URL is invalid or memory is short. */
registry *registry_start(const registry_config *cfg);
/* Service thread: a session was greeted / ended. */
void registry_session_up(registry *r, const char *channel_id, const char *session_id,
                         size_t sid_len, int64_t since_ms);
void registry_session_down(registry *r, const char *channel_id, const char *session_id,
                           size_t sid_len);
void registry_set_connections(registry *r, unsigned connections);
/* No new connections should be routed here (shutting down). */
void registry_set_draining(registry *r);
/* Whether the bridge can take sessions now (its bus is up, and with
 * --workers every worker's): balancers place clients only on ready
 * bridges. A new registry is not ready; a change is written at once. */
void registry_set_ready(registry *r, int ready);
/* 1 when the last write to Redis succeeded. */
int registry_healthy(registry *r);
/* --workers: a worker's registry. It sends the session changes to the
 * master over sock (SOCK_SEQPACKET) and calls on_connections with each new
 * session count (the shared counters, workers.c); draining is the master's. */
registry *registry_to_master(int sock, void (*on_connections)(void *ud, unsigned n), void *ud);
/* The largest datagram a worker sends: the master reads with a buffer of
 * this size. */
#define REGISTRY_MESSAGE_MAX 16384
/* The master: one datagram from worker (1..N), one change per line; -1
 * when a line is malformed (the others are taken). */
int registry_worker_message(registry *r, int worker, const char *msg, size_t len);
/* The master: worker died; the sessions it held are removed from Redis. */
void registry_worker_gone(registry *r, int worker);
/* With no_thread: writes what was queued and, when due, the record; blocks
 * up to the Redis timeout (2 s) when Redis does not answer. */
void registry_service(registry *r);
/* Writes what is queued, removes this bridge's record and sessions, and
 * stops the thread. */
void registry_stop(registry *r);

#endif
