/* cloudpush-bridge: WebSocket sessions <-> MQTT topics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge.h"
#include "config.h"
#include "ids.h"
#include "log.h"
#include "lwsserver.h"
#include "procmetrics.h"
#include "workers.h"

bridge *g_bridge;
static cp_lws_server server;

#define INBOX_CAPACITY 65536
#define INBOX_CAPACITY_MAX (1u << 21) /* a burst's backlog, about 500 MB of messages at most */
#define TICK_US (250 * LWS_US_PER_MS)
/* History reads waiting for the Redis thread (greetings, gaps, catch-ups). */
#define HISTORY_MAX_PENDING 65536

static bridge the_bridge = {
    .cfg = {
        .listen = "0.0.0.0:9001",
        .id = "",
        .advertise = "",
        .bus = CP_BUS_SETTINGS_DEFAULTS,
        .prefix = "cloudpush",
        .log_level = "info",
        .workers = "auto",
        .redis_url = "redis://127.0.0.1:6379",
        .registry_interval_ms = 1000,
        .registry_ttl_ms = 3000,
        .idle_timeout_s = 60,
        .max_connections = 10000,
        .max_message_bytes = 65536,
        .max_queue_messages = 1024,
        .max_queue_bytes = 1048576,
        .shutdown_grace_s = 5,
        .max_recipients = 100,
        .single_session = 0,
        .presence_events = 1,
        .presence_qos = 0,
        .deflate = 1,
        .io_uring = 1,
        .jwt_secret = "",
        .jwt_public_key = "",
        .jwt_leeway_s = 30,
        .jwt_secret_file = "",
        .log_level_file = "",
        .mqtt_session_expiry_s = 60,
        .tls_cert = "",
        .tls_key = "",
        .trusted_proxies = "",
        .allowed_origins = "",
        .max_connections_per_ip = 0,
        .connect_rate_per_ip = 0,
        .connect_burst_per_ip = 100,
        .client_rate = 100,
        .client_burst = 200,
        .ack_window = 256,
        .ack_timeout_s = 5,
        .ack_retries = 3,
        .drain_seconds = 10,
        .handover_dir = "auto",
        .reorder_window_ms = 100,
        .reorder_max_messages = 256,
        .recovery_max_messages = 1000,
        .sequencer = 1,
        .sequencer_lease_ms = 3000,
        .bus_batch = 4,
        .history_size = 1000,
        .history_ttl_s = 86400,
    },
};

