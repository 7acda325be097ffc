#include "lwshttp.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "buf.h"
#include "commalist.h"
#include "ids.h"

static const char *reason_phrase(unsigned status)
{
    switch (status) {
    case 200: return "OK";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* lws_add_http_header_status takes the version from the request, which lws
 * only records for plain HTTP: for an upgrade it is still 0, "HTTP/1.0",
 * and strict WebSocket clients reject that status line before reading the
 * status or the body. So the status line is written here, always 1.1.
 * len < 0: no Content-Length (a stream that ends with the connection). */
static int write_headers(struct lws *wsi, unsigned status, const char *content_type, long long len,
                         const char *extra_headers)
{
    unsigned char headers[LWS_PRE + 640];
    unsigned char *start = headers + LWS_PRE, *p = start, *end = headers + sizeof headers - 1;
    /* An HTTP/2 stream (TLS with ALPN h2) has no status line: lws encodes
     * the status, and takes no raw header lines. */
    int h2 = lws_get_network_wsi(wsi) != wsi;
    if (h2) {
        if (lws_add_http_header_status(wsi, status, &p, end))
            return -1;
    } else {
        char line[80];
        int n = snprintf(line, sizeof line, "HTTP/1.1 %u %s", status, reason_phrase(status));
        if (lws_add_http_header_by_name(wsi, NULL, (const unsigned char *)line, n, &p, end))
            return -1;
    }
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                     (const unsigned char *)content_type,
                                     (int)strlen(content_type), &p, end))
        return -1;
    if (len >= 0 && lws_add_http_header_content_length(wsi, (lws_filepos_t)len, &p, end))
        return -1;
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (extra_headers && !h2) { /* "name: value\r\n...", HTTP/1.1 only */
        size_t el = strlen(extra_headers);
        if (el > (size_t)(end - p))
            return -1;
        memcpy(p, extra_headers, el);
        p += el;
    }
    return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

static int reply(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len, const char *extra_headers)
{
    if (write_headers(wsi, status, content_type, (long long)len, extra_headers) != 0)
        return -1;
    /* lws copies what the socket cannot take at once into its own buffer. */
    cp_buf tx;
    cp_buf_init(&tx);
    int rc = -1;
    if (cp_buf_reserve(&tx, LWS_PRE + len) == 0) {
        memcpy(tx.data + LWS_PRE, body, len);
        rc = lws_write(wsi, (unsigned char *)tx.data + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) <
                     (int)len
                 ? -1
                 : 0;
    }
    cp_buf_free(&tx);
    return rc;
}

int cp_lws_reply(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len)
{
    return reply(wsi, status, content_type, body, len, NULL);
}

int cp_lws_begin_stream(struct lws *wsi, const char *content_type, const char *extra_headers)
{
    return write_headers(wsi, 200, content_type, -1, extra_headers);
}

int cp_lws_redirect(struct lws *wsi, const char *location, int cors)
{
    /* Room for a query of CP_LWS_MAX_QUERY bytes percent-encoded: static,
     * as the service thread is the only caller. */
    static unsigned char headers[LWS_PRE + 3 * CP_LWS_MAX_QUERY + 1024];
    unsigned char *start = headers + LWS_PRE, *p = start, *end = headers + sizeof headers - 1;
    int h2 = lws_get_network_wsi(wsi) != wsi;
    if (h2) {
        if (lws_add_http_header_status(wsi, 307, &p, end))
            return -1;
    } else {
        static const char line[] = "HTTP/1.1 307 Temporary Redirect";
        if (lws_add_http_header_by_name(wsi, NULL, (const unsigned char *)line,
                                        (int)sizeof line - 1, &p, end))
            return -1;
    }
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_LOCATION,
                                     (const unsigned char *)location, (int)strlen(location), &p,
                                     end) ||
        lws_add_http_header_content_length(wsi, 0, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    /* A CORS request (EventSource from another origin) follows a redirect
     * only when the redirect passes the CORS check too. */
    char origin[256];
    int olen = cors ? lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) : 0;
    if (olen > 0 &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ACCESS_CONTROL_ALLOW_ORIGIN,
                                     (const unsigned char *)origin, olen, &p, end))
        return -1;
    return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

