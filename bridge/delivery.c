/* Bus → sessions: turns each message from the bus into one shared frame and
 * queues it on every recipient session. Runs on the service thread. */
#include <stdio.h>
#include <stdlib.h>

#include <utlist.h>

#include "bridge.h"
#include "dbatch.h"
#include "ids.h"
#include "log.h"

/* Bus messages handled per wake-up before the loop serves the sockets
 * again: small enough that sessions are written to between batches (so a
 * burst reaches the kernel instead of piling up in the session queues),
 * large enough to keep per-wake overhead low. */
#define DRAIN_BATCH 32
#define DRAIN_MAX_MESSAGES 256
#define DRAIN_MAX_BYTES (64 * 1024)

static void count_invalid(bridge *b, const char *topic, size_t topic_len, const char *why)
{
    b->n.bus_invalid++;
    log_warn("bus: dropped invalid message on %.*s: %s", (int)topic_len, topic, why);
}

out_frame *delivery_build_frame(bridge *b, const char *data, size_t len, const char *origin,
                                size_t origin_len, int broadcast, const char *stored_epoch,
                                int64_t *offset, char *epoch)
{
    if (len > (size_t)b->cfg.max_message_bytes) {
        /* One size from entry to socket: the HTTP API refuses such a push
         * (413); a service publishing one on the bus is told in the log. */
        b->n.bus_too_big++;
        log_warn("bus: dropped a %zu-byte message on %.*s: over --max-message-bytes (%ld)", len,
                 (int)origin_len, origin, b->cfg.max_message_bytes);
        return NULL;
    }
    char err[128];
    cp_envelope env;
    cJSON *root = cp_envelope_parse(data, len, &env, err, sizeof err);
    if (!root) {
        count_invalid(b, origin, origin_len, err);
        return NULL;
    }
    out_frame *f = NULL;
    if (!(env.fields & CP_F_MSG)) {
        count_invalid(b, origin, origin_len, "msg (a JSON object) is required");
        goto done;
    }
    if ((env.fields & CP_F_MSG_TYPE) && env.msg_type != CP_MSG_BUSINESS) {
        count_invalid(b, origin, origin_len, "only msgType 1 (BUSINESS) can be pushed");
        goto done;
    }
    /* Fill what a service publishing straight to the bus may leave out. */
    char mid[CP_MESSAGE_ID_LEN + 1];
    cp_envelope_fill_defaults(&env, CP_TRIGGER_MQTT, mid);
    env.msg_type = CP_MSG_BUSINESS;
    env.fields |= CP_F_MSG_TYPE;
    if (stored_epoch) {
        /* From the history: its position is the stream entry's. */
        env.offset = *offset;
        env.epoch = stored_epoch;
        env.fields |= CP_F_OFFSET | CP_F_EPOCH;
    }
    *offset = (env.fields & CP_F_OFFSET) ? env.offset : -1;
    epoch[0] = '\0';
    if ((env.fields & CP_F_EPOCH) && env.epoch)
        snprintf(epoch, ORDER_EPOCH_MAX + 1, "%s", env.epoch);
    if (broadcast && *offset > 0)
        env.fields |= CP_F_BROADCAST;

    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    size_t split = 0;
    if (cp_envelope_write(sb, &env, &split) != 0) {
        log_error("bus: out of memory serialising a message");
        goto done;
    }
    f = frame_new(sb->data, sb->len, split, 1, CP_MSG_BUSINESS);
    if (!f)
        log_error("bus: out of memory for a frame");
done:
    cJSON_Delete(root);
    return f;
}

/* Validates one envelope from the bus and builds the frame all its
 * recipients share. */
static out_frame *build_frame(bridge *b, const char *data, size_t len, const char *origin,
                              size_t origin_len, int broadcast, int64_t arrived_us,
                              int64_t *offset, char *epoch)
{
    out_frame *f = delivery_build_frame(b, data, len, origin, origin_len, broadcast, NULL, offset,
                                        epoch);
    if (f)
        f->bus_arrived_us = arrived_us;
    return f;
}

/* The delivery topics carry sequenced envelopes (offset, epoch; null when
 * they could not be stored), put in order by streams.c. */
static void deliver_to_channel(bridge *b, channel *ch, const char *data, size_t len,
                               const char *origin, size_t origin_len, int64_t arrived_us)
{
    int64_t offset;
    char epoch[ORDER_EPOCH_MAX + 1];
    out_frame *f = build_frame(b, data, len, origin, origin_len, 0, arrived_us, &offset, epoch);
    if (f)
        streams_offer(b, ch, f, offset, epoch);
}

static void deliver_broadcast(bridge *b, const char *data, size_t len, const char *origin,
                              size_t origin_len, int64_t arrived_us)
{
    int64_t offset;
    char epoch[ORDER_EPOCH_MAX + 1];
    out_frame *f = build_frame(b, data, len, origin, origin_len, 1, arrived_us, &offset, epoch);
    if (f)
        streams_offer(b, NULL, f, offset, epoch);
}

