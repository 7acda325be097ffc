/* Shared state of the bridge process. Everything here is owned by the
 * libwebsockets service thread unless marked otherwise. */
#ifndef BRIDGE_BRIDGE_H
#define BRIDGE_BRIDGE_H

#include <stdatomic.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <ev.h>
#include <uthash.h>

#include "buf.h"
#include "envelope.h"
#include "bus.h"
#include "busconfig.h"
#include "acks.h"
#include "adopt.h"
#include "backoff.h"
#include "frame.h"
#include "history.h"
#include "inbox.h"
#include "iplimit.h"
#include "jwt.h"
#include "metrics.h"
#include "order.h"
#include "ratelimit.h"
#include "registry.h"
#include "sendring.h"
#include "sequencer.h"
#include "topics.h"

#define BRIDGE_ID_MAX 64

/* WebSocket close codes of our own (4000-4999 is the private range). */
enum {
    CLOSE_IDLE_TIMEOUT = 4001,
    CLOSE_SLOW_CONSUMER = 4002,
    CLOSE_REPLACED = 4003,
    CLOSE_SUBSCRIBE_FAILED = 4004,
    CLOSE_TOKEN_EXPIRED = 4005,
    CLOSE_RATE_LIMIT = 4008,
    CLOSE_UNACKED = 4006, /* ack=1: messages still unconfirmed after the retries */
    CLOSE_SERVICE_RESTART = 1012, /* the drain: reconnect (RFC 6455 registry) */
};

/* Why a session ended, for metrics and presence: enum and name (the
 * metric label and the presence "reason") side by side. */
#define END_REASONS(X)                                                                            \
    X(END_CLIENT, "client")                                                                       \
    X(END_IDLE_TIMEOUT, "idle_timeout")                                                           \
    X(END_SLOW_CONSUMER, "slow_consumer")                                                         \
    X(END_REPLACED, "replaced")                                                                   \
    X(END_TOO_BIG, "too_big")                                                                     \
    X(END_SHUTDOWN, "shutdown")                                                                   \
    X(END_SUBSCRIBE_FAILED, "subscribe_failed")                                                   \
    X(END_TOKEN_EXPIRED, "token_expired")                                                         \
    X(END_RATE_LIMIT, "rate_limit")                                                               \
    X(END_UNACKED, "unacked")                                                                     \
    X(END_ERROR, "error")

/* Why an upgrade was refused: enum and metric label (also the error code
 * of the refusals the bridge words itself). */
#define REJECT_REASONS(X)                                                                         \
    X(REJECT_MISSING_CHANNEL, "missing_channel_id")                                               \
    X(REJECT_INVALID_CHANNEL, "invalid_channel_id")                                               \
    X(REJECT_TOO_MANY, "too_many_connections")                                                    \
    X(REJECT_BUS_DOWN, "bus_unavailable")                                                         \
    X(REJECT_SHUTTING_DOWN, "shutting_down")                                                      \
    X(REJECT_UNAUTHORIZED, "unauthorized")                                                        \
    X(REJECT_ADDRESS_LIMIT, "address_limit")                                                      \
    X(REJECT_FORBIDDEN_ORIGIN, "forbidden_origin")                                                \
    X(REJECT_BAD_HANDSHAKE, "bad_handshake")

/* Inbound frame kinds counted in messages_in_total. */
#define IN_KINDS(X)                                                                               \
    X(IN_HEARTBEAT, "heartbeat")                                                                  \
    X(IN_BUSINESS, "business")                                                                    \
    X(IN_BUSINESS_ACK, "business_ack")                                                            \
    X(IN_INVALID, "invalid")                                                                      \
    X(IN_BINARY, "binary")

#define ENUM_MEMBER(e, name) e,
typedef enum { END_REASONS(ENUM_MEMBER) END__COUNT } end_reason;
typedef enum { REJECT_REASONS(ENUM_MEMBER) REJECT__COUNT } reject_reason;
typedef enum { IN_KINDS(ENUM_MEMBER) IN__COUNT } in_kind;
#undef ENUM_MEMBER

