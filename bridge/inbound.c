/* Client → bridge: what a session's text messages mean. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "ids.h"
#include "log.h"
#include "pubbatch.h"

/* One BUSINESS message fans out to several publishes; the sender is answered
 * once all of them are settled. The event travels back through the inbox. */
typedef struct {
    inbox_event ev;
    bridge *b;
    cp_pub_batch *batch;
    uint64_t session;
    char message_id[CP_ENVELOPE_ID_MAX + 1];
} business_done;

/* On a Paho thread: hand the outcome to the service thread. */
static void business_settled(cp_pub_batch *batch)
{
    business_done *d = batch->ud;
    inbox_push_event(&d->b->inbox, &d->ev);
}

static void send_error(bridge *b, session *s, const char *message_id, const char *text)
{
    session_send_envelope(b, s, CP_MSG_ERROR, "system", message_id, text);
}

/* Refused messages in a row before a session is closed for abuse. */
#define RATE_STRIKES_TO_CLOSE 100

void inbound_publish_done(bridge *b, inbox_event *ev)
{
    business_done *d = (business_done *)ev;
    session *s = NULL;
    HASH_FIND(hh, b->by_id, &d->session, sizeof d->session, s);
    if (s && s->state == SESSION_OPEN) {
        int failed = atomic_load(&d->batch->failed);
        if (failed == 0) {
            session_send_envelope(b, s, CP_MSG_BUSINESS_ACK, "system", d->message_id,
                                  "accepted by the bus");
        } else {
            char text[128];
            snprintf(text, sizeof text,
                     "the bus did not accept the message (%d of %zu publishes failed)", failed,
                     d->batch->count);
            send_error(b, s, d->message_id, text);
        }
    }
    cp_pub_batch_release(d->batch);
    free(d);
}

/* Checks `to` and returns the number of recipients, or -1 after answering
 * the client with an ERROR. */
static int check_recipients(bridge *b, session *s, const cp_envelope *env)
{
    const char *mid = env->message_id;
    if (!(env->fields & CP_F_TO) || cJSON_GetArraySize(env->to) == 0) {
        send_error(b, s, mid, "to must be a non-empty array of channel ids");
        return -1;
    }
    int n = cJSON_GetArraySize(env->to);
    if (n > b->cfg.max_recipients) {
        char text[96];
        snprintf(text, sizeof text, "too many recipients: at most %ld per message",
                 b->cfg.max_recipients);
        send_error(b, s, mid, text);
        return -1;
    }
    /* With client tokens, a client pushes only to what its token's `pub`
     * claim names (the original let anyone push to anyone). */
    int authorise = b->jwt && !b->cfg.client_push_any;
    const cJSON *el;
    cJSON_ArrayForEach(el, env->to)
    {
        if (!cp_channel_id_valid(el->valuestring, strlen(el->valuestring))) {
            send_error(b, s, mid,
                       "invalid channel id in to: 1-128 characters of [A-Za-z0-9._:@-] expected");
            return -1;
        }
        if (authorise && !cp_jwt_pub_allows(s->pub, s->pub_len, el->valuestring)) {
            b->n.push_forbidden++;
            char text[200];
            snprintf(text, sizeof text, "not allowed to push to %s: %s", el->valuestring,
                     s->pub_len ? "the token's pub claim does not name it"
                                : "the token has no pub claim");
            send_error(b, s, mid, text);
            return -1;
        }
    }
    return n;
}

static int seen_before(const cJSON *to, const cJSON *upto)
{
    for (const cJSON *el = to->child; el && el != upto; el = el->next)
        if (strcmp(el->valuestring, upto->valuestring) == 0)
            return 1;
    return 0;
}

static int within_rate(bridge *b, session *s, double cost);

/* The envelope's size as the sequencer publishes it (the size every bridge
 * checks against --max-message-bytes): with the largest offset and epoch
 * when history is on, "offset":null when off. Only written for envelopes
 * near the limit. */
static size_t published_size(const bridge *b, const cp_envelope *env, size_t written)
{
    if (written + 64 < (size_t)b->cfg.max_message_bytes)
        return written;
    cp_envelope e = *env;
    e.fields |= CP_F_OFFSET;
    e.offset = -1;
    if (b->cfg.redis_url && *b->cfg.redis_url) {
        e.fields |= CP_F_EPOCH;
        e.offset = CP_ENVELOPE_LARGEST_OFFSET;
        e.epoch = CP_ENVELOPE_LARGEST_EPOCH;
    }
    cp_buf tmp;
    cp_buf_init(&tmp);
    size_t n = cp_envelope_write(&tmp, &e, NULL) == 0 ? tmp.len : SIZE_MAX;
    cp_buf_free(&tmp);
    return n;
}

