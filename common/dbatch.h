/* Delivery batches: many sequenced envelopes in one MQTT message on
 * <prefix>/d/batch, which every bridge worker subscribes to. An entry that
 * numbered many messages at once (the HTTP API's group commit) publishes
 * them as one packet instead of one per message: on loopback each packet
 * costs a publish, an acknowledgement and two wake-ups in the publisher,
 * the broker and the bridge, several times what filtering the items costs
 * the bridges (a hash lookup each). docs/topics.md, "d/batch".
 *
 * Wire format (text, readable with mosquitto_sub), after the line "cpb1":
 *     <channelId or *> <envelope length>\n<envelope>\n
 * repeated; "*" marks a broadcast. */
#ifndef CP_DBATCH_H
#define CP_DBATCH_H

#include <stddef.h>

#include "buf.h"
#include "bus.h"

#define CP_DBATCH_MAGIC "cpb1\n"
/* A batch is published once it reaches this size (the brokers' configs
 * allow packets of 1 MiB). */
#define CP_DBATCH_MAX_BYTES (256 * 1024)

/* ---- the format ---- */

typedef struct {
    const char *channel; /* "*" for a broadcast */
    size_t channel_len;
    const char *envelope;
    size_t len;
} cp_dbatch_item;

/* Reads the item at *at (the first call: at = the payload); advances *at.
 * Returns 1 with an item, 0 at the end, -1 when the payload is malformed
 * (nothing after that can be trusted). */
int cp_dbatch_next(const char *payload, size_t len, size_t *at, cp_dbatch_item *out);

/* ---- building and publishing ---- */

/* A batch being built: its payload and the completions of its items
 * (each item's op->done runs once with the outcome of the one publish).
 * Reused from batch to batch. */
typedef struct {
    cp_buf payload;
    cp_bus_op **ops;
    size_t count, cap;
    size_t items;
} cp_dbatch;

void cp_dbatch_init(cp_dbatch *d);
void cp_dbatch_free(cp_dbatch *d);

/* Adds one envelope for channel (NULL: a broadcast), whose completion is
 * op (NULL: nobody waits for it). Returns 0, or -1 when memory ran out
 * (op is then the caller's to complete). */
int cp_dbatch_add(cp_dbatch *d, const char *channel, const char *envelope, size_t len,
                  cp_bus_op *op);

/* Publishes what was added (QoS 1) on topic. 0: handed to the bus, the
 * builder is empty, and every op completes with the outcome of that one
 * publish. Otherwise the bus's refusal: the batch is kept, to publish
 * again or to fail (cp_dbatch_fail). Nothing added: 0. */
int cp_dbatch_publish(cp_dbatch *d, cp_bus *bus, const char *topic);

/* Completes every op as failed with code and empties the builder. */
void cp_dbatch_fail(cp_dbatch *d, int code);

#endif
