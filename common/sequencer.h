/* The sequencer: where a message a service publishes on the documented
 * topics (<prefix>/client/{id}, <prefix>/broadcast, docs/topics.md), or a
 * bridge's client pushes, get their stream offset, epoch and one
 * messageId (docs/design-delivery.md, 1).
 *
 * Hosted by the bridges (--sequencer). With Redis, the sequencers elect one
 * leader through a lease (<prefix>:lease:sequencer:<broker URL hash>): it
 * alone subscribes to the documented topics, on one well-known persistent
 * session (<prefix>-sequencer) that outlives leaders, so one process
 * numbers a channel's service messages in the order the broker got them,
 * and the broker queues them while the leadership changes hands. The
 * others stand by (ready) and take the lease when it expires (a crash) or
 * is given up (a clean stop: disconnect keeping the session, work off the
 * queue, release). A leader that cannot reach Redis leads on. Without
 * Redis every sequencer takes a share through a shared subscription
 * ($share/cloudpush-seq/...), on its own persistent session which a
 * restart takes over. Each sequencer publishes on its own connection.
 *
 * Threads: Paho's hands each message to a queue that grows under a burst
 * (common/ring.h; at its limit Paho is told to deliver it again later, and
 * it is counted); the sequencer's own
 * thread takes batches of up to CP_SEQ_BATCH, appends them to their
 * streams in one Redis pipeline (its own connection) and republishes each
 * envelope, with offset, epoch and messageId, on the delivery topic
 * (<prefix>/d/client/{id}, <prefix>/d/broadcast). Redis down (or not
 * configured): republished with "offset":null, so live delivery goes on;
 * Redis is retried with the common backoff. A messageId already appended
 * to the stream (a publisher's retry) is not stored again but republished
 * with its stored offset: a message stored is always published with its
 * offset (its first publish may have been lost; bridges drop repeats by
 * offset). The leader records, with each append, the messageId it gave a
 * message without one under the message's MQTT packet id; a redelivery
 * of it (DUP=1, after a leader crash) gets that messageId back, so it is
 * a duplicate rather than a new message (docs/design-delivery.md,
 * "Redeliveries to the next leader"). */
#ifndef CP_SEQUENCER_H
#define CP_SEQUENCER_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "bus.h"
#include "busconfig.h"
#include "envelope.h"
#include "ids.h"
#include "topics.h"

#define CP_SEQ_BATCH 256
#define CP_SEQ_FINGERPRINT_LEN 16
#define CP_SEQ_PUBLISH_ATTEMPTS 3 /* a refused republish is tried this often */
#define CP_SEQ_SHARE_GROUP "cloudpush-seq"
enum { CP_SEQ_INVALID = -1, CP_SEQ_TOO_BIG = -2 };

typedef struct {
    cp_bus_settings bus;      /* broker URL, credentials, TLS files */
    const char *client_id;    /* stable across restarts of the same bridge */
    const char *prefix;
    const char *redis_url;    /* empty: no history (everything goes out with offset null) */
    long history_size;        /* messages kept per stream */
    long history_ttl_s;       /* and for how long after the stream's last append */
    long max_message_bytes;   /* larger payloads are dropped (and counted) */
    int session_expiry_s;     /* how long the broker keeps the session of a crashed one */
    size_t queue_capacity;    /* messages between Paho and the sequencer's thread */
    long lease_ms;            /* with Redis: the leader's lease (0: shared subscription) */
    size_t bus_batch;         /* a batch of this many or more is republished as one message on
                                 d/batch (common/dbatch.h); 0: one message each */
    int submit_only;          /* never takes the documented topics, only cp_sequencer_submit
                                 (the 2nd.. worker process of a bridge without Redis: one
                                 subscriber per bridge keeps its service messages in order) */
} cp_sequencer_config;

typedef struct {
    uint64_t sequenced;      /* republished with an offset */
    uint64_t unsequenced;    /* republished with "offset":null (Redis down or not used) */
    uint64_t duplicates;     /* a messageId appended before: republished with its offset */
    uint64_t invalid;        /* not a deliverable envelope: dropped, logged */
    uint64_t too_big;        /* over max_message_bytes: dropped, logged */
    uint64_t overflow;       /* refused at a full queue: Paho delivers them again later */
    uint64_t redis_failures; /* batches Redis did not take (lost, refused) */
    uint64_t redis_retries;  /* pipelines lost half way, sent again at once */
    uint64_t publish_failed; /* republishes the MQTT client refused, every attempt */
    uint64_t publish_retries; /* refused republishes tried again */
    uint64_t batches;
    uint64_t bus_batches;    /* republished as one message on d/batch (cfg.bus_batch) */
    uint64_t resyncs;        /* takeovers announced on d/resync */
    uint64_t leader_changes; /* times this one became the leader */
    uint64_t conflicts;      /* messageIds another message used: derived id given */
    uint64_t redelivered;    /* broker redeliveries given their first delivery's messageId */
    uint64_t lease_failures; /* lease calls Redis did not answer */
    size_t depth;            /* messages waiting in the queue now */
    int leader;              /* takes the documented topics now */
    int election;            /* one leader through Redis (0: shared subscription) */
    int connected;           /* the sequencer's MQTT connection is up */
} cp_sequencer_stats;