/* http.c, with the metrics that use them */
const char *end_reason_name(end_reason r);
const char *reject_reason_name(reject_reason r);

typedef struct {
    const char *listen;
    const char *id;
    const char *advertise;
    cp_bus_settings bus;
    const char *prefix;
    const char *log_level;
    const char *workers; /* --workers: "auto" or N (workers.c) */
    const char *redis_url;
    long registry_interval_ms;
    long registry_ttl_ms;
    long idle_timeout_s;
    long max_connections;
    long max_message_bytes;
    long max_queue_messages;
    long max_queue_bytes;
    long shutdown_grace_s;
    long max_recipients;
    int single_session;
    int presence_events; /* publish connect/disconnect events (presence.c) */
    long presence_qos;   /* their MQTT QoS, 0 or 1 */
    int deflate;
    int io_uring;
    const char *jwt_secret;
    const char *jwt_public_key;
    long jwt_leeway_s;
    const char *jwt_secret_file;
    const char *log_level_file;
    long mqtt_session_expiry_s;
    const char *tls_cert;
    const char *tls_key;
    const char *trusted_proxies;
    const char *allowed_origins; /* empty: any */
    long max_connections_per_ip;
    long connect_rate_per_ip;
    long connect_burst_per_ip;
    long client_rate;  /* inbound messages per second per session */
    long client_burst;
    int client_push_any; /* with tokens: pushes not limited to the pub claim */
    /* Acks with retransmit, paced drain (issue 13). */
    long ack_window;    /* unconfirmed messages per ack=1 session */
    long ack_timeout_s; /* resend after this long */
    long ack_retries;   /* resends before closing with 4006 */
    long drain_seconds; /* SIGTERM: sessions closed over this long */
    /* Delivery in offset order and recovery (issue 13, streams.c). */
    long reorder_window_ms;    /* how long a gap may hold a stream */
    long reorder_max_messages; /* messages held per stream while a gap is open */
    long recovery_max_messages; /* history messages read per recovery or catch-up */
    /* Streams (issue 13): the sequencer of service messages. */
    int sequencer;       /* run one (common/sequencer.c) */
    long sequencer_lease_ms; /* with --redis: one leader holds this lease */
    long bus_batch;      /* the sequencer republishes this many or more as one d/batch */
    long history_size;   /* messages kept per stream */
    long history_ttl_s;  /* for this long after the stream's last message */
    const char *handover_dir; /* balancers on this host hand clients over here (adopt.c) */
    /* derived */
    char host[256];
    int port;
    char bridge_id[BRIDGE_ID_MAX + 8]; /* room for a worker's "-wN" in MQTT client ids */
    char advertise_url[512];
} bridge_config;

typedef enum { SESSION_PENDING, SESSION_OPEN, SESSION_CLOSING } session_state;
/* How a session reaches its client: the same queue and writer, framed as
 * WebSocket text frames or as Server-Sent Events (sse.c, read-only). */
typedef enum { TRANSPORT_WS = 0, TRANSPORT_SSE } session_transport;

struct channel;

