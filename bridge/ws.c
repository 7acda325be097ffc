/* The libwebsockets protocol: handshake checks, frames in and out. */
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "workers.h"
#include "ids.h"
#include "log.h"
#include "lwshttp.h"

static int reject(bridge *b, struct lws *wsi, reject_reason why, unsigned status, const char *msg)
{
    b->n.rejects[why]++;
    log_debug("upgrade refused: %s", reject_reason_name(why));
    cp_lws_refuse_upgrade(wsi, status, reject_reason_name(why), msg);
    return 1; /* we answered; lws finishes the transaction */
}

/* What confirm_upgrade found out about the connection it admitted, for
 * LWS_CALLBACK_ESTABLISHED: lws calls that for the same wsi within the same
 * call (CONFIRM_UPGRADE, handshake reply, ESTABLISHED), so one slot is
 * enough, and the token is verified and the address worked out once. lws
 * frees the HTTP user space when it binds the WebSocket protocol, so this
 * cannot live there. */
static struct {
    struct lws *wsi;
    admission who;
    int ack; /* ack=1: the client confirms BUSINESS messages (acks.c) */
    recovery_params rec; /* since/epoch, bsince/bepoch (streams.c) */
} admitted;

/* A position: a whole number 0 .. 2^53 in decimal. */
static int parse_offset(const char *v, int64_t *out)
{
    if (!*v || strlen(v) > 16)
        return -1;
    int64_t n = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        n = n * 10 + (*p - '0');
    }
    if (n > ((int64_t)1 << 53))
        return -1;
    *out = n;
    return 0;
}

/* An epoch as the bridge hands them out: [A-Za-z0-9_-], at most
 * ORDER_EPOCH_MAX characters ("" is no epoch). */
static int parse_epoch(const char *v, char *out)
{
    size_t n = strlen(v);
    if (n > ORDER_EPOCH_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return -1;
    }
    memcpy(out, v, n + 1);
    return 0;
}

/* The query arguments the session keeps: ack (0 when absent, 0 or 1) and
 * the recovery position. Returns NULL, or the error code of a bad value
 * (*msg says why). */
static const char *read_query(struct lws *wsi, int *ack, recovery_params *rec, const char **msg)
{
    static char frag[CP_LWS_MAX_QUERY + 1]; /* the service thread's */
    *ack = 0;
    memset(rec, 0, sizeof *rec);
    rec->since = rec->bsince = -1;
    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len <= 0)
            break;
        if (lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            continue;
        char *eq = strchr(frag, '=');
        const char *v = eq ? eq + 1 : "";
        size_t klen = eq ? (size_t)(eq - frag) : strlen(frag);
#define IS(k) (klen == sizeof k - 1 && memcmp(frag, k, klen) == 0)
        if (IS("ack")) {
            *ack = strcmp(v, "1") == 0 ? 1 : strcmp(v, "0") == 0 ? 0 : -1;
            if (*ack < 0) {
                *msg = "ack must be 1 (confirm messages) or 0";
                return "invalid_ack";
            }
        } else if (IS("since") || IS("bsince")) {
            if (parse_offset(v, IS("since") ? &rec->since : &rec->bsince) != 0) {
                *msg = "since and bsince must be offsets (whole numbers from 0)";
                return "invalid_recovery";
            }
        } else if (IS("epoch") || IS("bepoch")) {
            if (parse_epoch(v, IS("epoch") ? rec->epoch : rec->bepoch) != 0) {
                *msg = "epoch and bepoch must be epochs as the CONNECTION message gave them";
                return "invalid_recovery";
            }
        }
#undef IS
    }
    if ((*rec->epoch && rec->since < 0) || (*rec->bepoch && rec->bsince < 0)) {
        *msg = "epoch needs since (and bepoch needs bsince): the position in that epoch";
        return "invalid_recovery";
    }
    return NULL;
}

