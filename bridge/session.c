/* WebSocket sessions: creation, outbound queue, writing, liveness, close. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static void check_list_append(bridge *b, session *s)
{
    s->check_next = NULL;
    s->check_prev = b->check_tail;
    if (b->check_tail)
        b->check_tail->check_next = s;
    else
        b->check_head = s;
    b->check_tail = s;
}

static void check_list_remove(bridge *b, session *s)
{
    if (s->check_prev)
        s->check_prev->check_next = s->check_next;
    else
        b->check_head = s->check_next;
    if (s->check_next)
        s->check_next->check_prev = s->check_prev;
    else
        b->check_tail = s->check_prev;
    s->check_prev = s->check_next = NULL;
}

static void flush_list_add(bridge *b, session *s)
{
    if (s->flush_listed)
        return;
    s->flush_listed = 1;
    s->flush_prev = NULL;
    s->flush_next = b->flush_head;
    if (b->flush_head)
        b->flush_head->flush_prev = s;
    b->flush_head = s;
}

static void flush_list_remove(bridge *b, session *s)
{
    if (!s->flush_listed)
        return;
    s->flush_listed = 0;
    if (s->flush_prev)
        s->flush_prev->flush_next = s->flush_next;
    else
        b->flush_head = s->flush_next;
    if (s->flush_next)
        s->flush_next->flush_prev = s->flush_prev;
    s->flush_prev = s->flush_next = NULL;
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
     * that need no JSON escaping, so the fragment is built verbatim. */
    size_t frag_cap = (size_t)sid_len + strlen(channel_id) + 32;
    s->recipient = malloc(frag_cap);
    if (!s->recipient) {
        free(s);
        return NULL;
    }
    int n = snprintf(s->recipient, frag_cap, ",\"sessionId\":\"%s\",\"to\":[\"%s\"]", sid,
                     channel_id);
    s->recipient_len = (uint16_t)n;
    s->sid_len = (uint16_t)sid_len;
    s->wsi = wsi;
    s->id = seq;
    s->state = SESSION_PENDING;
    s->last_active_ms = cp_mono_ms();
    s->check_at_ms = s->last_active_ms + check_interval_ms(b);
    s->rate_tokens = (double)b->cfg.client_burst;
    s->rate_at_ms = s->last_active_ms;
    check_list_append(b, s);

    s->all_next = b->all;
    if (b->all)
        b->all->all_prev = s;
    b->all = s;
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
    char text[64 + CP_CHANNEL_ID_MAX];
    snprintf(text, sizeof text, "connected, channelId=%s", s->channel->name);
    session_send_envelope(b, s, CP_MSG_CONNECTION, "system", NULL, text);
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
    channel_detach(b, s);
    check_list_remove(b, s);
    flush_list_remove(b, s);
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        b->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    HASH_DELETE(hh, b->by_id, s);
    b->session_count--;
    registry_set_connections(b->registry, b->session_count);
    frame_queue_clear(&s->queue);
    iplimit_detach(b, s->ip);
    free(s->rx);
    free(s->recipient);
    free(s);
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
    lws_callback_on_writable(s->wsi);
    /* A peer that does not read never makes the socket writable: make sure
     * the connection still goes away. */
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, 3);
}

/* Copies frame f for session s to p, with its recipient fragment inserted
 * when the frame is personalised. */
static void frame_copy(const session *s, const out_frame *f, unsigned char *p)
{
    if (!f->personalised) {
        memcpy(p, f->data, f->len);
        return;
    }
    memcpy(p, f->data, f->split);
    memcpy(p + f->split, s->recipient, s->recipient_len);
    memcpy(p + f->split + s->recipient_len, f->data + f->split, f->len - f->split);
}

/* The length of frame f as written to session s. */
static size_t frame_len(const session *s, const out_frame *f)
{
    return f->len + (f->personalised ? s->recipient_len : 0);
}

/* Removes the oldest queued frame (the caller owns the reference) and gives
 * its length as written to this session. */
static out_frame *pop_frame(session *s, size_t *len)
{
    out_frame *f = s->queue.slots[s->queue.head];
    *len = frame_len(s, f);
    return frame_queue_pop(&s->queue, *len - f->len);
}

static void count_out(bridge *b, int type)
{
    if (type >= -1 && type <= 4)
        b->n.out[type + 1]++;
}