typedef struct session {
    struct lws *wsi;
    uint64_t id;
    struct channel *channel;
    struct session *chan_prev, *chan_next; /* sessions of the same channel */
    struct session *all_prev, *all_next;   /* every session (broadcast) */
    struct session *check_prev, *check_next; /* liveness FIFO, by check time */
    struct session *flush_prev, *flush_next; /* queued frames to write this pass */
    int64_t last_active_ms;
    int64_t check_at_ms;
    int64_t since_ms;        /* wall clock, when greeted */
    int64_t created_ms;      /* wall clock, when accepted (--single-session order) */
    int64_t token_exp;       /* seconds since the epoch; 0 without auth */
    char *pub;               /* the token's `pub` patterns (cp_jwt_claims), NULL: none */
    size_t pub_len;
    cp_bucket rate;          /* inbound messages (--client-rate) */
    uint32_t rate_strikes;   /* messages refused in a row */
    struct ip_entry *ip;     /* per-address accounting, NULL when off */
    frame_queue queue;
    char *rx;                /* reassembly of a fragmented message */
    size_t rx_len, rx_cap;
    char *recipient;         /* ',"sessionId":"<sid>","to":["<channel>"]' */
    uint16_t recipient_len;
    uint16_t sid_len;
    uint16_t close_code;
    uint8_t state;
    uint8_t ping_due;
    uint8_t rx_discard;      /* drop the rest of an oversized message, then 1009 */
    uint8_t rx_binary;
    uint8_t rx_compressed;   /* the message's first frame had RSV1 (permessage-deflate) */
    uint8_t end;             /* end_reason */
    uint8_t announced;       /* a presence "connect" was published */
    uint8_t direct;          /* no extension: frames may be written outside WRITEABLE */
    uint8_t flush_listed;    /* on the bridge's flush list */
    UT_hash_handle hh;       /* by id, for completions that arrive later */
    /* Acks and drain (issue 13, acks.c and drain.c). */
    ack_window *acks;        /* NULL: the client did not ask for ack=1 */
    int64_t drain_at_ms;     /* when the drain closes this session, 0: not draining */
    uint8_t close_when_flushed; /* close (end, close_code) once the queue is written */
    uint8_t transport;       /* session_transport */
    /* Recovery (streams.c): set from the upgrade's since/epoch until the
     * CONNECTION went out; live messages wait in it meanwhile. */
    struct recovery *rec;
    /* The positions the session was greeted at (CONNECTION or the last
     * recovered message) per stream, under the epoch they were read in
     * (order_epoch_hash): live messages at or below them are not sent
     * again. */
    int64_t floor, bfloor;
    uint64_t floor_epoch_h, bfloor_epoch_h;
    /* A greeting queues its recovery at once: the queue limits grow by
     * that much until the queue was empty once (writer.c). */
    uint32_t burst_msgs;
    size_t burst_bytes;
    uint8_t burst_open; /* the greeting is queueing */
} session;

/* The session id sits inside the recipient fragment. */
#define SESSION_ID_OFFSET 14 /* strlen(",\"sessionId\":\"") */
const char *session_id_of(const session *s, size_t *len);

typedef enum { CHANNEL_SUBSCRIBING, CHANNEL_SUBSCRIBED } channel_state;

/* A subscription waiting to go out in the next SUBSCRIBE, an unsubscription
 * in the next UNSUBSCRIBE (channels.c). */
#define SUBSCRIBE_BATCH_MAX 128
/* What a subscription is for: one channel's client topic, or a topic
 * every bridge holds once (broadcasts; the session control topic of
 * --single-session). */
enum { SUB_CHANNEL = 0, SUB_BROADCAST, SUB_BATCH, SUB_RESYNC, SUB_SESSION_CONTROL,
       SUB_CANCELLED /* its channel left before the SUBSCRIBE went out */ };
typedef struct {
    uint64_t generation; /* of the channel entry it was made for */
    int what;            /* SUB_* */
    char name[CP_CHANNEL_ID_MAX + 1];
} subscribe_entry;

typedef struct channel {
    UT_hash_handle hh;
    order_stream order; /* the channel's stream (streams.c) */
    struct channel *gap_prev, *gap_next; /* channels holding messages for a gap */
    uint8_t gap_listed;
    /* A catch-up that could not read (Redis down) waits for its retry. */
    struct channel *retry_prev, *retry_next;
    uint8_t retry_listed;
    int64_t retry_last; /* the stream's last offset when it failed */
    session *sessions;
    uint32_t session_count;
    uint8_t state;
    uint8_t sub_sent; /* a SUBSCRIBE for it went out: its leaving needs an UNSUBSCRIBE */
    int sub_slot;     /* its entry in sub_pending, when the generation there matches */
    uint64_t generation; /* matches subscribe completions to this entry */
    char name[];
} channel;

