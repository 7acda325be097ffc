/* The byte relay's worker processes (worker.c) and how the service thread
 * hands them clients (handover.c).
 *
 * Once the service thread has checked an upgrade (origin, token, limits,
 * a bridge to go to), it passes the client's socket and the upgrade
 * request it wrote for the bridge to a worker over a SOCK_SEQPACKET
 * socketpair (SCM_RIGHTS), and forgets the connection. The worker connects
 * to the bridge, sends the request, and from then on copies bytes both
 * ways: the bridge answers the upgrade itself, the frames pass untouched.
 * Workers are processes, not threads, because each has a descriptor limit
 * of its own: a relayed client holds two descriptors (client and bridge),
 * and N workers hold N times what one process could. */
#ifndef BALANCER_WORKERS_H
#define BALANCER_WORKERS_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "handoff.h"
#include "view.h"

#define WORKERS_MAX 64

/* Hand-overs sent to a worker and not yet taken: beyond this, upgrades get
 * 503 (the socketpair's queue is bounded the same way). */
#define WORKER_BACKLOG_MAX 4096

/* The upgrade request written for the bridge (request line and headers). */
#define HANDOVER_REQUEST_MAX CP_HANDOFF_REQUEST_MAX

/* One worker's figures, in memory shared with the service thread's
 * process (written by one side each, read by the other). */
typedef struct {
    atomic_ullong handed;  /* by the service thread: hand-overs sent */
    atomic_ullong taken;   /* by the worker: hand-overs received */
    atomic_ullong relays;  /* open relays (a gauge) */
    atomic_ullong opened, closed;
    atomic_ullong upstream_failed; /* the bridge could not be reached or did not answer */
    atomic_ullong bridge_gone;     /* the bridge's side ended under an open relay */
    atomic_ullong drained;         /* closed by the drain with 1012 */
    atomic_ullong bytes_up, bytes_down;
    atomic_ullong capacity; /* relays this worker's descriptor limit has room for */
    pid_t pid;
    int sock; /* the service thread's end of the socketpair */
} worker_slot;

typedef struct {
    int count;
    long drain_seconds;
    worker_slot slot[WORKERS_MAX];
} workers;

/* The fixed part of a hand-over message; the request follows it. */
typedef struct {
    struct sockaddr_storage bridge;
    socklen_t bridge_len;
    uint32_t request_len;
    char bridge_id[VIEW_ID_MAX + 1];
} handover_head;

typedef struct worker_config {
    long drain_seconds;
    long connect_timeout_ms;
    long buffer_bytes; /* one bounded buffer per direction */
} worker_config;

/* Forks n workers (before any thread is started). Returns the shared
 * table, or NULL after logging. */
workers *workers_start(int n, const worker_config *cfg);

/* A worker process's life; never returns. */
void worker_main(worker_slot *self, int sock, const worker_config *cfg);

/* The worker with the most room, or -1 when every one is at its capacity
 * or backlog. */
int workers_pick(workers *w);

/* Sums of the workers' figures. */
unsigned long long workers_relays(const workers *w);
unsigned long long workers_capacity(const workers *w);

/* SIGTERM: every worker drains over drain_seconds; waits for them (at
 * most drain_seconds + a margin), then kills what is left. When
 * stop_now(ud) turns true meanwhile (a second SIGTERM, SIGINT), the
 * workers stop at once. */
void workers_drain_and_wait(workers *w, int (*stop_now)(void *), void *ud);

/* SIGINT: every worker stops now. */
void workers_stop_now(workers *w);

#endif
