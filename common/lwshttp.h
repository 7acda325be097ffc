/* Small HTTP and WebSocket protocol helpers for the libwebsockets servers
 * (bridge, balancer); their start and end are in lwsserver.h. */
#ifndef CP_LWSHTTP_H
#define CP_LWSHTTP_H

#include <stddef.h>

#include <libwebsockets.h>

#include "jwt.h"

/* Writes a complete response (headers + body). Returns 0 or -1. */
int cp_lws_reply(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len);
int cp_lws_reply_json(struct lws *wsi, unsigned status, const char *body);
/* {"success":false,"code":CODE,"msg":MSG} */
int cp_lws_reply_error(struct lws *wsi, unsigned status, const char *code, const char *msg);
/* The same for a refused WebSocket upgrade: also "Connection: close", and
 * for 426 "Sec-WebSocket-Version: 13". Every answer of this file has an
 * HTTP/1.1 status line. */
int cp_lws_refuse_upgrade(struct lws *wsi, unsigned status, const char *code, const char *msg);

/* Starts a streamed response: 200, content_type, Cache-Control: no-store
 * and extra_headers ("name: value\r\n...", HTTP/1.1 only), no
 * Content-Length (the body ends with the connection). Returns 0 or -1. */
int cp_lws_begin_stream(struct lws *wsi, const char *content_type, const char *extra_headers);

/* 307 to location (no body); cors: with Access-Control-Allow-Origin
 * echoing the request's Origin (the caller checked it). Returns 0 or -1. */
int cp_lws_redirect(struct lws *wsi, const char *location, int cors);
/* The request's query arguments as lws decoded them, percent-encoded
 * again and joined with '&' into out. Returns the length, or -1 when it
 * does not fit. */
int cp_lws_query_encoded(struct lws *wsi, char *out, size_t cap);

/* lws 4.1 closes an upgrade whose Sec-WebSocket-Protocol is longer than
 * this without an answer (it copies it into a 128-byte buffer). */
#define CP_LWS_MAX_PROTOCOL_LIST 127
/* The longest query string an upgrade may carry: a token of CP_JWT_MAX
 * and the channel id, with room to spare. */
#define CP_LWS_MAX_QUERY (CP_JWT_MAX + 512)
/* The HTTP request head lws keeps (info.max_http_header_data): a
 * CP_LWS_MAX_QUERY query and ordinary headers fit, so a longer query is
 * answered 431 by us; lws drops a longer head with no answer. */
#define CP_LWS_MAX_REQUEST_HEAD 8192

/* The RFC 6455 4.2.1 checks lws 4.1 does late (no answer) or not at all:
 * GET, Connection: Upgrade, a well-formed Sec-WebSocket-Key, version 13, a
 * subprotocol list that offers "cloudpush" where lws finds it, plus the
 * sizes above. Returns 0, or the status to refuse with (405, 400, 426,
 * 431) and a stable *code and human *msg. */
int cp_lws_check_upgrade(struct lws *wsi, const char **code, const char **msg);

/* True when a close frame's payload may be accepted: empty, or a code a
 * peer may send (RFC 6455 7.4) and its reason (lws checked its UTF-8). */
int cp_ws_close_payload_valid(const unsigned char *p, size_t len);
/* Names the close code and reason lws sends when the callback then
 * returns -1 (the WebSocket "fail the connection" of RFC 6455 7.1.7). */
void cp_ws_fail_connection(struct lws *wsi, unsigned code, const char *why);
/* For LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL of a connection we did not
 * close ourselves: makes lws send a 1002 close frame instead of only
 * dropping the TCP connection (see lwshttp.c). */
void cp_ws_on_drop(struct lws *wsi);

/* Copies the channelId query argument. Returns its length, 0 when it is
 * absent or empty, -1 when it is present but not a valid channel id. */
int cp_lws_channel_id(struct lws *wsi, char *out, size_t cap);

/* The upgrade's Origin against a comma-separated allow-list: 1 when the
 * list is empty, the request has no Origin (not a browser), or the Origin
 * equals an entry (case-insensitive) or an entry is "*". */
int cp_lws_origin_allowed(struct lws *wsi, const char *allowed);

/* Who is connecting: the channelId query argument and, when v is not
 * NULL, a JWT from the `token` query argument, from the
 * Sec-WebSocket-Protocol list ("cloudpush, <token>"; browsers cannot set
 * headers) or from "Authorization: Bearer <token>". The token's `sub`
 * must equal channelId; channelId may then be omitted. Returns 0 with the channel id in out (and the token's claims in
 * *claims: expiry and `pub`; zeroed without auth), or the HTTP status to
 * refuse with and a stable *code and human *msg. */
int cp_lws_identify(struct lws *wsi, const cp_jwt_verifier *v, char *out, size_t cap,
                    cp_jwt_claims *claims, const char **code, const char **msg);

/* True when the peer closed or reset the TCP connection (a peek at the
 * socket: for connections whose input lws does not read). */
int cp_lws_peer_gone(struct lws *wsi);

/* True for a GET request. */
int cp_lws_is_get(struct lws *wsi);

#endif
