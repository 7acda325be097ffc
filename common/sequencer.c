#include "sequencer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "dbatch.h"
#include "log.h"
#include "ring.h"
#include "metrics.h"
#include "brokerid.h"
#include "redis.h"

/* Group commit: a batch that follows the previous one within
 * CP_SEQ_BUSY_US waits up to a millisecond for CP_SEQ_LINGER_FILL
 * messages, so a steady stream does not cost a Redis round trip and a
 * wake of this thread per message. */
#define CP_SEQ_BUSY_US 2000
#define CP_SEQ_LINGER_MS 1
#define CP_SEQ_LINGER_FILL 32
/* The queue from Paho grows up to this many messages before it refuses
 * one. A refusal does not hold the broker back: Paho has acknowledged the
 * message already and keeps it, and every later one, in a list of its own
 * from which it re-offers one message per packet it receives (or per
 * idle second), so a refused backlog drains at the rate new traffic comes
 * in, and not at all once it stops (measured: 5 702 of 80 000 messages
 * stuck at 8 000/s offered). Taking them here lets the sequencer work off
 * a burst at its own pace; the memory is the same messages Paho would
 * hold. */
#define CP_SEQ_QUEUE_MAX (1u << 20)

/* ------------------------------------------------------- one message */

int cp_seq_entry_read(cp_seq_entry *e, const char *prefix, const char *topic, size_t topic_len,
                      const char *data, size_t len, long max_bytes, char *err, size_t err_cap)
{
    memset(e, 0, sizeof *e);
    const char *channel;
    size_t channel_len;
    cp_topic_kind kind = cp_topic_parse(prefix, topic, topic_len, &channel, &channel_len);
    if (kind == CP_TOPIC_CLIENT) {
        if (channel_len > CP_CHANNEL_ID_MAX || !cp_channel_id_valid(channel, channel_len)) {
            snprintf(err, err_cap, "not a valid channel id in the topic");
            return -1;
        }
        e->kind = CP_TOPIC_DELIVER_CLIENT;
        memcpy(e->stream, channel, channel_len);
        e->stream[channel_len] = '\0';
    } else if (kind == CP_TOPIC_BROADCAST) {
        e->kind = CP_TOPIC_DELIVER_BROADCAST;
        snprintf(e->stream, sizeof e->stream, "%s", CP_REDIS_BROADCAST_STREAM);
    } else {
        snprintf(err, err_cap, "not a client or broadcast topic");
        return -1;
    }
    if (max_bytes > 0 && len > (size_t)max_bytes) {
        snprintf(err, err_cap, "%zu bytes: over --max-message-bytes (%ld)", len, max_bytes);
        return CP_SEQ_TOO_BIG;
    }
    e->root = cp_envelope_parse(data, len, &e->env, err, err_cap);
    if (!e->root)
        return -1;
    if (!(e->env.fields & CP_F_MSG)) {
        snprintf(err, err_cap, "msg (a JSON object) is required");
        goto bad;
    }
    if ((e->env.fields & CP_F_MSG_TYPE) && e->env.msg_type != CP_MSG_BUSINESS) {
        snprintf(err, err_cap, "only msgType 1 (BUSINESS) can be pushed");
        goto bad;
    }
    cp_envelope_fill_defaults(&e->env, CP_TRIGGER_MQTT, e->mid);
    e->assigned = e->env.message_id == e->mid;
    e->env.msg_type = CP_MSG_BUSINESS;
    e->env.fields |= CP_F_MSG_TYPE;
    /* Stream positions are ours to give; CONNECTION fields do not belong. */
    e->env.fields &= ~(unsigned)(CP_F_OFFSET | CP_F_EPOCH | CP_F_BROADCAST | CP_F_BOFFSET |
                                 CP_F_BEPOCH | CP_F_RECOVERED);
    if (e->kind == CP_TOPIC_DELIVER_BROADCAST)
        e->env.fields |= CP_F_BROADCAST;
    return 0;
bad:
    cp_seq_entry_free(e);
    return -1;
}

int cp_seq_entry_write_stored(cp_seq_entry *e, cp_buf *b)
{
    e->env.fields &= ~(unsigned)(CP_F_OFFSET | CP_F_EPOCH);
    return cp_envelope_write(b, &e->env, NULL);
}

int cp_seq_entry_write_delivered(cp_seq_entry *e, cp_buf *b, int64_t offset, const char *epoch)
{
    e->env.fields |= CP_F_OFFSET;
    e->env.offset = offset >= 1 ? offset : -1;
    if (epoch && *epoch) {
        e->env.fields |= CP_F_EPOCH;
        e->env.epoch = epoch;
    } else {
        e->env.fields &= ~(unsigned)CP_F_EPOCH;
    }
    return cp_envelope_write(b, &e->env, NULL);
}

int cp_seq_entry_topic(const cp_seq_entry *e, const char *prefix, char *out, size_t cap)
{
    return cp_topic_build(out, cap, prefix, e->kind,
                          e->kind == CP_TOPIC_DELIVER_CLIENT ? e->stream : NULL);
}

void cp_seq_fingerprint(const cJSON *msg, const char *from, cp_buf *scratch,
                        char out[CP_SEQ_FINGERPRINT_LEN + 1])
{
    cp_envelope e;
    memset(&e, 0, sizeof e);
    e.fields = CP_F_MSG | (from ? CP_F_FROM : 0u);
    e.msg = msg;
    e.from = from;
    cp_buf_reset(scratch);
    cp_envelope_write(scratch, &e, NULL);
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64 */
    for (size_t i = 0; i < scratch->len && !scratch->failed; i++)
        h = (h ^ (unsigned char)scratch->data[i]) * 1099511628211ULL;
    snprintf(out, CP_SEQ_FINGERPRINT_LEN + 1, "%016llx", (unsigned long long)h);
}

void cp_seq_conflict_id(const char *message_id, const char *fp, char *out, size_t cap)
{
    size_t len = strlen(message_id);
    if (len + 1 + CP_SEQ_FINGERPRINT_LEN <= CP_ENVELOPE_ID_MAX) {
        snprintf(out, cap, "%s~%s", message_id, fp);
        return;
    }
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)message_id[i]) * 1099511628211ULL;
    snprintf(out, cap, "%016llx~%s", (unsigned long long)h, fp);
}

int cp_seq_entry_reuse_id(cp_seq_entry *e, const char *recorded)
{
    size_t len = recorded ? strlen(recorded) : 0;
    if (!e->assigned || len == 0 || len > CP_MESSAGE_ID_LEN)
        return 0; /* ids given here are CP_MESSAGE_ID_LEN: anything else is not ours */
    memcpy(e->mid, recorded, len + 1);
    e->env.message_id = e->mid;
    return 1;
}