int cp_lws_query_encoded(struct lws *wsi, char *out, size_t cap)
{
    static char frag[CP_LWS_MAX_QUERY + 1]; /* the service thread's */
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len <= 0)
            break;
        if (lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            return -1;
        if (n && n < cap)
            out[n++] = '&';
        int seen_eq = 0;
        for (const char *c = frag; *c; c++) {
            unsigned char u = (unsigned char)*c;
            if (n + 4 > cap)
                return -1;
            if (isalnum(u) || u == '-' || u == '.' || u == '_' || u == '~' ||
                (u == '=' && !seen_eq)) {
                seen_eq |= u == '=';
                out[n++] = (char)u;
            } else {
                out[n++] = '%';
                out[n++] = hex[u >> 4];
                out[n++] = hex[u & 15];
            }
        }
    }
    if (n >= cap)
        return -1;
    out[n] = '\0';
    return (int)n;
}

int cp_lws_reply_json(struct lws *wsi, unsigned status, const char *body)
{
    return cp_lws_reply(wsi, status, "application/json", body, strlen(body));
}

static int reply_error(struct lws *wsi, unsigned status, const char *code, const char *msg,
                       const char *extra_headers)
{
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "{\"success\":false,\"code\":");
    cp_buf_json_string(&b, code, strlen(code));
    cp_buf_puts(&b, ",\"msg\":");
    cp_buf_json_string(&b, msg, strlen(msg));
    cp_buf_putc(&b, '}');
    int rc = b.failed ? -1 : reply(wsi, status, "application/json", b.data, b.len, extra_headers);
    cp_buf_free(&b);
    return rc;
}

int cp_lws_reply_error(struct lws *wsi, unsigned status, const char *code, const char *msg)
{
    return reply_error(wsi, status, code, msg, NULL);
}

int cp_lws_refuse_upgrade(struct lws *wsi, unsigned status, const char *code, const char *msg)
{
    /* RFC 6455 4.4: a version we do not speak is answered with the one we
     * do. The connection is not kept for another request. */
    return reply_error(wsi, status, code, msg,
                       status == 426 ? "Sec-WebSocket-Version: 13\r\nConnection: close\r\n"
                                     : "Connection: close\r\n");
}

/* Points *value at the query argument `key=` (in a static buffer: only the
 * service thread calls this). Returns its length, or -1 when absent. */
static int query_arg(struct lws *wsi, const char *key, const char **value)
{
    static char frag[CP_JWT_MAX + 64];
    size_t klen = strlen(key);
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0)
            return -1;
        if (flen >= (int)sizeof frag)
            continue;
        if (lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            continue;
        if (strncmp(frag, key, klen) != 0 || frag[klen] != '=')
            continue;
        *value = frag + klen + 1;
        return (int)strlen(*value);
    }
}

int cp_lws_channel_id(struct lws *wsi, char *out, size_t cap)
{
    const char *v;
    int vlen = query_arg(wsi, "channelId", &v);
    if (vlen <= 0)
        return 0;
    if (!cp_channel_id_valid(v, (size_t)vlen) || (size_t)vlen >= cap)
        return -1;
    memcpy(out, v, (size_t)vlen + 1);
    return vlen;
}

/* The token from "?token=" or from the offered subprotocols (the entry
 * that is not "cloudpush"). Copies it into out; returns its length or 0. */
