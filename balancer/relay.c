/* The WebSocket entry point. Every upgrade is checked here (http.c); then
 * it is handed to a byte-relay worker (handover.c), or, on a TLS listener,
 * to a wss:// bridge or with --relay-workers 0, relayed here message by
 * message to a bridge chosen at connect time, for its whole life. Both
 * directions are bounded: when one side's outbound queue passes
 * --max-buffer-bytes, reading from the other side pauses. Closing either
 * side closes the other with the same code and reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "balancer.h"
#include "ids.h"
#include "log.h"
#include "lwshttp.h"

/* RFC 6455 registry: "Try Again Later" (not named by lws 4.1). */
#define CLOSE_TRY_AGAIN_LATER 1013

/* lws's receive buffer, allocated for every connection (two per relayed
 * client); messages arrive in pieces of this size and the relay
 * reassembles them. */
#define RELAY_RX_CHUNK_BYTES 512

typedef struct msg {
    struct msg *prev, *next; /* utlist DL: O(1) append at the tail */
    size_t len;
    int binary;
    unsigned char data[]; /* LWS_PRE bytes of headroom, then the payload */
} msg;

typedef struct {
    msg *head;
    size_t bytes;
} msg_queue;

/* One direction's reassembly buffer. */
typedef struct {
    unsigned char *buf;
    size_t len, cap;
    int binary;
    int compressed; /* the first frame had RSV1 (permessage-deflate) */
} assembly;

typedef struct relay {
    struct lws *down; /* the client */
    struct lws *up;   /* the bridge */
    int up_ready;
    msg_queue to_up, to_down;
    assembly from_down, from_up;
    uint16_t close_code;  /* to pass on to the side still open */
    char close_reason[124];
    size_t close_reason_len;
    int closing_down, closing_up;
    int down_paused, up_paused;
    char bridge_id[VIEW_ID_MAX + 1];
    char client_ip[64]; /* told to the bridge as X-Forwarded-For */
    int64_t last_rx_ms;  /* when the client last sent a message (monotonic) */
    struct relay *prev, *next; /* every relay, for what lws leaves at shutdown */
} relay;

/* Every relay (service thread). lws does not always report both sides
 * closed when the context is destroyed with a relay half-closed, so the
 * ones left are freed after it (relay_free_all). */
static relay *all_relays;

static void queue_free(msg_queue *q)
{
    msg *m, *tmp;
    DL_FOREACH_SAFE(q->head, m, tmp)
    {
        DL_DELETE(q->head, m);
        free(m);
    }
    q->bytes = 0;
}

static int queue_push(msg_queue *q, const unsigned char *data, size_t len, int binary)
{
    msg *m = malloc(sizeof *m + LWS_PRE + len);
    if (!m)
        return -1;
    m->len = len;
    m->binary = binary;
    memcpy(m->data + LWS_PRE, data, len);
    DL_APPEND(q->head, m);
    q->bytes += len;
    return 0;
}

static void relay_maybe_free(balancer *b, relay *r)
{
    if (r->down || r->up)
        return;
    queue_free(&r->to_up);
    queue_free(&r->to_down);
    free(r->from_down.buf);
    free(r->from_up.buf);
    DL_DELETE(all_relays, r);
    free(r);
    b->relays--;
    b->n.relays_closed++;
}

void relay_free_all(balancer *b)
{
    relay *r, *tmp;
    DL_FOREACH_SAFE(all_relays, r, tmp)
    {
        r->down = r->up = NULL;
        relay_maybe_free(b, r);
    }
}

static void remember_close(relay *r, const void *in, size_t len)
{
    const unsigned char *p = in;
    if (len >= 2) {
        r->close_code = (uint16_t)(p[0] << 8 | p[1]);
        r->close_reason_len = len - 2 < sizeof r->close_reason ? len - 2 : sizeof r->close_reason;
        memcpy(r->close_reason, p + 2, r->close_reason_len);
    }
}

static int drain(struct lws *wsi, msg_queue *q, struct lws *source, int *paused,
                 uint64_t *count, uint64_t *bytes);

static void close_side(relay *r, struct lws *wsi, int *closing, uint16_t code, const char *text)
{
    if (!wsi || *closing)
        return;
    *closing = 1;
    if (!r->close_code) {
        r->close_code = code;
        r->close_reason_len = strlen(text);
        memcpy(r->close_reason, text, r->close_reason_len);
    }
    if (wsi == r->up && !r->up_ready) {
        /* Still connecting: no close frame to send, just drop it. */
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return;
    }
    lws_callback_on_writable(wsi);
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, 3);
}

