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

/* libwebsockets 4.1 ignores a numeric bind address (info.iface) and
 * listens everywhere, but honours an interface name, binding that
 * interface's first address. Finds the interface owning host's address
 * (empty ifname for 0.0.0.0/::/empty: all interfaces). Logs and returns -1
 * when the address is not local or not its interface's first one. */
int cp_lws_iface_for(const char *host, char *ifname, size_t cap);

#endif
