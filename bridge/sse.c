/* Server-Sent Events: GET /sse?channelId=X for networks that block
 * WebSockets. An SSE stream is a read-only session (session.transport =
 * TRANSPORT_SSE): admitted like a WebSocket upgrade (admit_client), greeted,
 * fed and closed by the same session, delivery and writer code; only the
 * framing differs (writer.c asks sse_event_head for each event), and the
 * heartbeat is a comment line instead of a ping. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, memrchr */
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "bridge.h"
#include "log.h"
#include "lwshttp.h"

const char sse_ping[] = ": ping\n\n";

/* lws's rx flow bitmap has 8 reason bits; lws uses 0, 6 and 7. */
#define SSE_RXFLOW_REASON (1 << 1)

int sse_peer_gone(session *s)
{
    return lws_get_network_wsi(s->wsi) == s->wsi && cp_lws_peer_gone(s->wsi);
}

/* lws 4.1 leaves an HTTP/1.1 connection that is in the middle of a
 * transaction unread: the client's close (or any input) would wake the
 * loop again and again without being read (100 % CPU). So the stream's
 * input is not polled, with a reason bit of our own (the greeting
 * re-enables only the user one), and the liveness check peeks for the
 * close instead (sse_peer_gone). But lws also skips POLLOUT while input
 * is paused: whenever the stream waits to be written, polling resumes
 * (session_want_write); the writer pauses it again once everything went
 * out. A closed peer then costs at most one such wake-up: the write fails
 * or the liveness check ends it. */
void sse_pause_input(session *s, int pause)
{
    if (lws_get_network_wsi(s->wsi) != s->wsi) /* HTTP/2 has its own flow control */
        return;
    lws_rx_flow_control(s->wsi, SSE_RXFLOW_REASON | (pause ? LWS_RXFLOW_REASON_APPLIES_DISABLE
                                                           : LWS_RXFLOW_REASON_APPLIES_ENABLE));
}

/* TCP keepalive on the stream's connection (its own, or the HTTP/2
 * connection it rides on): a client can say nothing on a stream, so one
 * that vanished without a FIN is found by the kernel's probes, after a
 * minute of silence and three unanswered probes ten seconds apart. The
 * bridge sets no keepalive on other connections: WebSocket sessions answer
 * pings. */
static void tcp_keepalive(struct lws *wsi)
{
    int fd = lws_get_socket_fd(lws_get_network_wsi(wsi));
    if (fd < 0)
        return;
    int on = 1, idle = 60, interval = 10, probes = 3;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes) != 0)
        log_debug("sse: TCP keepalive: %s", strerror(errno));
}

/* The envelope's top-level epoch (BUSINESS envelopes have no bepoch;
 * keys are sorted, so it comes before msg, whose content is not looked
 * at). Returns its length, 0 when none. */
static size_t frame_epoch(const out_frame *f, const char **epoch)
{
    static const char key[] = "\"epoch\":\"", msg[] = "\"msg\":";
    const char *m = memmem(f->data, f->len, msg, sizeof msg - 1);
    size_t head = m ? (size_t)(m - f->data) : f->len;
    const char *p = memmem(f->data, head, key, sizeof key - 1);
    if (!p)
        return 0;
    const char *v = p + sizeof key - 1, *q = v, *end = f->data + head;
    while (q < end && *q != '"' && *q != '\\')
        q++;
    if (q >= end || *q != '"' || q == v || q - v > CP_ENVELOPE_EPOCH_MAX)
        return 0;
    *epoch = v;
    return (size_t)(q - v);
}

size_t sse_event_head(out_frame *f, unsigned char *h)
{
    /* id: is what EventSource sends back as Last-Event-ID: the position in
     * the channel's stream (frame_stream_offset) with its epoch,
     * "<epoch>-<offset>", so that a reconnect after the history was lost
     * is told recovered:false instead of getting another history's
     * messages. */
    /* A CONNECTION's offset is where the stream stands, not a message the
     * client has: as an id it would skip a recovery cut short. */
    int64_t offset = f->msg_type == CP_MSG_BUSINESS ? frame_stream_offset(f) : -1;
    int n = 0;
    if (offset >= 0) {
        const char *epoch = "";
        size_t elen = frame_epoch(f, &epoch);
        n = elen ? snprintf((char *)h, SSE_HEAD_MAX, "id: %.*s-%lld\n", (int)elen, epoch,
                            (long long)offset)
                 : snprintf((char *)h, SSE_HEAD_MAX, "id: %lld\n", (long long)offset);
    }
    memcpy(h + n, "data: ", 6);
    return (size_t)n + 6;
}