/* Writable: flush what is queued first, then send the close if one is due.
 * Returns the callback's result. */
static int write_side(relay *r, struct lws *wsi, msg_queue *q, struct lws *source, int *paused,
                      int closing, uint64_t *count, uint64_t *bytes)
{
    if (q->head) {
        if (drain(wsi, q, source, paused, count, bytes) != 0)
            return -1;
        if (q->head || !closing)
            return 0;
        lws_callback_on_writable(wsi); /* close on the next round */
        return 0;
    }
    if (closing) {
        lws_close_reason(wsi, (enum lws_close_status)r->close_code,
                         (unsigned char *)r->close_reason, r->close_reason_len);
        return -1;
    }
    return 0;
}

/* Where a complete message goes: the other side's connection and queue. */
typedef struct {
    struct lws *wsi;
    msg_queue *q;
    int ready;   /* connected (the bridge side may still be connecting) */
    int closing;
    int *paused; /* reading `from` is paused until the queue drains */
    uint64_t *count, *bytes;
} destination;

/* Sends or queues one complete message. data has LWS_PRE bytes of
 * headroom (lws writes the frame header there). Returns -1 on failure. */
static int forward(destination *d, struct lws *from, unsigned char *data, size_t len, int binary)
{
    balancer *b = balancer_of(from);
    if (d->ready && !d->closing && !d->q->head && !lws_partial_buffered(d->wsi)) {
        /* Nothing waiting: write now, no queue copy and no writable round
         * trip (the relay has no extensions, so this is safe outside the
         * WRITEABLE callback; a partial write is kept and finished by lws). */
        if (lws_write(d->wsi, data, len, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)len)
            return -1;
        (*d->count)++;
        *d->bytes += len;
        return 0;
    }
    if (queue_push(d->q, data, len, binary) != 0)
        return -1;
    if (d->ready)
        lws_callback_on_writable(d->wsi);
    if (d->q->bytes > (size_t)b->cfg.max_buffer_bytes && !*d->paused) {
        *d->paused = 1; /* stop reading `from` until the queue drained */
        lws_rx_flow_control(from, 0);
    }
    return 0;
}

/* Adds a received piece; forwards the message when it is complete. Returns
 * -1 when the message is too big or cannot be forwarded. */
static int take_piece(assembly *a, destination *d, struct lws *from, void *in, size_t len)
{
    balancer *b = balancer_of(from);
    int first = lws_is_first_fragment(from);
    int last = lws_is_final_fragment(from) && !lws_remaining_packet_payload(from);
    if (first && last) {
        /* Whole in one piece: lws's receive buffer has LWS_PRE bytes of
         * headroom in front of `in`, so it is forwarded without a copy. */
        if (len > (size_t)b->cfg.max_message_bytes)
            return -1;
        return forward(d, from, in, len, lws_frame_is_binary(from));
    }
    if (first) {
        a->len = 0;
        a->binary = lws_frame_is_binary(from);
        a->compressed = (lws_get_reserved_bits(from) & 0x40) != 0;
    }
    if (a->len + len > (size_t)b->cfg.max_message_bytes)
        return -1;
    if (LWS_PRE + a->len + len > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < LWS_PRE + a->len + len)
            cap *= 2;
        unsigned char *p = realloc(a->buf, cap);
        if (!p)
            return -1;
        a->buf = p;
        a->cap = cap;
    }
    memcpy(a->buf + LWS_PRE + a->len, in, len);
    a->len += len;
    if (!last)
        return 0;
    if (forward(d, from, a->buf + LWS_PRE, a->len, a->binary) != 0)
        return -1;
    if (a->cap > 65536) { /* do not keep a big buffer around */
        free(a->buf);
        a->buf = NULL;
        a->cap = 0;
    }
    a->len = 0;
    return 0;
}

