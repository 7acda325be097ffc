/* cloudpush-balancer: places new connections on the least-loaded bridge. */
#include <stdint.h>
#include <unistd.h>

#include "balancer.h"
#include "config.h"
#include "handoff.h"
#include "ids.h"
#include "log.h"

static balancer the_balancer = {
    .cfg = {
        .server = {
            .listen = "0.0.0.0:8000",
            .jwt_secret = "",
            .jwt_public_key = "",
            .jwt_leeway_s = 30,
            .tls_cert = "",
            .tls_key = "",
            .jwt_secret_file = "",
            .log_level_file = "",
        },
        .redis_url = "redis://127.0.0.1:6379",
        .prefix = "cloudpush",
        .log_level = "info",
        .refresh_ms = 500,
        .ttl_ms = 3000,
        .max_message_bytes = 1048576,
        .max_buffer_bytes = 1048576,
        .ping_interval_s = 30,
        .max_connections = 100000,
        .tls_verify_bridges = 1,
        .allowed_origins = "",
        .relay_workers = -1,
        .drain_seconds = 10,
        .handover_dir = "auto",
    },
};

static const cp_option options[] = {
    {"listen", CP_OPT_STRING, &the_balancer.cfg.server.listen, "HOST:PORT",
     "Address for the route API and the WebSocket entry point.", 0, 0, 0},
    {"redis", CP_OPT_STRING, &the_balancer.cfg.redis_url, "URL",
     "Redis holding the bridge registry, redis://[[user]:password@]host[:port][/db].", 0, 0, 0},
    {"prefix", CP_OPT_STRING, &the_balancer.cfg.prefix, "PREFIX",
     "Key prefix in Redis (the bridges' --prefix).", 0, 0, 0},
    {"refresh-ms", CP_OPT_INT, &the_balancer.cfg.refresh_ms, "MS",
     "How often the view of live bridges is read from Redis.", 50, 10000, 0},
    {"bridge-ttl-ms", CP_OPT_INT, &the_balancer.cfg.ttl_ms, "MS",
     "A bridge whose record is older than this is dead (the bridges' --registry-ttl-ms).", 300,
     600000, 0},
    {"max-message-bytes", CP_OPT_INT, &the_balancer.cfg.max_message_bytes, "BYTES",
     "Largest message relayed in either direction; larger closes with 1009.", 1024, 67108864,
     0},
    {"max-buffer-bytes", CP_OPT_INT, &the_balancer.cfg.max_buffer_bytes, "BYTES",
     "Bytes queued per relay direction before reading from the sender pauses.", 4096,
     67108864, 0},
    {"ping-interval", CP_OPT_INT, &the_balancer.cfg.ping_interval_s, "SECONDS",
     "Ping relayed clients idle this long; those that do not answer are dropped (0: off).", 0,
     3600, 0},
    {"max-connections", CP_OPT_INT, &the_balancer.cfg.max_connections, "N",
     "Relayed connections beyond this get HTTP 503.", 1, 10000000, 0},
    {"jwt-secret", CP_OPT_STRING, &the_balancer.cfg.server.jwt_secret, "SECRET",
     "Check client tokens (HS256) before relaying, as the bridges do.", 0, 0, 1},
    {"jwt-public-key", CP_OPT_STRING, &the_balancer.cfg.server.jwt_public_key, "PEM-FILE",
     "Check client tokens (RS256/ES256) before relaying, as the bridges do.", 0, 0, 0},
    {"jwt-leeway", CP_OPT_INT, &the_balancer.cfg.server.jwt_leeway_s, "SECONDS",
     "Clock skew allowed on exp, nbf and iat.", 0, 3600, 0},
    {"tls-cert", CP_OPT_STRING, &the_balancer.cfg.server.tls_cert, "PEM-FILE",
     "Serve wss:// and https with this certificate chain; needs --tls-key.", 0, 0, 0},
    {"tls-key", CP_OPT_STRING, &the_balancer.cfg.server.tls_key, "PEM-FILE",
     "Private key of --tls-cert.", 0, 0, 0},
    {"allowed-origins", CP_OPT_STRING, &the_balancer.cfg.allowed_origins, "ORIGIN[,ORIGIN...]",
     "Browser pages (Origin, e.g. https://app.example.com) that may connect; others get 403 "
     "(empty: any; requests without Origin are not from a browser and pass).",
     0, 0, 0},
    {"relay-workers", CP_OPT_INT, &the_balancer.cfg.relay_workers, "N",
     "Worker processes relaying bytes between clients and bridges (-1: one per core; 0: relay "
     "message by message in the service thread, as a TLS listener always does).",
     -1, WORKERS_MAX, 0},
    {"handover-dir", CP_OPT_STRING, &the_balancer.cfg.handover_dir, "DIR",
     "Where bridges on this host wait for clients (their --handover-dir): a client placed on "
     "such a bridge gets its socket handed over, and the balancer is out of the path ('auto': "
     "$XDG_RUNTIME_DIR/cloudpush or /tmp/cloudpush-UID; 'off': relay every client).",
     0, 0, 0},
    {"drain-seconds", CP_OPT_INT, &the_balancer.cfg.drain_seconds, "SECONDS",
     "On SIGTERM, close the relayed connections with 1012 spread over this long, so that "
     "clients reconnect elsewhere gradually.",
     0, 3600, 0},
    {"tls-verify-bridges", CP_OPT_BOOL, &the_balancer.cfg.tls_verify_bridges, NULL,
     "Check the certificates of wss:// bridges (turn off only for self-signed test setups).",
     0, 0, 0},
    {"log-level", CP_OPT_STRING, &the_balancer.cfg.log_level, "LEVEL",
     "error, warn, info or debug.", 0, 0, 0},
    /* Reloadable settings (issue 15). */
    {"log-level-file", CP_OPT_STRING, &the_balancer.cfg.server.log_level_file, "FILE",
     "File holding the log level (overrides --log-level); re-read on SIGHUP.", 0, 0, 0},
    {"jwt-secret-file", CP_OPT_STRING, &the_balancer.cfg.server.jwt_secret_file, "FILE",
     "As --jwt-secret, read from this file; re-read on SIGHUP (as --jwt-public-key and the "
     "--tls-cert/--tls-key files).",
     0, 0, 0},
};

