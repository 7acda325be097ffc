/* cloudpush-balancer: places new connections on the least-loaded bridge. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "config.h"
#include "ids.h"
#include "log.h"
#include "lwshttp.h"
#include "topics.h"

balancer *g_balancer;

static balancer the_balancer = {
    .cfg = {
        .listen = "0.0.0.0:8000",
        .redis_url = "redis://127.0.0.1:6379",
        .prefix = "cloudpush",
        .log_level = "info",
        .refresh_ms = 500,
        .ttl_ms = 3000,
        .max_message_bytes = 1048576,
        .max_buffer_bytes = 1048576,
        .ping_interval_s = 30,
        .max_connections = 100000,
        .jwt_secret = "",
        .jwt_public_key = "",
        .jwt_leeway_s = 30,
        .tls_cert = "",
        .tls_key = "",
        .tls_verify_bridges = 1,
    },
};

static const cp_option options[] = {
    {"listen", CP_OPT_STRING, &the_balancer.cfg.listen, "HOST:PORT",
     "Address for the route API and the WebSocket entry point.", 0, 0, 0},
    {"redis", CP_OPT_STRING, &the_balancer.cfg.redis_url, "URL",
     "Redis holding the bridge registry, redis://[:password@]host[:port][/db].", 0, 0, 0},
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
    {"jwt-secret", CP_OPT_STRING, &the_balancer.cfg.jwt_secret, "SECRET",
     "Check client tokens (HS256) before relaying, as the bridges do.", 0, 0, 1},
    {"jwt-public-key", CP_OPT_STRING, &the_balancer.cfg.jwt_public_key, "PEM-FILE",
     "Check client tokens (RS256/ES256) before relaying, as the bridges do.", 0, 0, 0},
    {"jwt-leeway", CP_OPT_INT, &the_balancer.cfg.jwt_leeway_s, "SECONDS",
     "Clock skew allowed on exp, nbf and iat.", 0, 3600, 0},
    {"tls-cert", CP_OPT_STRING, &the_balancer.cfg.tls_cert, "PEM-FILE",
     "Serve wss:// and https with this certificate chain; needs --tls-key.", 0, 0, 0},
    {"tls-key", CP_OPT_STRING, &the_balancer.cfg.tls_key, "PEM-FILE",
     "Private key of --tls-cert.", 0, 0, 0},
    {"tls-verify-bridges", CP_OPT_BOOL, &the_balancer.cfg.tls_verify_bridges, NULL,
     "Check the certificates of wss:// bridges (turn off only for self-signed test setups).",
     0, 0, 0},
    {"log-level", CP_OPT_STRING, &the_balancer.cfg.log_level, "LEVEL",
     "error, warn, info or debug.", 0, 0, 0},
};

void balancer_sync_view(balancer *b)
{
    if (!atomic_exchange(&b->view_changed, 0))
        return;
    /* A new snapshot restarts the hand-out counts: the bridges' own counts
     * now include what was handed out before (roughly; the next refresh
     * corrects the rest). */
    b->bridge_count = view_snapshot(b->view, b->bridges, MAX_BRIDGES, &b->generation,
                                    &b->redis_ok);
    memset(b->handed, 0, sizeof b->handed);
}

const bridge_info *balancer_pick(balancer *b)
{
    balancer_sync_view(b);
    int i = placement_pick(b->bridges, b->handed, b->bridge_count, cp_random_u64());
    if (i < 0)
        return NULL;
    b->handed[i]++;
    return &b->bridges[i];
}

static void view_refreshed(void *ud)
{
    balancer *b = ud;
    atomic_store(&b->view_changed, 1);
}

static int callback_down(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                         void *in, size_t len)
{
    balancer *b = g_balancer;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (http_serve(b, wsi, (const char *)in) != 0)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return http_confirm_upgrade(b, wsi);
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* on_signal woke the loop */
        if (atomic_load(&b->stop_requested))
            cp_lws_loop_stop(&b->loop);
        return 0;
    default:
        return relay_callback_down(wsi, reason, user, in, len);
    }
}

