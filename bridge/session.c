/* WebSocket sessions: creation, building their own frames, liveness,
 * close. Writing to the socket is writer.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utlist.h>

#include "bridge.h"
#include "ids.h"
#include "log.h"

const char *session_id_of(const session *s, size_t *len)
{
    *len = s->sid_len;
    return s->recipient + SESSION_ID_OFFSET;
}

static int64_t check_interval_ms(const bridge *b)
{
    int64_t iv = b->cfg.idle_timeout_s * 1000 / 4;
    if (iv < 250)
        iv = 250;
    if (iv > 5000)
        iv = 5000;
    return iv;
}

session *session_create(bridge *b, struct lws *wsi, const char *channel_id)
{
    session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    char sid[BRIDGE_ID_MAX + CP_CHANNEL_ID_MAX + 48];
    uint64_t seq = b->next_session_seq++;
    int sid_len = cp_session_id_format(sid, sizeof sid, b->cfg.bridge_id, channel_id,
                                       time(NULL), seq);
    if (sid_len < 0) {
        free(s);
        return NULL;
    }
    /* Bridge ids, channel ids and session ids are restricted to characters
     * that need no JSON escaping, so the session id starts at a fixed
     * offset (SESSION_ID_OFFSET) and is sid_len bytes long. */
    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    cp_envelope_write_recipient(sb, sid, channel_id);
    s->recipient = sb->failed ? NULL : malloc(sb->len + 1);
    if (!s->recipient) {
        free(s);
        return NULL;
    }
    memcpy(s->recipient, sb->data, sb->len);
    s->recipient[sb->len] = '\0';
    s->recipient_len = (uint16_t)sb->len;
    s->sid_len = (uint16_t)sid_len;
    s->wsi = wsi;
    s->id = seq;
    s->state = SESSION_PENDING;
    s->last_active_ms = cp_mono_ms();
    s->created_ms = cp_now_ms();
    s->check_at_ms = s->last_active_ms + check_interval_ms(b);
    cp_bucket_init(&s->rate, (double)b->cfg.client_burst, s->last_active_ms);
    DL_APPEND2(b->check_head, s, check_prev, check_next);
    DL_PREPEND2(b->all, s, all_prev, all_next);
    HASH_ADD(hh, b->by_id, id, sizeof s->id, s);
    b->session_count++;
    registry_set_connections(b->registry, b->session_count);
    b->n.accepted++;

    channel_attach(b, s, channel_id);
    return s;
}

void session_open(bridge *b, session *s)
{
    if (s->state != SESSION_PENDING)
        return;
    s->state = SESSION_OPEN;
    /* The CONNECTION carries the streams' positions (and the recovery):
     * it goes out once the history answered; live messages wait. */
    streams_greet(b, s);
}

void session_greeted(bridge *b, session *s)
{
    /* The client's frames were held back until the greeting was queued. */
    lws_rx_flow_control(s->wsi, 1);
    s->announced = 1;
    s->since_ms = cp_now_ms();
    presence_publish(b, s, 1, END_CLIENT);
    registry_session_up(b->registry, s->channel->name, s->recipient + SESSION_ID_OFFSET,
                        s->sid_len, s->since_ms);
}

void session_destroy(bridge *b, session *s)
{
    b->n.ends[s->end]++;
    if (s->announced) {
        presence_publish(b, s, 0, (end_reason)s->end);
        registry_session_down(b->registry, s->channel->name, s->recipient + SESSION_ID_OFFSET,
                              s->sid_len);
    }
    streams_session_gone(b, s);
    channel_detach(b, s);
    DL_DELETE2(b->check_head, s, check_prev, check_next);
    flush_list_remove(b, s);
    DL_DELETE2(b->all, s, all_prev, all_next);
    HASH_DELETE(hh, b->by_id, s);
    b->session_count--;
    if (s->transport == TRANSPORT_SSE)
        b->sse_sessions--;
    registry_set_connections(b->registry, b->session_count);
    frame_queue_clear(&s->queue);
    acks_disable(b, s);
    iplimit_detach(b, s->ip);
    free(s->rx);
    free(s->recipient);
    free(s->pub);
    free(s);
}

void session_set_pub(session *s, const char *pub, size_t pub_len)
{
    free(s->pub);
    s->pub = NULL;
    s->pub_len = 0;
    if (pub_len == 0)
        return;
    s->pub = malloc(pub_len);
    if (!s->pub) {
        log_error("out of memory keeping a token's pub claim: the client cannot push");
        return;
    }
    memcpy(s->pub, pub, pub_len);
    s->pub_len = pub_len;
}