static size_t find_token(struct lws *wsi, char *out, size_t cap)
{
    const char *v;
    int vlen = query_arg(wsi, "token", &v);
    if (vlen > 0 && (size_t)vlen < cap) {
        memcpy(out, v, (size_t)vlen + 1);
        return (size_t)vlen;
    }
    static char protos[CP_JWT_MAX + 256];
    int plen = lws_hdr_copy(wsi, protos, sizeof protos, WSI_TOKEN_PROTOCOL);
    if (plen > 0)
        return cp_jwt_from_protocol_list(protos, (size_t)plen, out, cap);
    /* Authorization: Bearer <JWT> (non-browser clients, EventSource
     * polyfills); protos is free again. */
    int alen = lws_hdr_copy(wsi, protos, sizeof protos, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (alen <= 7 || strncasecmp(protos, "Bearer ", 7) != 0)
        return 0;
    const char *t = protos + 7;
    while (*t == ' ')
        t++;
    size_t tlen = strlen(t);
    if (tlen == 0 || tlen >= cap)
        return 0;
    memcpy(out, t, tlen + 1);
    return tlen;
}

int cp_lws_origin_allowed(struct lws *wsi, const char *allowed)
{
    if (!allowed || !*allowed)
        return 1;
    char origin[256];
    int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) == 0)
        return 1;
    if (n <= 0)
        return 0; /* longer than any origin we would list */
    const char *item;
    size_t len;
    for (const char *p = allowed; cp_comma_next(&p, &item, &len);) {
        if ((len == 1 && item[0] == '*') ||
            (len == (size_t)n && strncasecmp(item, origin, len) == 0))
            return 1;
    }
    return 0;
}

int cp_lws_identify(struct lws *wsi, const cp_jwt_verifier *v, char *out, size_t cap,
                    cp_jwt_claims *claims, const char **code, const char **msg)
{
    claims->exp = 0;
    claims->pub_len = 0;
    int n = cp_lws_channel_id(wsi, out, cap);
    if (n < 0) {
        *code = "invalid_channel_id";
        *msg = "channelId must be 1-128 characters of [A-Za-z0-9._:@-]";
        return 400;
    }
    if (!v) {
        if (n == 0) {
            *code = "missing_channel_id";
            *msg = "the channelId query parameter is required";
            return 400;
        }
        return 0;
    }
    static char token[CP_JWT_MAX + 1];
    size_t tlen = find_token(wsi, token, sizeof token);
    if (tlen == 0) {
        *code = "unauthorized";
        *msg = "a token is required: ?token=<JWT>, Sec-WebSocket-Protocol: cloudpush, <JWT> or "
               "Authorization: Bearer <JWT>";
        return 401;
    }
    const char *why = NULL;
    if (cp_jwt_verify(v, token, tlen, cp_now_ms() / 1000, claims, &why) != 0) {
        *code = strcmp(why, "token expired") == 0 ? "token_expired" : "unauthorized";
        *msg = why;
        return 401;
    }
    if (n == 0) {
        snprintf(out, cap, "%s", claims->sub); /* channelId taken from the token */
    } else if (strcmp(out, claims->sub) != 0) {
        *code = "forbidden_channel";
        *msg = "the token is for another channelId";
        return 403;
    }
    return 0;
}

int cp_lws_is_get(struct lws *wsi) { return lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0; }

/* Walks a comma-separated header value (lws reads at most 127 bytes of the
 * headers it checks itself). Returns the index of the first entry equal to
 * token (any case), -1 when there is none, -2 when an entry before it is
 * longer than max_entry (0: no limit) or the value is too long. */
static int header_find_token(struct lws *wsi, enum lws_token_indexes h, const char *token,
                             size_t max_entry)
{
    char v[128];
    int n = lws_hdr_copy(wsi, v, sizeof v, h);
    if (n < 0)
        return -2;
    size_t tl = strlen(token);
    int index = 0;
    for (char *p = v; *p; index++) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        char *e = p;
        while (*e && *e != ',')
            e++;
        char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return index;
        if (max_entry && (size_t)(t - p) > max_entry)
            return -2;
        p = e;
    }
    return -1;
}

/* A Sec-WebSocket-Key is 16 random bytes in base64: 24 characters, "=="
 * at the end (RFC 6455 4.1). */
