#include "bus.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "ids.h"
#include "log.h"
#include "tlsprobe.h"

enum phase { PHASE_IDLE, PHASE_DISCARD, PHASE_PERSISTENT, PHASE_STOPPED };

struct cp_bus {
    cp_bus_options opts;
    MQTTAsync client;
    pthread_t supervisor;
    int supervisor_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int result_ready; /* set by connect/disconnect callbacks */
    int result_ok;
    int stopping;
    enum phase phase;
    atomic_int connected;
    atomic_uint_fast64_t connects, pub_ok, pub_failed, pub_rejected;
    cp_bus_op fire_and_forget; /* context of publishes nobody waits for */
    cp_bus_op no_op;
    int tls;                  /* the URL asks for TLS */
    MQTTAsync_SSLOptions ssl; /* used when tls */
    char client_id[192];      /* opts.client_id points here: the caller's may be temporary */
    char tls_error[160];      /* OpenSSL's reason of the last failed attempt, under lock */
    int tls_unexplained;      /* a TLS connect failed without a reason, under lock */
};

/* Clients alive in this process: Paho's threads stop with the last one. */
static atomic_int live_buses;

static void signal_result(cp_bus *bus, int ok)
{
    pthread_mutex_lock(&bus->lock);
    bus->result_ready = 1;
    bus->result_ok = ok;
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->lock);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    signal_result(ctx, 1);
}

/* Paho hands OpenSSL's error queue here, one line at a time, on its own
 * thread. A line reads "<thread>:error:<code>:<library>:<function>:<reason>:
 * <file>:<line>:"; the reason is kept for the connect failure's log line. */
static int on_tls_error(const char *line, size_t len, void *ctx)
{
    cp_bus *bus = ctx;
    const char *p = memmem(line, len, ":error:", 7);
    const char *end = line + len;
    if (p) {
        p += 1;
        for (int colons = 0; p < end && colons < 4; p++)
            colons += *p == ':';
    } else {
        p = line;
    }
    const char *stop = memchr(p, ':', (size_t)(end - p));
    size_t n = (size_t)((stop ? stop : end) - p);
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    pthread_mutex_lock(&bus->lock);
    if (!bus->tls_error[0]) /* the first line is the cause; later ones follow from it */
        snprintf(bus->tls_error, sizeof bus->tls_error, "%.*s", (int)n, p);
    pthread_mutex_unlock(&bus->lock);
    return 1;
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    cp_bus *bus = ctx;
    int code = resp ? resp->code : -1;
    const char *why = resp && resp->message ? resp->message : cp_bus_strerror(code);
    char tls_error[sizeof bus->tls_error];
    pthread_mutex_lock(&bus->lock);
    memcpy(tls_error, bus->tls_error, sizeof tls_error);
    bus->tls_error[0] = '\0';
    bus->tls_unexplained = bus->tls && !tls_error[0];
    pthread_mutex_unlock(&bus->lock);
    if (tls_error[0])
        log_error("bus: TLS connection to %s refused: %s%s", bus->opts.url, tls_error,
                  strstr(tls_error, "verify failed") ? " (the broker's certificate must chain to "
                                                       "--mqtt-ca, or to the system's CAs "
                                                       "without it)"
                                                     : "");
    else
        log_warn("bus: connect to %s failed: %s (code %d, reason %d)", bus->opts.url, why, code,
                 resp ? (int)resp->reasonCode : 0);
    signal_result(bus, 0);
}

static void on_disconnect_done(void *ctx, MQTTAsync_successData5 *resp)
{
    (void)resp;
    signal_result(ctx, 1);
}

static void on_disconnect_fail(void *ctx, MQTTAsync_failureData5 *resp)
{
    (void)resp;
    signal_result(ctx, 0);
}