typedef struct {
    uint64_t in[IN__COUNT];
    uint64_t out[CP_MSG__COUNT]; /* by msgType + 1 (ERROR .. HEARTBEAT_ACK) */
    uint64_t ends[END__COUNT];
    uint64_t rejects[REJECT__COUNT];
    uint64_t bus_in_client, bus_in_broadcast, bus_invalid, bus_too_big, bus_no_session;
    uint64_t bus_in_resync; /* sequencer takeovers announced (d/resync) */
    uint64_t bus_in_batch, batch_items, batch_items_elsewhere; /* d/batch (common/dbatch.h) */
    uint64_t deliveries;
    uint64_t subscribe_failed;
    uint64_t subscribe_batches, unsubscribe_batches;
    uint64_t accepted;
    uint64_t rate_limited;
    uint64_t ip_limited;
    uint64_t token_refreshes;
    uint64_t push_forbidden; /* client pushes outside the token's pub claim */
    uint64_t replaced_remote; /* sessions closed by another bridge's newer one */
    /* Acks and drain (issue 13). */
    uint64_t ack_retransmits;
    uint64_t ack_window_full; /* ack=1 sessions closed because their window filled */
    uint64_t drain_reconnects; /* RECONNECT envelopes sent by drains */
    /* Offset order and recovery (issue 13, streams.c). */
    uint64_t duplicates;        /* stream messages dropped: offset already delivered */
    uint64_t session_duplicates; /* live messages a session had from its recovery already */
    uint64_t gaps, gap_messages; /* gaps reported (ERROR) and the offsets they spanned */
    uint64_t gap_fetches, gap_filled; /* history reads for a gap, messages they delivered */
    uint64_t spilled; /* let go by a full reorder buffer, read back by the gap fetch */
    uint64_t recoveries[3];     /* RECOVERY_*: sessions that asked for since/bsince */
    uint64_t recovered_messages;
    uint64_t catch_ups, catch_up_messages; /* after a bus reconnect */
    uint64_t catch_up_retries; /* catch-ups read again after a failure */
    /* Offsets far beyond their stream that nothing confirmed (a d/ topic
     * without the ACL): delivered without moving the stream, or rejected
     * because the history does not have them. */
    uint64_t beyond_delivered, beyond_rejected;
    uint64_t history_busy;      /* requests refused: the history queue was full */
    /* Flushes through io_uring (writer.c): submissions, the sends they
     * carried, those the socket took only in part (lws writes the rest),
     * and submissions io_uring itself failed. */
    uint64_t ring_submissions, ring_sends, ring_short, ring_failures;
} bridge_counters;

/* Sends per io_uring submission at most (writer.c). */
#define RING_ENTRIES 1024

/* One session's bytes in the ring buffer, for one send of a submission. */
typedef struct ring_send {
    struct session *s;
    size_t off, len;
} ring_send;

enum { RECOVERY_OK = 0, RECOVERY_NOT_RECOVERED, RECOVERY_FAILED };