static const cp_option options[] = {
    {"listen", CP_OPT_STRING, &the_bridge.cfg.listen, "HOST:PORT",
     "Address to listen on for WebSocket and HTTP (0.0.0.0 = all interfaces).", 0, 0, 0},
    {"workers", CP_OPT_STRING, &the_bridge.cfg.workers, "N|auto",
     "Worker processes serving the port (SO_REUSEPORT), one per core with auto (the online "
     "CPUs); 1: one process. One bridge either way: one id, one record in Redis, limits and "
     "/metrics for the whole (docs/scaling.md).",
     0, 0, 0},
    {"id", CP_OPT_STRING, &the_bridge.cfg.id, "ID",
     "Bridge id, unique in the cluster; [A-Za-z0-9._:@-], at most 64 characters (default: "
     "HOSTNAME:PORT).",
     0, 0, 0},
    {"advertise", CP_OPT_STRING, &the_bridge.cfg.advertise, "URL",
     "WebSocket URL clients and the balancer use to reach this bridge (default: "
     "ws://HOST:PORT/ws, HOST being the host name when listening on all interfaces).",
     0, 0, 0},
    CP_BUS_SETTINGS_OPTIONS(the_bridge.cfg.bus),
    {"prefix", CP_OPT_STRING, &the_bridge.cfg.prefix, "PREFIX",
     "Topic prefix of the bus and key prefix in Redis (docs/topics.md, docs/redis.md).", 0, 0,
     0},
    {"redis", CP_OPT_STRING, &the_bridge.cfg.redis_url, "URL",
     "Redis for the bridge registry and presence, redis://[[user]:password@]host[:port][/db] "
     "(empty: no registry; prefer the environment variable when it holds a password).",
     0, 0, 0},
    {"registry-interval-ms", CP_OPT_INT, &the_bridge.cfg.registry_interval_ms, "MS",
     "How often the bridge refreshes its record in Redis.", 100, 60000, 0},
    {"registry-ttl-ms", CP_OPT_INT, &the_bridge.cfg.registry_ttl_ms, "MS",
     "Lifetime of the record: a bridge silent this long is considered dead.", 300, 600000, 0},
    {"idle-timeout", CP_OPT_INT, &the_bridge.cfg.idle_timeout_s, "SECONDS",
     "Close sessions with no inbound frame (pongs included) for this long; pinged after "
     "a quarter to half of it (spread over sessions).",
     1, 86400, 0},
    {"max-connections", CP_OPT_INT, &the_bridge.cfg.max_connections, "N",
     "Upgrades beyond this many open sessions get HTTP 503.", 1, 10000000, 0},
    {"max-message-bytes", CP_OPT_INT, &the_bridge.cfg.max_message_bytes, "BYTES",
     "Largest message: inbound from a client (after reassembly; larger closes with 1009) and "
     "from the bus (larger is dropped and counted). Keep the HTTP API's the same.",
     64, 16777216, 0},
    {"max-queue-messages", CP_OPT_INT, &the_bridge.cfg.max_queue_messages, "N",
     "Outbound messages queued per session before it is closed as a slow consumer (4002).", 1,
     1000000, 0},
    {"max-queue-bytes", CP_OPT_INT, &the_bridge.cfg.max_queue_bytes, "BYTES",
     "Outbound bytes queued per session before it is closed as a slow consumer (4002).", 1024,
     1073741824, 0},
    {"max-recipients", CP_OPT_INT, &the_bridge.cfg.max_recipients, "N",
     "Most recipients in one BUSINESS message sent by a client.", 1, 100000, 0},
    {"single-session", CP_OPT_BOOL, &the_bridge.cfg.single_session, NULL,
     "Allow one session per channelId across the bridges of the bus: a new one closes the older "
     "with 4003, here or on another bridge (give it to every bridge or none).",
     0, 0, 0},
    {"presence-events", CP_OPT_BOOL, &the_bridge.cfg.presence_events, NULL,
     "Publish an event on <prefix>/presence/<channelId> at every session connect and "
     "disconnect, for services (docs/topics.md). Turn off when none reads them: each is a "
     "publish through the broker per connect and per disconnect.",
     0, 0, 0},
    {"presence-qos", CP_OPT_INT, &the_bridge.cfg.presence_qos, "0|1",
     "MQTT QoS of the presence events: 0, at most once, as live events; 1 when a service "
     "needs the broker to keep them for its persistent session while it is away (each event "
     "then also costs its acknowledgement: 15-30 % more CPU per connect).",
     0, 1, 0},
    {"deflate", CP_OPT_BOOL, &the_bridge.cfg.deflate, NULL,
     "Offer permessage-deflate to clients (costs memory per compressing connection).", 0, 0,
     0},
    {"io-uring", CP_OPT_BOOL, &the_bridge.cfg.io_uring, NULL,
     "Write the messages of a loop pass to their sockets with one io_uring submission instead "
     "of one send() per session (falls back to send() when the kernel refuses io_uring).",
     0, 0, 0},
    {"jwt-secret", CP_OPT_STRING, &the_bridge.cfg.jwt_secret, "SECRET",
     "Require client tokens signed with this HS256 secret (at least 32 bytes).", 0, 0, 1},
    {"jwt-public-key", CP_OPT_STRING, &the_bridge.cfg.jwt_public_key, "PEM-FILE",
     "Require client tokens signed with this RSA (RS256) or P-256 (ES256) key.", 0, 0, 0},
    {"jwt-leeway", CP_OPT_INT, &the_bridge.cfg.jwt_leeway_s, "SECONDS",
     "Clock skew allowed on exp, nbf and iat.", 0, 3600, 0},
    {"tls-cert", CP_OPT_STRING, &the_bridge.cfg.tls_cert, "PEM-FILE",
     "Serve wss:// (and https) with this certificate chain; needs --tls-key.", 0, 0, 0},
    {"tls-key", CP_OPT_STRING, &the_bridge.cfg.tls_key, "PEM-FILE",
     "Private key of --tls-cert.", 0, 0, 0},
    {"max-connections-per-ip", CP_OPT_INT, &the_bridge.cfg.max_connections_per_ip, "N",
     "Sessions one client address may hold (0: no limit); beyond: HTTP 429.", 0, 10000000, 0},
    {"connect-rate-per-ip", CP_OPT_INT, &the_bridge.cfg.connect_rate_per_ip, "N",
     "New connections per second one client address may open (0: no limit); beyond: 429.", 0,
     1000000, 0},
    {"connect-burst-per-ip", CP_OPT_INT, &the_bridge.cfg.connect_burst_per_ip, "N",
     "New connections one address may open at once above its rate.", 1, 1000000, 0},
    {"trusted-proxies", CP_OPT_STRING, &the_bridge.cfg.trusted_proxies, "IP[,IP...]",
     "Peers (the balancer, a proxy) whose X-Forwarded-For names the client address.", 0, 0, 0},
    {"allowed-origins", CP_OPT_STRING, &the_bridge.cfg.allowed_origins, "ORIGIN[,ORIGIN...]",
     "Browser pages (Origin, e.g. https://app.example.com) that may open sessions; others get "
     "403 (empty: any; requests without Origin are not from a browser and pass).",
     0, 0, 0},
    {"client-rate", CP_OPT_INT, &the_bridge.cfg.client_rate, "N",
     "Messages per second a session may send, a BUSINESS message counting once per recipient "
     "(0: unlimited); beyond: ERROR, then close 4008.",
     0, 1000000, 0},
    {"client-burst", CP_OPT_INT, &the_bridge.cfg.client_burst, "N",
     "Messages (recipients) a session may send at once above its rate.", 1, 1000000, 0},
    {"client-push-any", CP_OPT_BOOL, &the_bridge.cfg.client_push_any, NULL,
     "With client tokens, let any client push to any channel id, as the original did "
     "(default: only to what the token's pub claim names).",
     0, 0, 0},
    {"shutdown-grace", CP_OPT_INT, &the_bridge.cfg.shutdown_grace_s, "SECONDS",
     "After the last session was asked to close (--drain-seconds on SIGTERM, at once on "
     "SIGINT), time left for the closes to finish before exiting.",
     0, 600, 0},
    {"log-level", CP_OPT_STRING, &the_bridge.cfg.log_level, "LEVEL",
     "error, warn, info or debug.", 0, 0, 0},
    /* Reloadable settings and the broker session (issue 15). */
    {"log-level-file", CP_OPT_STRING, &the_bridge.cfg.log_level_file, "FILE",
     "File holding the log level (overrides --log-level); re-read on SIGHUP.", 0, 0, 0},
    {"jwt-secret-file", CP_OPT_STRING, &the_bridge.cfg.jwt_secret_file, "FILE",
     "As --jwt-secret, read from this file; re-read on SIGHUP (as --jwt-public-key and the "
     "--tls-cert/--tls-key files).",
     0, 0, 0},
    {"mqtt-session-expiry", CP_OPT_INT, &the_bridge.cfg.mqtt_session_expiry_s, "SECONDS",
     "How long the broker keeps this bridge's session (subscriptions, queued messages) after "
     "the connection is lost without a clean exit; a clean exit ends it at once.",
     1, 86400, 0},
    /* Acks with retransmit and the paced drain (issue 13). */
    {"ack-window", CP_OPT_INT, &the_bridge.cfg.ack_window, "N",
     "Messages an ack=1 session may leave unconfirmed; one more closes it as a slow consumer "
     "(4002).",
     1, 65536, 0},
    {"ack-timeout", CP_OPT_INT, &the_bridge.cfg.ack_timeout_s, "SECONDS",
     "An ack=1 session's message unconfirmed this long is resent (same messageId and offset).",
     1, 3600, 0},
    {"ack-retries", CP_OPT_INT, &the_bridge.cfg.ack_retries, "N",
     "Resends of an unconfirmed message before the session is closed with 4006.", 0, 100, 0},
    {"drain-seconds", CP_OPT_INT, &the_bridge.cfg.drain_seconds, "SECONDS",
     "On SIGTERM, sessions get a RECONNECT message and are closed with 1012 spread over this "
     "long (SIGINT or a second SIGTERM: all at once with 1001).",
     0, 3600, 0},
    {"handover-dir", CP_OPT_STRING, &the_bridge.cfg.handover_dir, "DIR",
     "Take clients handed over by balancers on this host through a socket in this private "
     "directory (the balancers' --handover-dir), so they talk to the bridge directly ('auto': "
     "$XDG_RUNTIME_DIR/cloudpush or /tmp/cloudpush-UID; 'off': only relayed clients).",
     0, 0, 0},
    /* Offset order, gaps, recovery (issue 13). */
    {"reorder-window-ms", CP_OPT_INT, &the_bridge.cfg.reorder_window_ms, "MS",
     "A message that arrives after a gap in its stream's offsets waits this long for the "
     "missing ones (from the bus or the history in Redis); then the gap is reported to the "
     "sessions (ERROR \"gap: offsets N..M were lost\") and skipped.",
     1, 60000, 0},
    {"reorder-max-messages", CP_OPT_INT, &the_bridge.cfg.reorder_max_messages, "N",
     "Messages one stream holds while a gap is open. With --redis one more lets the newest "
     "go and the gap's history read brings it back; without, one more gives the oldest gap up "
     "(reported).",
     1, 100000, 0},
    {"recovery-max-messages", CP_OPT_INT, &the_bridge.cfg.recovery_max_messages, "N",
     "Messages one recovery (since, bsince) or one catch-up read takes from the history; a "
     "client that missed more gets recovered:false (an ack=1 session: at most half its "
     "--ack-window). A recovery's backlog does not count against --max-queue-*.",
     1, 100000, 0},
    /* Streams: the sequencer of service messages (docs/design-delivery.md). */
    {"sequencer", CP_OPT_BOOL, &the_bridge.cfg.sequencer, NULL,
     "Sequence messages: this bridge's clients' pushes, and what services publish on "
     "client/{id} and broadcast (with --redis: by the one bridge holding the sequencer lease, "
     "the others stand by; without: an MQTT shared subscription); store them in the stream "
     "history (--redis) and republish them with offset, epoch and messageId on the delivery "
     "topics. At least one bridge per broker must run it (--sequencer=off to disable).",
     0, 0, 0},
    {"sequencer-lease-ms", CP_OPT_INT, &the_bridge.cfg.sequencer_lease_ms, "MS",
     "With --redis: the sequencer leader's lease in Redis, renewed every third of it; a "
     "standby takes the service messages over this long after the leader died (a clean stop "
     "hands over at once).",
     300, 600000, 0},
    {"bus-batch", CP_OPT_INT, &the_bridge.cfg.bus_batch, "N",
     "When the sequencer stored at least N messages in one Redis round trip, republish them "
     "as one MQTT message on <prefix>/d/batch, which every bridge worker receives and "
     "filters, instead of one per message; 0: never. Keep N at least the number of bridge "
     "workers of the deployment, or 0 for large ones (docs/topics.md).",
     0, 1000000, 0},
    {"history-size", CP_OPT_INT, &the_bridge.cfg.history_size, "N",
     "Messages kept per stream (channel id, broadcasts) for recovery; give the HTTP API the "
     "same.",
     1, 1000000, 0},
    {"history-ttl", CP_OPT_INT, &the_bridge.cfg.history_ttl_s, "SECONDS",
     "How long a stream's history is kept after its last message (86400: 24 h); give the HTTP "
     "API the same.",
     1, 31536000, 0},
};

