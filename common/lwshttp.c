#include "lwshttp.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "commalist.h"
#include "ids.h"

int cp_lws_reply(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len)
{
    unsigned char headers[LWS_PRE + 512];
    unsigned char *start = headers + LWS_PRE, *p = start, *end = headers + sizeof headers - 1;
    if (lws_add_http_common_headers(wsi, status, content_type, (lws_filepos_t)len, &p, end))
        return -1;
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
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

int cp_lws_reply_json(struct lws *wsi, unsigned status, const char *body)
{
    return cp_lws_reply(wsi, status, "application/json", body, strlen(body));
}

int cp_lws_reply_error(struct lws *wsi, unsigned status, const char *code, const char *msg)
{
    cp_buf b;
    cp_buf_init(&b);
    cp_buf_puts(&b, "{\"success\":false,\"code\":");
    cp_buf_json_string(&b, code, strlen(code));
    cp_buf_puts(&b, ",\"msg\":");
    cp_buf_json_string(&b, msg, strlen(msg));
    cp_buf_putc(&b, '}');
    int rc = b.failed ? -1 : cp_lws_reply(wsi, status, "application/json", b.data, b.len);
    cp_buf_free(&b);
    return rc;
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
    if (plen <= 0)
        return 0;
    return cp_jwt_from_protocol_list(protos, (size_t)plen, out, cap);
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
        *msg = "a token is required: ?token=<JWT> or Sec-WebSocket-Protocol: cloudpush, <JWT>";
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