void cp_seq_entry_free(cp_seq_entry *e)
{
    cJSON_Delete(e->root);
    e->root = NULL;
}

/* ------------------------------------------------------- the sequencer */

/* A message from the bus (msg set, Paho's) or handed over in-process by
 * cp_sequencer_submit (msg NULL: topic and data live in one allocation,
 * own; op is told the outcome). */
typedef struct {
    char *topic;
    size_t topic_len;
    MQTTAsync_message *msg;
    const char *data;
    size_t len;
    cp_bus_op *op;
    void *own;
    int from_leader; /* arrived on the leader's well-known session */
} queued;

struct cp_sequencer {
    cp_sequencer_config cfg;
    char *prefix, *redis_url, *client_id;
    cp_bus *bus;        /* this bridge's own: republishes (and, shared mode, subscribes) */
    cp_redis *redis; /* NULL: no history */
    /* Election (with Redis): the one sequencer holding the lease takes the
     * documented topics through the well-known session (leader_bus); the
     * others stand by. Without Redis: every one in the shared group. */
    int election;
    cp_bus *leader_bus;  /* sequencer thread only; NULL while standing by */
    char token[80];      /* this process's lease value */
    char lease_name[CP_BROKER_LEASE_MAX]; /* sequencer thread: "" until the broker's
                                             identity names it (brokerid.h) */
    cp_broker_id *broker_id; /* election only */
    char leader_client_id[CP_TOPIC_MAX];
    int64_t next_tick_ms; /* sequencer thread: the next lease renewal / attempt */
    int lease_lost_logged;
    atomic_int leading;
    atomic_int elected_once; /* an election round ended: a leader holds the lease, or Redis
                                is away (then no one can take it; live delivery goes on) */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    cp_ring queue; /* under lock: from Paho (and submit) to the sequencer's thread */
    int stopping;         /* under lock: work off the queue, then leave */
    int64_t stop_deadline_ms; /* under lock: the stop waits this long for the bus to settle */
    int64_t last_arrival_ms, last_refusal_ms; /* under lock: a bus message taken / refused */
    int subscribe_due;    /* under lock: (re)connected, subscribe again */
    int resync_due;       /* under lock: the leader subscribed: announce it on d/resync */
    /* the shared subscription */
    char filters[2][CP_TOPIC_MAX + 32];
    cp_bus_op sub_op;
    int granted[2];
    atomic_int subscribed; /* since the last (re)connect */
    /* the thread's batch */
    cp_seq_entry *entries; /* CP_SEQ_BATCH */
    int *valid;
    cp_bus_op **ops; /* per entry of the batch: who wants the outcome, or NULL */
    cp_redis_appended *appended;
    cp_redis_appended *results; /* the pipeline's answers, valid entries only */
    cp_buf buf;
    cp_dbatch dbatch; /* the thread's delivery batch (cfg.bus_batch) */
    size_t dbatch_sequenced, dbatch_unsequenced; /* its items, counted once it is handed over */
    /* counters (any thread reads them) */
    atomic_uint_fast64_t sequenced, unsequenced, duplicates, invalid, too_big, overflow,
        redis_failures, redis_retries, publish_failed, publish_retries, batches, leader_changes,
        lease_failures, conflicts, redelivered, bus_batches, resyncs;
    char (*recorded)[CP_REDIS_PACKET_MID_MAX + 1]; /* sequencer thread: packet id lookups */
};

static int on_message(void *ud, char *topic, size_t topic_len, MQTTAsync_message *msg)
{
    cp_sequencer *s = ud;
    if (s->broker_id && cp_broker_id_offer(s->broker_id, topic, topic_len, msg))
        return 1;
    int64_t now = cp_mono_ms();
    pthread_mutex_lock(&s->lock);
    s->last_arrival_ms = now;
    int grew;
    queued *q = cp_ring_push(&s->queue, &grew);
    if (!q) {
        s->last_refusal_ms = now;
        pthread_mutex_unlock(&s->lock);
        /* Not dropped: Paho delivers it again later (slowly, see
         * CP_SEQ_QUEUE_MAX). */
        atomic_fetch_add(&s->overflow, 1);
        return 0;
    }
    *q = (queued){.topic = topic, .topic_len = topic_len, .msg = msg,
                  .from_leader = s->election && msg->qos > 0};
    if (grew && s->queue.cap >= 8 * s->queue.base_cap)
        log_warn("sequencer: %zu messages wait for their offsets (room for %zu now, %u at "
                 "most): more come in than it stores",
                 s->queue.count, s->queue.cap, CP_SEQ_QUEUE_MAX);
    if (s->queue.count == 1 || s->queue.count == CP_SEQ_LINGER_FILL)
        pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 1;
}

/* The subscribing connection (the leader's, or in shared mode the
 * sequencer's own) is up: subscribe again on the sequencer's thread. */
static void on_connected(void *ud)
{
    cp_sequencer *s = ud;
    atomic_store(&s->subscribed, 0);
    pthread_mutex_lock(&s->lock);
    s->subscribe_due = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void subscribed(cp_bus_op *op, int ok, int code)
{
    cp_sequencer *s = (cp_sequencer *)((char *)op - offsetof(cp_sequencer, sub_op));
    for (int i = 0; i < 2; i++) {
        if (!ok || s->granted[i] >= 0x80)
            log_error("sequencer: subscribe %s refused: %s (service messages on it are not "
                      "delivered through this bridge)",
                      s->filters[i], cp_bus_strerror(ok ? s->granted[i] : code));
    }
    if (ok && s->granted[0] < 0x80 && s->granted[1] < 0x80) {
        atomic_store(&s->subscribed, 1);
        log_info("sequencer: subscribed to %s and %s", s->filters[0], s->filters[1]);
        if (s->election) {
            pthread_mutex_lock(&s->lock);
            s->resync_due = 1;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
        }
    }
}

/* A leader took the documented topics: the one before may have stored
 * messages it never published (a crash between its Redis round trip and
 * its publishes). They are in the history; no later message of their
 * stream need come to reveal them: every bridge reads its streams from
 * where it stands when it hears this (docs/design-delivery.md). */
static void announce_leader(cp_sequencer *s)
{
    char topic[CP_TOPIC_MAX];
    if (cp_topic_build(topic, sizeof topic, s->cfg.prefix, CP_TOPIC_DELIVER_RESYNC, NULL) < 0)
        return;
    cp_buf body;
    cp_buf_init(&body);
    cp_buf_puts(&body, "{\"leader\":");
    cp_buf_json_string(&body, s->cfg.client_id, strlen(s->cfg.client_id));
    cp_buf_putc(&body, '}');
    int rc = body.failed ? MQTTASYNC_FAILURE
                         : cp_bus_publish(s->bus, topic, body.data, body.len, 1, NULL);
    cp_buf_free(&body);
    if (rc != 0)
        log_warn("sequencer: cannot announce the takeover on %s: %s (bridges catch up at the "
                 "next message of each stream)",
                 topic, cp_bus_strerror(rc));
    else
        atomic_fetch_add(&s->resyncs, 1);
}

/* The UNSUBSCRIBE of a stop. Its completion may come after the stop gave
 * up waiting (or never): so it lives apart from the sequencer, and the last
 * of the two users frees it. */
typedef struct {
    cp_bus_op op;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int refs;
} unsub_wait;

static void unsub_release(unsub_wait *w)
{
    pthread_mutex_lock(&w->lock);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w);
    }
}