static int key_valid(struct lws *wsi)
{
    char k[32];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_KEY) != 24 ||
        lws_hdr_copy(wsi, k, sizeof k, WSI_TOKEN_KEY) != 24)
        return 0;
    for (int i = 0; i < 22; i++)
        if (!(isalnum((unsigned char)k[i]) || k[i] == '+' || k[i] == '/'))
            return 0;
    return k[22] == '=' && k[23] == '=';
}

int cp_lws_check_upgrade(struct lws *wsi, const char **code, const char **msg)
{
    if (!cp_lws_is_get(wsi)) {
        *code = "method_not_allowed";
        *msg = "a WebSocket upgrade must be a GET request";
        return 405;
    }
    if (header_find_token(wsi, WSI_TOKEN_CONNECTION, "upgrade", 0) < 0) {
        *code = "bad_handshake";
        *msg = "the Connection header must contain \"Upgrade\"";
        return 400;
    }
    if (!key_valid(wsi)) {
        *code = "bad_handshake";
        *msg = "Sec-WebSocket-Key must be 16 bytes in base64";
        return 400;
    }
    char ver[8];
    if (lws_hdr_copy(wsi, ver, sizeof ver, WSI_TOKEN_VERSION) <= 0 || strcmp(ver, "13") != 0) {
        *code = "unsupported_version";
        *msg = "only Sec-WebSocket-Version 13 is supported";
        return 426;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) > CP_LWS_MAX_PROTOCOL_LIST) {
        *code = "header_too_large";
        *msg = "Sec-WebSocket-Protocol is over 127 bytes (a libwebsockets limit): send a long "
               "token as ?token=<JWT>";
        return 431;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) > 0) {
        /* lws binds the first entry it knows and drops the connection
         * without an answer when none is known or an entry before it is
         * over 63 bytes (lws_process_ws_upgrade). */
        int at = header_find_token(wsi, WSI_TOKEN_PROTOCOL, "cloudpush", 63);
        if (at < 0) {
            *code = "unsupported_protocol";
            *msg = "Sec-WebSocket-Protocol must offer \"cloudpush\" (before a token)";
            return 400;
        }
        /* (the balancer's own upstream protocol is no client's) */
        int upstream = header_find_token(wsi, WSI_TOKEN_PROTOCOL, "cloudpush-upstream", 63);
        if (upstream >= 0 && upstream < at) {
            *code = "unsupported_protocol";
            *msg = "Sec-WebSocket-Protocol must offer \"cloudpush\" first";
            return 400;
        }
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > CP_LWS_MAX_QUERY) {
        *code = "query_too_large";
        *msg = "the query string is over 4608 bytes";
        return 431;
    }
    return 0;
}

int cp_ws_close_payload_valid(const unsigned char *p, size_t len)
{
    if (len == 0)
        return 1;
    if (len == 1)
        return 0;
    unsigned code = (unsigned)p[0] << 8 | p[1];
    /* RFC 6455 7.4: 1000-1003, 1007-1014 (IANA registry) and 3000-4999
     * may be sent; the rest are reserved, or must never be on the wire
     * (1005, 1006, 1015). */
    if (code >= 3000 && code <= 4999)
        return 1;
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

void cp_ws_fail_connection(struct lws *wsi, unsigned code, const char *why)
{
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)why, strlen(why));
}

int cp_lws_peer_gone(struct lws *wsi)
{
    char c;
    ssize_t n = recv(lws_get_socket_fd(wsi), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void cp_ws_on_drop(struct lws *wsi)
{
    /* lws 4.1 drops the TCP connection without a close frame when its own
     * frame parser fails without naming a reason (a control frame over 125
     * bytes, a close reason that is not UTF-8, a 64-bit length with the top
     * bit set). The protocol is dropped just before lws decides between a
     * close frame and a plain hang-up, and it sends the frame when a reason
     * is set: name one, unless the peer is already gone. */
    if (lws_get_close_length(wsi) == 0 && !cp_lws_peer_gone(wsi))
        cp_ws_fail_connection(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, "protocol error");
}