typedef struct bridge {
    bridge_config cfg;
    struct lws_context *ctx; /* the server's (main.c), NULL once destroyed */
    cp_bus *bus;
    registry *registry; /* NULL when --redis is empty */
    cp_sequencer *sequencer; /* NULL with --sequencer=off */
    adopt_listener adopt;    /* clients handed over by balancers on this host */
    cp_jwt_verifier *jwt; /* the server's; NULL when clients are not authenticated */
    struct ip_entry *ips;   /* uthash by address */
    int64_t next_prune_ms;
    inbox inbox;
    channel *channels;       /* uthash by name */
    session *by_id;          /* uthash by id */
    /* utlist DL lists: head->prev is the tail. */
    session *all;            /* every session (broadcast) */
    session *check_head;     /* liveness FIFO, ordered by check time */
    session *flush_head;     /* sessions with frames to write before the loop waits */
    uint32_t session_count;
    uint32_t channel_count;
    subscribe_entry sub_pending[SUBSCRIBE_BATCH_MAX];
    int sub_pending_n;
    char unsub_pending[SUBSCRIBE_BATCH_MAX][CP_CHANNEL_ID_MAX + 1];
    int unsub_pending_n;
    uint64_t next_session_seq;
    uint64_t next_generation;
    bridge_counters n;
    cp_buf scratch;          /* JSON building */
    cp_buf tx;               /* LWS_PRE + frame being written */
    send_ring *ring;         /* NULL: one send() per session (--io-uring=false, or refused) */
    cp_buf ring_buf;         /* the framed bytes of one ring submission */
    int64_t ring_used_ms;    /* last submission: an idle bridge gives the buffer back */
    ring_send ring_sends[RING_ENTRIES];
    cp_histogram delivery_latency; /* bus arrival to socket write, per recipient */
    int64_t started_ms;
    int shutting_down;
    int bus_stopped;
    int64_t shutdown_deadline_ms;
    lws_sorted_usec_list_t tick;
    /* set from other threads */
    atomic_int bus_connected_event;
    /* Acks and drain (issue 13, acks.c and drain.c). */
    ack_window *ack_pending;     /* windows holding unconfirmed messages (utlist DL) */
    uint32_t ack_sessions;       /* sessions with ack=1 */
    uint64_t ack_outstanding;    /* unconfirmed messages over all windows */
    int64_t next_ack_check_ms;
    int draining;                /* 1: paced drain (SIGTERM), 2: quick stop */
    int64_t drain_started_ms;
    int64_t drain_end_ms;        /* the last paced close is due before this */
    int64_t next_drain_log_ms;
    uint32_t sse_sessions;       /* sessions over Server-Sent Events (sse.c) */
    /* Offset order and recovery (issue 13, streams.c). */
    history *history;         /* the Redis reader thread; NULL without --redis */
    order_stream border;      /* the broadcast stream */
    order_limits olim;
    channel *gap_head;        /* channels holding messages (utlist DL by gap_*) */
    struct recovery *greet_head; /* sessions to greet in this loop pass */
    lws_sorted_usec_list_t gap_timer; /* runs while a stream holds messages */
    int gap_timer_armed;
    /* Catch-ups to retry (channels by retry_*; the broadcast stream's
     * below), all at retry_due_ms, with the common backoff. */
    channel *retry_head;
    uint8_t bretry_listed;
    int64_t bretry_last;
    int64_t retry_due_ms;
    cp_backoff retry_backoff;
    /* --workers N (workers.c): this process's index 1..N, 0 without workers. */
    int worker;
    struct workers_shared *shared; /* the bridge-wide counters, NULL without workers */
    int master_sock;               /* to the master (its registry) */
    int is_master;                 /* the workers' master: its registry has no thread */
    int64_t next_publish_ms;       /* next snapshot of this worker's figures */
    int64_t next_proc_metrics_ms;
    cp_buf proc_metrics;           /* the process figures of the last snapshot */
    lws_sorted_usec_list_t publish_timer;
    ev_io wake;                    /* workers_wake_fd: a snapshot wanted now */
    int publish_armed;
} bridge;

extern bridge *g_bridge;

/* ws.c */
extern const struct lws_protocols bridge_protocols[];
extern const struct lws_extension bridge_extensions[];

/* ws.c: the checks a new client passes, WebSocket or SSE: origin,
 * identity (channelId, token), drain, bus, limits. Returns 0 when admitted
 * (who filled in), 1 when the request was answered with a JSON refusal. */
typedef struct {
    cp_jwt_claims claims;
    char channel_id[CP_CHANNEL_ID_MAX + 1];
    char ip[64];
} admission;
int admit_client(bridge *b, struct lws *wsi, admission *who);