static void unsubscribed(cp_bus_op *op, int ok, int code)
{
    (void)ok;
    (void)code;
    unsub_wait *w = (unsub_wait *)op;
    pthread_mutex_lock(&w->lock);
    w->done = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    unsub_release(w);
}

/* Leaves the shared group: from the UNSUBACK on, the others get every
 * message. Waits at most timeout_ms for it. */
static void leave_group(cp_sequencer *s, int timeout_ms)
{
    unsub_wait *w = calloc(1, sizeof *w);
    if (!w)
        return;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->op.done = unsubscribed;
    w->refs = 2;
    char *tp[2] = {s->filters[0], s->filters[1]};
    if (cp_bus_unsubscribe_many(s->bus, tp, 2, &w->op) != 0) {
        w->refs = 1; /* no completion will come */
        unsub_release(w);
        return;
    }
    struct timespec deadline;
    cp_realtime_after_ms(&deadline, timeout_ms);
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) == ETIMEDOUT)
            break;
    if (!w->done)
        log_warn("sequencer: no UNSUBACK within %d ms", timeout_ms);
    pthread_mutex_unlock(&w->lock);
    unsub_release(w);
}

static void subscribe(cp_sequencer *s)
{
    cp_bus *bus = s->election ? s->leader_bus : s->bus;
    if (!bus)
        return; /* stepped down meanwhile */
    char *tp[2] = {s->filters[0], s->filters[1]};
    s->sub_op.done = subscribed;
    int rc = cp_bus_subscribe_many(bus, tp, 2, 1, &s->sub_op, s->granted);
    if (rc != 0)
        log_error("sequencer: subscribe refused: %s", cp_bus_strerror(rc));
}

/* Queues the append of the entries want[] marks; sent[i] says whose
 * answer comes back (in order). Returns how many were queued. */
static size_t queue_appends(cp_sequencer *s, size_t n, const unsigned char *want,
                            unsigned char *sent)
{
    size_t queued_n = 0;
    for (size_t i = 0; i < n; i++) {
        sent[i] = 0;
        if (!want[i])
            continue;
        cp_seq_entry *e = &s->entries[i];
        cp_buf_reset(&s->buf);
        if (cp_seq_entry_write_stored(e, &s->buf) != 0 || s->buf.failed) {
            /* published unsequenced, like a Redis failure */
            log_error("sequencer: out of memory serialising a message");
            continue;
        }
        sent[i] = 1;
        cp_redis_queue_history_append_packet(s->redis, e->stream, e->env.message_id, e->fp,
                                             s->buf.data, s->buf.len, s->cfg.history_size,
                                             s->cfg.history_ttl_s, s->lease_name, e->packet_id);
        queued_n++;
    }
    return queued_n;
}

/* One pipeline of the entries want[] marks, into s->appended. A pipeline
 * lost half way is sent again at once on a fresh connection: every entry
 * has a messageId, so what Redis took before the break comes back as a
 * duplicate with its offset (and is published with it), never stored
 * twice nor left stored but published without its offset. */
static void append_round(cp_sequencer *s, size_t n, const unsigned char *want)
{
    unsigned char sent[CP_SEQ_BATCH];
    cp_redis_appended *res = s->results;
    int rc = CP_REDIS_LOST;
    for (int attempt = 0; attempt < 2 && rc == CP_REDIS_LOST; attempt++) {
        int up = attempt == 0 ? cp_redis_connect(s->redis) : cp_redis_connect_now(s->redis);
        if (up == CP_REDIS_DOWN)
            break;
        size_t queued_n = queue_appends(s, n, want, sent);
        if (queued_n == 0)
            return;
        rc = cp_redis_flush_appends(s->redis, res, queued_n);
        if (rc == CP_REDIS_LOST && attempt == 0)
            atomic_fetch_add(&s->redis_retries, 1);
    }
    if (rc != CP_REDIS_OK) {
        atomic_fetch_add(&s->redis_failures, 1);
        if (rc == CP_REDIS_REFUSED)
            log_warn("sequencer: Redis refused an append: %s", cp_redis_last_error(s->redis));
    }
    if (rc != CP_REDIS_LOST) {
        for (size_t i = 0, j = 0; i < n; i++)
            if (sent[i])
                s->appended[i] = res[j++];
    }
}

/* Appends the batch's valid entries; fills s->appended (offset 0 where
 * unknown). A messageId another message (another sender or payload) used
 * on the stream before is a conflict: the entry becomes a new message
 * under a derived id (cp_seq_conflict_id, stable, so its own retries stay
 * idempotent), appended in a second round; it never takes the other's
 * place. */
/* Redeliveries (DUP=1 on the leader session) of messages without a
 * messageId of their own get the one recorded for their packet id: one
 * round trip, only for a batch holding some. Redis away: they keep the
 * new id (and may be stored twice, as before the records). */
static void reuse_recorded_ids(cp_sequencer *s, size_t n, const unsigned char *dup)
{
    const char *streams[CP_SEQ_BATCH];
    int pids[CP_SEQ_BATCH];
    size_t at[CP_SEQ_BATCH], m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s->valid[i] || !dup[i] || !s->entries[i].assigned || !s->entries[i].packet_id)
            continue;
        streams[m] = s->entries[i].stream;
        pids[m] = s->entries[i].packet_id;
        at[m++] = i;
    }
    if (m == 0 || cp_redis_connect(s->redis) == CP_REDIS_DOWN)
        return;
    int rc = cp_redis_packet_lookup(s->redis, streams, s->lease_name, pids, m, s->recorded);
    if (rc != CP_REDIS_OK)
        log_warn("sequencer: looking up the messageIds of %zu redelivered messages: %s", m,
                 cp_redis_last_error(s->redis));
    for (size_t j = 0; j < m; j++) {
        if (cp_seq_entry_reuse_id(&s->entries[at[j]], s->recorded[j]))
            atomic_fetch_add(&s->redelivered, 1);
    }
}