static void handle_business(bridge *b, session *s, cp_envelope *env)
{
    if (!(env->fields & CP_F_MSG)) {
        send_error(b, s, env->message_id, "msg must be a JSON object");
        return;
    }
    int n = check_recipients(b, s, env);
    if (n < 0 || !within_rate(b, s, (double)(n - 1)))
        return;

    char generated[CP_MESSAGE_ID_LEN + 1];
    cp_envelope_fill_defaults(env, CP_TRIGGER_WEBSOCKET, generated);
    size_t sid_len;
    const char *sid_ptr = session_id_of(s, &sid_len);
    char sid[256];
    snprintf(sid, sizeof sid, "%.*s", (int)sid_len, sid_ptr);

    /* What the client says about itself is replaced by what we know. */
    env->from = s->channel->name;
    env->session_id = sid;
    env->trigger = CP_TRIGGER_WEBSOCKET;
    env->msg_type = CP_MSG_BUSINESS;
    env->fields |= CP_F_FROM | CP_F_SESSION_ID | CP_F_TRIGGER | CP_F_MSG_TYPE;

    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    if (cp_envelope_write(sb, env, NULL) != 0) {
        send_error(b, s, env->message_id, "internal error: out of memory");
        return;
    }
    /* One size from entry to socket: what the bridges would drop is
     * refused here, before anything is published. */
    size_t published = published_size(b, env, sb->len);
    if (published > (size_t)b->cfg.max_message_bytes) {
        char text[160];
        snprintf(text, sizeof text,
                 "message too large: %zu bytes as an envelope, the limit is %ld "
                 "(--max-message-bytes)",
                 published, b->cfg.max_message_bytes);
        send_error(b, s, env->message_id, text);
        return;
    }

    /* Distinct recipients, plus the upstream topic. */
    size_t targets = 1;
    const cJSON *el;
    cJSON_ArrayForEach(el, env->to)
    {
        if (!seen_before(env->to, el))
            targets++;
    }
    business_done *d = calloc(1, sizeof *d);
    cp_pub_batch *batch = d ? cp_pub_batch_new(targets, business_settled, d) : NULL;
    if (!batch) {
        free(d);
        send_error(b, s, env->message_id, "internal error: out of memory");
        return;
    }
    d->ev.kind = EV_PUBLISHED;
    d->b = b;
    d->batch = batch;
    d->session = s->id;
    snprintf(d->message_id, sizeof d->message_id, "%s", env->message_id);

    char topic[CP_TOPIC_MAX];
    size_t slot = 0;
    cJSON_ArrayForEach(el, env->to)
    {
        if (seen_before(env->to, el))
            continue;
        cp_topic_build(topic, sizeof topic, b->cfg.prefix, CP_TOPIC_CLIENT, el->valuestring);
        /* With a sequencer here, straight to it: stored and numbered on
         * its thread, published on the delivery topic; without one, on
         * the documented topic for the other bridges' sequencers. */
        if (!b->sequencer)
            cp_pub_batch_publish(batch, slot, b->bus, topic, sb->data, sb->len);
        else if (cp_sequencer_submit(b->sequencer, topic, sb->data, sb->len,
                                     cp_pub_batch_slot_op(batch, slot)) != 0)
            cp_pub_batch_fail(batch, slot);
        slot++;
    }
    cp_topic_build(topic, sizeof topic, b->cfg.prefix, CP_TOPIC_UPSTREAM, s->channel->name);
    cp_pub_batch_publish(batch, slot, b->bus, topic, sb->data, sb->len);
}

static void handle_client_ack(bridge *b, session *s, const cp_envelope *env)
{
    if (!(env->fields & CP_F_MESSAGE_ID)) {
        send_error(b, s, NULL, "messageId is required in BUSINESS_ACK");
        return;
    }
    if (s->acks)
        acks_confirm(b, s, env->message_id); /* the receipt below still goes out */
    size_t sid_len;
    const char *sid_ptr = session_id_of(s, &sid_len);
    char sid[256];
    snprintf(sid, sizeof sid, "%.*s", (int)sid_len, sid_ptr);
    cp_envelope ack;
    memset(&ack, 0, sizeof ack);
    ack.fields = CP_F_FROM | CP_F_MESSAGE_ID | CP_F_MSG_TYPE | CP_F_SESSION_ID;
    ack.from = s->channel->name;
    ack.message_id = env->message_id;
    ack.msg_type = CP_MSG_BUSINESS_ACK;
    ack.session_id = sid;
    cp_envelope_fill_defaults(&ack, CP_TRIGGER_WEBSOCKET, NULL);
    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    if (cp_envelope_write(sb, &ack, NULL) != 0)
        return;
    char topic[CP_TOPIC_MAX];
    cp_topic_build(topic, sizeof topic, b->cfg.prefix, CP_TOPIC_ACK, s->channel->name);
    int rc = cp_bus_publish(b->bus, topic, sb->data, sb->len, 1, NULL);
    if (rc != 0)
        send_error(b, s, env->message_id, "the bus did not accept the acknowledgement");
}