void session_touch(bridge *b, session *s)
{
    (void)b;
    s->last_active_ms = cp_mono_ms();
}

void session_close(bridge *b, session *s, end_reason why, uint16_t code)
{
    (void)b;
    if (s->state == SESSION_CLOSING)
        return;
    s->state = SESSION_CLOSING;
    s->end = (uint8_t)why;
    s->close_code = code;
    /* Nothing queued will be sent any more: free it now, not at close. */
    frame_queue_clear(&s->queue);
    session_want_write(s);
    /* A peer that does not read never makes the socket writable: make sure
     * the connection still goes away. */
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, 3);
}

void session_send_built(bridge *b, session *s, const cp_envelope *env, int with_to)
{
    cp_buf *sb = &b->scratch;
    cp_buf_reset(sb);
    size_t split = 0;
    if (cp_envelope_write(sb, env, &split) != 0) {
        log_error("out of memory building a frame");
        return;
    }
    /* Insert the session id (and to) into the gap, giving a frame that is
     * complete on its own. */
    size_t frag_len = with_to ? s->recipient_len : (size_t)SESSION_ID_OFFSET + s->sid_len + 1;
    size_t total = sb->len + frag_len;
    if (cp_buf_reserve(sb, frag_len) != 0)
        return;
    memmove(sb->data + split + frag_len, sb->data + split, sb->len - split);
    memcpy(sb->data + split, s->recipient, frag_len);
    sb->len = total;
    out_frame *f = frame_new(sb->data, sb->len, sb->len, 0, env->msg_type);
    if (!f) {
        log_error("out of memory building a frame");
        return;
    }
    session_send(b, s, f);
    frame_unref(f);
}

void session_send_envelope(bridge *b, session *s, int msg_type, const char *from,
                           const char *message_id, const char *result_msg)
{
    cp_envelope env;
    memset(&env, 0, sizeof env);
    env.fields = CP_F_MSG_TYPE;
    env.msg_type = msg_type;
    if (from) {
        env.from = from;
        env.fields |= CP_F_FROM;
    }
    if (message_id) {
        env.message_id = message_id;
        env.fields |= CP_F_MESSAGE_ID;
    }
    if (result_msg) {
        env.result_msg = result_msg;
        env.fields |= CP_F_RESULT_MSG;
    }
    cp_envelope_fill_defaults(&env, CP_TRIGGER_WEBSOCKET, NULL);
    session_send_built(b, s, &env, 0);
}

/* When an idle session is pinged: between a quarter and half of the idle
 * timeout, spread by session id. Sessions that connected together (a burst,
 * a reconnect storm) are checked together; pinging them all at half the
 * timeout wrote thousands of pings in one pass and held up deliveries
 * (~30 ms for 5 000 sessions). */
static int64_t ping_after(const session *s, int64_t idle_ms)
{
    uint64_t spread = (uint64_t)(idle_ms / 4) + 1;
    return idle_ms / 2 - (int64_t)((s->id * 2654435761u) % spread);
}

void sessions_check_liveness(bridge *b, int64_t now)
{
    int64_t idle_ms = b->cfg.idle_timeout_s * 1000;
    int64_t iv = check_interval_ms(b);
    /* The list is ordered by check time because every session is re-queued
     * at the tail with the same interval: each tick only looks at sessions
     * that are due. */
    while (b->check_head && b->check_head->check_at_ms <= now) {
        session *s = b->check_head;
        DL_DELETE2(b->check_head, s, check_prev, check_next);
        s->check_at_ms = now + iv;
        DL_APPEND2(b->check_head, s, check_prev, check_next);
        if (s->state == SESSION_CLOSING)
            continue;
        if (s->transport == TRANSPORT_SSE && sse_peer_gone(s)) {
            session_close(b, s, END_CLIENT, 0);
            continue;
        }
        if (s->token_exp && cp_now_ms() / 1000 > s->token_exp + b->cfg.jwt_leeway_s) {
            session_close(b, s, END_TOKEN_EXPIRED, CLOSE_TOKEN_EXPIRED);
            continue;
        }
        int64_t idle_for = now - s->last_active_ms;
        if (idle_for >= idle_ms) {
            session_close(b, s, END_IDLE_TIMEOUT, CLOSE_IDLE_TIMEOUT);
        } else if (idle_for >= ping_after(s, idle_ms) && s->state == SESSION_OPEN) {
            s->ping_due = 1;
            session_want_write(s);
        }
    }
}

void sessions_close_all(bridge *b, end_reason why, uint16_t code)
{
    for (session *s = b->all; s; s = s->all_next)
        session_close(b, s, why, code);
}
