/* The socket writer: a session's queued frames go out either coalesced into
 * one raw write per loop pass (sessions without extensions) or one lws write
 * per frame from the WRITEABLE callback (permessage-deflate). Also writes
 * pings and the close reason. */
#include <errno.h>
#include <string.h>

#include <utlist.h>

#include "bridge.h"
#include "log.h"

void session_want_write(session *s)
{
    if (s->transport == TRANSPORT_SSE)
        sse_pause_input(s, 0);
    lws_callback_on_writable(s->wsi);
}

static void flush_list_add(bridge *b, session *s)
{
    if (s->flush_listed)
        return;
    s->flush_listed = 1;
    DL_PREPEND2(b->flush_head, s, flush_prev, flush_next);
}

void flush_list_remove(bridge *b, session *s)
{
    if (!s->flush_listed)
        return;
    s->flush_listed = 0;
    DL_DELETE2(b->flush_head, s, flush_prev, flush_next);
    s->flush_prev = s->flush_next = NULL;
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

/* The longest WebSocket frame header a server writes. */
#define WS_HEADER_MAX 10

/* Writes the header of an unmasked, final text frame of len payload bytes
 * (server frames are unmasked: 2-10 bytes); returns its length. */
static size_t ws_text_header(unsigned char *h, size_t len)
{
    h[0] = 0x81; /* FIN, text */
    if (len < 126) {
        h[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        return 4;
    }
    h[1] = 127;
    for (int k = 0; k < 8; k++)
        h[2 + k] = (unsigned char)((uint64_t)len >> (56 - 8 * k));
    return WS_HEADER_MAX;
}

/* Removes the oldest queued frame (the caller owns the reference) and gives
 * its length as written to this session. */
static out_frame *pop_frame(session *s, size_t *len)
{
    out_frame *f = s->queue.slots[s->queue.head];
    *len = frame_len(s, f);
    return frame_queue_pop(&s->queue, *len - f->len);
}

/* Counts a frame written, and for a bus message the time since it arrived
 * (now_us: one clock read per write call). */
static void count_out(bridge *b, const out_frame *f, int64_t now_us)
{
    int type = f->msg_type;
    if (type >= CP_MSG_ERROR && type <= CP_MSG__LAST)
        b->n.out[type - CP_MSG_ERROR]++;
    if (f->bus_arrived_us)
        cp_histogram_observe_us(&b->delivery_latency, (uint64_t)(now_us - f->bus_arrived_us));
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
    if (lws_write(s->wsi, p, len, LWS_WRITE_TEXT) < (int)len) {
        frame_unref(f);
        s->end = END_ERROR;
        return -1;
    }
    count_out(b, f, cp_mono_us());
    frame_unref(f);
    return 0;
}

/* At most this much is put into one system call for one session. */
#define COALESCE_MAX_BYTES (64 * 1024)
#define COALESCE_MAX_FRAMES 64

/* The most bytes a frame gains on the wire: a WebSocket header, or an SSE
 * event's lines around the JSON. */
#define WIRE_EXTRA_MAX (SSE_HEAD_MAX + SSE_TAIL_LEN > WS_HEADER_MAX ? SSE_HEAD_MAX + SSE_TAIL_LEN \
                                                                     : WS_HEADER_MAX)

/* Frames a session's queued frames (WebSocket text frames, or SSE events)
 * into out, up to COALESCE_MAX_BYTES, so a session that has several
 * messages waiting (a burst of broadcasts) costs one send, not one per
 * message. Returns 0, or -1 when out of memory. */
static int frame_queued(bridge *b, session *s, cp_buf *out)
{
    size_t start = out->len;
    int sse = s->transport == TRANSPORT_SSE;
    int64_t now_us = cp_mono_us();
    for (int i = 0; i < COALESCE_MAX_FRAMES && s->queue.count; i++) {
        size_t len = frame_len(s, s->queue.slots[s->queue.head]);
        if (i > 0 && out->len - start + len + WIRE_EXTRA_MAX > COALESCE_MAX_BYTES)
            break; /* the rest goes in the next write */
        if (cp_buf_reserve(out, len + WIRE_EXTRA_MAX) != 0)
            return -1;
        unsigned char *h = (unsigned char *)out->data + out->len;
        size_t hl = sse ? sse_event_head(s->queue.slots[s->queue.head], h) : ws_text_header(h, len);
        out_frame *f = pop_frame(s, &len);
        frame_copy(s, f, h + hl);
        out->len += hl + len;
        if (sse) { /* the blank line that ends the event */
            memcpy(out->data + out->len, "\n\n", SSE_TAIL_LEN);
            out->len += SSE_TAIL_LEN;
        }
        count_out(b, f, now_us);
        frame_unref(f);
    }
    return 0;
}

/* Hands the bytes after LWS_PRE in tx to lws, which sends what the socket
 * takes and keeps the rest (lws_partial_buffered). Returns 0, or -1 when
 * the connection failed. */
static int lws_send_tx(session *s, cp_buf *tx)
{
    size_t total = tx->len - LWS_PRE;
    /* SSE: HTTP body bytes (an HTTP/2 stream frames them itself). */
    if (lws_write(s->wsi, (unsigned char *)tx->data + LWS_PRE, total,
                  s->transport == TRANSPORT_SSE ? LWS_WRITE_HTTP : LWS_WRITE_RAW) < (int)total) {
        s->end = END_ERROR;
        return -1;
    }
    return 0;
}

/* Starts tx with the room lws_write wants before the bytes. */
static int tx_begin(cp_buf *tx)
{
    cp_buf_reset(tx);
    if (cp_buf_reserve(tx, LWS_PRE) != 0)
        return -1;
    tx->len = LWS_PRE;
    return 0;
}

/* Writes len bytes through lws (what a ring send left over). */
static int write_raw(bridge *b, session *s, const void *data, size_t len)
{
    if (tx_begin(&b->tx) != 0)
        return -1;
    cp_buf_append(&b->tx, data, len);
    return b->tx.failed ? -1 : lws_send_tx(s, &b->tx);
}

/* Writes queued frames of a session without extensions in one system
 * call. Returns 0, or -1 when the connection failed. */
static int write_coalesced(bridge *b, session *s)
{
    if (tx_begin(&b->tx) != 0 || frame_queued(b, s, &b->tx) != 0)
        return -1;
    return lws_send_tx(s, &b->tx);
}

int session_enqueue(bridge *b, session *s, out_frame *f)
{
    if (s->state == SESSION_CLOSING || s->close_when_flushed)
        return 0;
    size_t extra = f->personalised ? s->recipient_len : 0;
    if (!s->queue.count && !s->burst_open)
        s->burst_msgs = 0, s->burst_bytes = 0; /* a recovery's backlog was written */
    uint32_t max_count = (uint32_t)b->cfg.max_queue_messages + s->burst_msgs;
    size_t max_bytes = (size_t)b->cfg.max_queue_bytes + s->burst_bytes;
    if (frame_queue_push(&s->queue, f, extra, max_count, max_bytes) != 0) {
        log_warn("session %.*s: outbound queue full (%u messages, %zu bytes): closing slow "
                 "consumer",
                 (int)s->sid_len, s->recipient + SESSION_ID_OFFSET, s->queue.count,
                 s->queue.bytes);
        session_close(b, s, END_SLOW_CONSUMER, CLOSE_SLOW_CONSUMER);
        return -1;
    }
    if (s->state != SESSION_OPEN)
        return 0;
    if (s->direct) {
        /* Written by sessions_flush before the loop waits: no writable
         * round trip, and everything queued meanwhile in one send(). */
        flush_list_add(b, s);
    } else if (s->queue.count == 1) {
        session_want_write(s);
    }
    return 0;
}

void session_send(bridge *b, session *s, out_frame *f)
{
    if (s->state == SESSION_CLOSING || s->close_when_flushed)
        return;
    if (session_enqueue(b, s, f) != 0 || !s->acks || f->msg_type != CP_MSG_BUSINESS)
        return;
    if (acks_track(b, s, f) != 0) {
        /* Not confirming this many messages is not keeping up: the same
         * remedy as a full queue, and the client recovers with since. */
        b->n.ack_window_full++;
        log_warn("session %.*s: %u messages unacknowledged (--ack-window): closing slow "
                 "consumer",
                 (int)s->sid_len, s->recipient + SESSION_ID_OFFSET, s->acks->live);
        session_close(b, s, END_SLOW_CONSUMER, CLOSE_SLOW_CONSUMER);
    }
}

void session_close_when_flushed(bridge *b, session *s, end_reason why, uint16_t code)
{
    if (s->state == SESSION_CLOSING || s->close_when_flushed)
        return;
    if (s->state != SESSION_OPEN || (!s->queue.count && !lws_partial_buffered(s->wsi))) {
        session_close(b, s, why, code);
        return;
    }
    s->close_when_flushed = 1;
    s->end = (uint8_t)why;
    s->close_code = code;
    /* The writer closes once the queue is written (close_if_flushed). */
    session_want_write(s);
}

/* After a write: a session waiting for its queue to empty is closed now. */
static void close_if_flushed(bridge *b, session *s)
{
    if (s->close_when_flushed && !s->queue.count && !lws_partial_buffered(s->wsi)) {
        s->close_when_flushed = 0;
        session_close(b, s, (end_reason)s->end, s->close_code);
    }
}

/* A write failed outside this connection's callback: let lws close it. */
static void flush_failed(session *s)
{
    s->state = SESSION_CLOSING;
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/* After a flush wrote: more to write waits for the socket, a session
 * waiting for its queue to empty is closed. */
static void flush_written(bridge *b, session *s)
{
    if (s->queue.count || lws_partial_buffered(s->wsi))
        session_want_write(s);
    else
        close_if_flushed(b, s);
}

/* The next session of the flush list that has something to write now, or
 * NULL. A session whose socket is full waits for its writable callback. */
static session *next_to_flush(bridge *b)
{
    while (b->flush_head) {
        session *s = b->flush_head;
        flush_list_remove(b, s);
        if (s->state != SESSION_OPEN || !s->queue.count)
            continue;
        if (lws_partial_buffered(s->wsi)) {
            session_want_write(s); /* the socket is full */
            continue;
        }
        return s;
    }
    return NULL;
}

static void flush_one(bridge *b, session *s)
{
    if (write_coalesced(b, s) != 0)
        flush_failed(s);
    else
        flush_written(b, s);
}

/* A plain WebSocket connection of its own (no TLS, not a stream of an
 * HTTP/2 connection): its bytes can go to its socket as they are. */
static int ring_eligible(const session *s)
{
    return s->transport == TRANSPORT_WS && !lws_is_ssl(s->wsi) &&
           lws_get_network_wsi(s->wsi) == s->wsi;
}

/* Most bytes framed for one ring submission: the next session waits for
 * the next submission (a session alone may bring up to COALESCE_MAX_BYTES).
 * 1 024 frames of a few hundred bytes fit. */
#define RING_BYTES_MAX (256 * 1024)

typedef struct {
    bridge *b;
    ring_send *sends;
} ring_pass;

/* One send's result: what the socket did not take goes to lws, which
 * keeps it and writes it when the socket drains. */
static void ring_done(void *ud, uint32_t tag, int res)
{
    ring_pass *p = ud;
    bridge *b = p->b;
    ring_send *rs = &p->sends[tag];
    session *s = rs->s;
    if (res == -EAGAIN || res == -EINTR || res == -EIO)
        res = 0; /* nothing sent: lws sends it all, or keeps it */
    if (res < 0) {
        s->end = END_ERROR;
        flush_failed(s);
        return;
    }
    if ((size_t)res < rs->len) {
        b->n.ring_short++;
        if (write_raw(b, s, b->ring_buf.data + rs->off + (size_t)res, rs->len - (size_t)res) !=
            0) {
            flush_failed(s);
            return;
        }
    }
    flush_written(b, s);
}

/* The flush list through the ring: every eligible session's frames are
 * framed into one buffer and sent in one submission (RING_ENTRIES at a
 * time); the others are written one by one as before. */
static void flush_through_ring(bridge *b)
{
    ring_pass pass = {.b = b, .sends = b->ring_sends};
    while (b->flush_head) {
        unsigned n = 0;
        cp_buf_reset(&b->ring_buf);
        session *s;
        while (n < RING_ENTRIES && b->ring_buf.len < RING_BYTES_MAX && (s = next_to_flush(b))) {
            if (!ring_eligible(s)) {
                flush_one(b, s);
                continue;
            }
            size_t off = b->ring_buf.len;
            if (frame_queued(b, s, &b->ring_buf) != 0) {
                /* Out of memory with this session's frames half taken:
                 * it ends; what was framed before it still goes out. */
                b->ring_buf.len = off;
                flush_failed(s);
                break;
            }
            b->ring_sends[n++] = (ring_send){.s = s, .off = off, .len = b->ring_buf.len - off};
        }
        if (!n)
            continue;
        b->ring_used_ms = cp_mono_ms();
        /* The buffer is complete: its addresses hold until the run ends. */
        for (unsigned i = 0; i < n; i++) {
            ring_send *rs = &b->ring_sends[i];
            send_ring_add(b->ring, lws_get_socket_fd(rs->s->wsi), b->ring_buf.data + rs->off,
                          rs->len, i);
        }
        if (send_ring_run(b->ring, ring_done, &pass) < 0)
            b->n.ring_failures++;
        b->n.ring_submissions++;
        b->n.ring_sends += n;
        if (!send_ring_space(b->ring)) { /* the ring is gone: one by one from now on */
            log_warn("io_uring failed and could not be set up again: sending one by one");
            send_ring_close(b->ring);
            b->ring = NULL;
            sessions_flush(b);
            return;
        }
    }
}

void sessions_trim_buffers(bridge *b, int64_t now_ms)
{
    if (b->ring_buf.cap && now_ms - b->ring_used_ms > 1000)
        cp_buf_free(&b->ring_buf);
}

void sessions_flush(bridge *b)
{
    if (b->ring) {
        flush_through_ring(b);
        return;
    }
    session *s;
    while ((s = next_to_flush(b)))
        flush_one(b, s);
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
    case CLOSE_UNACKED:
        return "unacknowledged messages";
    case LWS_CLOSE_STATUS_GOINGAWAY:
        return "server shutting down";
    case CLOSE_SERVICE_RESTART:
        return "bridge draining: reconnect";
    case LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE:
        return "message too big";
    default:
        return "closing";
    }
}

/* Frames written per writable callback at most, so one busy session cannot
 * keep the loop from the others. */
#define WRITES_PER_CALLBACK 64

/* The writable callback of an SSE stream: a stream has no close frame or
 * ping; its end is the end of the connection. */
static int sse_write(bridge *b, session *s)
{
    if (s->state == SESSION_CLOSING)
        return -1;
    if (s->ping_due) {
        s->ping_due = 0;
        unsigned char ping[LWS_PRE + 16];
        size_t n = strlen(sse_ping);
        memcpy(ping + LWS_PRE, sse_ping, n);
        if (lws_write(s->wsi, ping + LWS_PRE, n, LWS_WRITE_HTTP) < (int)n)
            return -1;
        /* The client sends nothing: a heartbeat the socket took is what
         * keeps the session from the idle timeout. A peer that stopped
         * reading stops taking them. */
        session_touch(b, s);
    }
    if (s->queue.count && write_coalesced(b, s) != 0)
        return -1;
    if (s->queue.count || lws_partial_buffered(s->wsi)) {
        session_want_write(s);
        return 0;
    }
    close_if_flushed(b, s);
    if (s->state != SESSION_CLOSING)
        sse_pause_input(s, 1); /* nothing to write: see sse_pause_input */
    return 0;
}

int session_write(bridge *b, session *s)
{
    if (s->transport == TRANSPORT_SSE)
        return sse_write(b, s);
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
            session_want_write(s);
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
        session_want_write(s);
    else
        close_if_flushed(b, s);
    return 0;
}