/* Writes the oldest queued frame with lws framing (the only way for a
 * session with permessage-deflate). Returns 0, or -1 when the connection
 * failed. lws keeps what the kernel did not take (lws_partial_buffered). */
static int write_one(bridge *b, session *s)
{
    size_t len;
    out_frame *f = pop_frame(s, &len);
    cp_buf *tx = &b->tx;
    cp_buf_reset(tx);
    if (cp_buf_reserve(tx, LWS_PRE + len) != 0) {
        frame_unref(f);
        return -1;
    }
    unsigned char *p = (unsigned char *)tx->data + LWS_PRE;
    frame_copy(s, f, p);
    int type = f->msg_type;
    frame_unref(f);
    if (lws_write(s->wsi, p, len, LWS_WRITE_TEXT) < (int)len) {
        s->end = END_ERROR;
        return -1;
    }
    count_out(b, type);
    return 0;
}

/* At most this much is put into one system call for one session. */
#define COALESCE_MAX_BYTES (64 * 1024)
#define COALESCE_MAX_FRAMES 64

/* Writes queued frames of a session without extensions in one system call:
 * the frames are framed here (server frames are unmasked: 2-10 header
 * bytes) and handed to lws as raw bytes, so a session that has several
 * messages waiting (a burst of broadcasts) costs one send(), not one per
 * message. Returns 0, or -1 when the connection failed. */
static int write_coalesced(bridge *b, session *s)
{
    cp_buf *tx = &b->tx;
    cp_buf_reset(tx);
    if (cp_buf_reserve(tx, LWS_PRE) != 0)
        return -1;
    tx->len = LWS_PRE;
    for (int i = 0; i < COALESCE_MAX_FRAMES && s->queue.count; i++) {
        size_t len = frame_len(s, s->queue.slots[s->queue.head]);
        if (i > 0 && tx->len - LWS_PRE + len + 10 > COALESCE_MAX_BYTES)
            break; /* the rest goes in the next write */
        if (cp_buf_reserve(tx, len + 10) != 0)
            return -1;
        unsigned char *h = (unsigned char *)tx->data + tx->len;
        size_t hl;
        h[0] = 0x81; /* FIN, text */
        if (len < 126) {
            h[1] = (unsigned char)len;
            hl = 2;
        } else if (len < 65536) {
            h[1] = 126;
            h[2] = (unsigned char)(len >> 8);
            h[3] = (unsigned char)len;
            hl = 4;
        } else {
            h[1] = 127;
            for (int k = 0; k < 8; k++)
                h[2 + k] = (unsigned char)((uint64_t)len >> (56 - 8 * k));
            hl = 10;
        }
        out_frame *f = pop_frame(s, &len);
        frame_copy(s, f, h + hl);
        tx->len += hl + len;
        count_out(b, f->msg_type);
        frame_unref(f);
    }
    size_t total = tx->len - LWS_PRE;
    if (lws_write(s->wsi, (unsigned char *)tx->data + LWS_PRE, total, LWS_WRITE_RAW) <
        (int)total) {
        s->end = END_ERROR;
        return -1;
    }
    return 0;
}

void session_send(bridge *b, session *s, out_frame *f)
{
    if (s->state == SESSION_CLOSING)
        return;
    size_t extra = f->personalised ? s->recipient_len : 0;
    if (frame_queue_push(&s->queue, f, extra, (uint32_t)b->cfg.max_queue_messages,
                         (size_t)b->cfg.max_queue_bytes) != 0) {
        log_warn("session %.*s: outbound queue full (%u messages, %zu bytes): closing slow "
                 "consumer",
                 (int)s->sid_len, s->recipient + SESSION_ID_OFFSET, s->queue.count,
                 s->queue.bytes);
        session_close(b, s, END_SLOW_CONSUMER, CLOSE_SLOW_CONSUMER);
        return;
    }
    if (s->state != SESSION_OPEN)
        return;
    if (s->direct) {
        /* Written by sessions_flush before the loop waits: no writable
         * round trip, and everything queued meanwhile in one send(). */
        flush_list_add(b, s);
    } else if (s->queue.count == 1) {
        lws_callback_on_writable(s->wsi);
    }
}

