/* Channels: one MQTT subscription per channelId that has sessions here. */
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "log.h"

/* A subscribe in flight. It travels back through the inbox as an event, so
 * it starts with the event header and is one allocation. */
typedef struct {
    inbox_event ev;
    cp_bus_op op;
    bridge *b;
    uint64_t generation;
    int ok;
    int code;
    int broadcast;
    char name[];
} subscribe_op;

static void subscribe_finished(cp_bus_op *op, int ok, int code)
{
    subscribe_op *so = (subscribe_op *)((char *)op - offsetof(subscribe_op, op));
    so->ok = ok;
    so->code = code;
    inbox_push_event(&so->b->inbox, &so->ev);
}

static int topic_for(bridge *b, const char *name, int broadcast, char *topic, size_t cap)
{
    return cp_topic_build(topic, cap, b->cfg.prefix,
                          broadcast ? CP_TOPIC_BROADCAST : CP_TOPIC_CLIENT, name);
}

/* Starts a subscription; returns 0 when it was queued. The outcome comes
 * back as an EV_SUBSCRIBED event. */
static int subscribe(bridge *b, const char *name, uint64_t generation, int broadcast)
{
    size_t nlen = strlen(name);
    subscribe_op *so = calloc(1, sizeof *so + nlen + 1);
    if (!so)
        return -1;
    so->ev.kind = EV_SUBSCRIBED;
    so->op.done = subscribe_finished;
    so->b = b;
    so->generation = generation;
    so->broadcast = broadcast;
    memcpy(so->name, name, nlen + 1);
    char topic[CP_TOPIC_MAX];
    topic_for(b, name, broadcast, topic, sizeof topic);
    int rc = cp_bus_subscribe(b->bus, topic, 1, &so->op);
    if (rc != 0) {
        log_warn("subscribe %s refused: %s", topic, cp_bus_strerror(rc));
        free(so);
        return -1;
    }
    return 0;
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
        if (subscribe(b, ch->name, ch->generation, 0) != 0) {
            /* Attach first so the failure closes this session too. */
            s->channel = ch;
            s->chan_next = ch->sessions;
            ch->sessions = s;
            ch->session_count++;
            fail_channel(b, ch);
            return;
        }
    } else if (b->cfg.single_session) {
        for (session *old = ch->sessions; old; old = old->chan_next)
            session_close(b, old, END_REPLACED, CLOSE_REPLACED);
    }
    s->channel = ch;
    s->chan_prev = NULL;
    s->chan_next = ch->sessions;
    if (ch->sessions)
        ch->sessions->chan_prev = s;
    ch->sessions = s;
    ch->session_count++;
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
    if (s->chan_prev)
        s->chan_prev->chan_next = s->chan_next;
    else
        ch->sessions = s->chan_next;
    if (s->chan_next)
        s->chan_next->chan_prev = s->chan_prev;
    s->channel = NULL;
    if (--ch->session_count > 0)
        return;
    if (!b->bus_stopped) {
        char topic[CP_TOPIC_MAX];
        topic_for(b, ch->name, 0, topic, sizeof topic);
        int rc = cp_bus_unsubscribe(b->bus, topic, NULL);
        if (rc != 0)
            log_warn("unsubscribe %s refused: %s", topic, cp_bus_strerror(rc));
    }
    HASH_DELETE(hh, b->channels, ch);
    b->channel_count--;
    free(ch);
}

void channel_subscribe_done(bridge *b, inbox_event *ev)
{
    subscribe_op *so = (subscribe_op *)ev;
    if (so->broadcast) {
        if (!so->ok)
            log_error("subscribe to the broadcast topic failed: %s", cp_bus_strerror(so->code));
        free(so);
        return;
    }
    channel *ch = channel_find(b, so->name, strlen(so->name));
    if (!ch || ch->generation != so->generation) {
        free(so); /* the channel went away meanwhile */
        return;
    }
    if (!so->ok) {
        log_warn("subscribe for channel %s failed: %s", ch->name, cp_bus_strerror(so->code));
        fail_channel(b, ch);
    } else {
        ch->state = CHANNEL_SUBSCRIBED;
        for (session *s = ch->sessions; s; s = s->chan_next)
            session_open(b, s);
    }
    free(so);
}

void channels_resubscribe(bridge *b)
{
    if (subscribe(b, "", 0, 1) != 0)
        log_error("cannot subscribe to the broadcast topic");
    unsigned failed = 0;
    channel *ch, *tmp;
    HASH_ITER(hh, b->channels, ch, tmp)
    {
        if (subscribe(b, ch->name, ch->generation, 0) != 0) {
            fail_channel(b, ch);
            failed++;
        }
    }
    log_info("bus connected: subscriptions restored for %u channels (%u failed)",
             b->channel_count, failed);
}