int admit_client(bridge *b, struct lws *wsi, admission *who)
{
    const char *code = NULL, *msg = NULL;
    if (!cp_lws_origin_allowed(wsi, b->cfg.allowed_origins))
        return reject(b, wsi, REJECT_FORBIDDEN_ORIGIN, 403,
                      "this page's Origin may not open sessions here (--allowed-origins)");
    int status = cp_lws_identify(wsi, b->jwt, who->channel_id, sizeof who->channel_id,
                                 &who->claims, &code, &msg);
    if (status) {
        reject_reason why = status != 400                              ? REJECT_UNAUTHORIZED
                            : strcmp(code, "missing_channel_id") == 0 ? REJECT_MISSING_CHANNEL
                                                                       : REJECT_INVALID_CHANNEL;
        b->n.rejects[why]++;
        cp_lws_refuse_upgrade(wsi, (unsigned)status, code, msg);
        return 1;
    }
    /* With workers, the master's SIGTERM stops admissions at once. */
    if (b->shutting_down || (b->shared && atomic_load(&b->shared->draining)))
        return reject(b, wsi, REJECT_SHUTTING_DOWN, 503, "the bridge is shutting down");
    if (!cp_bus_is_connected(b->bus))
        return reject(b, wsi, REJECT_BUS_DOWN, 503,
                      "the message bus is unreachable; retry shortly");
    /* The whole bridge's sessions, with workers (they may overshoot by one
     * upgrade each in flight at the same moment). */
    if ((long)workers_sessions_total(b) >= b->cfg.max_connections)
        return reject(b, wsi, REJECT_TOO_MANY, 503,
                      "this bridge is at its connection limit; retry or use another bridge");
    iplimit_client_address(b, wsi, who->ip, sizeof who->ip);
    status = iplimit_admit(b, who->ip, &code, &msg);
    if (status) {
        b->n.rejects[REJECT_ADDRESS_LIMIT]++;
        cp_lws_refuse_upgrade(wsi, (unsigned)status, code, msg);
        return 1;
    }
    return 0;
}

static int confirm_upgrade(bridge *b, struct lws *wsi)
{
    admitted.wsi = NULL;
    const char *code = NULL, *msg = NULL;
    int status = cp_lws_check_upgrade(wsi, &code, &msg);
    if (status) {
        b->n.rejects[REJECT_BAD_HANDSHAKE]++;
        log_debug("upgrade refused: %s", code);
        cp_lws_refuse_upgrade(wsi, (unsigned)status, code, msg);
        return 1;
    }
    code = read_query(wsi, &admitted.ack, &admitted.rec, &msg);
    if (code) {
        b->n.rejects[REJECT_BAD_HANDSHAKE]++;
        cp_lws_refuse_upgrade(wsi, 400, code, msg);
        return 1;
    }
    if (admit_client(b, wsi, &admitted.who) != 0)
        return 1;
    admitted.wsi = wsi;
    return 0;
}

/* The connection confirm_upgrade admitted is established: its session. */
static session *establish(bridge *b, struct lws *wsi)
{
    if (admitted.wsi != wsi) {
        log_error("a WebSocket connection was established without a checked upgrade");
        return NULL;
    }
    admitted.wsi = NULL;
    session *s = session_create(b, wsi, admitted.who.channel_id);
    if (!s)
        return NULL;
    s->token_exp = admitted.who.claims.exp;
    session_set_pub(s, admitted.who.claims.pub, admitted.who.claims.pub_len);
    s->ip = iplimit_attach(b, admitted.who.ip);
    if ((admitted.rec.since >= 0 || admitted.rec.bsince >= 0) &&
        streams_set_recovery(s, &admitted.rec) != 0)
        log_error("out of memory for a recovery: session %.*s is greeted without it",
                  (int)s->sid_len, s->recipient + SESSION_ID_OFFSET);
    if (admitted.ack && acks_enable(b, s) != 0)
        log_error("out of memory for an ack window: session %.*s runs without acks",
                  (int)s->sid_len, s->recipient + SESSION_ID_OFFSET);
    /* zlib's default memLevel costs ~128 KB per compressing
     * connection; memLevel 1 only makes compression a little worse.
     * (The window cannot be shrunk here: lws 4.1 applies
     * server_max_window_bits to its inflater too.)
     * Without the extension (the call fails), frames go straight to
     * the socket: lws's deflate keeps its own pending output, so
     * compressed sessions only write from the WRITEABLE callback. */
    s->direct = lws_set_extension_option(wsi, "permessage-deflate", "mem_level", "1") != 0;
    return s;
}