/* Writes queued messages to wsi until it is choked. */
static int drain(struct lws *wsi, msg_queue *q, struct lws *source, int *paused,
                 uint64_t *count, uint64_t *bytes)
{
    for (int i = 0; i < 64 && q->head; i++) {
        msg *m = q->head;
        int n = lws_write(wsi, m->data + LWS_PRE, m->len,
                          m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        if (n < (int)m->len)
            return -1;
        DL_DELETE(q->head, m);
        q->bytes -= m->len;
        (*count)++;
        *bytes += m->len;
        free(m);
        if (lws_partial_buffered(wsi))
            break;
    }
    if (q->head)
        lws_callback_on_writable(wsi);
    if (*paused && q->bytes <= (size_t)balancer_of(wsi)->cfg.max_buffer_bytes / 2 && source) {
        *paused = 0;
        lws_rx_flow_control(source, 1);
    }
    return 0;
}

/* The client broke the protocol: lws sends our 1002 close frame when the
 * callback returns -1, and the bridge side is closed as for a client close. */
static int fail_client(relay *r, const char *why)
{
    log_debug("relayed client: protocol error: %s", why);
    r->closing_down = 1;
    cp_ws_fail_connection(r->down, LWS_CLOSE_STATUS_PROTOCOL_ERR, why);
    close_side(r, r->up, &r->closing_up, LWS_CLOSE_STATUS_GOINGAWAY, "client closed");
    return -1;
}

/* The longest query passed on to a bridge, percent-encoded: lws 4.1's
 * client writes "GET <path> HTTP/1.1" into 2048 bytes and cuts the rest,
 * and the bridge URL's own path takes a little. */
#define UPSTREAM_QUERY_MAX 1900

/* The client's query arguments, to go along (channelId, token, ...). lws
 * keeps them as decoded fragments: join them with '&' again and
 * percent-encode what is not plain. Returns the length, or -1 when it is
 * over UPSTREAM_QUERY_MAX. */
int relay_upstream_query(struct lws *down, char *args, size_t cap)
{
    static char frag[CP_LWS_MAX_QUERY + 1];
    size_t al = 0;
    for (int i = 0;; i++) {
        int fl = lws_hdr_copy_fragment(down, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (fl <= 0)
            break;
        if (al + 1 + 3 * (size_t)fl >= cap || al > UPSTREAM_QUERY_MAX)
            return -1;
        if (al)
            args[al++] = '&';
        for (int k = 0; k < fl; k++) {
            unsigned char c = (unsigned char)frag[k];
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                strchr("-._~=:@", c)) {
                args[al++] = (char)c;
            } else {
                static const char hex[] = "0123456789ABCDEF";
                args[al++] = '%';
                args[al++] = hex[c >> 4];
                args[al++] = hex[c & 15];
            }
        }
    }
    args[al] = '\0';
    return al > UPSTREAM_QUERY_MAX ? -1 : (int)al;
}

/* The client's query must reach the bridge whole. */
static int relay_query_fits(struct lws *down)
{
    static char args[3 * CP_LWS_MAX_QUERY + 1];
    return relay_upstream_query(down, args, sizeof args) >= 0;
}

static int connect_upstream(balancer *b, relay *r, struct lws *down)
{
    const placement_bridge *target = placement_pick(snapshot_placement(b), cp_random_u64());
    if (!target)
        return -1;
    snprintf(r->bridge_id, sizeof r->bridge_id, "%s", target->info.id);
    if (!target->url.ok) {
        log_error("bridge %s advertises '%s', not a ws:// or wss:// URL", target->info.id,
                  target->info.url);
        return -1;
    }
    static char args[3 * CP_LWS_MAX_QUERY + 1], path[sizeof args + VIEW_URL_MAX + 2];
    if (relay_upstream_query(down, args, sizeof args) < 0)
        return -1; /* refused before the upgrade (relay_query_fits) */
    const char *upath = target->url.path_at ? target->info.url + target->url.path_at : "";
    int plen = snprintf(path, sizeof path, "/%s%s%s", upath, args[0] ? "?" : "", args);
    if (plen < 0 || plen > 2030) { /* lws would cut the request line */
        log_warn("bridge %s: path and query too long to relay (%d bytes)", target->info.id,
                 plen);
        return -1;
    }

    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = b->server.ctx;
    /* Connect to the address resolved off the event loop; the name still
     * goes in Host (and TLS server name). */
    ci.address = target->info.addr;
    ci.port = target->url.port;
    ci.path = path;
    ci.host = target->url.host;
    /* The browser's Origin goes along as it is (the context sends raw
     * origins), so a bridge's --allowed-origins sees the real page. */
    static char origin[256];
    ci.origin = lws_hdr_copy(down, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0 ? origin : NULL;
    ci.local_protocol_name = "cloudpush-upstream";
    /* Pass on the subprotocols the client offered (a token may be one). */
    static char protos[256];
    if (lws_hdr_copy(down, protos, sizeof protos, WSI_TOKEN_PROTOCOL) > 0)
        ci.protocol = protos;
    ci.pwsi = &r->up;
    ci.userdata = r;
    ci.retry_and_idle_policy = NULL;
    if (target->url.tls)
        ci.ssl_connection = LCCSCF_USE_SSL | (b->cfg.tls_verify_bridges
                                                  ? 0
                                                  : LCCSCF_ALLOW_SELFSIGNED |
                                                        LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK);
    if (!lws_client_connect_via_info(&ci)) {
        r->up = NULL;
        return -1;
    }
    return 0;
}

static int relay_callback_down(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                               void *in, size_t len)
{
    balancer *b = balancer_of(wsi);
    /* lws also calls the first protocol for events of other connections
     * (the upstream ones, at destruction): user is only our slot for the
     * client-side WebSocket events below. */
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED:
        break;
    default:
        return 0;
    }
    const struct lws_protocols *proto = lws_get_protocol(wsi);
    if (!proto || strcmp(proto->name, "cloudpush") != 0 || !user)
        return 0;
    relay **slot = user;
    relay *r = *slot;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        r = calloc(1, sizeof *r);
        if (!r)
            return -1;
        r->down = wsi;
        r->last_rx_ms = cp_mono_ms();
        *slot = r;
        DL_APPEND(all_relays, r);
        lws_get_peer_simple(wsi, r->client_ip, sizeof r->client_ip);
        if (strncmp(r->client_ip, "::ffff:", 7) == 0)
            memmove(r->client_ip, r->client_ip + 7, strlen(r->client_ip + 7) + 1);
        b->relays++;
        b->n.relays_opened++;
        if (connect_upstream(b, r, wsi) != 0) {
            b->n.relay_upstream_failed++;
            close_side(r, wsi, &r->closing_down, CLOSE_TRY_AGAIN_LATER,
                       "no bridge available");
        }
        return 0;

    case LWS_CALLBACK_RECEIVE:
        if (!r || r->closing_down)
            return 0;
        r->last_rx_ms = cp_mono_ms();
        if (!lws_is_first_fragment(wsi) && (lws_get_reserved_bits(wsi) & 0x40) &&
            !r->from_down.compressed) {
            /* RSV1 belongs on a compressed message's first frame only
             * (RFC 7692 6); lws 4.1 lets it through on continuations once
             * permessage-deflate is negotiated. */
            return fail_client(r, "RSV1 on a continuation frame");
        }
        destination d = {r->up, &r->to_up, r->up_ready, r->closing_up, &r->down_paused,
                         &b->n.messages_up, &b->n.bytes_up};
        if (take_piece(&r->from_down, &d, wsi, in, len) != 0) {
            b->n.too_big++;
            close_side(r, wsi, &r->closing_down, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                       "message too big");
            close_side(r, r->up, &r->closing_up, LWS_CLOSE_STATUS_GOINGAWAY, "client closed");
        }
        return 0;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!r)
            return 0;
        return write_side(r, wsi, &r->to_down, r->up, &r->up_paused, r->closing_down,
                          &b->n.messages_down, &b->n.bytes_down);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* lws replaces most reserved codes by 1002 and echoes the payload,
         * but echoes codes from 5000 up and answers a 1-byte payload with
         * an empty close: those are protocol errors (RFC 6455 7.4, 5.5.1). */
        if (!cp_ws_close_payload_valid(in, len)) {
            if (!r) {
                cp_ws_fail_connection(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "invalid close frame");
                return -1;
            }
            return fail_client(r, "invalid close frame");
        }
        if (r) {
            remember_close(r, in, len);
            r->closing_down = 1; /* lws answers; nothing more goes to the client */
            close_side(r, r->up, &r->closing_up, LWS_CLOSE_STATUS_GOINGAWAY, "client closed");
        }
        return 0;

    case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
        /* Not for a client that has been silent since before the ping
         * policy could hang it up (lws gives no other sign of that): it is
         * dropped without a close frame, as before. */
        if (r && !r->closing_down &&
            !(b->cfg.ping_interval_s &&
              cp_mono_ms() - r->last_rx_ms >= (int64_t)b->cfg.ping_interval_s * 1000))
            cp_ws_on_drop(wsi);
        return 0;

    case LWS_CALLBACK_CLOSED:
        if (r) {
            r->down = NULL;
            *slot = NULL;
            close_side(r, r->up, &r->closing_up, LWS_CLOSE_STATUS_GOINGAWAY, "client closed");
            relay_maybe_free(b, r);
        }
        return 0;

    default:
        return 0;
    }
}

