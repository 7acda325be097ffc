/* Per source address limits at the bridge: concurrent connections and a
 * token bucket of new connections. Behind the balancer (or another proxy
 * listed in --trusted-proxies) the address is the X-Forwarded-For it sent. */
#ifndef BRIDGE_IPLIMIT_H
#define BRIDGE_IPLIMIT_H

#include <stdint.h>

#include <libwebsockets.h>

struct bridge;
typedef struct ip_entry ip_entry;

/* The client's address for wsi (the proxy's X-Forwarded-For when the peer
 * is trusted); empty when no per-address limit is set, as nothing else
 * reads it. */
void iplimit_client_address(struct bridge *b, struct lws *wsi, char *out, size_t cap);
/* Admission at upgrade time: 0, or an HTTP status (429) with code and msg.
 * An admitted upgrade takes one token from the address's bucket. */
int iplimit_admit(struct bridge *b, const char *ip, const char **code, const char **msg);
/* A session from ip exists now / ended. */
ip_entry *iplimit_attach(struct bridge *b, const char *ip);
void iplimit_detach(struct bridge *b, ip_entry *e);
/* Forgets addresses with no session whose bucket is full again. */
void iplimit_prune(struct bridge *b);
/* Frees every entry (at exit). */
void iplimit_clear(struct bridge *b);

#endif
