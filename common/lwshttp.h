/* Small HTTP helpers for the libwebsockets servers (bridge, balancer); their
 * start and end are in lwsserver.h. */
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

/* Copies the channelId query argument. Returns its length, 0 when it is
 * absent or empty, -1 when it is present but not a valid channel id. */
int cp_lws_channel_id(struct lws *wsi, char *out, size_t cap);

/* The upgrade's Origin against a comma-separated allow-list: 1 when the
 * list is empty, the request has no Origin (not a browser), or the Origin
 * equals an entry (case-insensitive) or an entry is "*". */
int cp_lws_origin_allowed(struct lws *wsi, const char *allowed);

/* Who is connecting: the channelId query argument and, when v is not
 * NULL, a JWT from the `token` query argument or from the
 * Sec-WebSocket-Protocol list ("cloudpush, <token>"; browsers cannot set
 * headers). The token's `sub` must equal channelId; channelId may then be
 * omitted. Returns 0 with the channel id in out (and the token's claims in
 * *claims: expiry and `pub`; zeroed without auth), or the HTTP status to
 * refuse with and a stable *code and human *msg. */
int cp_lws_identify(struct lws *wsi, const cp_jwt_verifier *v, char *out, size_t cap,
                    cp_jwt_claims *claims, const char **code, const char **msg);

/* True for a GET request. */
int cp_lws_is_get(struct lws *wsi);

#endif
