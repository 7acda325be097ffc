/* Bus → sessions: turns each message from the bus into one shared frame and
 * queues it on every recipient session. Runs on the service thread. */
#include <stdlib.h>

#include <utlist.h>

#include "bridge.h"
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

/* Validates a bus payload and builds the frame all recipients share. */
static out_frame *build_frame(bridge *b, const inbox_message *m)
{
    const char *topic = m->topic, *data = m->msg->payload;
    size_t topic_len = m->topic_len, len = (size_t)m->msg->payloadlen;
    if (len > (size_t)b->cfg.max_message_bytes) {
        /* One size from entry to socket: the HTTP API refuses such a push
         * (413); a service publishing one on the bus is told in the log. */
        b->n.bus_too_big++;
        log_warn("bus: dropped a %zu-byte message on %.*s: over --max-message-bytes (%ld)", len,
                 (int)topic_len, topic, b->cfg.max_message_bytes);
        return NULL;
    }
    char err[128];
    cp_envelope env;
    cJSON *root = cp_envelope_parse(data, len, &env, err, sizeof err);
    if (!root) {
        count_invalid(b, topic, topic_len, err);
        return NULL;
    }
    out_frame *f = NULL;
    if (!(env.fields & CP_F_MSG)) {
        count_invalid(b, topic, topic_len, "msg (a JSON object) is required");
        goto done;
    }
    if ((env.fields & CP_F_MSG_TYPE) && env.msg_type != CP_MSG_BUSINESS) {
        count_invalid(b, topic, topic_len, "only msgType 1 (BUSINESS) can be pushed");
        goto done;
    }
    /* Fill what a service publishing straight to the bus may leave out. */
    char mid[CP_MESSAGE_ID_LEN + 1];
    cp_envelope_fill_defaults(&env, CP_TRIGGER_MQTT, mid);
    env.msg_type = CP_MSG_BUSINESS;
    env.fields |= CP_F_MSG_TYPE;

    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    size_t split = 0;
    if (cp_envelope_write(sb, &env, &split) != 0) {
        log_error("bus: out of memory serialising a message");
        goto done;
    }
    f = frame_new(sb->data, sb->len, split, 1, CP_MSG_BUSINESS);
    if (f)
        f->bus_arrived_us = m->arrived_us;
    else
        log_error("bus: out of memory for a frame");
done:
    cJSON_Delete(root);
    return f;
}

void delivery_handle_bus_message(bridge *b, inbox_message *m)
{
    const char *channel_name;
    size_t channel_len;
    cp_topic_kind kind =
        cp_topic_parse(b->cfg.prefix, m->topic, m->topic_len, &channel_name, &channel_len);

    if (kind == CP_TOPIC_DELIVER_CLIENT) {
        b->n.bus_in_client++;
        channel *ch = channel_find(b, channel_name, channel_len);
        if (!ch || ch->state != CHANNEL_SUBSCRIBED) {
            /* The last session left while the message was on its way. */
            b->n.bus_no_session++;
            return;
        }
        out_frame *f = build_frame(b, m);
        if (!f)
            return;
        for (session *s = ch->sessions; s; s = s->chan_next) {
            if (s->state == SESSION_OPEN) {
                session_send(b, s, f);
                b->n.deliveries++;
            }
        }
        frame_unref(f);
    } else if (kind == CP_TOPIC_DELIVER_BROADCAST) {
        b->n.bus_in_broadcast++;
        out_frame *f = build_frame(b, m);
        if (!f)
            return;
        for (session *s = b->all; s; s = s->all_next) {
            if (s->state == SESSION_OPEN) {
                session_send(b, s, f);
                b->n.deliveries++;
            }
        }
        frame_unref(f);
    } else if (kind == CP_TOPIC_SESSION_CONTROL) {
        channel_session_control(b, channel_name, channel_len, m->msg->payload,
                                (size_t)m->msg->payloadlen);
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