static int valid_bridge_id(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n <= BRIDGE_ID_MAX && cp_channel_id_valid(id, n);
}

static int derive_config(bridge_config *c)
{
    if (cp_config_split_hostport(c->listen, c->host, sizeof c->host, &c->port) != 0 ||
        c->port == 0) {
        log_error("--listen must be HOST:PORT with a port from 1 to 65535, got '%s'", c->listen);
        return -1;
    }
    if (!cp_topic_prefix_valid(c->prefix)) {
        log_error("--prefix '%s' is not a valid topic prefix (no wildcards, no empty levels)",
                  c->prefix);
        return -1;
    }
    if (*c->id) {
        if (!valid_bridge_id(c->id)) {
            log_error("--id must be 1-64 characters of [A-Za-z0-9._:@-]");
            return -1;
        }
        snprintf(c->bridge_id, sizeof c->bridge_id, "%s", c->id);
    } else {
        char hn[64] = "bridge";
        gethostname(hn, sizeof hn - 1);
        hn[sizeof hn - 1] = '\0';
        snprintf(c->bridge_id, sizeof c->bridge_id, "%.50s:%d", hn, c->port);
        if (!valid_bridge_id(c->bridge_id))
            snprintf(c->bridge_id, sizeof c->bridge_id, "bridge:%d", c->port);
    }
    if (*c->advertise) {
        snprintf(c->advertise_url, sizeof c->advertise_url, "%s", c->advertise);
    } else {
        /* Listening everywhere: others reach us by host name, not loopback. */
        int any = !*c->host || strcmp(c->host, "0.0.0.0") == 0 || strcmp(c->host, "::") == 0;
        char hn[128] = "127.0.0.1";
        if (any && gethostname(hn, sizeof hn - 1) != 0)
            snprintf(hn, sizeof hn, "127.0.0.1");
        hn[sizeof hn - 1] = '\0';
        snprintf(c->advertise_url, sizeof c->advertise_url, "%s://%s:%d/ws",
                 *c->tls_cert ? "wss" : "ws", any ? hn : c->host, c->port);
    }
    return 0;
}