typedef struct cp_sequencer cp_sequencer;

/* Starts the MQTT client and the thread. NULL (logged) when it cannot. */
cp_sequencer *cp_sequencer_start(const cp_sequencer_config *cfg);
void cp_sequencer_get_stats(cp_sequencer *s, cp_sequencer_stats *out);
/* Hands a message over in-process, as if it had arrived on the documented
 * topic (a bridge's client push): it is stored and published on its
 * delivery topic like a service message, without the broker round trip
 * (nor the shared subscription, which mosquitto 2.0 loses when it
 * restarts). op->done tells the outcome later (ok: published and
 * acknowledged by the broker, also for a messageId stored before), on
 * the sequencer's or a Paho thread. Returns -1 when refused now (queue
 * full, stopping, memory): op->done is then not called. */
int cp_sequencer_submit(cp_sequencer *s, const char *topic, const void *payload, size_t len,
                        cp_bus_op *op);
/* 1 when connected and subscribed: service messages reach it. */
int cp_sequencer_ready(cp_sequencer *s);
/* The cloudpush_sequencer_* metrics (Prometheus text). */
void cp_sequencer_render_metrics(cp_sequencer *s, cp_buf *out);
/* Drops the shared subscription, works off what was received, then ends
 * the MQTT session and frees everything; waits at most about timeout_ms. */
void cp_sequencer_stop(cp_sequencer *s, int timeout_ms);

/* ---- one message, without I/O (unit tested) ---- */

typedef struct {
    cp_topic_kind kind; /* CP_TOPIC_DELIVER_CLIENT or CP_TOPIC_DELIVER_BROADCAST */
    char stream[CP_CHANNEL_ID_MAX + 1]; /* the channel id, or CP_REDIS_BROADCAST_STREAM */
    cJSON *root;        /* owns what env points to */
    cp_envelope env;
    char mid[CP_MESSAGE_ID_LEN + 1]; /* the messageId given here when the publisher gave none */
    char fp[CP_SEQ_FINGERPRINT_LEN + 1]; /* cp_seq_fingerprint of the message */
    char alt_mid[CP_ENVELOPE_ID_MAX + 1]; /* its derived messageId after a conflict */
    int assigned;       /* the publisher gave no messageId: mid is the one given here */
    int packet_id;      /* its QoS 1 packet id on the leader session (0: not from there) */
} cp_seq_entry;

/* Reads a message published on a documented topic: checks it as the
 * bridges deliver it (size, a JSON envelope with msg, msgType BUSINESS or
 * absent), fills what a service may leave out (messageId, assigned here
 * once; activeTime; from; trigger MQTT) and drops any offset, epoch or
 * broadcast flag the publisher wrote (only the sequencer sets them).
 * Returns 0, or CP_SEQ_INVALID / CP_SEQ_TOO_BIG with the reason in err (e
 * then holds nothing). e must
 * not move until cp_seq_entry_free. */
int cp_seq_entry_read(cp_seq_entry *e, const char *prefix, const char *topic, size_t topic_len,
                      const char *data, size_t len, long max_bytes, char *err, size_t err_cap);
/* Appends the envelope as kept in the history: without offset and epoch
 * (the stream entry's id is the offset; broadcasts carry "broadcast":true). */
int cp_seq_entry_write_stored(cp_seq_entry *e, cp_buf *b);
/* Appends the envelope as delivered: with offset (< 1: null) and epoch
 * (NULL: left out). */
int cp_seq_entry_write_delivered(cp_seq_entry *e, cp_buf *b, int64_t offset, const char *epoch);
/* The delivery topic of the entry. -1 when it does not fit. */
int cp_seq_entry_topic(const cp_seq_entry *e, const char *prefix, char *out, size_t cap);
void cp_seq_entry_free(cp_seq_entry *e);

/* A broker's redelivery (DUP=1) of a message without a messageId of its
 * own takes the messageId recorded for its packet id (recorded: "" when
 * none): the same as the first delivery's, so the append finds it stored
 * (same fingerprint: a duplicate, its stored offset) instead of storing it
 * again. A stale record (the packet id reused by another message) differs
 * in fingerprint: a conflict, appended as a new message. Returns 1 when
 * the entry's messageId was replaced. */
int cp_seq_entry_reuse_id(cp_seq_entry *e, const char *recorded);

/* What makes a retry a retry: the idempotency key (stream, messageId)
 * matches only a message with the same fingerprint, a hash (FNV-1a 64,
 * hex) of its sender (from) and payload (msg, as the envelope writer
 * serialises it, so every entry computes it alike). scratch is reset. */
void cp_seq_fingerprint(const cJSON *msg, const char *from, cp_buf *scratch,
                        char out[CP_SEQ_FINGERPRINT_LEN + 1]);
/* The messageId of a message whose id another message used on its stream
 * before: "<id>~<fingerprint>" (an id too long for that: a hash of it in
 * its place), at most CP_ENVELOPE_ID_MAX; the same for every retry. */
void cp_seq_conflict_id(const char *message_id, const char *fp, char *out, size_t cap);

#endif