/* lws's receive buffer per connection (see bridge_protocols). 256, not
 * 512: 250 bytes less per idle connection (10 000 idle connections, bridge
 * + broker: 4.0-4.2 -> 3.8-3.9 KiB each); a client message over 256 bytes
 * is reassembled from pieces (rx_append), which costs a copy. */
#define RX_CHUNK_BYTES 256

/* Appends a piece of a message; returns -1 when it grows past the limit. */
static int rx_append(bridge *b, session *s, const void *in, size_t len)
{
    if (len == 0) /* an empty fragment; s->rx may not exist yet */
        return 0;
    if (s->rx_len + len > (size_t)b->cfg.max_message_bytes)
        return -1;
    if (s->rx_len + len > s->rx_cap) {
        size_t cap = s->rx_cap ? s->rx_cap : 4096;
        while (cap < s->rx_len + len)
            cap *= 2;
        if (cap > (size_t)b->cfg.max_message_bytes)
            cap = (size_t)b->cfg.max_message_bytes;
        char *p = realloc(s->rx, cap);
        if (!p)
            return -1;
        s->rx = p;
        s->rx_cap = cap;
    }
    memcpy(s->rx + s->rx_len, in, len);
    s->rx_len += len;
    return 0;
}

static void rx_release(session *s)
{
    free(s->rx);
    s->rx = NULL;
    s->rx_len = s->rx_cap = 0;
}

/* Closes with 1009 through the normal close path (a close frame, then the
 * socket), which also works in the middle of a fragmented message; what
 * still arrives is ignored. lws shuts the socket right after the close
 * frame, and unread data makes the kernel reset the connection, so a client
 * still sending its frame may never read the 1009: when this frame ends
 * soon, its rest is read and dropped first. */