/* Token bucket per session: --client-rate messages per second, bursts of
 * --client-burst; a message costs one, and a BUSINESS message one more per
 * further recipient (what it makes the bus carry). The first refused
 * message gets an ERROR; refusing on and on closes the session with 4008.
 * Returns 1 when the message may go on. */
static int within_rate(bridge *b, session *s, double cost)
{
    if (b->cfg.client_rate <= 0)
        return 1;
    if (cp_bucket_take_n(&s->rate, (double)b->cfg.client_rate, (double)b->cfg.client_burst,
                         cp_mono_ms(), cost)) {
        s->rate_strikes = 0;
        return 1;
    }
    b->n.rate_limited++;
    if (++s->rate_strikes == 1) {
        char text[96];
        snprintf(text, sizeof text,
                 "rate limit exceeded: at most %ld messages (recipients) per second",
                 b->cfg.client_rate);
        send_error(b, s, NULL, text);
    } else if (s->rate_strikes >= RATE_STRIKES_TO_CLOSE) {
        log_warn("session %.*s: closed for sending over the rate limit", (int)s->sid_len,
                 s->recipient + SESSION_ID_OFFSET);
        session_close(b, s, END_RATE_LIMIT, CLOSE_RATE_LIMIT);
    }
    return 0;
}

/* A HEARTBEAT may carry {"msg":{"token":"<JWT>"}} to extend an
 * authenticated session. Returns the text for the ack, or NULL after
 * answering with an ERROR. */
static const char *refresh_token(bridge *b, session *s, const cp_envelope *env)
{
    const cJSON *tok = env->msg ? cJSON_GetObjectItemCaseSensitive(env->msg, "token") : NULL;
    if (!b->jwt || !cJSON_IsString(tok))
        return NULL;
    cp_jwt_claims claims;
    const char *why = NULL;
    char text[128];
    if (cp_jwt_verify(b->jwt, tok->valuestring, strlen(tok->valuestring), cp_now_ms() / 1000,
                      &claims, &why) != 0) {
        snprintf(text, sizeof text, "token refresh refused: %s", why);
        send_error(b, s, env->message_id, text);
        return "";
    }
    if (strcmp(claims.sub, s->channel->name) != 0) {
        send_error(b, s, env->message_id, "token refresh refused: the token is for another "
                                          "channelId");
        return "";
    }
    s->token_exp = claims.exp;
    session_set_pub(s, claims.pub, claims.pub_len);
    b->n.token_refreshes++;
    return "token refreshed";
}

void inbound_handle_text(bridge *b, session *s, const char *data, size_t len)
{
    if (s->state != SESSION_OPEN)
        return;
    if (!within_rate(b, s, 1))
        return;
    char err[128];
    cp_envelope env;
    /* lws validated the text as UTF-8 (else 1007): not again here. */
    cJSON *root = cp_envelope_parse_flags(data, len, CP_PARSE_UTF8_CHECKED, &env, err, sizeof err);
    if (!root) {
        b->n.in[IN_INVALID]++;
        /* Still give the client its messageId back when one can be read,
         * so it can tell which message was refused. */
        cJSON *any = cp_json_parse_strict_flags(data, len, CP_PARSE_UTF8_CHECKED, NULL);
        const cJSON *mid = cJSON_GetObjectItemCaseSensitive(any, "messageId");
        int usable = cJSON_IsString(mid) && strlen(mid->valuestring) <= CP_ENVELOPE_ID_MAX;
        send_error(b, s, usable ? mid->valuestring : NULL, err);
        cJSON_Delete(any);
        return;
    }
    if (!(env.fields & CP_F_MSG_TYPE)) {
        b->n.in[IN_INVALID]++;
        send_error(b, s, env.message_id, "msgType is required");
        cJSON_Delete(root);
        return;
    }
    switch (env.msg_type) {
    case CP_MSG_HEARTBEAT: {
        b->n.in[IN_HEARTBEAT]++;
        char generated[CP_MESSAGE_ID_LEN + 1];
        const char *mid = env.message_id;
        if (!mid) {
            cp_message_id(generated);
            mid = generated;
        }
        const char *refreshed = refresh_token(b, s, &env);
        if (refreshed && !*refreshed)
            break; /* refused: the ERROR was sent */
        session_send_envelope(b, s, CP_MSG_HEARTBEAT_ACK, s->channel->name, mid, refreshed);
        break;
    }
    case CP_MSG_BUSINESS:
        b->n.in[IN_BUSINESS]++;
        handle_business(b, s, &env);
        break;
    case CP_MSG_BUSINESS_ACK:
        b->n.in[IN_BUSINESS_ACK]++;
        handle_client_ack(b, s, &env);
        break;
    default: {
        b->n.in[IN_INVALID]++;
        char text[80];
        snprintf(text, sizeof text, "msgType %d (%s) cannot be sent by a client", env.msg_type,
                 cp_msg_type_name(env.msg_type));
        send_error(b, s, env.message_id, text);
    }
    }
    cJSON_Delete(root);
}