void sessions_flush(bridge *b)
{
    while (b->flush_head) {
        session *s = b->flush_head;
        flush_list_remove(b, s);
        if (s->state != SESSION_OPEN || !s->queue.count)
            continue;
        if (lws_partial_buffered(s->wsi)) {
            lws_callback_on_writable(s->wsi); /* the socket is full */
            continue;
        }
        if (write_coalesced(b, s) != 0) {
            /* Not inside this connection's callback: let lws close it. */
            s->state = SESSION_CLOSING;
            lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
            continue;
        }
        if (s->queue.count || lws_partial_buffered(s->wsi))
            lws_callback_on_writable(s->wsi);
    }
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
    env.fields = CP_F_ACTIVE_TIME | CP_F_MSG_TYPE | CP_F_TRIGGER;
    env.active_time = cp_now_ms();
    env.msg_type = msg_type;
    env.trigger = CP_TRIGGER_WEBSOCKET;
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
    session_send_built(b, s, &env, 0);
}

static const char *close_text(uint16_t code)
{
    switch (code) {
    case CLOSE_IDLE_TIMEOUT:
        return "idle timeout";
    case CLOSE_SLOW_CONSUMER:
        return "slow consumer: outbound queue full";
    case CLOSE_REPLACED:
        return "replaced by a newer session of this channelId";
    case CLOSE_SUBSCRIBE_FAILED:
        return "bus subscription failed";
    case CLOSE_TOKEN_EXPIRED:
        return "token expired";
    case CLOSE_RATE_LIMIT:
        return "rate limit exceeded";
    case LWS_CLOSE_STATUS_GOINGAWAY:
        return "server shutting down";
    case LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE:
        return "message too big";
    default:
        return "closing";
    }
}

/* Frames written per writable callback at most, so one busy session cannot
 * keep the loop from the others. */
#define WRITES_PER_CALLBACK 64

int session_write(bridge *b, session *s)
{
    if (s->state == SESSION_CLOSING) {
        const char *text = close_text(s->close_code);
        lws_close_reason(s->wsi, (enum lws_close_status)s->close_code, (unsigned char *)text,
                         strlen(text));
        return -1;
    }
    if (s->ping_due) {
        s->ping_due = 0;
        /* A non-empty payload: lws 4.1 does not report empty pongs, and
         * browsers echo the ping's payload. */
        unsigned char ping[LWS_PRE + 4];
        memcpy(ping + LWS_PRE, "cp", 2);
        if (lws_write(s->wsi, ping + LWS_PRE, 2, LWS_WRITE_PING) < 0)
            return -1;
        if (s->queue.count)
            lws_callback_on_writable(s->wsi);
        return 0;
    }
    /* The queue holds what the socket could not take yet (and, until the
     * end of a loop pass, what that pass produced): write until the kernel
     * buffer is full, so the queue limits measure a slow reader, not a
     * burst. */
    if (s->direct && s->queue.count) {
        if (write_coalesced(b, s) != 0)
            return -1;
    }
    for (int i = 0; !s->direct && i < WRITES_PER_CALLBACK && s->queue.count; i++) {
        if (write_one(b, s) != 0)
            return -1;
        if (lws_partial_buffered(s->wsi))
            break;
    }
    if (s->queue.count || lws_partial_buffered(s->wsi))
        lws_callback_on_writable(s->wsi);
    return 0;
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
        check_list_remove(b, s);
        s->check_at_ms = now + iv;
        check_list_append(b, s);
        if (s->state == SESSION_CLOSING)
            continue;
        if (s->token_exp && cp_now_ms() / 1000 > s->token_exp + b->cfg.jwt_leeway_s) {
            session_close(b, s, END_TOKEN_EXPIRED, CLOSE_TOKEN_EXPIRED);
            continue;
        }
        int64_t idle_for = now - s->last_active_ms;
        if (idle_for >= idle_ms) {
            session_close(b, s, END_IDLE_TIMEOUT, CLOSE_IDLE_TIMEOUT);
        } else if (idle_for >= ping_after(s, idle_ms) && s->state == SESSION_OPEN) {
            s->ping_due = 1;
            lws_callback_on_writable(s->wsi);
        }
    }
}

void sessions_close_all(bridge *b, end_reason why, uint16_t code)
{
    for (session *s = b->all; s; s = s->all_next)
        session_close(b, s, why, code);
}