/* sse.c: GET /sse. Returns 0 when the request became a stream (the
 * transaction stays open), 1 when it was answered, -1 to drop it. */
int sse_serve(bridge *b, struct lws *wsi, session **slot);
/* The bytes around one event of frame f: head before the JSON, tail after.
 * Return their lengths (at most SSE_HEAD_MAX, SSE_TAIL_LEN). */
#define SSE_HEAD_MAX 96 /* "id: <epoch 64>-<offset 18>\n" "data: " */
#define SSE_TAIL_LEN 2
size_t sse_event_head(out_frame *f, unsigned char *h);
/* A heartbeat comment, written when a WebSocket session would be pinged. */
extern const char sse_ping[];
/* True when the client of an HTTP/1.1 stream has gone (its input is not
 * read, so the liveness check asks). */
int sse_peer_gone(session *s);
/* Stops (pause 1) or resumes polling an HTTP/1.1 stream's input: see
 * sse.c for why it is paused whenever nothing waits to be written. */
void sse_pause_input(session *s, int pause);

/* session.c: lifecycle, liveness, frames for one session */
session *session_create(bridge *b, struct lws *wsi, const char *channel_id);
void session_destroy(bridge *b, session *s);
/* Keeps a copy of the token's `pub` claim (what the client may push to);
 * replaces the previous one (token refresh). Out of memory: none kept. */
void session_set_pub(session *s, const char *pub, size_t pub_len);
void session_touch(bridge *b, session *s);
/* Builds and queues an envelope for this session only (from NULL: "system";
 * message_id and result_msg NULL: left out). */
void session_send_envelope(bridge *b, session *s, int msg_type, const char *from,
                           const char *message_id, const char *result_msg);
void session_close(bridge *b, session *s, end_reason why, uint16_t code);
/* The channel's subscription is confirmed: greet the session. */
void session_open(bridge *b, session *s);
/* Its CONNECTION was queued (streams.c): read its frames, announce it. */
void session_greeted(bridge *b, session *s);
/* Queues a frame built from env for this session: sessionId (and to, when
 * with_to) are added; activeTime and trigger are the caller's. */
void session_send_built(bridge *b, session *s, const cp_envelope *env, int with_to);
void sessions_check_liveness(bridge *b, int64_t now_ms);
void sessions_close_all(bridge *b, end_reason why, uint16_t code);

/* drain.c: SIGTERM's paced drain and the quick stop; one state machine
 * driven by the tick. quick: SIGINT or a second SIGTERM. */
void drain_start(bridge *b, int quick, int64_t now_ms);
/* Closes what is due; returns 1 when the loop may stop. */
int drain_tick(bridge *b, int64_t now_ms);

/* writer.c: the socket writer */
/* Asks lws for a WRITEABLE callback (lws_callback_on_writable, with what
 * an SSE stream needs for it). */
void session_want_write(session *s);
/* Queues a frame; closes the session as a slow consumer when over limits. */
void session_send(bridge *b, session *s, out_frame *f);
/* The WRITEABLE callback: the close reason, a due ping or queued frames.
 * Returns -1 when lws is to close the connection. */
int session_write(bridge *b, session *s);
/* Writes what was queued during this loop pass, all frames of a session in
 * one system call; runs before the loop waits for I/O. */
void sessions_flush(bridge *b);
/* Once a second: frees the ring's buffer after a second without use, so
 * an idle bridge does not keep its largest burst's buffer. */
void sessions_trim_buffers(bridge *b, int64_t now_ms);
/* Queues a frame without ack tracking (acks.c: retransmits). Returns -1
 * when the session was closed as a slow consumer. */
int session_enqueue(bridge *b, session *s, out_frame *f);
/* Closes once everything queued is written (the drain): what arrives
 * meanwhile is no longer queued. */
void session_close_when_flushed(bridge *b, session *s, end_reason why, uint16_t code);
/* Takes s off the list sessions_flush works through (s is going away). */
void flush_list_remove(bridge *b, session *s);

