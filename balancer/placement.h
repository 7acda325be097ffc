/* Where a new connection goes: the live, non-draining bridge with the least
 * load, load = (connections + connections handed out since the last view
 * refresh) / capacity. Counting what was handed out keeps a burst from
 * landing on one bridge between two refreshes; a new, empty bridge fills up
 * to the others' level and then shares. Ties are broken at random.
 *
 * A pure core (no I/O, no lws): the service thread loads each new view
 * snapshot into it, which also parses every bridge's URL once. */
#ifndef BALANCER_PLACEMENT_H
#define BALANCER_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "view.h"

#define PLACEMENT_MAX_BRIDGES 1024

/* A bridge's advertised URL, ws[s]://HOST[:PORT][/PATH]. */
typedef struct {
    int ok;          /* a ws:// or wss:// URL with a host and a valid port */
    int tls;         /* wss:// */
    int port;        /* given, or 80 / 443 */
    char host[256];  /* without the brackets of an IPv6 address */
    size_t path_at;  /* offset in the URL of the path after its '/'; 0: none */
    size_t authority_at, authority_len; /* HOST[:PORT] as written */
} placement_url;

typedef struct {
    bridge_info info;
    unsigned handed; /* connections handed out since the snapshot */
    placement_url url;
} placement_bridge;

typedef struct {
    placement_bridge bridges[PLACEMENT_MAX_BRIDGES];
    size_t count;
} placement;

/* Parses url into out (out->ok says whether it is usable for a relay;
 * authority_* are set either way). */
void placement_parse_url(const char *url, placement_url *out);

/* Replaces the bridges with a new snapshot (at most PLACEMENT_MAX_BRIDGES)
 * and restarts the hand-out counts: the bridges' own counts now include
 * what was handed out before (roughly; the next refresh corrects the rest). */
void placement_load(placement *p, const bridge_info *snapshot, size_t count);

/* Picks a bridge and counts the connection as handed out to it. Returns
 * NULL when none can take a connection (none live, all draining or full).
 * rnd: any random value. */
const placement_bridge *placement_pick(placement *p, uint64_t rnd);

/* Takes back a pick the caller could not use (it is picked again, through
 * another path): b's hand-out count goes down by one. */
void placement_unpick(placement *p, const placement_bridge *b);

/* Whether b can take one more connection. */
int placement_can_take(const placement_bridge *b);

/* How many bridges can take one more connection. */
size_t placement_usable(const placement *p);

/* (connections + handed out) / capacity; 1 without capacity. */
double placement_load_of(const placement_bridge *b);

#endif
