/* The MQTT bus: a thin, thread-aware wrapper over Paho MQTTAsync.
 *
 * Every callback here runs on one of Paho's threads. Callers hand the work
 * over to their own thread; nothing here blocks except cp_bus_stop().
 *
 * Session model (MQTT v5): at start the client id's old session is
 * discarded (one clean-start connect + disconnect), then a persistent
 * session (clean start off) is kept for the life of the process, with
 * automatic reconnect, so QoS 1 messages survive link blips in both
 * directions. The broker keeps that session session_expiry_s after the
 * connection is lost (a crash), and cp_bus_stop ends it at once (DISCONNECT
 * with a Session Expiry Interval of 0): nothing is left queued for a bridge
 * that is gone. A clean session (persistent 0) ends with the connection.
 * With resume, the old session is taken over instead of discarded (the
 * sequencer: what the broker queued for it while it was down arrives). */
#ifndef CP_BUS_H
#define CP_BUS_H

#include <stddef.h>
#include <stdint.h>

#include <MQTTAsync.h>

typedef struct cp_bus cp_bus;

/* Embed this as the first member of a per-operation context to learn the
 * outcome of a subscribe, unsubscribe or publish. ok is 1 on success; code
 * is Paho's failure code (per-topic SUBACK refusals come in granted). */
typedef struct cp_bus_op cp_bus_op;
struct cp_bus_op {
    void (*done)(cp_bus_op *op, int ok, int code);
    /* set by the bus; callers leave them alone */
    cp_bus *bus_;
    int is_publish_;
    int *granted_; /* cp_bus_subscribe_many: where the granted QoS go */
    int granted_n_;
};

typedef struct {
    const char *url;       /* tcp://host:port, or ssl://host:port for TLS */
    const char *client_id; /* stable across restarts of the same process; copied */
    const char *username;  /* NULL or empty: anonymous */
    const char *password;
    /* TLS (ssl://, mqtts://, wss:// URLs): the broker's certificate must
     * chain to a CA of tls_ca_file (NULL or empty: the system trust store)
     * and name the URL's host, or the connection is refused. */
    const char *tls_ca_file;
    const char *tls_cert_file; /* client certificate chain (PEM); NULL/empty: none */
    const char *tls_key_file;  /* its private key; NULL/empty: inside tls_cert_file */
    int keepalive_s;
    int max_buffered;       /* bound on commands queued inside Paho */
    int persistent;         /* 1: discard-then-persistent session; 0: clean */
    int resume;             /* persistent: take over the session an earlier run left (no
                               discard at start), so what the broker queued for it while
                               this process was down arrives (the sequencer) */
    int session_expiry_s;   /* persistent: kept this long after a lost connection (default 60) */
    int no_offline_buffer;  /* 1: refuse publishes while disconnected */
    int keep_session;       /* persistent: cp_bus_stop leaves the session on the broker (it
                               expires after session_expiry_s), so the next process that
                               connects with this client id takes it over with what was
                               queued meanwhile (the sequencer leader's session) */
    void *ud;
    /* Takes ownership of topic and message when it returns 1; returning 0
     * asks Paho to deliver the same message again later (backpressure). */
    int (*on_message)(void *ud, char *topic, size_t topic_len, MQTTAsync_message *msg);
    void (*on_connected)(void *ud);
} cp_bus_options;

typedef struct {
    uint64_t connects;
    uint64_t publish_ok;
    uint64_t publish_failed;
    uint64_t publish_rejected; /* refused before sending (buffer full, ...) */
} cp_bus_stats;

cp_bus *cp_bus_create(const cp_bus_options *opts);
/* Starts connecting in the background; retries with backoff until it
 * succeeds or cp_bus_stop() is called. */
int cp_bus_start(cp_bus *bus);
int cp_bus_is_connected(const cp_bus *bus);

/* Each returns 0 when the request was queued (op->done follows later, on a
 * Paho thread) or a negative Paho code when it was refused now (op->done is
 * then not called). */
/* One SUBSCRIBE for n topics (n >= 1): one packet, one SUBACK and one
 * completion instead of n. Before op->done(op, 1, 0) runs, granted[i] holds
 * the QoS the broker granted for topics[i], or a reason code from 0x80 when
 * it refused that topic (0x87: an ACL denial); ok is 0 when the whole request failed. granted must
 * stay valid until then. */
int cp_bus_subscribe_many(cp_bus *bus, char *const *topics, int n, int qos, cp_bus_op *op,
                          int *granted);
int cp_bus_unsubscribe(cp_bus *bus, const char *topic, cp_bus_op *op);
/* One UNSUBSCRIBE for n topics (1 <= n <= 256). */
int cp_bus_unsubscribe_many(cp_bus *bus, char *const *topics, int n, cp_bus_op *op);
int cp_bus_publish(cp_bus *bus, const char *topic, const void *payload, size_t len, int qos,
                   cp_bus_op *op);
/* As cp_bus_publish, and the broker keeps it as the topic's retained
 * message (a subscriber gets it at once on subscribing). */
int cp_bus_publish_retained(cp_bus *bus, const char *topic, const void *payload, size_t len,
                            int qos, cp_bus_op *op);

/* 1 when url names a TLS scheme (ssl://, mqtts://, wss://). */
int cp_bus_url_is_tls(const char *url);

void cp_bus_get_stats(const cp_bus *bus, cp_bus_stats *out);
const char *cp_bus_strerror(int code);

/* Disconnects cleanly, waiting at most timeout_ms for in-flight work, and
 * ends the broker session (subscriptions and queued messages go). */
void cp_bus_stop(cp_bus *bus, int timeout_ms);
void cp_bus_destroy(cp_bus *bus);

#endif