/* channels.c */
channel *channel_find(bridge *b, const char *name, size_t len);
void channel_attach(bridge *b, session *s, const char *channel_id);
void channel_detach(bridge *b, session *s);
void channels_resubscribe(bridge *b);
/* Sends the subscriptions collected since the last call in one SUBSCRIBE;
 * runs before the loop waits for I/O. */
void channels_flush_subscribes(bridge *b);
void channel_subscribe_done(bridge *b, inbox_event *ev);
/* --single-session across bridges: tells every bridge that s is the
 * channel's newest session (they close older ones with 4003). */
void channel_announce_session(bridge *b, session *s);
/* A session control message from the bus: closes this bridge's sessions
 * of the channel that are older than the one it names. */
void channel_session_control(bridge *b, const char *channel_id, size_t channel_len,
                             const char *payload, size_t len);

/* delivery.c */
/* Builds the frame every recipient shares from an envelope (from the bus,
 * or stored: stored_epoch not NULL, *offset its position). *offset and
 * epoch (ORDER_EPOCH_MAX + 1 bytes) receive its position, -1 and "" when
 * it has none. NULL when invalid (counted and logged against origin). */
out_frame *delivery_build_frame(bridge *b, const char *data, size_t len, const char *origin,
                                size_t origin_len, int broadcast, const char *stored_epoch,
                                int64_t *offset, char *epoch);
void delivery_handle_bus_message(bridge *b, inbox_message *m);
void delivery_handle_events(bridge *b);
void delivery_drain(bridge *b);

/* streams.c: delivery in offset order, gaps, recovery, catch-up */
/* A frame from the bus for ch's stream (NULL: the broadcast stream); takes
 * the caller's reference. */
void streams_offer(bridge *b, channel *ch, out_frame *f, int64_t offset, const char *epoch);
/* Gap windows; runs on every wake-up and tick. */
void streams_tick(bridge *b, int64_t now_ms);
void streams_history_done(bridge *b, history_req *req);
/* The session is subscribed: its CONNECTION goes out once the history
 * said where its streams are (streams_flush_greetings). */
void streams_greet(bridge *b, session *s);
/* Sends the history reads of the greetings of this loop pass. */
void streams_flush_greetings(bridge *b);
/* Recovery query arguments, from the upgrade (ws.c). */
typedef struct {
    int64_t since, bsince; /* -1: not asked */
    char epoch[ORDER_EPOCH_MAX + 1], bepoch[ORDER_EPOCH_MAX + 1]; /* "": not given */
} recovery_params;
int streams_set_recovery(session *s, const recovery_params *p);
void streams_session_gone(bridge *b, session *s);
/* The broker connection came back and ch's subscription (NULL: the
 * broadcast one) is in place: read what the broker may have lost. */
void streams_catch_up(bridge *b, channel *ch);
/* A new sequencer leader took over (d/resync): every stream this worker
 * serves is read from where it stands, for what the previous leader stored
 * but did not publish. */
void streams_resync(bridge *b);
/* ch goes away: what it held is dropped. */
void streams_channel_gone(bridge *b, channel *ch);
void streams_render_metrics(bridge *b, cp_buf *out);

/* inbound.c */
void inbound_handle_text(bridge *b, session *s, const char *data, size_t len);
void inbound_publish_done(bridge *b, inbox_event *ev);

/* presence.c */
void presence_publish(bridge *b, session *s, int connected, end_reason why);

/* http.c */
int http_serve(bridge *b, struct lws *wsi, const char *path);
/* This process's metrics (with workers: what workers_render_metrics sums). */
void http_render_local_metrics(bridge *b, cp_buf *out, int with_process);

/* Event kinds carried through the inbox. */
enum { EV_SUBSCRIBED = 1, EV_PUBLISHED = 2, EV_HISTORY = 3 };

#endif
