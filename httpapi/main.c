/* cloudpush-httpapi: the HTTP push API and the demo console. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <civetweb.h>

#include "addrlimit.h"
#include "buf.h"
#include "commalist.h"
#include "config.h"
#include "httpapi.h"
#include "ids.h"
#include "log.h"
#include "redisgate.h"
#include "reload.h"
#include "service.h"
#include "topics.h"

#ifndef CLOUDPUSH_STATIC_DIR
#define CLOUDPUSH_STATIC_DIR "httpapi/static"
#endif

static httpapi the_api = {
    .cfg = {
        .listen = "0.0.0.0:8080",
        .bus = CP_BUS_SETTINGS_DEFAULTS,
        .redis_url = "redis://127.0.0.1:6379",
        .prefix = "cloudpush",
        .api_keys = "",
        .static_dir = CLOUDPUSH_STATIC_DIR,
        .console_bridges = "ws://127.0.0.1:9001/ws",
        .console_balancer = "",
        .log_level = "info",
        .max_body_bytes = 1048576,
        .max_message_bytes = 65536,
        .max_recipients = 10000,
        /* CivetWeb holds a worker per open connection (idle keep-alive
         * ones too): size the pool for many publishers, not for cores. */
        .threads = 256,
        .header_timeout_ms = 3000,
        .keep_alive_timeout_ms = 5000,
        .max_connections_per_ip = 64,
        .publish_timeout_ms = 5000,
        .bus_batch = 4,
        .commit_linger_us = 300,
        .bridge_ttl_ms = 3000,
        .dev_token_secret = "",
        .dev_token_ttl_s = 3600,
        .rate_per_key = 0,
        .burst_per_key = 100,
        .api_key_file = "",
        .log_level_file = "",
        .history_size = 1000,
        .history_ttl_s = 86400,
    },
};

