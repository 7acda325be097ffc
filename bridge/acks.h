/* Acknowledged delivery (ack=1 sessions): the window of BUSINESS messages a
 * client has not confirmed yet, retransmits and the 4006 close. Sessions
 * without ack=1 have no window and never reach this module's hot paths. */
#ifndef BRIDGE_ACKS_H
#define BRIDGE_ACKS_H

#include <stdint.h>

#include "buf.h"
#include "frame.h"

struct bridge;
struct session;

/* One unconfirmed message: the shared frame (a reference, no copy), when it
 * was first sent and how often it was resent. */
typedef struct {
    out_frame *f; /* NULL: confirmed, a hole until the oldest entry passes it */
    int64_t first_sent_ms;
    uint32_t hash; /* of the messageId, for the index */
    uint8_t resends;
} ack_entry;

/* Entries in send order in a ring addressed by a running sequence number
 * (slot = seq & (cap - 1)), plus an open-addressing index messageId -> slot,
 * so that an ack costs O(1) whatever the order the client confirms in.
 * Both grow by doubling up to --ack-window: an idle session costs none. */
typedef struct ack_window {
    struct session *owner;
    struct ack_window *prev, *next; /* the bridge's windows that hold entries */
    ack_entry *ring;
    uint32_t cap;        /* power of two, 0 until the first message */
    uint32_t head, tail; /* sequence numbers: oldest unconfirmed, next to use */
    uint32_t live;       /* unconfirmed entries (tail - head counts the holes too) */
    uint32_t *index;     /* 2 * cap slots of ring position + 1, 0: empty */
    uint8_t listed;
} ack_window;

/* The client connected with ack=1. Returns 0, or -1 when out of memory. */
int acks_enable(struct bridge *b, struct session *s);
/* The session is going away: drops its window and frame references. */
void acks_disable(struct bridge *b, struct session *s);
/* A BUSINESS frame was queued for s: remember it until confirmed. Returns
 * -1 when the window is full (the caller closes the session). */
int acks_track(struct bridge *b, struct session *s, out_frame *f);
/* The client confirmed message_id (unescaped, as parsed). Unknown ids are
 * ignored: a late ack, or one for a message sent before a retransmit. */
void acks_confirm(struct bridge *b, struct session *s, const char *message_id);
/* The liveness pass: resends what is older than --ack-timeout, closes with
 * 4006 what is still unconfirmed after --ack-retries resends. */
void acks_check(struct bridge *b, int64_t now_ms);
void acks_render_metrics(struct bridge *b, cp_buf *out);

#endif
