/* One bridge on every core (--workers N): a master process and N worker
 * processes, like nginx (docs/scaling.md).
 *
 * The master checks the configuration, forks the workers and then only
 * supervises: it binds no socket of its own, holds the bridge's record and
 * presence in Redis (the one registry thread of the bridge, fed by the
 * workers over a socketpair each), forwards SIGTERM, SIGINT and SIGHUP to
 * every worker and replaces a worker that died.
 *
 * Each worker is a whole bridge as with --workers 1: its own lws context
 * listening on the same port (SO_REUSEPORT: the kernel spreads new
 * connections), its own MQTT client (client id suffixed -wI), channel
 * table, inbox and sequencer. What must be bridge-wide lives in one
 * MAP_SHARED region: each worker's session count (--max-connections and
 * the count in Redis are their sum), health flags, a metrics snapshot (any
 * worker answers /metrics with the sum over all), and the per-address
 * table (--max-connections-per-ip, --connect-rate-per-ip). */
#ifndef BRIDGE_WORKERS_H
#define BRIDGE_WORKERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "ratelimit.h"

#define WORKERS_MAX 64
/* Room for one worker's rendered /metrics (about 20 KB today). */
#define WORKER_SNAPSHOT_MAX (192 * 1024)
/* Distinct client addresses the bridge tracks at once (per-address limits). */
#define SHARED_IPS_MAX 32768

typedef struct {
    atomic_int pid;           /* 0 while not running */
    atomic_uint sessions;     /* open sessions (live, from the service thread) */
    atomic_uint channels;     /* channel ids (each tick) */
    atomic_int up;            /* bus connected and sequencer ready (each tick) */
    atomic_int draining;      /* its drain started (RECONNECTs queued) */
    atomic_int listening;     /* its port is open (since its start) */
    atomic_ullong restarts;   /* times this worker was replaced */
    atomic_uint snap_seq;     /* odd while the snapshot is being written */
    atomic_uint snap_len;
    atomic_uint pub_gen;      /* snapshots written */
    int wake_fd;              /* eventfd: another worker wants a fresh snapshot */
    char snapshot[WORKER_SNAPSHOT_MAX];
} worker_state;

/* One client address: its sessions per worker (a dead worker's share is
 * cleared by the master) and its bucket of new connections. */
typedef struct {
    uint8_t used;
    char ip[64];
    uint32_t sessions[WORKERS_MAX];
    cp_bucket bucket;
} shared_ip;

typedef struct workers_shared {
    int count;              /* N */
    atomic_int redis_healthy; /* the master's registry, -1: no --redis */
    atomic_int draining;
    atomic_uint drain_turn;   /* the paced drain's next turn, bridge-wide (drain.c) */
    atomic_uint drain_total;  /* sessions when SIGTERM came: the drain's turns */
    pthread_mutex_t ip_lock; /* process-shared, robust */
    uint32_t ips_used;
    shared_ip ips[SHARED_IPS_MAX];
    worker_state w[WORKERS_MAX];
} workers_shared;

struct bridge;
struct registry;

/* Parses --workers: "auto" (online CPUs) or 1..WORKERS_MAX. Returns N, or
 * -1 after logging. */
int workers_parse(const char *text);

/* With n > 1: forks the workers and supervises them. Returns in each worker
 * (b->worker and b->shared set, the registry a pipe to the master); in the
 * master it returns only at the end, with *exit_code set and -1.
 * start_registry starts the master's registry (NULL result without
 * --redis). */
int workers_run(struct bridge *b, int n, struct registry *(*start_registry)(struct bridge *),
                int *exit_code);

/* reuseport.c: from now on, this process's listening socket on port gets
 * SO_REUSEPORT. */
void workers_share_port(int port);

/* A worker answering /metrics asks the others for fresh snapshots and
 * waits for them, at most WORKERS_FRESH_WAIT_MS (a scrape is rare; a busy
 * worker's last snapshot is at most 20 ms old anyway). */
#define WORKERS_FRESH_WAIT_MS 10
void workers_refresh_others(struct bridge *b);
/* This worker's eventfd (readable when asked for a snapshot). */
int workers_wake_fd(struct bridge *b);

/* Worker side: publishes this worker's health and channel count, and its
 * metrics snapshot when metrics is not NULL. */
void workers_publish(struct bridge *b, int up, const cp_buf *metrics);
/* A worker: its listener is open (the master tells the service manager
 * READY=1 once every worker's is). */
void workers_listening(struct bridge *b);

/* The worker registry's hook (registry_to_master): this worker's count. */
void workers_session_count(void *ud, unsigned n);
/* Sessions of the whole bridge (this process's own without workers). */
unsigned workers_sessions_total(const struct bridge *b);
/* Worker slots running and healthy, and running. */
void workers_health(const struct bridge *b, int *up, int *running, unsigned *channels);
/* Appends the sum over every worker of the metrics in the snapshots (this
 * worker's own taken fresh from local), then the per-worker gauges. */
void workers_render_metrics(struct bridge *b, const cp_buf *local, cp_buf *out);

/* The shared per-address table (iptable.c, used by iplimit.c). Each returns what the local
 * version would. */
int workers_ip_admit(struct bridge *b, const char *ip, long max_sessions, double rate,
                     double burst, int *over_sessions);
void workers_ip_attach(struct bridge *b, const char *ip);
void workers_ip_detach(struct bridge *b, const char *ip);
void workers_ip_prune(struct bridge *b, double rate, double burst);
void workers_ip_lock(workers_shared *sh);
void workers_ip_unlock(workers_shared *sh);

#endif
