/* Shared state of the balancer process (service-thread owned unless noted). */
#ifndef BALANCER_BALANCER_H
#define BALANCER_BALANCER_H

#include <stdatomic.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "jwt.h"
#include "lwsloop.h"
#include "placement.h"
#include "view.h"

#define MAX_BRIDGES 1024

typedef struct {
    const char *listen;
    const char *redis_url;
    const char *prefix;
    const char *log_level;
    long refresh_ms;
    long ttl_ms;
    long max_message_bytes;
    long max_buffer_bytes;
    long ping_interval_s;
    long max_connections;
    const char *jwt_secret;
    const char *jwt_public_key;
    long jwt_leeway_s;
    const char *tls_cert;
    const char *tls_key;
    int tls_verify_bridges;
    char host[256];
    int port;
} balancer_config;

typedef struct relay relay;

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
} balancer_counters;

typedef struct {
    balancer_config cfg;
    struct lws_context *ctx;
    cp_lws_loop loop;
    view *view;
    cp_jwt_verifier *jwt; /* NULL: tokens are left to the bridges */
    /* the service thread's copy of the view, with what it handed out since */
    bridge_info bridges[MAX_BRIDGES];
    unsigned handed[MAX_BRIDGES];
    size_t bridge_count;
    uint64_t generation;
    int redis_ok;
    unsigned relays;
    balancer_counters n;
    atomic_int view_changed;
    atomic_int stop_requested;
    int64_t started_ms;
} balancer;

extern balancer *g_balancer;
extern const struct lws_protocols balancer_protocols[];

/* placement against the current view; counts the pick as handed out.
 * Returns NULL when no bridge can take a connection. */
const bridge_info *balancer_pick(balancer *b);
void balancer_sync_view(balancer *b);

/* http.c */
int http_serve(balancer *b, struct lws *wsi, const char *path);
int http_confirm_upgrade(balancer *b, struct lws *wsi);

/* relay.c */
int relay_callback_down(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len);
int relay_callback_up(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len);

#endif