static channel *subscribed_channel(bridge *b, const char *name, size_t len)
{
    channel *ch = channel_find(b, name, len);
    return ch && ch->state == CHANNEL_SUBSCRIBED ? ch : NULL;
}

/* Every worker of every bridge gets every batch: it keeps the items of the
 * channels subscribed here (a hash lookup each) and skips the rest. A
 * channel still subscribing skips its items too, as it would not have got
 * them on its own topic yet: its greeting, read after the subscription,
 * covers them. */
static void deliver_batch(bridge *b, const inbox_message *m)
{
    const char *data = m->msg->payload;
    size_t len = (size_t)m->msg->payloadlen, at = 0;
    cp_dbatch_item it;
    int rc;
    b->n.bus_in_batch++;
    while ((rc = cp_dbatch_next(data, len, &at, &it)) == 1) {
        b->n.batch_items++;
        if (it.channel_len == 1 && it.channel[0] == '*') {
            deliver_broadcast(b, it.envelope, it.len, m->topic, m->topic_len, m->arrived_us);
            continue;
        }
        channel *ch = subscribed_channel(b, it.channel, it.channel_len);
        if (!ch) {
            b->n.batch_items_elsewhere++;
            continue;
        }
        deliver_to_channel(b, ch, it.envelope, it.len, m->topic, m->topic_len, m->arrived_us);
    }
    if (rc < 0)
        count_invalid(b, m->topic, m->topic_len, "malformed delivery batch (the rest dropped)");
}

void delivery_handle_bus_message(bridge *b, inbox_message *m)
{
    const char *channel_name;
    size_t channel_len;
    cp_topic_kind kind =
        cp_topic_parse(b->cfg.prefix, m->topic, m->topic_len, &channel_name, &channel_len);
    const char *data = m->msg->payload;
    size_t len = (size_t)m->msg->payloadlen;

    if (kind == CP_TOPIC_DELIVER_CLIENT) {
        b->n.bus_in_client++;
        channel *ch = subscribed_channel(b, channel_name, channel_len);
        if (!ch) {
            /* The last session left while the message was on its way. */
            b->n.bus_no_session++;
            return;
        }
        deliver_to_channel(b, ch, data, len, m->topic, m->topic_len, m->arrived_us);
    } else if (kind == CP_TOPIC_DELIVER_BROADCAST) {
        b->n.bus_in_broadcast++;
        deliver_broadcast(b, data, len, m->topic, m->topic_len, m->arrived_us);
    } else if (kind == CP_TOPIC_DELIVER_BATCH) {
        deliver_batch(b, m);
    } else if (kind == CP_TOPIC_DELIVER_RESYNC) {
        b->n.bus_in_resync++;
        log_info("a sequencer leader took over (%.*s): reading %u channels and the broadcast "
                 "stream from where they stand",
                 (int)(len > 200 ? 200 : len), data, b->channel_count);
        streams_resync(b);
    } else if (kind == CP_TOPIC_SESSION_CONTROL) {
        channel_session_control(b, channel_name, channel_len, data, len);
    } else {
        count_invalid(b, m->topic, m->topic_len, "not a delivery topic");
    }
}

void delivery_handle_events(bridge *b)
{
    inbox_event *ev, *next;
    /* Safe iteration: every handler frees its event. */
    LL_FOREACH_SAFE(inbox_take_events(&b->inbox), ev, next)
    {
        switch (ev->kind) {
        case EV_SUBSCRIBED:
            channel_subscribe_done(b, ev);
            break;
        case EV_PUBLISHED:
            inbound_publish_done(b, ev);
            break;
        case EV_HISTORY:
            streams_history_done(b, (history_req *)ev);
            break;
        default:
            log_error("unknown inbox event %d", ev->kind);
            free(ev);
        }
    }
}

void delivery_drain(bridge *b)
{
    if (atomic_exchange(&b->bus_connected_event, 0))
        channels_resubscribe(b);
    delivery_handle_events(b);
    streams_tick(b, cp_mono_ms());

    inbox_message batch[DRAIN_BATCH];
    size_t handled = 0, bytes = 0;
    while (handled < DRAIN_MAX_MESSAGES && bytes < DRAIN_MAX_BYTES) {
        size_t n = inbox_take_messages(&b->inbox, batch, DRAIN_BATCH);
        if (n == 0)
            return;
        for (size_t i = 0; i < n; i++) {
            bytes += (size_t)batch[i].msg->payloadlen;
            delivery_handle_bus_message(b, &batch[i]);
            MQTTAsync_freeMessage(&batch[i].msg);
            MQTTAsync_free(batch[i].topic);
        }
        handled += n;
    }
    /* More is waiting: come back after serving the sockets. */
    lws_cancel_service(b->ctx);
}