/* Descriptors the balancer keeps for itself: listener, event loop, Redis,
 * log, name lookups and a margin. */
#define RESERVED_FDS 64

/* A relayed client holds two descriptors (client and bridge side): say at
 * start what the descriptor limit leaves room for, and loudly when that,
 * not --max-connections, bounds the balancer. */
static void plan_capacity(balancer *b)
{
    long fds = cp_fd_limit();
    if (b->workers) {
        /* Each worker process has the limit to itself. */
        unsigned long long room = workers_capacity(b->workers);
        b->relay_capacity = (unsigned)(room < (unsigned long long)b->cfg.max_connections
                                           ? room
                                           : (unsigned long long)b->cfg.max_connections);
        b->descriptor_bound = room < (unsigned long long)b->cfg.max_connections;
        if (b->descriptor_bound)
            log_warn("the descriptor limit (%ld per process) leaves room for %llu relayed "
                     "clients (%d workers, two descriptors each), fewer than --max-connections "
                     "%ld: raise the hard limit (ulimit -Hn, LimitNOFILE) or --relay-workers to "
                     "relay more",
                     fds, room, b->workers->count, b->cfg.max_connections);
        else
            log_info("descriptor limit %ld per process: room for %llu relayed clients (%d "
                     "workers)",
                     fds, room, b->workers->count);
        return;
    }
    long room = fds < 0 ? b->cfg.max_connections : (fds - RESERVED_FDS) / 2;
    if (room < 1)
        room = 1;
    b->relay_capacity = (unsigned)(room < b->cfg.max_connections ? room : b->cfg.max_connections);
    b->descriptor_bound = room < b->cfg.max_connections;
    if (b->descriptor_bound)
        log_warn("the descriptor limit (%ld) leaves room for %ld relayed clients (two "
                 "descriptors each), fewer than --max-connections %ld: raise the hard limit "
                 "(ulimit -Hn, LimitNOFILE) to relay more",
                 fds, room, b->cfg.max_connections);
    else
        log_info("descriptor limit %ld: room for %ld relayed clients", fds, room);
}

/* A second SIGTERM or a SIGINT during the drain. */
static int stop_now(void *server)
{
    return cp_lws_server_stop_requested(server) >= 2;
}

unsigned long long balancer_relays(const balancer *b)
{
    return b->relays + workers_relays(b->workers);
}