/* Where a reconnecting client left off: Last-Event-ID (what EventSource
 * sends after an id: line), or ?since=N, with ?epoch=E. */
typedef struct {
    int64_t since; /* -1: none */
    char epoch[CP_ENVELOPE_EPOCH_MAX + 1]; /* "": none */
} sse_resume_point;

/* A decimal offset of at most 18 digits (no sign, no spaces). */
static int parse_offset(const char *v, size_t len, int64_t *out)
{
    if (len == 0 || len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    *out = n;
    return 0;
}

static int epoch_valid(const char *v, size_t len)
{
    if (len == 0 || len > CP_ENVELOPE_EPOCH_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* An id: this bridge sent: "<epoch>-<offset>" (the offset is the digits
 * after the last '-'; an epoch may hold '-' itself), or a bare offset. */
static int parse_event_id(const char *v, sse_resume_point *rp)
{
    size_t len = strlen(v);
    const char *dash = memrchr(v, '-', len);
    if (!dash)
        return parse_offset(v, len, &rp->since);
    size_t elen = (size_t)(dash - v);
    if (!epoch_valid(v, elen) ||
        parse_offset(dash + 1, len - elen - 1, &rp->since) != 0)
        return -1;
    memcpy(rp->epoch, v, elen);
    rp->epoch[elen] = '\0';
    return 0;
}

/* Copies the query argument key= into v (lws decoded it). Returns its
 * length, -1 when absent, -2 when longer than cap - 1. */
static int query_arg(struct lws *wsi, const char *key, char *v, size_t cap)
{
    static char frag[CP_LWS_MAX_QUERY + 1]; /* the service thread's */
    size_t klen = strlen(key);
    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len <= 0)
            return -1;
        if (lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            continue;
        if (strncmp(frag, key, klen) != 0 || frag[klen] != '=')
            continue;
        size_t vlen = strlen(frag + klen + 1);
        if (vlen >= cap)
            return -2;
        memcpy(v, frag + klen + 1, vlen + 1);
        return (int)vlen;
    }
}

/* Reads and checks the resume point. Returns 0, or 400 with *code and
 * *msg. */
static int parse_resume_point(struct lws *wsi, sse_resume_point *rp, const char **code,
                              const char **msg)
{
    rp->since = -1;
    rp->epoch[0] = '\0';
    char v[96];
    int n = query_arg(wsi, "since", v, sizeof v);
    if (n != -1 && (n < 0 || parse_offset(v, (size_t)n, &rp->since) != 0)) {
        *code = "invalid_since";
        *msg = "since must be an offset: a decimal number of at most 18 digits";
        return 400;
    }
    n = query_arg(wsi, "epoch", v, sizeof v);
    if (n != -1) {
        if (n < 0 || !epoch_valid(v, (size_t)n)) {
            *code = "invalid_epoch";
            *msg = "epoch must be 1-64 characters of [A-Za-z0-9_-]";
            return 400;
        }
        memcpy(rp->epoch, v, (size_t)n + 1);
    }
    /* EventSource sends the last id: it saw when it reconnects: newer
     * than the since of the URL it was first opened with, and its epoch
     * (if it has one) wins over the URL's. */
    int hl = lws_hdr_custom_length(wsi, "last-event-id:", 14);
    if (hl > 0) {
        if (hl >= (int)sizeof v || lws_hdr_custom_copy(wsi, v, sizeof v, "last-event-id:", 14) < 0 ||
            parse_event_id(v, rp) != 0) {
            *code = "invalid_last_event_id";
            *msg = "Last-Event-ID must be an id: this bridge sent (<epoch>-<offset>, or an offset)";
            return 400;
        }
    }
    return 0;
}

/* A stream opened with a resume point recovers the channel stream the way
 * a WebSocket session opened with since/epoch does (streams.c): what it
 * missed comes after the CONNECTION, before live events. Broadcasts carry
 * no id: (another stream's numbering), so they are not recovered here. */
static void sse_resume(session *s, const sse_resume_point *rp)
{
    if (rp->since < 0)
        return;
    recovery_params p;
    memset(&p, 0, sizeof p);
    p.since = rp->since;
    p.bsince = -1;
    /* An epoch longer than any the bridge hands out cannot match: it is
     * cut, and the recovery answers recovered:false. */
    snprintf(p.epoch, sizeof p.epoch, "%s", rp->epoch);
    if (streams_set_recovery(s, &p) != 0) {
        size_t sid_len;
        const char *sid = session_id_of(s, &sid_len);
        log_error("out of memory for a recovery: stream %.*s starts live", (int)sid_len, sid);
    }
}

/* The headers of the stream: no proxy buffering (nginx), and for a page of
 * another origin that --allowed-origins admitted, CORS (EventSource
 * requests cross-origin streams in CORS mode). */
static int begin_stream(struct lws *wsi)
{
    char extra[400];
    int n = snprintf(extra, sizeof extra, "X-Accel-Buffering: no\r\n");
    char origin[256];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0 &&
        lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0 &&
        !strpbrk(origin, "\r\n"))
        snprintf(extra + n, sizeof extra - (size_t)n,
                 "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", origin);
    return cp_lws_begin_stream(wsi, "text/event-stream", extra);
}

/* The reconnect delay EventSource uses after the stream ends (a drain, a
 * restart): 1-3 s, spread by session so that a bridge's streams do not all
 * come back in the same instant. */
static int write_retry_hint(session *s)
{
    unsigned char buf[LWS_PRE + 32];
    long ms = 1000 + (long)((s->id * 2654435761u) % 2000);
    int n = snprintf((char *)buf + LWS_PRE, sizeof buf - LWS_PRE, "retry: %ld\n\n", ms);
    return lws_write(s->wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP) < n ? -1 : 0;
}

int sse_serve(bridge *b, struct lws *wsi, session **slot)
{
    if (!cp_lws_is_get(wsi))
        return cp_lws_reply_error(wsi, 405, "method_not_allowed",
                                  "an event stream is opened with GET /sse?channelId=ID") != 0
                   ? -1
                   : 1;
    const char *code, *msg;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > CP_LWS_MAX_QUERY) {
        b->n.rejects[REJECT_BAD_HANDSHAKE]++;
        return cp_lws_refuse_upgrade(wsi, 431, "query_too_large",
                                     "the query string is over 4608 bytes") != 0
                   ? -1
                   : 1;
    }
    sse_resume_point rp;
    if (parse_resume_point(wsi, &rp, &code, &msg) != 0) {
        b->n.rejects[REJECT_BAD_HANDSHAKE]++;
        return cp_lws_refuse_upgrade(wsi, 400, code, msg) != 0 ? -1 : 1;
    }
    admission who;
    if (admit_client(b, wsi, &who) != 0)
        return 1;
    if (begin_stream(wsi) != 0)
        return -1;
    tcp_keepalive(wsi);
    /* No lws timeout applies to the stream from now on; its liveness is
     * the session's (heartbeats, the idle timeout, TCP keepalive). An
     * HTTP/2 stream also keeps its connection from lws's idle timeout. */
    if (lws_get_network_wsi(wsi) != wsi) {
        lws_http_mark_sse(wsi);
    } else {
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    }
    session *s = session_create(b, wsi, who.channel_id);
    if (!s)
        return -1;
    *slot = s;
    s->transport = TRANSPORT_SSE;
    sse_resume(s, &rp); /* before the loop pass that greets it */
    b->sse_sessions++;
    s->token_exp = who.claims.exp;
    s->ip = iplimit_attach(b, who.ip);
    /* HTTP/1.1: events may go out as soon as they are queued, like a
     * WebSocket session without extensions. An HTTP/2 stream is written
     * from its WRITEABLE callback only. */
    s->direct = lws_get_network_wsi(wsi) == wsi;
    if (write_retry_hint(s) != 0)
        return -1;
    /* A channel already subscribed here greeted the session inside
     * session_create, before it was marked as a stream: write that. */
    if (s->queue.count)
        session_want_write(s);
    else
        sse_pause_input(s, 1);
    return 0;
}