static void on_connected(void *ctx, char *cause)
{
    cp_bus *bus = ctx;
    (void)cause;
    pthread_mutex_lock(&bus->lock);
    enum phase ph = bus->phase;
    pthread_mutex_unlock(&bus->lock);
    if (ph != PHASE_PERSISTENT)
        return;
    atomic_store(&bus->connected, 1);
    atomic_fetch_add(&bus->connects, 1);
    log_info("bus: connected to %s as %s", bus->opts.url, bus->opts.client_id);
    if (bus->opts.on_connected)
        bus->opts.on_connected(bus->opts.ud);
}

static void on_connection_lost(void *ctx, char *cause)
{
    cp_bus *bus = ctx;
    if (!atomic_exchange(&bus->connected, 0))
        return;
    log_warn("bus: connection to %s lost (%s); reconnecting", bus->opts.url,
             cause ? cause : "no reason given");
}

static int on_message_arrived(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    cp_bus *bus = ctx;
    size_t len = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    if (!bus->opts.on_message) {
        MQTTAsync_freeMessage(&msg);
        MQTTAsync_free(topic);
        return 1;
    }
    return bus->opts.on_message(bus->opts.ud, topic, len, msg);
}

static void fill_connect_opts(cp_bus *bus, MQTTAsync_connectOptions *co, int clean, int reconnect)
{
    MQTTAsync_connectOptions init = MQTTAsync_connectOptions_initializer;
    *co = init;
    co->keepAliveInterval = bus->opts.keepalive_s > 0 ? bus->opts.keepalive_s : 30;
    co->cleansession = clean;
    co->connectTimeout = 5;
    co->automaticReconnect = reconnect;
    co->minRetryInterval = 1;
    co->maxRetryInterval = 5;
    if (bus->opts.username && *bus->opts.username) {
        co->username = bus->opts.username;
        co->password = bus->opts.password;
    }
    if (bus->tls)
        co->ssl = &bus->ssl; /* Paho copies it */
    co->context = bus;
}

/* MQTT v5 session settings of one connect, on top of fill_connect_opts:
 * clean start for the discarding connect and clean sessions, and how long
 * the broker keeps a persistent session after the connection is lost
 * (bounds what a crashed bridge leaves queued). props is freed by the
 * caller after MQTTAsync_connect, which copies it. */
static void session_opts(cp_bus *bus, MQTTAsync_connectOptions *co, MQTTProperties *props)
{
    int clean = co->cleansession;
    co->MQTTVersion = MQTTVERSION_5;
    co->cleansession = 0; /* v3 only; v5 says cleanstart */
    co->cleanstart = clean;
    co->onSuccess5 = on_connect_ok;
    co->onFailure5 = on_connect_fail;
    MQTTProperties init = MQTTProperties_initializer;
    *props = init;
    if (!clean) {
        MQTTProperty p;
        memset(&p, 0, sizeof p);
        p.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
        p.value.integer4 =
            (unsigned)(bus->opts.session_expiry_s > 0 ? bus->opts.session_expiry_s : 60);
        MQTTProperties_add(props, &p);
    }
    co->connectProperties = props;
}

static const char *nonempty_or_null(const char *s) { return s && *s ? s : NULL; }

/* Verification is never optional: the broker's certificate must chain to a
 * trusted CA (enableServerCertAuth) and name the URL's host (verify, which
 * Paho checks with X509_check_host, or X509_check_ip_asc for an address). */
static void fill_tls_opts(cp_bus *bus)
{
    MQTTAsync_SSLOptions init = MQTTAsync_SSLOptions_initializer;
    bus->ssl = init;
    bus->ssl.trustStore = nonempty_or_null(bus->opts.tls_ca_file);
    bus->ssl.keyStore = nonempty_or_null(bus->opts.tls_cert_file);
    bus->ssl.privateKey = nonempty_or_null(bus->opts.tls_key_file);
    bus->ssl.enableServerCertAuth = 1;
    bus->ssl.verify = 1;
    bus->ssl.ssl_error_cb = on_tls_error;
    bus->ssl.ssl_error_context = bus;
}

/* Waits for the outcome of one connect/disconnect; returns 1 on success, 0
 * on failure, -1 when stopping. */