/* Paho threads: hand everything to the service thread. */
static int bus_message(void *ud, char *topic, size_t topic_len, MQTTAsync_message *msg)
{
    bridge *b = ud;
    return inbox_push_message(&b->inbox, topic, topic_len, msg);
}

static void bus_connected(void *ud)
{
    bridge *b = ud;
    atomic_store(&b->bus_connected_event, 1);
    inbox_wake(&b->inbox);
}

/* After a SIGHUP reload: the server may hold a new verifier. */
static void reloaded(void *ud)
{
    bridge *b = ud;
    b->jwt = server.jwt;
}

static void publish_worker(bridge *b);

/* Work batched up while the loop handled this pass's events. */
static void before_wait(void *ud)
{
    bridge *b = ud;
    sessions_flush(b);
    channels_flush_subscribes(b);
    streams_flush_greetings(b);
    if (b->shared)
        publish_worker(b);
}

/* With workers, another worker may answer /metrics: it asks this one for
 * fresh figures (wake_cb), and this worker also copies them to the shared
 * region at most PUBLISH_MS after they changed (a loop pass that did
 * something, or the tick), the process figures (which read /proc) once a
 * second. Rendering them is not free (it was 6-8 % of a busy worker's
 * thread every 20 ms), so the unasked copy is rare; the health the other
 * workers answer /healthz with goes out at every pass (publish_health). */