static const cp_option options[] = {
    {"listen", CP_OPT_STRING, &the_api.cfg.listen, "HOST:PORT", "Address to listen on.", 0, 0,
     0},
    CP_BUS_SETTINGS_OPTIONS(the_api.cfg.bus),
    {"redis", CP_OPT_STRING, &the_api.cfg.redis_url, "URL",
     "Redis holding the bridge registry (offline recipients, /api/v1/clients) and the stream "
     "history every push is stored in (empty: no presence, and pushes go out with offset "
     "null).",
     0, 0, 0},
    {"history-size", CP_OPT_INT, &the_api.cfg.history_size, "N",
     "Messages kept per stream for recovery (the bridges' --history-size).", 1, 1000000, 0},
    {"history-ttl", CP_OPT_INT, &the_api.cfg.history_ttl_s, "SECONDS",
     "How long a stream's history is kept after its last message (the bridges' "
     "--history-ttl; 86400: 24 h).",
     1, 31536000, 0},
    {"bridge-ttl-ms", CP_OPT_INT, &the_api.cfg.bridge_ttl_ms, "MS",
     "A bridge whose record is older than this is dead (the bridges' --registry-ttl-ms).", 300,
     600000, 0},
    {"prefix", CP_OPT_STRING, &the_api.cfg.prefix, "PREFIX", "Topic prefix of the bus.", 0, 0,
     0},
    {"api-key", CP_OPT_STRING, &the_api.cfg.api_keys, "KEY[,KEY...]",
     "When set, push endpoints require Authorization: Bearer <key>; several keys (comma "
     "separated) allow rotation.",
     0, 0, 1},
    {"rate-per-key", CP_OPT_INT, &the_api.cfg.rate_per_key, "N",
     "Push requests per second one API key may make (0: no limit); beyond: 429 with "
     "Retry-After.",
     0, 1000000, 0},
    {"burst-per-key", CP_OPT_INT, &the_api.cfg.burst_per_key, "N",
     "Requests one API key may make at once above its rate.", 1, 1000000, 0},
    {"max-body-bytes", CP_OPT_INT, &the_api.cfg.max_body_bytes, "BYTES",
     "Largest request body; larger gets 413.", 256, 67108864, 0},
    {"max-message-bytes", CP_OPT_INT, &the_api.cfg.max_message_bytes, "BYTES",
     "Largest message, as the envelope published for one recipient; a push with a larger one "
     "gets 413 and nothing is published. Keep it at the bridges' --max-message-bytes.",
     256, 16777216, 0},
    {"max-recipients", CP_OPT_INT, &the_api.cfg.max_recipients, "N",
     "Most recipients in one push request.", 1, 1000000, 0},
    {"publish-timeout-ms", CP_OPT_INT, &the_api.cfg.publish_timeout_ms, "MS",
     "How long to wait for the broker to acknowledge a request's messages before answering "
     "503.",
     100, 120000, 0},
    {"bus-batch", CP_OPT_INT, &the_api.cfg.bus_batch, "N",
     "When one Redis round trip stored at least N messages (of one push or of pushes made "
     "together), publish them as one MQTT message on <prefix>/d/batch, which every bridge "
     "worker receives and filters, instead of one message per recipient; 0: never. Each "
     "batch goes to every bridge worker: keep N at least the number of bridge workers of the "
     "deployment, or 0 for large ones (docs/topics.md).",
     0, 1000000, 0},
    {"commit-linger-us", CP_OPT_INT, &the_api.cfg.commit_linger_us, "US",
     "With --redis, under a steady stream of pushes (a Redis round trip less than 2 ms ago) "
     "the next round trip waits up to this long for --bus-batch messages to go together: fewer "
     "round trips and batches, at the price of this much latency per push; 0: never wait.",
     0, 100000, 0},
    {"static", CP_OPT_STRING, &the_api.cfg.static_dir, "DIR",
     "Directory of the demo console served at /.", 0, 0, 0},
    {"console-bridges", CP_OPT_STRING, &the_api.cfg.console_bridges, "URL[,URL...]",
     "WebSocket URLs of bridges the demo console offers.", 0, 0, 0},
    {"console-balancer", CP_OPT_STRING, &the_api.cfg.console_balancer, "URL",
     "WebSocket URL of the balancer the demo console offers (empty: none).", 0, 0, 0},
    {"dev-token-secret", CP_OPT_STRING, &the_api.cfg.dev_token_secret, "SECRET",
     "DEVELOPMENT ONLY: mint client tokens (HS256, the bridges' --jwt-secret) for the demo "
     "console at POST /api/v1/dev/token; anyone reaching the API gets a token for any id.",
     0, 0, 1},
    {"dev-token-ttl", CP_OPT_INT, &the_api.cfg.dev_token_ttl_s, "SECONDS",
     "Lifetime of the development tokens.", 10, 86400, 0},
    {"threads", CP_OPT_INT, &the_api.cfg.threads, "N",
     "HTTP worker threads; each open connection (idle keep-alive ones too) holds one.", 4,
     4096, 0},
    {"header-timeout-ms", CP_OPT_INT, &the_api.cfg.header_timeout_ms, "MS",
     "Time a client has to send the request line and headers, and the longest it may pause "
     "while sending a body (then 408); the connection is closed.",
     100, 120000, 0},
    {"keep-alive-timeout-ms", CP_OPT_INT, &the_api.cfg.keep_alive_timeout_ms, "MS",
     "How long an idle keep-alive connection is kept for its next request.", 0, 600000, 0},
    {"max-connections-per-ip", CP_OPT_INT, &the_api.cfg.max_connections_per_ip, "N",
     "Connections one client address may hold open (0: no cap); requests beyond get 429 "
     "(probes /healthz /readyz /metrics are always answered).",
     0, 1000000, 0},
    {"log-level", CP_OPT_STRING, &the_api.cfg.log_level, "LEVEL", "error, warn, info or debug.",
     0, 0, 0},
    /* Reloadable settings (issue 15): files re-read on SIGHUP. */
    {"api-key-file", CP_OPT_STRING, &the_api.cfg.api_key_file, "FILE",
     "As --api-key, one key per line from this file ('#' comments); re-read on SIGHUP (a file "
     "without keys is refused and the keys in use stay).",
     0, 0, 0},
    {"log-level-file", CP_OPT_STRING, &the_api.cfg.log_level_file, "FILE",
     "File holding the log level (overrides --log-level); re-read on SIGHUP.", 0, 0, 0},
};