static int relay_callback_up(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
    balancer *b = balancer_of(wsi);
    relay *r = user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!r)
            return -1;
        r->up_ready = 1;
        if (r->to_up.head || r->closing_up)
            lws_callback_on_writable(wsi);
        return 0;

    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        /* user may be NULL here; the connection's own user data is ours */
        relay *rr = lws_wsi_user(wsi);
        if (!rr || !rr->client_ip[0])
            return 0;
        unsigned char **p = in, *end = *p + len;
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"x-forwarded-for:",
                                        (const unsigned char *)rr->client_ip,
                                        (int)strlen(rr->client_ip), p, end))
            return -1;
        return 0;
    }

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (r) {
            log_warn("relay to bridge %s failed: %s", r->bridge_id,
                     in ? (const char *)in : "connection error");
            b->n.relay_upstream_failed++;
            r->up = NULL;
            close_side(r, r->down, &r->closing_down, CLOSE_TRY_AGAIN_LATER,
                       "bridge unreachable");
            relay_maybe_free(b, r);
        }
        return 0;

    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!r || r->closing_up)
            return 0;
        destination d = {r->down, &r->to_down, r->down != NULL, r->closing_down,
                         &r->up_paused, &b->n.messages_down, &b->n.bytes_down};
        if (take_piece(&r->from_up, &d, wsi, in, len) != 0) {
            b->n.too_big++;
            close_side(r, wsi, &r->closing_up, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                       "message too big");
            close_side(r, r->down, &r->closing_down, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                       "bridge message too big");
        }
        return 0;

    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!r)
            return 0;
        return write_side(r, wsi, &r->to_up, r->down, &r->down_paused, r->closing_up,
                          &b->n.messages_up, &b->n.bytes_up);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (r) {
            remember_close(r, in, len);
            close_side(r, r->down, &r->closing_down, LWS_CLOSE_STATUS_GOINGAWAY,
                       "bridge closed");
        }
        return 0;

    case LWS_CALLBACK_CLIENT_CLOSED:
    /* Closed while its upgrade was still under way (the client left
     * first): lws reports it as an HTTP client's close, and only that. */
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        if (r) {
            r->up = NULL;
            r->up_ready = 0;
            close_side(r, r->down, &r->closing_down, LWS_CLOSE_STATUS_GOINGAWAY,
                       "bridge closed");
            relay_maybe_free(b, r);
        }
        return 0;

    default:
        return 0;
    }
}