#define PUBLISH_MS 1000

static int worker_up(bridge *b)
{
    return cp_bus_is_connected(b->bus) && (!b->sequencer || cp_sequencer_ready(b->sequencer));
}

static void publish_health(bridge *b) { workers_publish(b, worker_up(b), NULL); }

static void publish_now(bridge *b, int64_t now)
{
    if (now >= b->next_proc_metrics_ms) {
        cp_buf_reset(&b->proc_metrics);
        cp_metrics_process(&b->proc_metrics, "bridge");
        b->next_proc_metrics_ms = now + 1000;
    }
    int up = worker_up(b);
    cp_buf out;
    cp_buf_init(&out);
    http_render_local_metrics(b, &out, 0);
    cp_buf_append(&out, b->proc_metrics.data, b->proc_metrics.len);
    workers_publish(b, up, &out);
    cp_buf_free(&out);
    b->next_publish_ms = now + PUBLISH_MS;
}

static void publish_timer(lws_sorted_usec_list_t *sul)
{
    bridge *b = lws_container_of(sul, bridge, publish_timer);
    b->publish_armed = 0;
    publish_now(b, cp_mono_ms());
}

/* Another worker answers /metrics and wants this one's figures now. */
static void wake_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    bridge *b = w->data;
    uint64_t n;
    if (read(w->fd, &n, sizeof n) > 0)
        publish_now(b, cp_mono_ms());
}

static void publish_worker(bridge *b)
{
    publish_health(b);
    int64_t now = cp_mono_ms();
    if (now >= b->next_publish_ms) {
        publish_now(b, now);
    } else if (!b->publish_armed && b->ctx) {
        b->publish_armed = 1;
        lws_sul_schedule(b->ctx, 0, &b->publish_timer, publish_timer,
                         (b->next_publish_ms - now) * LWS_US_PER_MS);
    }
}