static int civet_log(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    log_warn("civetweb: %s", message);
    return 1;
}

static void civet_thread_exit(const struct mg_context *ctx, int thread_type, void *user)
{
    (void)ctx;
    (void)thread_type;
    (void)user;
    presence_thread_exit();
}

static void *api_of(const struct mg_connection *conn)
{
    return mg_get_user_data(mg_get_context(conn));
}

static int civet_init_connection(const struct mg_connection *conn, void **conn_data)
{
    *conn_data = NULL;
    api_connection_opened(api_of(conn), conn);
    return 0;
}

static void civet_connection_closed(const struct mg_connection *conn)
{
    api_connection_closed(api_of(conn), conn);
}

static int civet_begin_request(struct mg_connection *conn)
{
    return api_begin_request(api_of(conn), conn);
}

/* The OpenAPI document served at /api/v1/openapi.json, from --static. */
static void load_openapi(httpapi *api)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/openapi.json", api->cfg.static_dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        log_warn("%s not found: /api/v1/openapi.json answers 404", path);
        return;
    }
    cp_buf b;
    cp_buf_init(&b);
    char chunk[4096];
    for (size_t n; (n = fread(chunk, 1, sizeof chunk, f)) > 0;)
        cp_buf_append(&b, chunk, n);
    fclose(f);
    if (b.failed) {
        cp_buf_free(&b);
        return;
    }
    api->openapi = b.data; /* owned from here on */
    api->openapi_len = b.len;
}

static int split_keys(httpapi *api)
{
    const char *item;
    size_t len;
    for (const char *p = api->cfg.api_keys; cp_comma_next(&p, &item, &len);) {
        char **k = realloc(api->keys, (api->key_count + 1) * sizeof *k);
        if (!k)
            return -1;
        api->keys = k;
        api->keys[api->key_count] = strndup(item, len);
        if (!api->keys[api->key_count])
            return -1;
        api->key_count++;
    }
    return 0;
}