static int wait_result(cp_bus *bus, int timeout_ms)
{
    struct timespec deadline;
    cp_realtime_after_ms(&deadline, timeout_ms);
    pthread_mutex_lock(&bus->lock);
    while (!bus->result_ready && !bus->stopping) {
        if (pthread_cond_timedwait(&bus->cond, &bus->lock, &deadline) == ETIMEDOUT)
            break;
    }
    int r = bus->stopping ? -1 : (bus->result_ready ? bus->result_ok : 0);
    bus->result_ready = 0;
    pthread_mutex_unlock(&bus->lock);
    return r;
}

/* Sleeps up to ms unless stopping; returns -1 when stopping. */
static int pause_unless_stopping(cp_bus *bus, int ms)
{
    struct timespec deadline;
    cp_realtime_after_ms(&deadline, ms);
    pthread_mutex_lock(&bus->lock);
    while (!bus->stopping) {
        if (pthread_cond_timedwait(&bus->cond, &bus->lock, &deadline) == ETIMEDOUT)
            break;
    }
    int r = bus->stopping ? -1 : 0;
    pthread_mutex_unlock(&bus->lock);
    return r;
}

static void set_phase(cp_bus *bus, enum phase ph)
{
    pthread_mutex_lock(&bus->lock);
    bus->phase = ph;
    pthread_mutex_unlock(&bus->lock);
}

/* Paho says only "connect failure" when the certificate does not name the
 * host or the broker wants a client certificate: one handshake of our own,
 * on this supervisor thread, finds out which. */
static void explain_tls_failure(cp_bus *bus)
{
    pthread_mutex_lock(&bus->lock);
    int unexplained = bus->tls_unexplained;
    bus->tls_unexplained = 0;
    pthread_mutex_unlock(&bus->lock);
    if (!unexplained)
        return;
    cp_tls_probe_config probe = {
        .url = bus->opts.url,
        .ca_file = bus->opts.tls_ca_file,
        .cert_file = bus->opts.tls_cert_file,
        .key_file = bus->opts.tls_key_file,
        .timeout_ms = 2000,
    };
    char why[200];
    if (cp_tls_probe(&probe, why, sizeof why) != 1)
        return;
    int mismatch = strstr(why, "mismatch") != NULL;
    log_error("bus: TLS connection to %s refused: %s%s", bus->opts.url, why,
              mismatch ? " (the broker's certificate does not name the host of the URL)" : "");
}

/* Connects once with the given session mode, retrying with capped backoff.
 * Returns 0 when connected, -1 when stopping. */
static int connect_with_retry(cp_bus *bus, int clean, int reconnect)
{
    cp_backoff backoff;
    cp_backoff_reset(&backoff);
    for (;;) {
        MQTTAsync_connectOptions co;
        MQTTProperties props;
        fill_connect_opts(bus, &co, clean, reconnect);
        session_opts(bus, &co, &props);
        int rc = MQTTAsync_connect(bus->client, &co);
        MQTTProperties_free(&props);
        int r = rc == MQTTASYNC_SUCCESS ? wait_result(bus, 10000) : 0;
        if (r < 0)
            return -1;
        if (r == 0)
            explain_tls_failure(bus);
        if (r == 1)
            return 0;
        if (pause_unless_stopping(bus, cp_backoff_next(&backoff)) < 0)
            return -1;
    }
}

static void *supervise(void *arg)
{
    cp_bus *bus = arg;
    if (bus->opts.persistent && !bus->opts.resume) {
        /* Drop whatever session an earlier run left on the broker (stale
         * subscriptions, queued messages for sessions that no longer
         * exist), then start the persistent one. */
        set_phase(bus, PHASE_DISCARD);
        if (connect_with_retry(bus, 1, 0) < 0)
            return NULL;
        MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer5;
        dopts.timeout = 1000;
        dopts.onSuccess5 = on_disconnect_done;
        dopts.onFailure5 = on_disconnect_fail;
        dopts.context = bus;
        if (MQTTAsync_disconnect(bus->client, &dopts) == MQTTASYNC_SUCCESS &&
            wait_result(bus, 3000) < 0)
            return NULL;
    }
    set_phase(bus, PHASE_PERSISTENT);
    connect_with_retry(bus, bus->opts.persistent ? 0 : 1, 1);
    return NULL;
}