static void append_batch(cp_sequencer *s, size_t n, size_t valid)
{
    memset(s->appended, 0, n * sizeof *s->appended);
    if (!s->redis || valid == 0)
        return;
    unsigned char want[CP_SEQ_BATCH];
    for (size_t i = 0; i < n; i++)
        want[i] = (unsigned char)s->valid[i];
    append_round(s, n, want);
    size_t again = 0;
    for (size_t i = 0; i < n; i++) {
        want[i] = s->valid[i] && s->appended[i].conflict;
        if (!want[i])
            continue;
        cp_seq_entry *e = &s->entries[i];
        cp_seq_conflict_id(e->env.message_id, e->fp, e->alt_mid, sizeof e->alt_mid);
        log_warn("sequencer: messageId %s on %s was used before by another message: this one "
                 "is %s",
                 e->env.message_id, e->stream, e->alt_mid);
        e->env.message_id = e->alt_mid;
        memset(&s->appended[i], 0, sizeof s->appended[i]); /* not the other's offset */
        atomic_fetch_add(&s->conflicts, 1);
        again++;
    }
    if (!again)
        return;
    append_round(s, n, want);
    for (size_t i = 0; i < n; i++)
        if (want[i] && s->appended[i].conflict) { /* the derived id is taken too */
            log_error("sequencer: %s on %s: its derived id is taken as well; delivered "
                      "without an offset",
                      s->entries[i].env.message_id, s->entries[i].stream);
            memset(&s->appended[i], 0, sizeof s->appended[i]);
        }
}

/* Hands a delivery to the MQTT client: the one in s->buf (with op), or
 * with batch set the thread's delivery batch. A refusal (Paho's buffer
 * full, a reconnect under way) is retried a few times, 50 ms apart, then
 * counted: a stored message then reaches the bridges as a gap they fill
 * from the history. */