static void tick(lws_sorted_usec_list_t *sul)
{
    bridge *b = lws_container_of(sul, bridge, tick);
    int64_t now = cp_mono_ms();
    int stop = cp_lws_server_stop_requested(&server);
    if (stop)
        drain_start(b, stop > 1, now);
    if (drain_tick(b, now)) {
        cp_lws_loop_stop(&server.loop);
        return;
    }
    sessions_check_liveness(b, now);
    streams_tick(b, now);
    if (now >= b->next_ack_check_ms) {
        /* Once a second, like the original's liveness pass. */
        acks_check(b, now);
        sessions_trim_buffers(b, now);
        b->next_ack_check_ms = now + 1000;
    }
    if (now >= b->next_prune_ms) {
        iplimit_prune(b);
        b->next_prune_ms = now + 10000;
    }
    if (b->shared)
        publish_worker(b);
    else
        registry_set_ready(b->registry, worker_up(b));
    lws_sul_schedule(b->ctx, 0, &b->tick, tick, TICK_US);
}

static cp_bus *create_bus(bridge *b)
{
    /* Static: the bus keeps the pointer (its "connected ... as" log line). */
    static char client_id[128];
    snprintf(client_id, sizeof client_id, "cloudpush-bridge-%.64s", b->cfg.bridge_id);
    if (b->worker) /* each worker its own stable MQTT session */
        snprintf(client_id + strlen(client_id), sizeof client_id - strlen(client_id), "-w%d",
                 b->worker);
    cp_bus_options bo = {
        .client_id = client_id,
        .keepalive_s = 20,
        .max_buffered = 100000,
        .persistent = 1,
        .session_expiry_s = (int)b->cfg.mqtt_session_expiry_s,
        .ud = b,
        .on_message = bus_message,
        .on_connected = bus_connected,
    };
    cp_bus_settings_apply(&b->cfg.bus, &bo);
    return cp_bus_create(&bo);
}

/* What the bridge adds to the shared lws server set-up. */
static void configure_server(bridge *b, struct lws_context_creation_info *info)
{
    info->protocols = bridge_protocols;
    if (b->cfg.deflate)
        info->extensions = bridge_extensions;
    /* No TCP keepalive on every accepted socket (four setsockopt calls per
     * connection): WebSocket sessions are pinged and closed when silent
     * (--idle-timeout); SSE streams, which cannot answer, set it
     * themselves (sse.c). */
    /* No lws validity timer: the bridge pings idle sessions itself
     * (sessions_check_liveness). lws keeps its timers in one sorted list and
     * re-arms that timer on every connection and received frame, an O(N)
     * insert each time (10-20 % of the CPU during connection bursts). */
    static const lws_retry_bo_t no_validity_timer = {.secs_since_valid_hangup = 0};
    info->retry_and_idle_policy = &no_validity_timer;
    if (b->worker) /* what it means; SO_REUSEPORT itself: reuseport.c */
        info->options |= LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE;
}

static int start_sequencer(bridge *b)
{
    if (!b->cfg.sequencer)
        return 0;
    char client_id[128];
    snprintf(client_id, sizeof client_id, "cloudpush-seq-%.64s", b->cfg.bridge_id);
    cp_sequencer_config sc = {
        .bus = b->cfg.bus,
        .client_id = client_id,
        .prefix = b->cfg.prefix,
        .redis_url = b->cfg.redis_url,
        .history_size = b->cfg.history_size,
        .history_ttl_s = b->cfg.history_ttl_s,
        .max_message_bytes = b->cfg.max_message_bytes,
        .session_expiry_s = (int)b->cfg.mqtt_session_expiry_s,
        .queue_capacity = 8192,
        .lease_ms = b->cfg.sequencer_lease_ms,
        .bus_batch = (size_t)b->cfg.bus_batch,
        /* Without Redis there is no election: the bridge's first worker
         * alone takes service messages, the others would reorder them. */
        .submit_only = b->worker > 1 && !*b->cfg.redis_url,
    };
    b->sequencer = cp_sequencer_start(&sc);
    return b->sequencer ? 0 : -1;
}