/* The client side: plain HTTP (route API, health, metrics) goes to http.c,
 * the upgrade is checked there, and the WebSocket is relayed. */
static int callback_client(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                           void *in, size_t len)
{
    balancer *b = balancer_of(wsi);
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* nonzero: lws closes its descriptor for this client */
        return accept_handover(b, wsi, (int)(intptr_t)in);
    case LWS_CALLBACK_HTTP:
        if (http_serve(b, wsi, (const char *)in) != 0)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
    {
        /* Checked here, before the upgrade: the query goes to the bridge. */
        if (!relay_query_fits(wsi)) {
            cp_lws_refuse_upgrade(wsi, 431, "query_too_large",
                                  "the balancer passes on a query of at most 1900 bytes "
                                  "(percent-encoded); send a long token in "
                                  "Sec-WebSocket-Protocol or connect to a bridge directly");
            return 1;
        }
        int rc = http_confirm_upgrade(b, wsi);
        if (rc || !handover_enabled(b))
            return rc;
        /* Handed over or refused: lws closes its side without a word
         * (handover.c left it a socket of its own to close). */
        return handover_upgrade(b, wsi) <= 0 ? 1 : 0;
    }
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* a signal woke the loop */
        if (cp_lws_server_stop_requested(&b->server))
            cp_lws_loop_stop(&b->server.loop);
        return 0;
    default:
        return relay_callback_down(wsi, reason, user, in, len);
    }
}

const struct lws_protocols relay_protocols[] = {
    /* Named like the bridge's protocol, so clients offering
     * "Sec-WebSocket-Protocol: cloudpush, <token>" are accepted here too. */
    {"cloudpush", callback_client, sizeof(void *), RELAY_RX_CHUNK_BYTES, 0, NULL, 0},
    {"cloudpush-upstream", relay_callback_up, 0, RELAY_RX_CHUNK_BYTES, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};