/* Checks the settings that need more than a range (exit 2 when wrong). */
static int check_settings(httpapi *api, char *host, size_t host_cap, int *port)
{
    if (cp_config_split_hostport(api->cfg.listen, host, host_cap, port) != 0 || *port == 0) {
        log_error("--listen must be HOST:PORT, got '%s'", api->cfg.listen);
        return -1;
    }
    if (!cp_topic_prefix_valid(api->cfg.prefix)) {
        log_error("--prefix '%s' is not a valid topic prefix", api->cfg.prefix);
        return -1;
    }
    if (cp_bus_settings_check(&api->cfg.bus) != 0)
        return -1;
    struct stat st;
    if (stat(api->cfg.static_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        log_error("--static %s is not a directory", api->cfg.static_dir);
        return -1;
    }
    if (*api->cfg.redis_url) {
        int url = cp_redis_parse_url(api->cfg.redis_url, &api->presence.addr);
        if (url != CP_REDIS_URL_OK) {
            log_error("--redis '%s': %s", api->cfg.redis_url, cp_redis_url_strerror(url));
            return -1;
        }
        api->presence.prefix = api->cfg.prefix;
        api->presence.bridge_ttl_ms = api->cfg.bridge_ttl_ms;
        api->presence_enabled = 1;
        api->commit.addr = api->presence.addr;
        api->commit.prefix = api->cfg.prefix;
        api->commit.history_size = api->cfg.history_size;
        api->commit.history_ttl_s = api->cfg.history_ttl_s;
        api->commit.bridge_ttl_ms = api->cfg.bridge_ttl_ms;
        api->commit.after = api_publish_batch;
        /* Wait for a batch worth publishing as one; without batches, a few
         * pushes per round trip still spare Redis and the thread. */
        api->commit.fill = api->cfg.bus_batch > 0 && api->cfg.bus_batch < 64
                               ? (size_t)api->cfg.bus_batch
                               : 4;
        api->commit.linger_us = api->cfg.commit_linger_us;
        api->commit.after_ud = api;
        api->history_enabled = 1;
        redis_gate_init(&api->presence.addr, api->cfg.prefix);
    }
    if (*api->cfg.dev_token_secret) {
        if (strlen(api->cfg.dev_token_secret) < 32) {
            log_error("--dev-token-secret must be at least 32 bytes (as --jwt-secret)");
            return -1;
        }
        log_warn("development mode: POST /api/v1/dev/token gives anyone a token for any "
                 "channelId; never run it like this in production");
    }
    return 0;
}

/* The API keys, from --api-key-file or --api-key, with their rate buckets.
 * Returns 0, 1 (out of memory) or 2 (bad settings). */
static int setup_keys(httpapi *api)
{
    if (*api->cfg.api_key_file) {
        if (*api->cfg.api_keys) {
            log_error("--api-key and --api-key-file: give one");
            return 2;
        }
        if (api_keys_load(api) != 0)
            return 2;
    } else {
        if (split_keys(api) != 0) {
            log_error("out of memory");
            return 1;
        }
        api->buckets = calloc(api->key_count ? api->key_count : 1, sizeof *api->buckets);
        if (!api->buckets)
            return 1;
        for (size_t i = 0; i < api->key_count; i++)
            cp_bucket_init(&api->buckets[i], (double)api->cfg.burst_per_key, cp_mono_ms());
    }
    if (api->cfg.rate_per_key && !api->key_count)
        log_warn("--rate-per-key applies to API keys: set --api-key to use it");
    return 0;
}

static int start_bus(httpapi *api)
{
    char client_id[96];
    char suffix[CP_MESSAGE_ID_LEN + 1];
    cp_message_id(suffix);
    snprintf(client_id, sizeof client_id, "cloudpush-httpapi-%.12s", suffix);
    cp_bus_options bo = {
        .client_id = client_id,
        .keepalive_s = 20,
        .max_buffered = 100000,
        .persistent = 0,
        /* Fail fast while the broker is away rather than report messages
         * that would only be sent later. */
        .no_offline_buffer = 1,
    };
    cp_bus_settings_apply(&api->cfg.bus, &bo);
    api->bus = cp_bus_create(&bo);
    return api->bus && cp_bus_start(api->bus) == 0 ? 0 : -1;
}

/* CivetWeb with a worker per connection: sized for many publishers, with
 * short header timeouts and the per-address cap (docs/security.md). */
static struct mg_context *start_server(httpapi *api, const char *host, int port)
{
    char ports[300], threads[16], header_timeout[24], keep_alive[24];
    int any = !*host || strcmp(host, "0.0.0.0") == 0;
    if (any)
        snprintf(ports, sizeof ports, "%d", port);
    else
        snprintf(ports, sizeof ports, "%s:%d", host, port);
    snprintf(threads, sizeof threads, "%ld", api->cfg.threads);
    snprintf(header_timeout, sizeof header_timeout, "%ld", api->cfg.header_timeout_ms);
    snprintf(keep_alive, sizeof keep_alive, "%ld", api->cfg.keep_alive_timeout_ms);
    const char *civet_opts[] = {"listening_ports",
                                ports,
                                "num_threads",
                                threads,
                                "enable_keep_alive",
                                "yes",
                                "keep_alive_timeout_ms",
                                keep_alive,
                                "request_timeout_ms",
                                header_timeout,
                                /* accepted connections waiting for a worker */
                                "connection_queue",
                                "256",
                                "listen_backlog",
                                "1024",
                                "document_root",
                                api->cfg.static_dir,
                                "enable_directory_listing",
                                "no",
                                "static_file_cache_control",
                                "no-cache",
                                /* CivetWeb 1.15 has no .mjs type (modules need JS) */
                                "extra_mime_types",
                                ".mjs=text/javascript",
                                /* headers and body are separate writes: without
                                 * this, Nagle + delayed ACK add 40 ms */
                                "tcp_nodelay",
                                "1",
                                NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = civet_log;
    cb.exit_thread = civet_thread_exit;
    cb.init_connection = civet_init_connection;
    cb.connection_closed = civet_connection_closed;
    cb.begin_request = civet_begin_request;
    mg_init_library(0);
    struct mg_context *ctx = mg_start(&cb, api, civet_opts);
    if (!ctx) {
        log_error("cannot listen on %s (address in use or not permitted?)", api->cfg.listen);
        mg_exit_library();
        return NULL;
    }
    api_register(api, ctx);
    return ctx;
}

static void free_api(httpapi *api)
{
    for (size_t i = 0; i < api->key_count; i++)
        free(api->keys[i]);
    free(api->keys);
    free(api->buckets);
    addr_limit_free(api->conns);
    free(api->openapi);
    pthread_mutex_destroy(&api->bucket_lock);
    pthread_rwlock_destroy(&api->keys_lock);
}

int main(int argc, char **argv)
{
    httpapi *api = &the_api;
    int rc = cp_config_start("cloudpush-httpapi", "httpapi",
                             "HTTP push API of cloudpush: publishes envelopes to the bus and "
                             "serves the demo console.",
                             options, sizeof options / sizeof options[0], argc, argv,
                             &api->cfg.log_level);
    if (rc >= 0)
        return rc;
    char host[256];
    int port;
    if (check_settings(api, host, sizeof host, &port) != 0)
        return 2;
    load_openapi(api);
    pthread_mutex_init(&api->bucket_lock, NULL);
    pthread_rwlock_init(&api->keys_lock, NULL);
    if (cp_reload_log_level(api->cfg.log_level_file) != 0)
        return 2;
    if ((rc = setup_keys(api)) != 0)
        return rc;

    /* Signals are taken by sigwait() below; block them before any thread
     * starts so no other thread receives them. SIGHUP reloads there, on
     * the main thread, and never stops the API. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    api->started_ms = cp_mono_ms();
    if (start_bus(api) != 0)
        return 1;
    if (api->cfg.max_connections_per_ip > 0 && !(api->conns = addr_limit_new())) {
        log_error("out of memory");
        return 1;
    }
    if (api->history_enabled && group_commit_start(&api->commit) != 0) {
        cp_bus_destroy(api->bus);
        return 1;
    }
    struct mg_context *ctx = start_server(api, host, port);
    if (!ctx) {
        group_commit_stop();
        api_batch_free();
        cp_bus_destroy(api->bus);
        return 1;
    }
    log_info("httpapi listening on %s, bus %s prefix %s, auth %s, console %s", api->cfg.listen,
             api->cfg.bus.url, api->cfg.prefix, api->key_count ? "on" : "off",
             api->cfg.static_dir);

    cp_service_ready();
    int sig = 0;
    while (sigwait(&stop, &sig) == 0 && sig == SIGHUP) {
        log_info("SIGHUP: reloading the settings that come from files");
        cp_reload_log_level(api->cfg.log_level_file);
        if (*api->cfg.api_key_file)
            api_keys_load(api);
    }
    log_info("signal %d: stopping", sig);
    cp_service_stopping();
    mg_stop(ctx);
    group_commit_stop();
    api_batch_free();
    redis_gate_shutdown();
    cp_bus_stop(api->bus, 2000);
    cp_bus_destroy(api->bus);
    mg_exit_library();
    free_api(api);
    log_info("stopped");
    return 0;
}