/* lws's receive buffer, allocated for every connection (two per relayed
 * client); messages arrive in pieces of this size and the relay
 * reassembles them. */
#define RELAY_RX_CHUNK_BYTES 512

const struct lws_protocols balancer_protocols[] = {
    /* Named like the bridge's protocol, so clients offering
     * "Sec-WebSocket-Protocol: cloudpush, <token>" are accepted here too. */
    {"cloudpush", callback_down, sizeof(void *), RELAY_RX_CHUNK_BYTES, 0, NULL, 0},
    {"cloudpush-upstream", relay_callback_up, 0, RELAY_RX_CHUNK_BYTES, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&the_balancer.stop_requested, 1);
    if (the_balancer.ctx)
        lws_cancel_service(the_balancer.ctx);
}

static void lws_log_to_ours(int level, const char *line)
{
    cp_log(level == LLL_ERR ? CP_LOG_ERROR : level == LLL_WARN ? CP_LOG_WARN : CP_LOG_DEBUG,
           "lws: %s", line);
}

int main(int argc, char **argv)
{
    balancer *b = &the_balancer;
    g_balancer = b;
    int rc = cp_config_start("cloudpush-balancer", "balancer",
                             "Balancer of cloudpush: routes each new WebSocket connection to the "
                             "least-loaded live bridge (route API or relay).",
                             options, sizeof options / sizeof options[0], argc, argv,
                             &b->cfg.log_level);
    if (rc >= 0)
        return rc;
    if (cp_config_split_hostport(b->cfg.listen, b->cfg.host, sizeof b->cfg.host, &b->cfg.port) !=
            0 ||
        b->cfg.port == 0) {
        log_error("--listen must be HOST:PORT, got '%s'", b->cfg.listen);
        return 2;
    }
    char ifname[64];
    if (cp_lws_server_prepare(b->cfg.host, b->cfg.jwt_secret, b->cfg.jwt_public_key,
                              b->cfg.jwt_leeway_s, on_signal, &b->jwt, ifname,
                              sizeof ifname) != 0)
        return 2;
    b->started_ms = cp_mono_ms();

    view_config vc = {
        .redis_url = b->cfg.redis_url,
        .prefix = b->cfg.prefix,
        .refresh_ms = b->cfg.refresh_ms,
        .ttl_ms = b->cfg.ttl_ms,
    };
    b->view = view_start(&vc, view_refreshed, b);
    if (!b->view)
        return 2;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = b->cfg.port;
    info.iface = ifname[0] ? ifname : NULL;
    info.protocols = balancer_protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (cp_lws_tls_setup(&info, b->cfg.tls_cert, b->cfg.tls_key) != 0)
        return 2;
    /* lws pings a connection idle this long and drops it when nothing
     * (a pong included) came back within the hang-up time. */
    static lws_retry_bo_t idle_policy;
    idle_policy.secs_since_valid_ping = (uint16_t)b->cfg.ping_interval_s;
    idle_policy.secs_since_valid_hangup = (uint16_t)(b->cfg.ping_interval_s + 10);
    if (b->cfg.ping_interval_s)
        info.retry_and_idle_policy = &idle_policy;
    info.timeout_secs = 10;
    info.connect_timeout_secs = 5;
    if (cp_lws_loop_init(&b->loop) != 0) {
        view_stop(b->view);
        return 1;
    }
    b->ctx = cp_lws_loop_create_context(&b->loop, &info);
    if (!b->ctx) {
        log_error("cannot listen on %s (address in use or not permitted?)", b->cfg.listen);
        view_stop(b->view);
        return 1;
    }
    log_info("balancer listening on %s, registry prefix %s", b->cfg.listen, b->cfg.prefix);
    /* A signal from here on wakes the loop (b->ctx is set). */
    if (!atomic_load(&b->stop_requested))
        cp_lws_loop_run(&b->loop);
    log_info("stopping: closing %u relayed connections", b->relays);
    cp_lws_loop_destroy(&b->loop, b->ctx);
    b->ctx = NULL;
    view_stop(b->view);
    cp_jwt_verifier_free(b->jwt);
    log_info("stopped");
    return 0;
}