static int start_registry(bridge *b)
{
    if (!*b->cfg.redis_url)
        return 0;
    if (b->cfg.registry_ttl_ms < 2 * b->cfg.registry_interval_ms)
        log_warn("--registry-ttl-ms below twice the interval: one slow refresh will make "
                 "the bridge look dead");
    registry_config regcfg = {
        .redis_url = b->cfg.redis_url,
        .prefix = b->cfg.prefix,
        .bridge_id = b->cfg.bridge_id,
        .advertise_url = b->cfg.advertise_url,
        .capacity = b->cfg.max_connections,
        .interval_ms = b->cfg.registry_interval_ms,
        .ttl_ms = b->cfg.registry_ttl_ms,
        .no_thread = b->is_master,
    };
    b->registry = registry_start(&regcfg);
    return b->registry ? 0 : -1;
}

/* The master's registry (workers.c): the bridge's one record in Redis. */
static registry *master_registry(bridge *b)
{
    b->is_master = 1;
    start_registry(b);
    return b->registry;
}

/* A worker's sequencer gets its own stable MQTT client id (the bridge id
 * suffixed with -wN), without changing start_sequencer. */
static int start_worker_sequencer(bridge *b)
{
    if (!b->worker)
        return start_sequencer(b);
    char id[sizeof b->cfg.bridge_id];
    memcpy(id, b->cfg.bridge_id, sizeof id);
    snprintf(b->cfg.bridge_id, sizeof b->cfg.bridge_id, "%.64s-w%d", id, b->worker);
    int rc = start_sequencer(b);
    memcpy(b->cfg.bridge_id, id, sizeof id);
    return rc;
}

/* After the loop ended: the bus, the sessions (closed with the context; their
 * disconnects reach the registry, which then removes this bridge), what
 * arrived meanwhile, and the rest. */
/* Each worker its own ring: sends are made on the loop's thread. */
static void open_send_ring(bridge *b)
{
    if (!b->cfg.io_uring)
        return;
    char why[128];
    b->ring = send_ring_open(RING_ENTRIES, why, sizeof why);
    if (!b->ring)
        log_warn("io_uring unavailable (%s): one send() per session and message batch; "
                 "--io-uring=false says so without this warning",
                 why);
}

static void shut_down(bridge *b)
{
    log_info("stopping: %u sessions left, disconnecting from the bus", b->session_count);
    cp_sequencer_stop(b->sequencer, 2000); /* works off what it took first */
    b->sequencer = NULL;
    cp_bus_stop(b->bus, 2000);
    b->bus_stopped = 1;
    adopt_close(&b->adopt);
    lws_sul_cancel(&b->tick);
    lws_sul_cancel(&b->publish_timer);
    if (b->shared && server.loop.ev) {
        ev_ref(server.loop.ev);
        ev_io_stop(server.loop.ev, &b->wake);
    }
    lws_sul_cancel(&b->gap_timer);
    /* The history thread wakes the loop through the context: it ends
     * before the context does (its last answers wait in the inbox). */
    history_stop(b->history);
    b->history = NULL;
    inbox_set_context(&b->inbox, NULL);
    cp_lws_server_destroy(&server);
    b->ctx = NULL;
    b->jwt = NULL;
    /* Outcomes that arrived while stopping: their sessions are gone, so
     * this only frees them. */
    delivery_handle_events(b);
    /* Completions that raced with the shutdown are freed with the inbox. */
    channel *ch, *tmp;
    HASH_ITER(hh, b->channels, ch, tmp)
    {
        HASH_DELETE(hh, b->channels, ch);
        streams_channel_gone(b, ch);
        free(ch);
    }
    streams_channel_gone(b, NULL);
    registry_stop(b->registry);
    iplimit_clear(b);
    cp_bus_destroy(b->bus);
    inbox_destroy(&b->inbox);
    cp_buf_free(&b->scratch);
    cp_buf_free(&b->tx);
    cp_buf_free(&b->ring_buf);
    send_ring_close(b->ring);
    b->ring = NULL;
    cp_buf_free(&b->proc_metrics);
    log_info("stopped");
}

