/* Channels: one MQTT subscription per channelId that has sessions here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utlist.h>

#include "bridge.h"
#include "log.h"

/* Subscriptions are batched: the channels that need one during a loop
 * iteration go out together in one SUBSCRIBE, flushed before the loop waits
 * (or when SUBSCRIBE_BATCH_MAX are pending). In a connection burst that is
 * one packet, one SUBACK and one completion hand-off per batch instead of
 * per channel. A batch in flight travels back through the inbox as one
 * event, so it starts with the event header and is one allocation.
 *
 * Unsubscriptions are batched the same way, and always go out before the
 * pending subscriptions: a channel that left and came back within one pass
 * is unsubscribed, then subscribed again, in that order on the wire. A
 * channel that leaves before its first SUBSCRIBE went out is taken out of
 * the batch and needs no UNSUBSCRIBE (before, the UNSUBSCRIBE went out at
 * once and the SUBSCRIBE after it, which left the broker a subscription
 * for a channel no session held). */
typedef struct {
    inbox_event ev;
    cp_bus_op op;
    bridge *b;
    int ok;
    int code;
    int n;
    int *granted; /* n granted QoS, after the entries */
    subscribe_entry e[];
} subscribe_batch;

static void subscribe_finished(cp_bus_op *op, int ok, int code)
{
    subscribe_batch *sb = (subscribe_batch *)((char *)op - offsetof(subscribe_batch, op));
    sb->ok = ok;
    sb->code = code;
    inbox_push_event(&sb->b->inbox, &sb->ev);
}

static int topic_for(bridge *b, const char *name, int what, char *topic, size_t cap)
{
    if (what == SUB_SESSION_CONTROL)
        return cp_topic_build(topic, cap, b->cfg.prefix, CP_TOPIC_SESSION_CONTROL, "+");
    /* The delivery topics: sequenced envelopes only (common/sequencer.h). */
    if (what == SUB_BROADCAST)
        return cp_topic_build(topic, cap, b->cfg.prefix, CP_TOPIC_DELIVER_BROADCAST, NULL);
    if (what == SUB_BATCH)
        return cp_topic_build(topic, cap, b->cfg.prefix, CP_TOPIC_DELIVER_BATCH, NULL);
    if (what == SUB_RESYNC)
        return cp_topic_build(topic, cap, b->cfg.prefix, CP_TOPIC_DELIVER_RESYNC, NULL);
    return cp_topic_build(topic, cap, b->cfg.prefix, CP_TOPIC_DELIVER_CLIENT, name);
}

static void fail_channel(bridge *b, channel *ch);

/* The channel entry a subscription was made for, if it still exists. */
static channel *entry_channel(bridge *b, const subscribe_entry *e)
{
    channel *ch = channel_find(b, e->name, strlen(e->name));
    return ch && ch->generation == e->generation ? ch : NULL;
}

static void entry_failed(bridge *b, const subscribe_entry *e, int code)
{
    char topic[CP_TOPIC_MAX];
    topic_for(b, e->name, e->what, topic, sizeof topic);
    if (e->what != SUB_CHANNEL) {
        log_error("subscribe to the shared topic %s failed: %s%s", topic, cp_bus_strerror(code),
                  e->what == SUB_RESYNC ? " (after a sequencer takeover, what the previous "
                                          "leader stored but did not publish waits for its "
                                          "stream's next message; mosquitto/acl)"
                                        : "");
        return;
    }
    log_warn("subscribe %s failed: %s", topic, cp_bus_strerror(code));
    channel *ch = entry_channel(b, e);
    if (ch)
        fail_channel(b, ch);
}

static void flush_unsubscribes(bridge *b)
{
    int n = b->unsub_pending_n;
    if (n == 0)
        return;
    b->unsub_pending_n = 0;
    if (b->bus_stopped)
        return;
    char topics[SUBSCRIBE_BATCH_MAX][CP_TOPIC_MAX];
    char *tp[SUBSCRIBE_BATCH_MAX] = {0};
    for (int i = 0; i < n; i++) {
        topic_for(b, b->unsub_pending[i], SUB_CHANNEL, topics[i], sizeof topics[i]);
        tp[i] = topics[i];
    }
    /* Paho copies the topics. A refusal leaves the subscriptions on the
     * broker: their messages are counted as bus_no_session and dropped. */
    int rc = cp_bus_unsubscribe_many(b->bus, tp, n, NULL);
    if (rc != 0)
        log_warn("unsubscribe of %d channels (the first %s) refused: %s", n, tp[0],
                 cp_bus_strerror(rc));
    else
        b->n.unsubscribe_batches++;
}