cp_bus *cp_bus_create(const cp_bus_options *opts)
{
    cp_bus *bus = calloc(1, sizeof *bus);
    if (!bus)
        return NULL;
    bus->opts = *opts;
    snprintf(bus->client_id, sizeof bus->client_id, "%s", opts->client_id ? opts->client_id : "");
    bus->opts.client_id = bus->client_id;
    bus->fire_and_forget.bus_ = bus;
    bus->fire_and_forget.is_publish_ = 1;
    bus->no_op.bus_ = bus;
    bus->tls = cp_bus_url_is_tls(opts->url);
    if (bus->tls)
        fill_tls_opts(bus);
    pthread_mutex_init(&bus->lock, NULL);
    pthread_cond_init(&bus->cond, NULL);

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = opts->no_offline_buffer ? 0 : 1;
    co.maxBufferedMessages = opts->max_buffered > 0 ? opts->max_buffered : 100000;
    co.deleteOldestMessages = 0;
    co.MQTTVersion = MQTTVERSION_5; /* session expiry (session_opts) */
    int rc = MQTTAsync_createWithOptions(&bus->client, opts->url, bus->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        log_error("bus: cannot create MQTT client for %s: %s", opts->url, cp_bus_strerror(rc));
        pthread_mutex_destroy(&bus->lock);
        pthread_cond_destroy(&bus->cond);
        free(bus);
        return NULL;
    }
    MQTTAsync_setCallbacks(bus->client, bus, on_connection_lost, on_message_arrived, NULL);
    MQTTAsync_setConnected(bus->client, bus, on_connected);
    atomic_fetch_add(&live_buses, 1);
    return bus;
}

int cp_bus_start(cp_bus *bus)
{
    if (pthread_create(&bus->supervisor, NULL, supervise, bus) != 0)
        return -1;
    bus->supervisor_started = 1;
    return 0;
}

int cp_bus_is_connected(const cp_bus *bus) { return atomic_load(&bus->connected); }

int cp_bus_url_is_tls(const char *url)
{
    return strncmp(url, "ssl://", 6) == 0 || strncmp(url, "mqtts://", 8) == 0 ||
           strncmp(url, "wss://", 6) == 0;
}

/* One pair of completion callbacks for every operation: publishes are
 * counted here, then the caller's op (if any) is told. MQTT v5 clients get
 * the v5 callbacks only (Paho refuses the v3 ones for them). */
static void on_op_success(void *ctx, MQTTAsync_successData5 *resp)
{
    cp_bus_op *op = ctx;
    if (op->granted_) {
        /* One reason code per topic: Paho reports several in
         * alt.sub.reasonCodes (living only during this call) and a single
         * one in reasonCode. Granted QoS 0-2, refusals from 0x80. */
        int many = resp && resp->alt.sub.reasonCodeCount == op->granted_n_ && op->granted_n_ > 1;
        for (int i = 0; i < op->granted_n_; i++)
            op->granted_[i] = !resp ? 0x80
                              : many ? (int)resp->alt.sub.reasonCodes[i]
                                     : (int)resp->reasonCode;
        if (op->done)
            op->done(op, 1, 0);
        return;
    }
    if (op->is_publish_)
        atomic_fetch_add(&op->bus_->pub_ok, 1);
    if (op->done)
        op->done(op, 1, 0);
}

static void on_op_failure(void *ctx, MQTTAsync_failureData5 *resp)
{
    cp_bus_op *op = ctx;
    /* A broker refusal (a v5 reason code) says more than Paho's code. */
    int code = !resp ? -1 : resp->reasonCode >= 0x80 ? (int)resp->reasonCode : resp->code;
    if (op->is_publish_) {
        atomic_fetch_add(&op->bus_->pub_failed, 1);
        log_warn("bus: publish failed: %s", cp_bus_strerror(code));
    }
    if (op->done)
        op->done(op, 0, code);
}