int main(int argc, char **argv)
{
    bridge *b = &the_bridge;
    g_bridge = b;
    int rc = cp_config_start("cloudpush-bridge", "bridge",
                             "WebSocket bridge of cloudpush: holds client sessions and delivers "
                             "the envelopes published to their MQTT topics.",
                             options, sizeof options / sizeof options[0], argc, argv,
                             &b->cfg.log_level);
    if (rc >= 0)
        return rc;
    if (derive_config(&b->cfg) != 0 || cp_bus_settings_check(&b->cfg.bus) != 0)
        return 2;

    cp_lws_server_config sc = {
        .listen = b->cfg.listen,
        .host = b->cfg.host,
        .port = b->cfg.port,
        .tls_cert = b->cfg.tls_cert,
        .tls_key = b->cfg.tls_key,
        .jwt_secret = b->cfg.jwt_secret,
        .jwt_public_key = b->cfg.jwt_public_key,
        .jwt_secret_file = b->cfg.jwt_secret_file,
        .jwt_leeway_s = b->cfg.jwt_leeway_s,
        .log_level_file = b->cfg.log_level_file,
    };
    if (cp_lws_server_prepare(&server, &sc) != 0)
        return 2;
    b->jwt = server.jwt;
    int workers = workers_parse(b->cfg.workers);
    if (workers < 0)
        return 2;
    /* The hand-over socket is made once, before any fork: every worker
     * takes hand-overs from it. A TLS listener's clients would have to
     * speak TLS with the balancer: nothing to hand over. */
    if (adopt_open(&b->adopt, *b->cfg.tls_cert ? "off" : b->cfg.handover_dir,
                   b->cfg.bridge_id) != 0)
        return 2;
    if (workers > 1) {
        int exit_code;
        if (workers_run(b, workers, master_registry, &exit_code) < 0) {
            adopt_close(&b->adopt); /* the master, at its end */
            return exit_code;
        }
        /* a worker from here on */
    }

    b->next_session_seq = cp_random_u64() & 0xffffffffffULL;
    b->started_ms = cp_mono_ms();
    cp_buf_init(&b->scratch);
    cp_buf_init(&b->tx);
    cp_buf_init(&b->ring_buf);
    cp_buf_init(&b->proc_metrics);
    open_send_ring(b);
    if (inbox_init(&b->inbox, INBOX_CAPACITY, INBOX_CAPACITY_MAX) != 0) {
        log_error("out of memory");
        return 1;
    }
    if (!(b->bus = create_bus(b)))
        return 1;
    configure_server(b, &server.info);
    if (cp_lws_server_listen(&server) != 0) {
        cp_bus_destroy(b->bus);
        return 1;
    }
    b->ctx = server.ctx;
    inbox_set_context(&b->inbox, b->ctx);
    workers_listening(b);
    adopt_start(&b->adopt, server.loop.ev, lws_get_vhost_by_name(b->ctx, "default"));
    cp_lws_loop_before_wait(&server.loop, before_wait, b);
    cp_lws_server_on_reload(&server, reloaded, b);
    log_info("bridge %s listening on %s (advertised as %s), bus %s prefix %s, client auth %s",
             b->cfg.bridge_id, b->cfg.listen, b->cfg.advertise_url, b->cfg.bus.url,
             b->cfg.prefix, b->jwt ? "JWT" : "off");
    if (cp_bus_start(b->bus) != 0) {
        log_error("cannot start the MQTT client thread");
        return 1;
    }
    if (b->worker)
        b->registry = registry_to_master(b->master_sock, workers_session_count, b);
    if ((b->worker ? !b->registry : start_registry(b) != 0) || start_worker_sequencer(b) != 0)
        return 2;
    b->olim.max_held = (uint32_t)b->cfg.reorder_max_messages;
    b->olim.window_ms = b->cfg.reorder_window_ms;
    b->olim.fetch_wait_ms = 2000; /* a history read ends within its Redis timeout */
    b->olim.wait_for_base = *b->cfg.redis_url != '\0';
    b->olim.max_jump = b->cfg.history_size; /* no history could fill a wider gap */
    b->olim.spill = b->olim.wait_for_base;
    if (*b->cfg.redis_url &&
        !(b->history = history_start(b->cfg.redis_url, b->cfg.prefix, &b->inbox, EV_HISTORY,
                                     HISTORY_MAX_PENDING)))
        return 2;
    lws_sul_schedule(b->ctx, 0, &b->tick, tick, TICK_US);
    if (b->shared) {
        ev_io_init(&b->wake, wake_cb, workers_wake_fd(b), EV_READ);
        b->wake.data = b;
        ev_io_start(server.loop.ev, &b->wake);
        ev_unref(server.loop.ev); /* must not keep the loop running on its own */
    }

    cp_lws_server_run(&server);
    shut_down(b);
    return 0;
}
