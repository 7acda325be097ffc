/* Shared state of the HTTP push API process. */
#ifndef HTTPAPI_HTTPAPI_H
#define HTTPAPI_HTTPAPI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "groupcommit.h"
#include "busconfig.h"
#include "metrics.h"
#include "presence.h"
#include "ratelimit.h"

struct mg_context;

typedef enum {
    EP_PUSH,
    EP_MESSAGE_SEND,
    EP_PORTAL_MESSAGE_SEND,
    EP_HEALTHZ,
    EP_LIVEZ,
    EP_READYZ,
    EP_METRICS,
    EP_CONFIG,
    EP_CLIENTS,
    EP_DEV_TOKEN,
    EP_OPENAPI,
    EP__COUNT
} endpoint;

#define STATUS_SLOTS 13 /* the statuses we answer with, plus "other" */

/* Why a request was refused before (or while) its handler read it. */
typedef enum {
    REFUSED_FRAMING,
    REFUSED_TOO_LARGE,
    REFUSED_ADDRESS_LIMIT,
    REFUSED_BODY_TIMEOUT,
    REFUSED__COUNT
} refusal;

struct addr_limit;

typedef struct {
    const char *listen;
    cp_bus_settings bus;
    const char *redis_url;
    const char *prefix;
    const char *api_keys; /* comma-separated; empty: no auth */
    const char *static_dir;
    const char *console_bridges;
    const char *console_balancer;
    const char *log_level;
    long max_body_bytes;
    long max_message_bytes;
    long max_recipients;
    long threads;
    long header_timeout_ms;
    long keep_alive_timeout_ms;
    long max_connections_per_ip;
    long publish_timeout_ms;
    long bus_batch; /* a pipeline with this many messages publishes them as one batch; 0: never */
    long commit_linger_us; /* a pipeline under a steady stream waits this long for company */
    long bridge_ttl_ms;
    long rate_per_key;
    long burst_per_key;
    const char *dev_token_secret;
    long dev_token_ttl_s;
    const char *api_key_file; /* one key per line, re-read on SIGHUP */
    const char *log_level_file;
    long history_size;  /* messages kept per stream (the bridges' --history-size) */
    long history_ttl_s; /* the bridges' --history-ttl */
} httpapi_config;

typedef cp_bucket key_bucket;

typedef struct {
    httpapi_config cfg;
    cp_bus *bus;
    /* keys may be replaced on SIGHUP (--api-key-file): read them under
     * keys_lock; buckets and key_count also change under bucket_lock. */
    pthread_rwlock_t keys_lock;
    char **keys;
    size_t key_count;
    key_bucket *buckets; /* one per key */
    pthread_mutex_t bucket_lock;
    _Atomic uint64_t rate_limited;
    _Atomic uint64_t refused[REFUSED__COUNT];
    struct addr_limit *conns; /* open connections per address; NULL: no cap */
    _Atomic uint64_t requests[EP__COUNT][STATUS_SLOTS];
    _Atomic uint64_t messages_published;
    _Atomic uint64_t messages_unconfirmed;
    cp_histogram publish_latency;
    int presence_enabled;
    presence_config presence;
    _Atomic uint64_t presence_failures;
    int history_enabled; /* --redis set: pushes are stored in the stream history */
    group_commit_config commit; /* the push requests' Redis work (groupcommit.h) */
    _Atomic uint64_t history_failures;
    _Atomic uint64_t message_id_conflicts;
    _Atomic uint64_t bus_batches, bus_batched_messages; /* --bus-batch */
    int64_t started_ms;
    /* CivetWeb listens before its handlers can be registered: until this
     * is set every request is answered 503 "starting" (not CivetWeb's 404). */
    _Atomic int routes_ready;
    char *openapi; /* the OpenAPI document (static/openapi.json), or NULL */
    size_t openapi_len;
} httpapi;

/* api.c */
void api_register(httpapi *api, struct mg_context *ctx);
/* Index of the matching API key, API_NO_KEYS when none are configured, or
 * -1 when the Authorization header does not carry a valid key. */
#define API_NO_KEYS (-2)
int api_key_match(const httpapi *api, const char *authorization);
/* Reads --api-key-file (one key per line; blank lines and lines starting
 * with '#' skipped) and puts its keys in place of the current ones, with
 * fresh rate buckets. Keeps the current keys and returns -1 (logged) when
 * the file cannot be read or holds no key: an empty file must not turn
 * authentication off. */
int api_keys_load(httpapi *api);
/* CivetWeb callbacks (main.c wires them): count connections per address;
 * refuse bad framing, oversize bodies and addresses over their cap before
 * any handler runs (returns the status sent, or 0 to go on). */
struct mg_connection;
void api_connection_opened(httpapi *api, const struct mg_connection *conn);
void api_connection_closed(httpapi *api, const struct mg_connection *conn);
int api_begin_request(httpapi *api, struct mg_connection *conn);
/* The group commit's after hook (groupcommit.h): publishes the delivery
 * batch the pipeline's requests filled (--bus-batch). */
void api_publish_batch(void *api);
/* Frees the batch's buffers, once the group commit stopped. */
void api_batch_free(void);

#endif