static int request(cp_bus *bus, cp_bus_op *op, int is_publish, MQTTAsync_responseOptions *ro)
{
    if (!op) {
        op = is_publish ? &bus->fire_and_forget : &bus->no_op;
    } else {
        op->bus_ = bus;
        op->is_publish_ = is_publish;
        op->granted_ = NULL;
        op->granted_n_ = 0;
    }
    ro->onSuccess5 = on_op_success;
    ro->onFailure5 = on_op_failure;
    ro->context = op;
    return 0;
}

int cp_bus_subscribe_many(cp_bus *bus, char *const *topics, int n, int qos, cp_bus_op *op,
                          int *granted)
{
    enum { MAX_TOPICS = 256 };
    if (n < 1 || n > MAX_TOPICS || !op || !granted)
        return MQTTASYNC_BAD_MQTT_OPTION;
    int qoss[MAX_TOPICS];
    for (int i = 0; i < n; i++)
        qoss[i] = qos;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    request(bus, op, 0, &ro);
    op->granted_ = granted;
    op->granted_n_ = n;
    return MQTTAsync_subscribeMany(bus->client, n, topics, qoss, &ro);
}

int cp_bus_unsubscribe(cp_bus *bus, const char *topic, cp_bus_op *op)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    request(bus, op, 0, &ro);
    return MQTTAsync_unsubscribe(bus->client, topic, &ro);
}

int cp_bus_unsubscribe_many(cp_bus *bus, char *const *topics, int n, cp_bus_op *op)
{
    if (n < 1 || n > 256)
        return MQTTASYNC_BAD_MQTT_OPTION;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    request(bus, op, 0, &ro);
    return MQTTAsync_unsubscribeMany(bus->client, n, topics, &ro);
}

static int send_message(cp_bus *bus, const char *topic, const void *payload, size_t len, int qos,
                        int retained, cp_bus_op *op)
{
    if (len > (size_t)INT32_MAX)
        return MQTTASYNC_BAD_MQTT_OPTION;
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)payload;
    m.payloadlen = (int)len;
    m.qos = qos;
    m.retained = retained;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    request(bus, op, 1, &ro);
    int rc = MQTTAsync_sendMessage(bus->client, topic, &m, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        atomic_fetch_add(&bus->pub_rejected, 1);
    return rc;
}

int cp_bus_publish(cp_bus *bus, const char *topic, const void *payload, size_t len, int qos,
                   cp_bus_op *op)
{
    return send_message(bus, topic, payload, len, qos, 0, op);
}

int cp_bus_publish_retained(cp_bus *bus, const char *topic, const void *payload, size_t len,
                            int qos, cp_bus_op *op)
{
    return send_message(bus, topic, payload, len, qos, 1, op);
}

void cp_bus_get_stats(const cp_bus *bus, cp_bus_stats *out)
{
    cp_bus *b = (cp_bus *)bus;
    out->connects = atomic_load(&b->connects);
    out->publish_ok = atomic_load(&b->pub_ok);
    out->publish_failed = atomic_load(&b->pub_failed);
    out->publish_rejected = atomic_load(&b->pub_rejected);
}