void channels_flush_subscribes(bridge *b)
{
    flush_unsubscribes(b); /* first: see the top of this file */
    int pending = b->sub_pending_n;
    if (pending == 0)
        return;
    b->sub_pending_n = 0;
    if (b->bus_stopped)
        return;
    int n = 0;
    for (int i = 0; i < pending; i++)
        n += b->sub_pending[i].what != SUB_CANCELLED;
    if (n == 0)
        return;
    subscribe_batch *sb = malloc(sizeof *sb + (size_t)n * (sizeof(subscribe_entry) + sizeof(int)));
    if (!sb) {
        for (int i = 0; i < pending; i++)
            if (b->sub_pending[i].what != SUB_CANCELLED)
                entry_failed(b, &b->sub_pending[i], MQTTASYNC_FAILURE);
        return;
    }
    memset(sb, 0, sizeof *sb);
    sb->ev.kind = EV_SUBSCRIBED;
    sb->op.done = subscribe_finished;
    sb->b = b;
    sb->n = n;
    sb->granted = (int *)(sb->e + n);
    char topics[SUBSCRIBE_BATCH_MAX][CP_TOPIC_MAX];
    char *tp[SUBSCRIBE_BATCH_MAX] = {0};
    for (int i = 0, k = 0; i < pending; i++) {
        const subscribe_entry *e = &b->sub_pending[i];
        if (e->what == SUB_CANCELLED)
            continue;
        sb->e[k] = *e;
        topic_for(b, e->name, e->what, topics[k], sizeof topics[k]);
        tp[k] = topics[k];
        k++;
    }
    int rc = cp_bus_subscribe_many(b->bus, tp, n, 1, &sb->op, sb->granted);
    if (rc != 0) {
        for (int i = 0; i < n; i++)
            entry_failed(b, &sb->e[i], rc);
        free(sb);
        return;
    }
    for (int i = 0; i < n; i++) {
        channel *ch = sb->e[i].what == SUB_CHANNEL ? entry_channel(b, &sb->e[i]) : NULL;
        if (ch)
            ch->sub_sent = 1;
    }
    b->n.subscribe_batches++;
}

/* Queues a subscription; the outcome comes back as an EV_SUBSCRIBED event
 * (or as a failure at the flush). Returns its slot in sub_pending. */
static int subscribe(bridge *b, const char *name, uint64_t generation, int what)
{
    if (b->sub_pending_n == SUBSCRIBE_BATCH_MAX)
        channels_flush_subscribes(b);
    int slot = b->sub_pending_n++;
    subscribe_entry *e = &b->sub_pending[slot];
    e->generation = generation;
    e->what = what;
    snprintf(e->name, sizeof e->name, "%s", name);
    return slot;
}

static void subscribe_channel(bridge *b, channel *ch)
{
    ch->sub_slot = subscribe(b, ch->name, ch->generation, SUB_CHANNEL);
}

/* The channel leaves: its subscription still waiting in the batch is taken
 * out, and one that went out is queued for the next UNSUBSCRIBE. */
static void unsubscribe_channel(bridge *b, channel *ch)
{
    if (ch->sub_slot < b->sub_pending_n) {
        subscribe_entry *e = &b->sub_pending[ch->sub_slot];
        if (e->what == SUB_CHANNEL && e->generation == ch->generation)
            e->what = SUB_CANCELLED;
    }
    if (!ch->sub_sent || b->bus_stopped)
        return;
    if (b->unsub_pending_n == SUBSCRIBE_BATCH_MAX)
        flush_unsubscribes(b);
    memcpy(b->unsub_pending[b->unsub_pending_n++], ch->name, strlen(ch->name) + 1);
}

channel *channel_find(bridge *b, const char *name, size_t len)
{
    channel *ch = NULL;
    HASH_FIND(hh, b->channels, name, len, ch);
    return ch;
}

static void fail_channel(bridge *b, channel *ch)
{
    b->n.subscribe_failed++;
    for (session *s = ch->sessions; s; s = s->chan_next)
        session_close(b, s, END_SUBSCRIBE_FAILED, CLOSE_SUBSCRIBE_FAILED);
}