static int publish_retrying(cp_sequencer *s, const char *topic, cp_bus_op *op, int batch)
{
    int rc = 0;
    for (int attempt = 0; attempt < CP_SEQ_PUBLISH_ATTEMPTS; attempt++) {
        if (attempt > 0) {
            atomic_fetch_add(&s->publish_retries, 1);
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        rc = batch ? cp_dbatch_publish(&s->dbatch, s->bus, topic)
                   : cp_bus_publish(s->bus, topic, s->buf.data, s->buf.len, 1, op);
        if (rc == 0)
            break;
    }
    return rc;
}

static int republish(cp_sequencer *s, const char *topic, cp_bus_op *op)
{
    return publish_retrying(s, topic, op, 0);
}

/* As republish, for the thread's delivery batch; a refusal completes its
 * items as failed. 0 or the refusal. */
static int republish_dbatch(cp_sequencer *s)
{
    if (s->dbatch.payload.len == 0)
        return 0; /* flushed already (it filled up), or nothing went in */
    char topic[CP_TOPIC_MAX];
    cp_topic_build(topic, sizeof topic, s->cfg.prefix, CP_TOPIC_DELIVER_BATCH, NULL);
    size_t items = s->dbatch.items;
    int rc = publish_retrying(s, topic, NULL, 1);
    size_t sequenced = s->dbatch_sequenced, unsequenced = s->dbatch_unsequenced;
    s->dbatch_sequenced = s->dbatch_unsequenced = 0;
    if (rc != 0) {
        atomic_fetch_add(&s->publish_failed, items);
        log_warn("sequencer: republishing a batch of %zu messages refused %d times: %s", items,
                 CP_SEQ_PUBLISH_ATTEMPTS, cp_bus_strerror(rc));
        cp_dbatch_fail(&s->dbatch, rc);
    } else {
        atomic_fetch_add(&s->bus_batches, 1);
        atomic_fetch_add(&s->sequenced, sequenced);
        atomic_fetch_add(&s->unsequenced, unsequenced);
    }
    return rc;
}

static void publish_batch(cp_sequencer *s, size_t n)
{
    char topic[CP_TOPIC_MAX];
    size_t valid = 0;
    for (size_t i = 0; i < n; i++)
        valid += s->valid[i] != 0;
    int batched = s->cfg.bus_batch > 0 && valid >= s->cfg.bus_batch;
    for (size_t i = 0; i < n; i++) {
        if (!s->valid[i])
            continue;
        cp_seq_entry *e = &s->entries[i];
        const cp_redis_appended *a = &s->appended[i];
        cp_bus_op *op = s->ops[i];
        if (a->offset > 0 && a->duplicate) {
            /* Stored before: published again with its stored offset (its
             * first publish may have been lost; a bridge that had it drops
             * this one by offset). */
            atomic_fetch_add(&s->duplicates, 1);
            log_debug("sequencer: %s on %s was appended before (offset %lld): republished",
                      e->env.message_id, e->stream, (long long)a->offset);
        }
        cp_buf_reset(&s->buf);
        if (cp_seq_entry_write_delivered(e, &s->buf, a->offset, a->offset > 0 ? a->epoch : NULL) !=
                0 ||
            s->buf.failed || cp_seq_entry_topic(e, s->cfg.prefix, topic, sizeof topic) < 0) {
            atomic_fetch_add(&s->invalid, 1);
            log_error("sequencer: cannot build the delivery of %s", e->env.message_id);
            if (op)
                op->done(op, 0, MQTTASYNC_FAILURE);
            continue;
        }
        if (batched) {
            const char *channel = e->kind == CP_TOPIC_DELIVER_CLIENT ? e->stream : NULL;
            if (cp_dbatch_add(&s->dbatch, channel, s->buf.data, s->buf.len, op) == 0) {
                if (!a->duplicate)
                    (*(a->offset > 0 ? &s->dbatch_sequenced : &s->dbatch_unsequenced))++;
                if (s->dbatch.payload.len >= CP_DBATCH_MAX_BYTES)
                    republish_dbatch(s);
                continue;
            }
            /* Out of memory for the batch: this one goes alone. */
        }
        int rc = republish(s, topic, op);
        if (rc != 0) {
            if (op) /* refused now: the bus does not call it */
                op->done(op, 0, rc);
            atomic_fetch_add(&s->publish_failed, 1);
            log_warn("sequencer: republishing %s on %s refused %d times: %s", e->env.message_id,
                     topic, CP_SEQ_PUBLISH_ATTEMPTS, cp_bus_strerror(rc));
            continue;
        }
        if (!a->duplicate)
            atomic_fetch_add(a->offset > 0 ? &s->sequenced : &s->unsequenced, 1);
    }
    if (batched)
        republish_dbatch(s);
}

static void release(queued *q)
{
    if (q->msg) {
        MQTTAsync_freeMessage(&q->msg);
        MQTTAsync_free(q->topic);
    } else {
        free(q->own);
    }
}

static void handle_batch(cp_sequencer *s, queued *batch, size_t n)
{
    size_t valid = 0, dups = 0;
    unsigned char dup[CP_SEQ_BATCH];
    for (size_t i = 0; i < n; i++) {
        char err[160];
        const queued *q = &batch[i];
        const char *data = q->msg ? q->msg->payload : q->data;
        size_t len = q->msg ? (size_t)q->msg->payloadlen : q->len;
        /* What a bridge hands over was held to its limit when the client
         * sent it (the envelope adds a few fields). */
        long max = q->msg ? s->cfg.max_message_bytes : 0;
        int rc = cp_seq_entry_read(&s->entries[i], s->cfg.prefix, q->topic, q->topic_len, data,
                                   len, max, err, sizeof err);
        s->valid[i] = rc == 0;
        s->ops[i] = q->op;
        /* Only the leader's well-known session outlives a process, so only
         * its packet ids name a message across leaders. */
        dup[i] = 0;
        if (s->valid[i] && q->msg && q->from_leader) {
            s->entries[i].packet_id = q->msg->msgid;
            dup[i] = q->msg->dup != 0;
            dups += dup[i];
        }
        if (s->valid[i]) {
            cp_seq_fingerprint(s->entries[i].env.msg, s->entries[i].env.from, &s->buf,
                               s->entries[i].fp);
            valid++;
        } else {
            if (q->op)
                q->op->done(q->op, 0, MQTTASYNC_FAILURE);
            atomic_fetch_add(rc == CP_SEQ_TOO_BIG ? &s->too_big : &s->invalid, 1);
            log_warn("sequencer: dropped an invalid message on %.*s: %s",
                     (int)batch[i].topic_len, batch[i].topic, err);
        }
    }
    if (dups && s->redis)
        reuse_recorded_ids(s, n, dup);
    append_batch(s, n, valid);
    publish_batch(s, n);
    for (size_t i = 0; i < n; i++) {
        if (s->valid[i])
            cp_seq_entry_free(&s->entries[i]);
        release(&batch[i]);
    }
    atomic_fetch_add(&s->batches, 1);
}

/* ------------------------------------------------------- the election */

#define CP_SEQ_STANDBY_POLL_MS 500
#define CP_SEQ_SETTLE_MS 100 /* a stop waits for the bus to be quiet this long */

/* Takes the documented topics: connects the well-known session, which
 * the broker kept (with what it queued) since the last leader left. */
static void become_leader(cp_sequencer *s)
{
    cp_bus_options bo = {
        .client_id = s->leader_client_id,
        .keepalive_s = 10,
        .max_buffered = 1000,
        .persistent = 1,
        .resume = 1,
        .keep_session = 1,
        .session_expiry_s = s->cfg.session_expiry_s,
        .ud = s,
        .on_message = on_message,
        .on_connected = on_connected,
    };
    cp_bus_settings_apply(&s->cfg.bus, &bo);
    atomic_store(&s->subscribed, 0);
    s->leader_bus = cp_bus_create(&bo);
    if (!s->leader_bus || cp_bus_start(s->leader_bus) != 0) {
        log_error("sequencer: cannot start the leader's MQTT client; giving the lease up");
        cp_bus_destroy(s->leader_bus);
        s->leader_bus = NULL;
        cp_redis_lease_release(s->redis, s->lease_name, s->token);
        return;
    }
    atomic_store(&s->leading, 1);
    atomic_fetch_add(&s->leader_changes, 1);
    log_info("sequencer: leader now (lease %s:lease:%s), taking %s and %s as %s", s->prefix,
             s->lease_name, s->filters[0], s->filters[1], s->leader_client_id);
}

/* Leaves the documented topics to the next leader: the session stays on
 * the broker, which queues for it until the next leader connects. What
 * this one received is still worked off (it is in the queue). */
static void step_down(cp_sequencer *s, const char *why)
{
    if (!s->leader_bus)
        return;
    log_info("sequencer: standing by (%s)", why);
    atomic_store(&s->leading, 0);
    atomic_store(&s->subscribed, 0);
    cp_bus_stop(s->leader_bus, 1000);
    cp_bus_destroy(s->leader_bus);
    s->leader_bus = NULL;
}

/* One tick: renew the lease, or take it when free. Redis unreachable: a
 * leader keeps leading (no one else can take the lease meanwhile, and
 * live delivery goes on with offset null); a standby stays standby. */
static void elect(cp_sequencer *s)
{
    int64_t now = cp_mono_ms();
    /* The leader renews at a third of the lease; a standby asks more
     * often, so a lease given up at a clean stop is taken within
     * CP_SEQ_STANDBY_POLL_MS. */
    long every = s->cfg.lease_ms / 3 > 0 ? s->cfg.lease_ms / 3 : 1;
    if (!s->leader_bus && every > CP_SEQ_STANDBY_POLL_MS)
        every = CP_SEQ_STANDBY_POLL_MS;
    s->next_tick_ms = now + every;
    int held = 0;
    int rc = cp_redis_connect(s->redis) == CP_REDIS_DOWN
                 ? CP_REDIS_LOST
                 : cp_redis_lease(s->redis, s->lease_name, s->token, s->cfg.lease_ms, &held);
    atomic_store(&s->elected_once, 1);
    if (rc != CP_REDIS_OK) {
        atomic_fetch_add(&s->lease_failures, 1);
        if (atomic_load(&s->leading) && !s->lease_lost_logged)
            log_warn("sequencer: cannot renew the lease (%s): leading on while Redis is away",
                     cp_redis_last_error(s->redis));
        s->lease_lost_logged = 1;
        return;
    }
    s->lease_lost_logged = 0;
    if (held && !s->leader_bus)
        become_leader(s);
    else if (!held && s->leader_bus)
        step_down(s, "another bridge holds the lease");
}

/* ------------------------------------------------- the broker's identity */

/* Paho's threads: news about the broker's identity (brokerid.h). */
static void identity_news(void *ud)
{
    cp_sequencer *s = ud;
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* This bridge's own connection is up (a fresh subscription each time). */
static void on_own_connected(void *ud)
{
    cp_sequencer *s = ud;
    cp_broker_id_connected(s->broker_id);
}

/* Sequencer thread, lock held on entry and on return: one identity step.
 * A new name for the lease: a leader under the previous one gives it up
 * first, so one leader at a time takes the broker's well-known session. */
static void identify(cp_sequencer *s)
{
    pthread_mutex_unlock(&s->lock);
    char lease[CP_BROKER_LEASE_MAX], shown[64];
    memcpy(lease, s->lease_name, sizeof lease);
    if (cp_broker_id_step(s->broker_id, s->bus, lease, shown, sizeof shown)) {
        if (s->leader_bus) {
            step_down(s, "the broker's identity changed");
            cp_redis_lease_release(s->redis, s->lease_name, s->token);
        }
        memcpy(s->lease_name, lease, sizeof lease);
        log_info("sequencer: the broker's identity is %s (lease %s:lease:%s)", shown, s->prefix,
                 s->lease_name);
        s->next_tick_ms = 0; /* elect now */
    }
    pthread_mutex_lock(&s->lock);
}

/* Under lock. */
static int identify_due(const cp_sequencer *s, int64_t now)
{
    if (!s->broker_id)
        return 0;
    int64_t at = cp_broker_id_due_ms(s->broker_id);
    return at >= 0 && at <= now;
}

/* Stopping, under lock. The leader may disconnect once Paho holds none
 * of its messages (none refused at a full queue lately: those are
 * acknowledged already and would be freed with the client), or when the
 * stop cannot wait longer. */
static int may_disconnect(const cp_sequencer *s, int64_t now)
{
    return (now - s->last_refusal_ms > CP_SEQ_SETTLE_MS && s->queue.count < s->queue.max_cap) ||
           now >= s->stop_deadline_ms;
}

/* Stopping, under lock, queue empty: nothing arrived or was refused for a
 * while (a shared-group member after its UNSUBACK gets only what was on
 * its way), or the stop cannot wait longer. */
static int settled(const cp_sequencer *s, int64_t now)
{
    return (now - s->last_refusal_ms > CP_SEQ_SETTLE_MS &&
            now - s->last_arrival_ms > CP_SEQ_SETTLE_MS) ||
           now >= s->stop_deadline_ms;
}

/* The election starts once the broker's identity names the lease. */
static int tick_due(const cp_sequencer *s)
{
    return s->election && *s->lease_name && cp_mono_ms() >= s->next_tick_ms;
}

/* Under lock: when the sequencer thread must wake without being told
 * (the next lease tick, an identity claim), or -1. */
static int64_t next_wake_ms(const cp_sequencer *s)
{
    int64_t at = s->election && *s->lease_name ? s->next_tick_ms : -1;
    int64_t id_at = s->broker_id ? cp_broker_id_due_ms(s->broker_id) : -1;
    if (id_at >= 0 && (at < 0 || id_at < at))
        at = id_at;
    return at;
}

static void *run(void *arg)
{
    cp_sequencer *s = arg;
    queued batch[CP_SEQ_BATCH];
    int64_t last_batch_us = 0;
    int lingered = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->queue.count && !s->stopping && !s->subscribe_due && !s->resync_due &&
               !tick_due(s) &&
               !identify_due(s, cp_mono_ms())) {
            int64_t wake = next_wake_ms(s);
            if (wake < 0) {
                pthread_cond_wait(&s->cond, &s->lock);
                continue;
            }
            struct timespec deadline;
            cp_realtime_after_ms(&deadline, (int)(wake - cp_mono_ms()) + 1);
            pthread_cond_timedwait(&s->cond, &s->lock, &deadline);
        }
        if (s->stopping && s->leader_bus && !s->queue.count && !may_disconnect(s, cp_mono_ms())) {
            struct timespec later;
            cp_realtime_after_ms(&later, CP_SEQ_SETTLE_MS / 4);
            pthread_cond_timedwait(&s->cond, &s->lock, &later);
            continue;
        }
        if (s->stopping && s->leader_bus && may_disconnect(s, cp_mono_ms())) {
            /* Nothing new arrives from now on; the broker queues for the
             * next leader. What this one took is worked off below. */
            pthread_mutex_unlock(&s->lock);
            step_down(s, "stopping");
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (identify_due(s, cp_mono_ms()) && !s->stopping) {
            identify(s);
            continue;
        }
        if (tick_due(s) && !s->stopping) {
            pthread_mutex_unlock(&s->lock);
            elect(s);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (s->subscribe_due && !s->stopping) {
            s->subscribe_due = 0;
            pthread_mutex_unlock(&s->lock);
            subscribe(s);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (s->resync_due) {
            s->resync_due = 0;
            pthread_mutex_unlock(&s->lock);
            announce_leader(s);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (!s->queue.count && s->stopping) {
            if (!s->leader_bus && settled(s, cp_mono_ms()))
                break;
            /* Messages Paho holds (refused at a full queue) or still on
             * their way: wait a little for them rather than free them. */
            struct timespec later;
            cp_realtime_after_ms(&later, CP_SEQ_SETTLE_MS / 4);
            pthread_cond_timedwait(&s->cond, &s->lock, &later);
            continue;
        }
        if (!s->stopping && !lingered && s->queue.count < CP_SEQ_LINGER_FILL &&
            cp_mono_us() - last_batch_us < CP_SEQ_BUSY_US) {
            lingered = 1;
            struct timespec later;
            cp_realtime_after_ms(&later, CP_SEQ_LINGER_MS);
            pthread_cond_timedwait(&s->cond, &s->lock, &later);
            continue;
        }
        lingered = 0;
        last_batch_us = cp_mono_us();
        size_t n = cp_ring_take(&s->queue, batch, CP_SEQ_BATCH);
        pthread_mutex_unlock(&s->lock);
        handle_batch(s, batch, n);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    /* Everything taken is published: the next leader may start now
     * rather than at the lease's expiry. */
    if (s->election && *s->lease_name && cp_redis_connected(s->redis))
        cp_redis_lease_release(s->redis, s->lease_name, s->token);
    return NULL;
}

static void destroy(cp_sequencer *s)
{
    if (!s)
        return;
    cp_bus_destroy(s->leader_bus);
    cp_bus_destroy(s->bus);
    cp_broker_id_free(s->broker_id);
    if (s->queue.count)
        log_error("sequencer: %zu messages taken but not sequenced at the stop (they came "
                  "after it stopped waiting)",
                  s->queue.count);
    for (size_t i = 0; s->queue.slots && i < s->queue.count; i++) {
        queued *q = cp_ring_at(&s->queue, i);
        if (q->op)
            q->op->done(q->op, 0, MQTTASYNC_DISCONNECTED);
        release(q);
    }
    cp_redis_close(s->redis);
    cp_ring_free(&s->queue);
    free(s->entries);
    free(s->valid);
    free(s->ops);
    free(s->appended);
    free(s->results);
    free(s->recorded);
    cp_buf_free(&s->buf);
    cp_dbatch_free(&s->dbatch);
    free(s->prefix);
    free(s->redis_url);
    free(s->client_id);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

cp_sequencer *cp_sequencer_start(const cp_sequencer_config *cfg)
{
    cp_sequencer *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    cp_buf_init(&s->buf);
    cp_dbatch_init(&s->dbatch);
    s->prefix = strdup(cfg->prefix);
    s->redis_url = strdup(cfg->redis_url ? cfg->redis_url : "");
    s->client_id = strdup(cfg->client_id);
    int queue_failed = cp_ring_init(&s->queue, sizeof(queued),
                                    cfg->queue_capacity ? cfg->queue_capacity : 8192,
                                    CP_SEQ_QUEUE_MAX) != 0;
    s->entries = calloc(CP_SEQ_BATCH, sizeof *s->entries);
    s->valid = calloc(CP_SEQ_BATCH, sizeof *s->valid);
    s->ops = calloc(CP_SEQ_BATCH, sizeof *s->ops);
    s->appended = calloc(CP_SEQ_BATCH, sizeof *s->appended);
    s->results = calloc(CP_SEQ_BATCH, sizeof *s->results);
    s->recorded = calloc(CP_SEQ_BATCH, sizeof *s->recorded);
    if (!s->prefix || !s->redis_url || !s->client_id || queue_failed || !s->entries || !s->valid ||
        !s->ops || !s->appended || !s->results || !s->recorded) {
        log_error("sequencer: out of memory");
        destroy(s);
        return NULL;
    }
    s->cfg.prefix = s->prefix;
    s->cfg.redis_url = s->redis_url;
    s->cfg.client_id = s->client_id;
    char client[CP_TOPIC_MAX], broadcast[CP_TOPIC_MAX];
    cp_topic_build(client, sizeof client, s->prefix, CP_TOPIC_CLIENT, "+");
    cp_topic_build(broadcast, sizeof broadcast, s->prefix, CP_TOPIC_BROADCAST, NULL);
    /* With Redis and a lease: one leader, plain subscriptions on its
     * well-known session. Without: every sequencer in the shared group. */
    s->election = *s->redis_url && cfg->lease_ms > 0 && !cfg->submit_only;
    if (s->election) {
        snprintf(s->filters[0], sizeof s->filters[0], "%s", client);
        snprintf(s->filters[1], sizeof s->filters[1], "%s", broadcast);
        snprintf(s->leader_client_id, sizeof s->leader_client_id, "%.64s-sequencer", s->prefix);
        char rnd[CP_MESSAGE_ID_LEN + 1];
        cp_message_id(rnd);
        snprintf(s->token, sizeof s->token, "%.40s/%s", s->client_id, rnd);
        /* Brokers joined by links do not carry the documented topics
         * across: each broker needs its own leader, under a lease named
         * after the broker's identity once it is known (identify()). */
        cp_broker_id_config bc = {.prefix = s->prefix, .url = cfg->bus.url, .wake = identity_news,
                                  .ud = s};
        if (!(s->broker_id = cp_broker_id_new(&bc))) {
            log_error("sequencer: out of memory");
            destroy(s);
            return NULL;
        }
    } else {
        snprintf(s->filters[0], sizeof s->filters[0], "$share/%s/%s", CP_SEQ_SHARE_GROUP,
                 client);
        snprintf(s->filters[1], sizeof s->filters[1], "$share/%s/%s", CP_SEQ_SHARE_GROUP,
                 broadcast);
    }

    if (*s->redis_url) {
        cp_redis_addr addr;
        int rc = cp_redis_parse_url(s->redis_url, &addr);
        if (rc != CP_REDIS_URL_OK) {
            log_error("sequencer: --redis: %s", cp_redis_url_strerror(rc));
            destroy(s);
            return NULL;
        }
        cp_redis_options ro = {.prefix = s->prefix,
                               .who = "sequencer",
                               .timeout_ms = 1000,
                               .backoff = 1,
                               .log_connects = 1};
        if (!(s->redis = cp_redis_open(&addr, &ro))) {
            destroy(s);
            return NULL;
        }
    }

    /* This bridge's own connection. With an election it only publishes,
     * and starts from a fresh session (an older version's shared
     * subscription on it must not feed this one). */
    cp_bus_options bo = {
        .client_id = s->client_id,
        .keepalive_s = 20,
        .max_buffered = 100000,
        .persistent = 1,
        .resume = !s->election,
        .session_expiry_s = cfg->session_expiry_s,
        .ud = s,
        .on_message = on_message,
        .on_connected = s->election       ? on_own_connected
                        : cfg->submit_only ? NULL
                                           : on_connected,
    };
    cp_bus_settings_apply(&cfg->bus, &bo);
    if (!(s->bus = cp_bus_create(&bo))) {
        destroy(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        log_error("sequencer: cannot start its thread");
        destroy(s);
        return NULL;
    }
    if (cp_bus_start(s->bus) != 0) {
        log_error("sequencer: cannot start its MQTT client");
        pthread_mutex_lock(&s->lock);
        s->stopping = 1;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        destroy(s);
        return NULL;
    }
    log_info("sequencer: %s, history %s (%ld messages, %ld s per stream), %s", s->client_id,
             s->redis ? "in Redis" : "off (no --redis): offsets are null", cfg->history_size,
             cfg->history_ttl_s,
             cfg->submit_only ? "its bridge's client pushes only"
             : s->election    ? "one leader elected through Redis"
                              : "shared subscription");
    return s;
}

void cp_sequencer_get_stats(cp_sequencer *s, cp_sequencer_stats *out)
{
    memset(out, 0, sizeof *out);
    out->sequenced = atomic_load(&s->sequenced);
    out->unsequenced = atomic_load(&s->unsequenced);
    out->duplicates = atomic_load(&s->duplicates);
    out->invalid = atomic_load(&s->invalid);
    out->too_big = atomic_load(&s->too_big);
    out->overflow = atomic_load(&s->overflow);
    out->redis_failures = atomic_load(&s->redis_failures);
    out->publish_failed = atomic_load(&s->publish_failed);
    out->publish_retries = atomic_load(&s->publish_retries);
    out->redis_retries = atomic_load(&s->redis_retries);
    out->batches = atomic_load(&s->batches);
    out->bus_batches = atomic_load(&s->bus_batches);
    out->resyncs = atomic_load(&s->resyncs);
    out->leader_changes = atomic_load(&s->leader_changes);
    out->conflicts = atomic_load(&s->conflicts);
    out->redelivered = atomic_load(&s->redelivered);
    out->lease_failures = atomic_load(&s->lease_failures);
    out->leader = !s->cfg.submit_only && (!s->election || atomic_load(&s->leading));
    out->election = s->election;
    pthread_mutex_lock(&s->lock);
    out->depth = s->queue.count;
    pthread_mutex_unlock(&s->lock);
    out->connected = cp_bus_is_connected(s->bus);
}

int cp_sequencer_submit(cp_sequencer *s, const char *topic, const void *payload, size_t len,
                        cp_bus_op *op)
{
    size_t tlen = strlen(topic);
    char *own = malloc(tlen + 1 + len);
    if (!own)
        return -1;
    memcpy(own, topic, tlen + 1);
    memcpy(own + tlen + 1, payload, len);
    pthread_mutex_lock(&s->lock);
    /* A bridge's client pushes: refused at the configured size (the client
     * is told and may retry), never growing the queue. */
    queued *q = s->queue.count < s->queue.base_cap && !s->stopping
                    ? cp_ring_push(&s->queue, NULL)
                    : NULL;
    if (!q) {
        pthread_mutex_unlock(&s->lock);
        atomic_fetch_add(&s->overflow, 1);
        free(own);
        return -1;
    }
    *q = (queued){.topic = own, .topic_len = tlen, .data = own + tlen + 1, .len = len, .op = op,
                  .own = own};
    if (s->queue.count == 1 || s->queue.count == CP_SEQ_LINGER_FILL)
        pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int cp_sequencer_ready(cp_sequencer *s)
{
    if (!cp_bus_is_connected(s->bus))
        return 0;
    if (s->cfg.submit_only)
        return 1;
    /* A standby is ready once an election round ended (the broker's
     * identity is known, a leader holds the lease or Redis is away): it
     * sequences its clients' pushes, and takes the documented topics when
     * the leader goes. */
    if (s->election && !atomic_load(&s->leading))
        return atomic_load(&s->elected_once);
    return atomic_load(&s->subscribed);
}

void cp_sequencer_render_metrics(cp_sequencer *s, cp_buf *out)
{
    cp_sequencer_stats st;
    cp_sequencer_get_stats(s, &st);
    cp_metric_family(out, "cloudpush_sequencer_messages_total", "counter",
                     "Service messages taken from the documented topics, by outcome: sequenced "
                     "(stored, republished with an offset), unsequenced (republished with "
                     "offset null: Redis down or not used), duplicate (messageId stored "
                     "before: republished with its stored offset), invalid and too_big (over "
                     "--max-message-bytes; dropped), publish_failed (the MQTT "
                     "client refused the republish).");
    const char *name = "cloudpush_sequencer_messages_total";
    cp_metric_sample(out, name, "result=\"sequenced\"", (double)st.sequenced);
    cp_metric_sample(out, name, "result=\"unsequenced\"", (double)st.unsequenced);
    cp_metric_sample(out, name, "result=\"duplicate\"", (double)st.duplicates);
    cp_metric_sample(out, name, "result=\"invalid\"", (double)st.invalid);
    cp_metric_sample(out, name, "result=\"too_big\"", (double)st.too_big);
    cp_metric_sample(out, name, "result=\"publish_failed\"", (double)st.publish_failed);
    cp_metric_simple(out, "cloudpush_sequencer_message_id_conflicts_total", "counter",
                     "Messages whose messageId another message (another sender or payload) used "
                     "on the stream before: delivered under a derived id (<id>~<fingerprint>).",
                     (double)st.conflicts);
    cp_metric_simple(out, "cloudpush_sequencer_redeliveries_total", "counter",
                     "Service messages the broker delivered again (DUP, after a leader crash) "
                     "that got the messageId recorded for their packet id at their first "
                     "delivery: a duplicate, not stored twice.",
                     (double)st.redelivered);
    cp_metric_simple(out, "cloudpush_sequencer_queue_depth", "gauge",
                     "Messages waiting for the sequencer's thread.", (double)st.depth);
    cp_metric_simple(out, "cloudpush_sequencer_queue_overflow_total", "counter",
                     "Messages refused: from the bus at the queue's limit (Paho delivers "
                     "them again later, slowly), a client's push when the usual size waits.",
                     (double)st.overflow);
    cp_metric_simple(out, "cloudpush_sequencer_redis_failures_total", "counter",
                     "Batches whose appends Redis did not take (down, refused).",
                     (double)st.redis_failures);
    cp_metric_simple(out, "cloudpush_sequencer_redis_retries_total", "counter",
                     "Pipelines lost half way and sent again at once on a new connection.",
                     (double)st.redis_retries);
    cp_metric_simple(out, "cloudpush_sequencer_publish_retries_total", "counter",
                     "Republishes the MQTT client refused and that were tried again.",
                     (double)st.publish_retries);
    cp_metric_simple(out, "cloudpush_sequencer_batches_total", "counter",
                     "Batches handled (one Redis pipeline each).", (double)st.batches);
    cp_metric_simple(out, "cloudpush_sequencer_bus_batches_total", "counter",
                     "Batches republished as one MQTT message on <prefix>/d/batch (--bus-batch).",
                     (double)st.bus_batches);
    cp_metric_simple(out, "cloudpush_sequencer_resyncs_total", "counter",
                     "Takeovers announced on <prefix>/d/resync (every bridge then reads its "
                     "streams from where it stands: what the previous leader stored but did "
                     "not publish).",
                     (double)st.resyncs);
    cp_metric_simple(out, "cloudpush_sequencer_leader", "gauge",
                     "1 while this sequencer takes the service messages of the documented "
                     "topics (the leader holding the Redis lease; every sequencer without "
                     "Redis), 0 while it stands by.",
                     (double)st.leader);
    cp_metric_simple(out, "cloudpush_sequencer_election", "gauge",
                     "1 when the sequencers elect one leader through Redis, 0 when they share "
                     "the documented topics (no --redis).",
                     (double)st.election);
    cp_metric_simple(out, "cloudpush_sequencer_leader_changes_total", "counter",
                     "Times this sequencer became the leader.", (double)st.leader_changes);
    cp_metric_simple(out, "cloudpush_sequencer_lease_failures_total", "counter",
                     "Lease renewals or attempts Redis did not answer (a leader leads on).",
                     (double)st.lease_failures);
    cp_metric_simple(out, "cloudpush_sequencer_mqtt_connected", "gauge",
                     "1 while the sequencer's MQTT connection is up.", (double)st.connected);
}

void cp_sequencer_stop(cp_sequencer *s, int timeout_ms)
{
    if (!s)
        return;
    /* No new messages for this sequencer: the others of the group get them
     * (with an election the thread steps down first, keeping the session
     * for the next leader). */
    if (!s->election && !s->cfg.submit_only && cp_bus_is_connected(s->bus))
        leave_group(s, timeout_ms / 2);
    /* Work off what was received, then end the session. */
    pthread_mutex_lock(&s->lock);
    s->stop_deadline_ms = cp_mono_ms() + timeout_ms / 2;
    s->stopping = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    cp_bus_stop(s->bus, timeout_ms / 2);
    destroy(s);
}
