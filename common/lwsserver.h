/* The start and end of a libwebsockets server (bridge, balancer): one place
 * for what both do the same way. prepare checks the options and fills the
 * context creation info (listen address, TLS, UTF-8 validation), builds the
 * JWT verifier, raises the fd limit, ignores SIGPIPE, routes lws's log into
 * ours and turns SIGTERM/SIGINT into a stop request that wakes the loop.
 * SIGHUP never stops the server: it reloads, on the service thread, what
 * comes from files (reload.h): the log level, the JWT keys and the TLS
 * certificate; then the binary's reload hook runs.
 * The binary then adds its protocols and options to `info` and listens.
 * One server per process (the signal handler knows only one). */
#ifndef CP_LWSSERVER_H
#define CP_LWSSERVER_H

#include <stdatomic.h>

#include <libwebsockets.h>

#include "jwt.h"
#include "lwsloop.h"

typedef struct {
    const char *listen; /* HOST:PORT as given, for messages */
    const char *host;   /* its parts (cp_config_split_hostport) */
    int port;
    const char *tls_cert; /* empty: plain ws:// and http */
    const char *tls_key;
    const char *jwt_secret; /* both empty: no client tokens */
    const char *jwt_public_key;
    const char *jwt_secret_file; /* the HS256 secret from a file (re-read on SIGHUP) */
    long jwt_leeway_s;
    const char *log_level_file; /* empty: the level only comes from --log-level */
} cp_lws_server_config;

typedef struct {
    struct lws_context_creation_info info; /* filled by prepare, completed by the binary */
    cp_lws_loop loop;
    struct lws_context *ctx;  /* set by listen */
    cp_jwt_verifier *jwt;     /* NULL when clients are not authenticated */
    atomic_int stop_requested; /* set by SIGTERM (1), SIGINT or a second SIGTERM (2) */
    const char *listen;
    char ifname[64];
    cp_lws_server_config cfg;
    ev_signal hangup;          /* SIGHUP, on the service thread */
    void (*on_reload)(void *ud);
    void *on_reload_ud;
} cp_lws_server;

/* Returns 0, or -1 after logging what is wrong. */
int cp_lws_server_prepare(cp_lws_server *s, const cp_lws_server_config *cfg);

/* Creates the event loop and the context from s->info. Returns 0, or -1
 * after logging (nothing is left to destroy then). */
int cp_lws_server_listen(cp_lws_server *s);

/* Non-zero once SIGTERM or SIGINT arrived: 1 after one SIGTERM (a graceful
 * stop), 2 after SIGINT or a second SIGTERM (stop now). The signal also
 * wakes the loop with LWS_CALLBACK_EVENT_WAIT_CANCELLED. */
int cp_lws_server_stop_requested(cp_lws_server *s);

/* fn(ud) runs on the service thread after each SIGHUP reload (e.g. to pick
 * up the new s->jwt). */
void cp_lws_server_on_reload(cp_lws_server *s, void (*fn)(void *ud), void *ud);

/* What SIGHUP does, callable directly (tests, or a binary's own trigger):
 * re-reads the file-based settings and runs the reload hook. Service
 * thread only. */
void cp_lws_server_reload(cp_lws_server *s);

/* Runs the loop on the calling thread until cp_lws_loop_stop(&s->loop). */
void cp_lws_server_run(cp_lws_server *s);

/* Destroys the context (every connection is closed, their CLOSED callbacks
 * run here), the loop and the verifier. */
void cp_lws_server_destroy(cp_lws_server *s);

#endif