static int too_big(bridge *b, session *s)
{
    rx_release(s);
    size_t rest = lws_remaining_packet_payload(s->wsi);
    /* (With nothing left of the frame, no later piece would end the
     * discarding: close now.) */
    if (rest > 0 && rest <= (size_t)b->cfg.max_message_bytes) {
        s->rx_discard = 1;
        return 0;
    }
    session_close(b, s, END_TOO_BIG, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
    return 0;
}

/* Fails the connection: lws sends the close frame when we return -1. */
static int protocol_error(bridge *b, session *s, const char *why)
{
    (void)b;
    log_debug("session %.*s: protocol error: %s", (int)s->sid_len,
              s->recipient + SESSION_ID_OFFSET, why);
    s->end = END_ERROR;
    s->state = SESSION_CLOSING;
    s->close_code = LWS_CLOSE_STATUS_PROTOCOL_ERR;
    cp_ws_fail_connection(s->wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, why);
    return -1;
}

static int on_receive(bridge *b, session *s, const char *in, size_t len)
{
    session_touch(b, s);
    if (s->state == SESSION_CLOSING)
        return 0;
    int first = lws_is_first_fragment(s->wsi);
    int last = lws_is_final_fragment(s->wsi) && lws_remaining_packet_payload(s->wsi) == 0;
    if (s->rx_discard) {
        if (lws_remaining_packet_payload(s->wsi) == 0) { /* end of this frame */
            s->rx_discard = 0;
            session_close(b, s, END_TOO_BIG, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        }
        return 0;
    }
    if (first) {
        s->rx_len = 0;
        s->rx_binary = (uint8_t)lws_frame_is_binary(s->wsi);
        s->rx_compressed = (lws_get_reserved_bits(s->wsi) & 0x40) != 0;
    } else if ((lws_get_reserved_bits(s->wsi) & 0x40) && !s->rx_compressed) {
        /* RSV1 belongs on a compressed message's first frame only (RFC
         * 7692 6); lws 4.1 lets it through on continuations once
         * permessage-deflate is negotiated. (When the first frame was
         * compressed, lws's inflater output of that frame cannot be told
         * from the next frame here.) */
        return protocol_error(b, s, "RSV1 on a continuation frame");
    }
    if (first && last) {
        /* The common case: a whole message in one piece, no copy. */
        if (len > (size_t)b->cfg.max_message_bytes)
            return too_big(b, s);
        if (s->rx_binary) {
            b->n.in[IN_BINARY]++;
            session_send_envelope(b, s, CP_MSG_ERROR, "system", NULL,
                                  "binary frames are not supported: send JSON text");
        } else {
            inbound_handle_text(b, s, in, len);
        }
        return 0;
    }
    if (s->rx_binary) {
        /* Binary content is refused, so it is only measured, never kept. */
        s->rx_len += len;
        if (s->rx_len > (size_t)b->cfg.max_message_bytes)
            return too_big(b, s);
    } else if (rx_append(b, s, in, len) != 0) {
        return too_big(b, s);
    }
    if (!last)
        return 0;
    if (s->rx_binary) {
        b->n.in[IN_BINARY]++;
        session_send_envelope(b, s, CP_MSG_ERROR, "system", NULL,
                              "binary frames are not supported: send JSON text");
    } else {
        inbound_handle_text(b, s, s->rx, s->rx_len);
    }
    rx_release(s);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    bridge *b = g_bridge;
    session **slot = user;
    session *s = slot ? *slot : NULL;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (strcmp((const char *)in, "/sse") == 0) {
            int rc = sse_serve(b, wsi, slot); /* the stream stays open: no completion */
            if (rc <= 0)
                return rc;
        } else if (!cp_lws_is_get(wsi)) {
            if (cp_lws_reply_error(wsi, 405, "method_not_allowed",
                                 "only GET is served here (WebSocket upgrade, /healthz, "
                                 "/metrics)") != 0)
                return -1;
        } else if (http_serve(b, wsi, (const char *)in) != 0) {
            return -1;
        }
        return lws_http_transaction_completed(wsi) ? -1 : 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(b, wsi);

    case LWS_CALLBACK_ESTABLISHED:
        s = establish(b, wsi);
        if (!s)
            return -1;
        *slot = s;
        return 0;

    case LWS_CALLBACK_RECEIVE:
        if (!s)
            return -1;
        return on_receive(b, s, in, len);

    case LWS_CALLBACK_RECEIVE_PONG:
        if (s)
            session_touch(b, s);
        return 0;

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* lws replaces most reserved codes by 1002 and echoes the payload,
         * but echoes codes from 5000 up and answers a 1-byte payload with
         * an empty close: those are protocol errors (RFC 6455 7.4, 5.5.1). */
        if (!cp_ws_close_payload_valid(in, len)) {
            if (!s) {
                cp_ws_fail_connection(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "invalid close frame");
                return -1;
            }
            return protocol_error(b, s, "invalid close frame");
        }
        if (s) {
            session_touch(b, s);
            if (s->state != SESSION_CLOSING)
                s->end = END_CLIENT;
        }
        return 0; /* lws answers the close frame */

    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        if (s && s->state != SESSION_CLOSING)
            cp_ws_on_drop(wsi);
        return 0;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!s)
            return 0;
        return session_write(b, s);

    case LWS_CALLBACK_HTTP_WRITEABLE: /* an SSE stream (sse.c) */
        if (!s)
            return 0;
        return session_write(b, s);

    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_CLOSED:
        if (s) {
            session_destroy(b, s);
            *slot = NULL;
        }
        return 0;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        delivery_drain(b);
        return 0;

    default:
        return 0;
    }
}

const struct lws_protocols bridge_protocols[] = {
    /* lws allocates the receive buffer for every connection when it
     * upgrades: most of an idle session's memory. Client messages are small
     * (heartbeats, short business messages); longer ones arrive in pieces
     * and are reassembled in s->rx. */
    {"cloudpush", callback, sizeof(session *), RX_CHUNK_BYTES, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

const struct lws_extension bridge_extensions[] = {
    {"permessage-deflate", lws_extension_callback_pm_deflate,
     "permessage-deflate; client_no_context_takeover; client_max_window_bits"},
    {NULL, NULL, NULL},
};