int main(int argc, char **argv)
{
    balancer *b = &the_balancer;
    int rc = cp_config_start("cloudpush-balancer", "balancer",
                             "Balancer of cloudpush: routes each new WebSocket connection to the "
                             "least-loaded live bridge (route API or relay).",
                             options, sizeof options / sizeof options[0], argc, argv,
                             &b->cfg.log_level);
    if (rc >= 0)
        return rc;
    cp_lws_server_config *sc = &b->cfg.server;
    if (cp_config_split_hostport(sc->listen, b->cfg.listen_host, sizeof b->cfg.listen_host,
                                 &sc->port) != 0 ||
        sc->port == 0) {
        log_error("--listen must be HOST:PORT, got '%s'", sc->listen);
        return 2;
    }
    sc->host = b->cfg.listen_host;
    if (cp_lws_server_prepare(&b->server, sc) != 0)
        return 2;
    b->started_ms = cp_mono_ms();
    b->loop_epoll = -1;
    /* A TLS listener's clients speak TLS with this process: never handed. */
    if (!*sc->tls_cert &&
        cp_handoff_dir(b->cfg.handover_dir, b->handoff_dir, sizeof b->handoff_dir) < 0) {
        log_error("--handover-dir '%s' is too long for a socket path", b->cfg.handover_dir);
        return 2;
    }
    /* The byte relay's workers are forked before any thread starts. A TLS
     * listener needs the service thread to decrypt: it relays itself. */
    long nworkers = b->cfg.relay_workers < 0 ? sysconf(_SC_NPROCESSORS_ONLN)
                                             : b->cfg.relay_workers;
    if (nworkers > WORKERS_MAX)
        nworkers = WORKERS_MAX;
    if (nworkers > 0 && *sc->tls_cert) {
        log_info("TLS listener: relaying in the service thread, message by message");
        nworkers = 0;
    }
    static worker_config wc;
    wc.drain_seconds = b->cfg.drain_seconds;
    wc.connect_timeout_ms = 10000;
    if (nworkers > 0 && !(b->workers = workers_start((int)nworkers, &wc)))
        return 1;
    plan_capacity(b);

    view_config vc = {
        .redis_url = b->cfg.redis_url,
        .prefix = b->cfg.prefix,
        .refresh_ms = b->cfg.refresh_ms,
        .ttl_ms = b->cfg.ttl_ms,
    };
    b->view = view_start(&vc, snapshot_on_refresh, b);
    if (!b->view)
        return 2;

    struct lws_context_creation_info *info = &b->server.info;
    info->protocols = relay_protocols;
    /* The relay passes the client's Origin on unchanged (not "http://" +). */
    info->options |= LWS_SERVER_OPTION_JUST_USE_RAW_ORIGIN;
    info->user = b; /* balancer_of() in the callbacks */
    /* lws pings a connection idle this long and drops it when nothing
     * (a pong included) came back within the hang-up time. */
    static lws_retry_bo_t idle_policy;
    idle_policy.secs_since_valid_ping = (uint16_t)b->cfg.ping_interval_s;
    idle_policy.secs_since_valid_hangup = (uint16_t)(b->cfg.ping_interval_s + 10);
    if (b->cfg.ping_interval_s)
        info->retry_and_idle_policy = &idle_policy;
    info->connect_timeout_secs = 5;
    if (cp_lws_server_listen(&b->server) != 0) {
        workers_stop_now(b->workers);
        view_stop(b->view);
        return 1;
    }
    if ((b->workers || b->handoff_dir[0]) && handover_init(b) != 0) {
        workers_stop_now(b->workers);
        b->workers = NULL;
        b->handoff_dir[0] = '\0';
        plan_capacity(b);
    }
    log_info("balancer listening on %s, registry prefix %s, %s; hand-over to bridges on this "
             "host %s%s",
             sc->listen, b->cfg.prefix,
             b->workers ? "byte relay" : "relaying in the service thread",
             b->handoff_dir[0] ? "through " : "off", b->handoff_dir);
    /* A signal from here on wakes the loop (the context exists). */
    if (!cp_lws_server_stop_requested(&b->server))
        cp_lws_server_run(&b->server);
    int now = cp_lws_server_stop_requested(&b->server) >= 2;
    unsigned long long byte_relays = workers_relays(b->workers);
    log_info("stopping: closing %u relayed connections in the service thread; %s %llu byte "
             "relays",
             b->relays, now ? "closing" : "draining", byte_relays);
    accept_close_waiting();
    cp_lws_server_destroy(&b->server); /* the listener closes: nothing new comes */
    if (now)
        workers_stop_now(b->workers);
    else
        workers_drain_and_wait(b->workers, stop_now, &b->server);
    relay_free_all(b);
    view_stop(b->view);
    log_info("stopped");
    return 0;
}