const char *cp_bus_strerror(int code)
{
    switch (code) {
    case MQTTASYNC_SUCCESS:
        return "success";
    case MQTTASYNC_FAILURE:
        return "failure";
    case MQTTASYNC_DISCONNECTED:
        return "disconnected";
    case MQTTASYNC_MAX_MESSAGES_INFLIGHT:
        return "too many messages in flight";
    case MQTTASYNC_BAD_UTF8_STRING:
        return "bad UTF-8 string";
    case MQTTASYNC_NULL_PARAMETER:
        return "null parameter";
    case MQTTASYNC_TOPICNAME_TRUNCATED:
        return "topic name truncated";
    case MQTTASYNC_BAD_STRUCTURE:
        return "bad structure";
    case MQTTASYNC_BAD_QOS:
        return "bad QoS";
    case MQTTASYNC_NO_MORE_MSGIDS:
        return "no more message ids";
    case MQTTASYNC_OPERATION_INCOMPLETE:
        return "operation incomplete";
    case MQTTASYNC_MAX_BUFFERED_MESSAGES:
        return "send buffer full";
    case MQTTASYNC_SSL_NOT_SUPPORTED:
        return "TLS not supported";
    case MQTTASYNC_BAD_PROTOCOL:
        return "bad protocol in URL";
    case MQTTASYNC_BAD_MQTT_OPTION:
        return "bad MQTT option";
    case MQTTASYNC_WRONG_MQTT_VERSION:
        return "wrong MQTT version";
    case 0x87:
        return "not authorized by the broker";
    default:
        /* MQTT v5 reason codes from 0x80 are refusals (SUBACK, PUBACK). */
        return code >= 0x80 && code <= 0xff ? "refused by the broker" : "MQTT error";
    }
}

void cp_bus_stop(cp_bus *bus, int timeout_ms)
{
    pthread_mutex_lock(&bus->lock);
    bus->stopping = 1;
    bus->phase = PHASE_STOPPED;
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->lock);
    if (bus->supervisor_started) {
        pthread_join(bus->supervisor, NULL);
        bus->supervisor_started = 0;
    }
    if (MQTTAsync_isConnected(bus->client)) {
        pthread_mutex_lock(&bus->lock);
        bus->stopping = 0; /* let wait_result wait for the disconnect */
        bus->result_ready = 0;
        pthread_mutex_unlock(&bus->lock);
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
        d.timeout = timeout_ms;
        d.onSuccess5 = on_disconnect_done;
        d.onFailure5 = on_disconnect_fail;
        d.context = bus;
        /* A clean exit leaves nothing on the broker: the session (its
         * subscriptions and anything queued for it) ends with this
         * DISCONNECT instead of waiting for its expiry; unless it is to be
         * taken over (keep_session). */
        MQTTProperty expiry_now;
        memset(&expiry_now, 0, sizeof expiry_now);
        expiry_now.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
        expiry_now.value.integer4 = 0;
        if (bus->opts.persistent && !bus->opts.keep_session)
            MQTTProperties_add(&d.properties, &expiry_now);
        if (MQTTAsync_disconnect(bus->client, &d) == MQTTASYNC_SUCCESS)
            wait_result(bus, timeout_ms + 1000);
        MQTTProperties_free(&d.properties);
        pthread_mutex_lock(&bus->lock);
        bus->stopping = 1;
        pthread_mutex_unlock(&bus->lock);
    }
    atomic_store(&bus->connected, 0);
}

/* Number of this process' threads Paho named (MQTTAsync_send, MQTTAsync_rcv). */
static int paho_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f) && strncmp(comm, "MQTTAsync_", 10) == 0)
                n++;
            fclose(f);
        }
    }
    closedir(d);
    return n;
}

/* Paho's threads are detached: MQTTAsync_destroy of the last client tells
 * them to stop and returns when they say so, before they have exited. A
 * thread still exiting when main returns has its OpenSSL thread state (the
 * per-thread random generators) cut off by OpenSSL's exit handler: a leak
 * LeakSanitizer reports. So the last destroy waits, bounded, for them. */
static void wait_for_paho_threads(int timeout_ms)
{
    for (int waited = 0; paho_threads() > 0; waited += 2) {
        if (waited >= timeout_ms) {
            log_debug("bus: Paho's threads still running %d ms after the last client", waited);
            return;
        }
        nanosleep(&(struct timespec){.tv_nsec = 2000000}, NULL);
    }
}

void cp_bus_destroy(cp_bus *bus)
{
    if (!bus)
        return;
    if (bus->supervisor_started)
        cp_bus_stop(bus, 1000);
    MQTTAsync_destroy(&bus->client);
    pthread_mutex_destroy(&bus->lock);
    pthread_cond_destroy(&bus->cond);
    free(bus);
    if (atomic_fetch_sub(&live_buses, 1) == 1)
        wait_for_paho_threads(1000);
}
