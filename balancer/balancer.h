/* Shared state of the balancer process (service-thread owned unless noted). */
#ifndef BALANCER_BALANCER_H
#define BALANCER_BALANCER_H

#include <stdatomic.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "lwsserver.h"
#include "placement.h"
#include "view.h"
#include "workers.h"

typedef struct {
    cp_lws_server_config server; /* --listen, --tls-cert/--tls-key, --jwt-* */
    const char *redis_url;
    const char *prefix;
    const char *log_level;
    long refresh_ms;
    long ttl_ms;
    long max_message_bytes;
    long max_buffer_bytes;
    long ping_interval_s;
    long max_connections;
    int tls_verify_bridges;
    const char *allowed_origins; /* empty: any */
    long relay_workers; /* byte-relay worker processes; -1: one per core, 0: none */
    long drain_seconds;
    const char *handover_dir; /* --handover-dir: "auto", a path, or "off" */
    char listen_host[256]; /* server.host points here */
} balancer_config;

typedef struct {
    uint64_t routes;          /* HTTP route answers */
    uint64_t relays_opened;
    uint64_t relays_closed;
    uint64_t relay_upstream_failed;
    uint64_t no_bridge;       /* requests refused: no live bridge */
    uint64_t rejected_channel;
    uint64_t messages_up, messages_down;
    uint64_t bytes_up, bytes_down;
    uint64_t too_big;
    uint64_t forbidden_origin;
    uint64_t descriptor_limited; /* upgrades refused: no descriptors for another relay */
    uint64_t handed_over;        /* upgrades handed to a byte-relay worker */
    uint64_t handed_to_bridge;   /* upgrades handed to a bridge on this host */
    uint64_t handover_failed;    /* a local bridge's socket refused a hand-over */
    uint64_t handed_at_accept;   /* of handed_to_bridge: before lws read the request */
} balancer_counters;

typedef struct {
    balancer_config cfg;
    cp_lws_server server;
    view *view;
    /* the service thread's copy of the view, with what it handed out since */
    placement placement;
    bridge_info snapshot[PLACEMENT_MAX_BRIDGES]; /* view_snapshot's landing place */
    int redis_ok;
    unsigned relays;
    /* Relays the descriptor limit leaves room for (two descriptors each),
     * or --max-connections when that is lower. */
    unsigned relay_capacity;
    int descriptor_bound; /* the descriptor limit, not --max-connections, sets relay_capacity */
    int capacity_logged; /* the refusal at relay_capacity was logged */
    balancer_counters n;
    atomic_int view_changed; /* set by the view's thread */
    int64_t started_ms;
    workers *workers; /* the byte relay's; NULL: every relay in the service thread */
    int loop_epoll;   /* the event loop's epoll set (handover.c) */
    /* Bridges on this host take their clients' sockets from this directory
     * (common/handoff.h); empty: hand-overs to bridges are off. */
    char handoff_dir[108];
    int64_t handoff_checked_ms; /* when the directory was last found private */
    int handoff_dir_ok;
} balancer;

/* The balancer of a callback's connection (the context's user data); NULL
 * for the few lws callbacks without a connection. */
static inline balancer *balancer_of(struct lws *wsi)
{
    return wsi ? lws_context_user(lws_get_context(wsi)) : NULL;
}

/* snapshot.c: the view thread's refreshes, taken over by the service thread */
void snapshot_on_refresh(void *ud); /* view thread */
/* The placement, with the newest view loaded when it changed. */
placement *snapshot_placement(balancer *b);

/* relay.c: the protocols of the listening context */
extern const struct lws_protocols relay_protocols[];

/* relay.c: frees the relays the destroyed context left (at exit). */
void relay_free_all(balancer *b);

/* relay.c: the client's query, percent-encoded again, for the bridge.
 * Returns its length, or -1 when it is over 1900 bytes. */
int relay_upstream_query(struct lws *down, char *args, size_t cap);

/* handover.c: the service thread's hand-overs, to a bridge on this host or
 * to a byte-relay worker. */
int handover_init(balancer *b);
/* 1 when upgrades go through handover_upgrade (workers or local bridges). */
int handover_enabled(const balancer *b);
/* After the upgrade's checks passed: hands the client to a bridge on this
 * host or to a worker (0: the caller lets lws drop its connection
 * quietly), refuses it (-1: the answer was written), or leaves it to the
 * service thread's relay (1: wss://, or no worker for a remote bridge). */
int handover_upgrade(balancer *b, struct lws *wsi);

/* A socket connected to the hand-over socket of bridge id on this host, or
 * -1 (it has none here, or the directory is not private, or its backlog
 * is full: the client is relayed). */
int handover_bridge_socket(balancer *b, const char *id);

/* accept.c: right after accept, before lws reads anything. When the
 * client's whole upgrade request is in the socket (or is the first thing
 * to arrive in it) and the chosen bridge is on this host, the socket goes
 * to the bridge unread by lws: the bridge checks the request as for a
 * direct client. Returns 1 when lws must let go of fd (handed over, or
 * waiting for its first bytes here), 0 when lws serves it as usual. */
int accept_handover(balancer *b, struct lws *listener, int fd);
/* Closes the sockets still waiting for their first bytes (at exit). */
void accept_close_waiting(void);

/* Relays open: the service thread's and the workers'. */
unsigned long long balancer_relays(const balancer *b);

/* http.c */
int http_serve(balancer *b, struct lws *wsi, const char *path);
int http_confirm_upgrade(balancer *b, struct lws *wsi);

#endif
