/* Small HTTP helpers for the libwebsockets servers (bridge, balancer). */
#ifndef CP_LWSHTTP_H
#define CP_LWSHTTP_H

#include <stddef.h>

#include <libwebsockets.h>

/* Writes a complete response (headers + body). Returns 0 or -1. */
int cp_lws_reply(struct lws *wsi, unsigned status, const char *content_type, const char *body,
                 size_t len);
int cp_lws_reply_json(struct lws *wsi, unsigned status, const char *body);
/* {"success":false,"code":CODE,"msg":MSG} */
int cp_lws_reply_error(struct lws *wsi, unsigned status, const char *code, const char *msg);

/* Copies the channelId query argument. Returns its length, 0 when it is
 * absent or empty, -1 when it is present but not a valid channel id. */
int cp_lws_channel_id(struct lws *wsi, char *out, size_t cap);

/* True for a GET request. */
int cp_lws_is_get(struct lws *wsi);

#endif