void channel_attach(bridge *b, session *s, const char *channel_id)
{
    size_t len = strlen(channel_id);
    channel *ch = channel_find(b, channel_id, len);
    if (!ch) {
        ch = calloc(1, sizeof *ch + len + 1);
        if (!ch) {
            session_close(b, s, END_ERROR, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
            return;
        }
        memcpy(ch->name, channel_id, len + 1);
        ch->state = CHANNEL_SUBSCRIBING;
        ch->generation = ++b->next_generation;
        HASH_ADD(hh, b->channels, name, len, ch);
        b->channel_count++;
        subscribe_channel(b, ch);
    } else if (b->cfg.single_session) {
        for (session *old = ch->sessions; old; old = old->chan_next)
            session_close(b, old, END_REPLACED, CLOSE_REPLACED);
    }
    s->channel = ch;
    DL_PREPEND2(ch->sessions, s, chan_prev, chan_next);
    ch->session_count++;
    channel_announce_session(b, s); /* older sessions on other bridges */
    if (ch->state == CHANNEL_SUBSCRIBED)
        session_open(b, s);
    else
        lws_rx_flow_control(s->wsi, 0); /* nothing is read before the greeting */
}

void channel_detach(bridge *b, session *s)
{
    channel *ch = s->channel;
    if (!ch)
        return;
    DL_DELETE2(ch->sessions, s, chan_prev, chan_next);
    s->channel = NULL;
    if (--ch->session_count > 0)
        return;
    unsubscribe_channel(b, ch);
    HASH_DELETE(hh, b->channels, ch);
    b->channel_count--;
    streams_channel_gone(b, ch);
    free(ch);
}

void channel_subscribe_done(bridge *b, inbox_event *ev)
{
    subscribe_batch *sb = (subscribe_batch *)ev;
    for (int i = 0; i < sb->n; i++) {
        const subscribe_entry *e = &sb->e[i];
        if (!sb->ok || sb->granted[i] >= 0x80) { /* v5: any reason code from 0x80 */
            entry_failed(b, e, sb->ok ? sb->granted[i] : sb->code);
            continue;
        }
        if (e->what == SUB_BROADCAST) {
            streams_catch_up(b, NULL); /* after a reconnect: what the broker lost */
            continue;
        }
        channel *ch = e->what != SUB_CHANNEL ? NULL : entry_channel(b, e);
        if (ch && ch->state == CHANNEL_SUBSCRIBED) {
            streams_catch_up(b, ch); /* resubscribed after a reconnect */
            continue;
        }
        if (!ch)
            continue; /* a shared topic, or the channel went away meanwhile */
        ch->state = CHANNEL_SUBSCRIBED;
        for (session *s = ch->sessions; s; s = s->chan_next)
            session_open(b, s);
    }
    free(sb);
}

void channels_resubscribe(bridge *b)
{
    subscribe(b, "", 0, SUB_BROADCAST);
    /* Before the channels, in the same SUBSCRIBE: a channel's catch-up
     * (after its SUBACK) then never misses what came in a batch. */
    subscribe(b, "", 0, SUB_BATCH);
    if (*b->cfg.redis_url) /* a history to read from */
        subscribe(b, "", 0, SUB_RESYNC);
    if (b->cfg.single_session)
        subscribe(b, "", 0, SUB_SESSION_CONTROL);
    channel *ch, *tmp;
    HASH_ITER(hh, b->channels, ch, tmp)
    subscribe_channel(b, ch);
    log_info("bus connected: resubscribing %u channels", b->channel_count);
}

/* --single-session across bridges. The bridge that accepts a session
 * publishes {"sessionId":..., "at":<ms>} on <prefix>/control/session/<id>;
 * every bridge (itself included) closes its sessions of that channel
 * accepted before `at`, except the one named. The timestamps order the
 * sessions, so a control message that arrives after a still newer session
 * was accepted here does not close that one. */
void channel_announce_session(bridge *b, session *s)
{
    if (!b->cfg.single_session || b->bus_stopped || !s->channel)
        return;
    char topic[CP_TOPIC_MAX];
    if (cp_topic_build(topic, sizeof topic, b->cfg.prefix, CP_TOPIC_SESSION_CONTROL,
                       s->channel->name) < 0)
        return;
    size_t sid_len;
    const char *sid = session_id_of(s, &sid_len);
    char payload[BRIDGE_ID_MAX + CP_CHANNEL_ID_MAX + 128];
    int n = snprintf(payload, sizeof payload, "{\"sessionId\":\"%.*s\",\"at\":%lld}",
                     (int)sid_len, sid, (long long)s->created_ms);
    if (n < 0 || (size_t)n >= sizeof payload)
        return;
    int rc = cp_bus_publish(b->bus, topic, payload, (size_t)n, 1, NULL);
    if (rc != 0)
        log_warn("single session: cannot announce %.*s on %s: %s", (int)sid_len, sid, topic,
                 cp_bus_strerror(rc));
}

void channel_session_control(bridge *b, const char *channel_id, size_t channel_len,
                             const char *payload, size_t len)
{
    if (!b->cfg.single_session)
        return;
    channel *ch = channel_find(b, channel_id, channel_len);
    if (!ch)
        return; /* no session of that channel here */
    enum { CONTROL_MAX = 512 };
    cJSON *root = len <= CONTROL_MAX ? cJSON_ParseWithLength(payload, len) : NULL;
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(root, "sessionId");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(root, "at");
    if (!cJSON_IsString(sid) || !cJSON_IsNumber(at)) {
        b->n.bus_invalid++;
        log_warn("bus: dropped invalid session control message for %.*s", (int)channel_len,
                 channel_id);
        cJSON_Delete(root);
        return;
    }
    size_t want_len = strlen(sid->valuestring);
    for (session *s = ch->sessions, *next; s; s = next) {
        next = s->chan_next;
        size_t len_s;
        const char *id = session_id_of(s, &len_s);
        if (s->state == SESSION_CLOSING || s->created_ms > (int64_t)at->valuedouble ||
            (len_s == want_len && memcmp(id, sid->valuestring, len_s) == 0))
            continue;
        b->n.replaced_remote++;
        log_debug("single session: %.*s replaced by %s", (int)len_s, id, sid->valuestring);
        session_close(b, s, END_REPLACED, CLOSE_REPLACED);
    }
    cJSON_Delete(root);
}
